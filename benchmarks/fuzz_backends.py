"""Differential fuzzing of the backends at scale: N random valid cells, each on the backends asked for
against eager (outputs, final states, every gradient; plain, with lengths, bidirectional two layers).

    python benchmarks/fuzz_backends.py --cells 10000 --backends fused,lowered --json out.json
    python benchmarks/fuzz_backends.py --cells 1000 --backends compiled --chunk 25
    TRITON_INTERPRET=1 python benchmarks/fuzz_backends.py --cells 1000 --backends triton

Prints each cell that is not ok as one JSON line, progress with an ETA, then the summary; exits 1 when
any cell mismatched, errored or crashed. The same as ``python -m cellc.fuzz.backends``.
"""

import sys

from cellc.fuzz.backends import main

if __name__ == "__main__":
    sys.exit(main())
