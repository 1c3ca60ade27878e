"""Run eSpeak NG for one speaker in a fresh process: ``python -m cellc.data.espeak_worker``.

eSpeak NG keeps synthesiser state in C statics that survive ``espeak_Terminate``: the same
text and voice come out slightly different depending on what was spoken before in the same
process. A fresh process per speaker, with the same calls in the same order, makes the
proxy corpus bit-for-bit reproducible. Reads a JSON job on stdin; writes ``<i>.npy``
(int16 samples) and ``<i>.json`` (sample rate and phoneme events) per text into ``out``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from cellc.data.espeak import shared_engine
from cellc.errors import CellcError


def main() -> int:
    job = json.loads(sys.stdin.read())
    out = Path(job["out"])
    try:
        engine = shared_engine()
        for i, text in enumerate(job["texts"]):
            synth = engine.synthesise(text, job["voice"], rate=job["rate"], pitch=job["pitch"], pitch_range=job["pitch_range"], seed=i)
            np.save(out / f"{i}.npy", synth.samples, allow_pickle=False)
            events = [[e.time_ms, e.phoneme] for e in synth.events]
            (out / f"{i}.json").write_text(json.dumps({"sample_rate": synth.sample_rate, "events": events}))
    except CellcError as err:
        print(err, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
