"""Fuzzing of cellc itself: random valid cells run on every backend against eager (cellc.fuzz.backends), and
hostile input to the spec front end (cellc.fuzz.frontend). benchmarks/fuzz_backends.py and
benchmarks/fuzz_frontend.py run them at scale; tests run a bounded, seeded sample."""
