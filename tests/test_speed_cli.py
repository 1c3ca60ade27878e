"""`cellc speed` argument checks: a bad count is one message and exit 2, before anything is timed."""

from __future__ import annotations

import pytest

from cellc.cli import main


@pytest.mark.parametrize("argv, fragment", [
    (["--threads", "0"], "--threads"),
    (["--threads", "1", "-2"], "--threads"),
    (["--sizes", "0,10,4,4"], "--sizes"),
    (["--sizes", "2,10,4,4", "2,-1,4,4"], "--sizes"),
    (["--sizes", "2,10,4,0"], "--sizes"),
    (["--sizes", "2,10,4"], "--sizes"),
    (["--jsb-hidden", "0"], "--jsb-hidden"),
    (["--jsb-hidden", "-5"], "--jsb-hidden"),
    (["--jsb-sequences", "-1"], "--jsb-sequences"),
    (["--repeat", "0"], "--repeat"),
    (["--repeat", "-3"], "--repeat"),
])
def test_bad_counts_are_usage_errors(tmp_path, monkeypatch, capsys, argv, fragment):
    from cellc.speed import measure

    def never(*args, **kwargs):
        raise AssertionError("nothing may be built or timed before the arguments are checked")

    monkeypatch.setattr(measure, "make_layer", never)
    monkeypatch.setattr(measure, "measure", never)
    out = tmp_path / "speed.md"
    assert main(["speed", "--backends", "eager", "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()
