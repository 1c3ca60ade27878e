"""The music21 fallback: used only when no data is found, cached, and labelled everywhere."""

from __future__ import annotations

import pytest

from cellc.errors import DataError
from cellc.data import jsb_music21
from cellc.tasks import base, get_task

TINY = {"train": [[[60, 64], [62]]], "valid": [[[48], [50]]], "test": [[[72], [74]]]}


@pytest.fixture
def no_data_anywhere(tmp_path, monkeypatch):
    monkeypatch.delenv("CELLC_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(base, "source_checkout_data_root", lambda: tmp_path / "no-checkout-data")
    return tmp_path


def test_rebuild_used_when_no_data_and_cached(no_data_anywhere, monkeypatch):
    calls = []
    monkeypatch.setattr(jsb_music21, "available", lambda: True)
    monkeypatch.setattr(jsb_music21, "rebuild", lambda: calls.append(1) or TINY)
    data = get_task("jsb").load()
    assert data.source == "rebuilt from music21" and data.sizes() == {"train": 1, "valid": 1, "test": 1}
    assert jsb_music21.cache_path().is_file() and str(no_data_anywhere / "xdg") in data.location
    assert get_task("jsb").load().source == "rebuilt from music21"
    assert calls == [1]  # the second load reads the cache


def test_without_music21_the_error_says_how_to_get_data(no_data_anywhere, monkeypatch):
    monkeypatch.setattr(jsb_music21, "available", lambda: False)
    with pytest.raises(DataError) as err:
        get_task("jsb").load()
    text = str(err.value)
    assert "JSB Chorales data not found" in text and "CELLC_DATA_DIR" in text and "pip install music21" in text


def test_explicit_data_dir_never_falls_back(no_data_anywhere, monkeypatch):
    monkeypatch.setattr(jsb_music21, "available", lambda: True)
    monkeypatch.setattr(jsb_music21, "rebuild", lambda: pytest.fail("must not rebuild"))
    with pytest.raises(DataError):
        get_task("jsb", no_data_anywhere / "given").load()


def test_chorale_grid_on_a_real_corpus_score():
    music21 = pytest.importorskip("music21")
    score = music21.corpus.parse("bach/bwv66.6")  # f-sharp minor
    grid = jsb_music21.chorale_grid(score)
    assert len(grid) >= int(score.highestTime)
    assert sum(1 for step in grid if len(step) >= 3) > len(grid) // 2  # four voices mostly sound
    pitch_classes = {p % 12 for step in grid for p in step}
    assert 0 in pitch_classes and 6 not in pitch_classes  # transposed to C minor: no F sharp left


class _Pitch:
    def __init__(self, midi):
        self.midi = midi


class _Note:
    def __init__(self, offset, length, *midis):
        self.offset, self.quarterLength, self.pitches = offset, length, [_Pitch(m) for m in midis]


class _Score:
    """What chorale_grid reads of a music21 score: key analysis, total length, its notes, repeat expansion."""

    def __init__(self, tonic, highest, notes, expanded=None):
        self.tonic, self.highestTime, self.notes, self.expanded = tonic, highest, notes, expanded

    def expandRepeats(self):
        if self.expanded is None:
            raise ValueError("music21 cannot expand these repeats")
        return self.expanded

    def analyze(self, what):
        assert what == "key"
        return type("Key", (), {"tonic": type("Tonic", (), {"pitchClass": self.tonic})})()

    def flatten(self):
        return type("Flat", (), {"notes": self.notes})()


def test_chorale_grid_transposes_to_c_fills_quarters_and_expands_repeats():
    # D major (tonic 2): down a whole tone. A half note on D4 (62) sounds at quarters 0 and 1; a chord at
    # 2.5 of length 1 sounds at quarter 3 (a quarter is counted where it starts sounding at its beat)
    notes = [_Note(0.0, 2.0, 62), _Note(2.5, 1.0, 66, 69), _Note(3.0, 1.0, 130)]  # 130: beyond the piano
    grid = jsb_music21.chorale_grid(_Score(2, 4.0, notes))
    assert grid == [[60], [60], [], [64, 67]]
    # A (tonic 9): up three semitones, the nearer way to C; repeats expanded where music21 can
    expanded = _Score(9, 2.0, [_Note(0.0, 1.0, 57), _Note(1.0, 1.0, 57)])
    assert jsb_music21.chorale_grid(_Score(9, 1.0, [_Note(0.0, 1.0, 57)], expanded=expanded)) == [[60], [60]]
