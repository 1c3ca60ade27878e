"""Hostile input to the spec front end at scale: random bytes, random YAML, alias bombs, mutations of the
shipped specs; each must compile or be refused with one short printable message, within 10 s and 1 GiB.

    python benchmarks/fuzz_frontend.py --inputs 100000 --json out.json

Prints each bad outcome as one JSON line, progress with an ETA, then the summary; exits 1 on any
traceback, timeout, memory growth or bad message. The same as ``python -m cellc.fuzz.frontend``.
"""

import sys

from cellc.fuzz.frontend import main

if __name__ == "__main__":
    sys.exit(main())
