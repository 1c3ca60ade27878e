"""Ctrl-C on `cellc bench` (smoke profile) as a user's terminal sends it, then the same command again.

SIGINT goes to the whole process group (coordinator, workers, multiprocessing's resource tracker), as a
terminal's Ctrl-C does. The checks are on messages and stored trials only: no timing assertions (the
deadlines are generous bounds for a loaded 2-core machine, not measurements).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bench_db import finished_count

DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CELLS = ("vanilla", "nfg")
TRIALS = 5
TOTAL = TRIALS * len(CELLS)


def bench_args(out: Path) -> list[str]:
    return ["bench", "--tasks", "jsb", "--cells", ",".join(CELLS), "--profile", "smoke", "--trials", str(TRIALS),
            "--max-epochs", "3", "--train-subset", "30", "--workers", "2", "--out", str(out), "--no-report",
            "--data-dir", str(DATA_ROOT)]


def lines(stderr: str) -> list[str]:
    """stderr without the progress bar's redraws."""
    return [line for line in stderr.replace("\r", "\n").splitlines() if line.strip() and "|" not in line]


@pytest.mark.slow
@pytest.mark.skipif(not (DATA_ROOT / "jsb-chorales").is_dir(), reason="../shared/data missing")
def test_ctrl_c_says_what_was_kept_and_how_to_resume_and_the_rerun_resumes(tmp_path):
    out = tmp_path / "runs"
    command = [sys.executable, "-m", "cellc.cli", *bench_args(out)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group, as under a terminal
    deadline = time.monotonic() + 300
    while finished_count(out / "studies.db") < 1:
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "bench made no progress"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    # communicate() reads stderr until every process holding it has gone, the resource tracker included:
    # a warning printed after the command's own exit is caught here too.
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    text = lines(stderr)
    # the start-up plan came first: what runs, on which data, where it is stored, with how many workers
    assert text[0] == f"bench smoke: profile smoke; 1 task(s) x 2 cell(s) ({', '.join(CELLS)}); {TOTAL} trials"
    assert any(line.split()[:5] == ["jsb", "2", "x", str(TRIALS), "0"] and "real: " in line for line in text)
    assert f"  storage: sqlite:///{out / 'studies.db'}" in text[:8]
    assert "  workers: 2 process(es), one torch thread each" in text
    assert any(line.startswith("  estimate: ") and f"for the {TOTAL} trial(s) to run" in line for line in text)
    kept = finished_count(out / "studies.db")
    assert 1 <= kept < TOTAL
    stop = text.index(next(line for line in text if line.startswith("interrupted: ")))
    assert text[stop].startswith(f"interrupted: {kept} of {TOTAL} trials finished and stored")
    assert text[stop + 1] == f"  storage: sqlite:///{out / 'studies.db'}"
    resume = text[stop + 2]
    assert resume.startswith("  to resume, run the same command again: cellc bench ")
    assert shlex.split(resume.split(": ", 1)[1]) == ["cellc", *bench_args(out)]
    after = text[stop + 3:]
    assert after == [], f"printed after the interrupt message: {after}"
    assert not [line for line in text if "Traceback" in line or "warning" in line.lower() or "leaked" in line]

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    text = lines(rerun.stderr)
    assert f"  resuming: {kept} of {TOTAL} trials kept, {TOTAL - kept} to run" in text
    assert finished_count(out / "studies.db") == TOTAL
    assert any(line.startswith("bench smoke: first ETA ") and " took " in line for line in text)
    assert not [line for line in text if "Traceback" in line or "leaked" in line]
