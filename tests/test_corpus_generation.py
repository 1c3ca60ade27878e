"""A proxy corpus appears whole or not at all: generated into a temporary sibling and renamed into place."""

from __future__ import annotations

import pytest

from cellc.data import proxy_corpus
from cellc.errors import DataError
from cellc.tasks.corpus_source import generate_atomically


def fake_generator(content: str = "new", before_finish=None):
    """Writes a tiny 'corpus' the way the real generators do: partial marker, files, finished marker."""

    def generate(root):
        proxy_corpus.prepare_target(root)
        (root / "data.txt").write_text(content)
        if before_finish is not None:
            before_finish()
        proxy_corpus.finish(root, {"config": {}, "generator": "test"})

    return generate


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def test_an_interrupted_generation_is_replaced(tmp_path):
    target = tmp_path / "timit-proxy"
    target.mkdir()
    (target / ".cellc-proxy-partial").write_text("interrupted\n")
    (target / "half.txt").write_text("half")
    generate_atomically(target, fake_generator())
    assert proxy_corpus.is_complete_proxy(target)
    assert sorted(p.name for p in target.iterdir()) == [proxy_corpus.MARKER, "data.txt"]
    assert leftovers(tmp_path) == []


def test_a_folder_that_is_not_ours_is_refused_and_kept(tmp_path):
    target = tmp_path / "timit-proxy"
    target.mkdir()
    (target / "thesis.tex").write_text("mine")
    with pytest.raises(DataError, match="not a cellc proxy corpus"):
        generate_atomically(target, fake_generator())
    assert (target / "thesis.tex").read_text() == "mine" and len(list(target.iterdir())) == 1
    assert leftovers(tmp_path) == []


def test_a_concurrent_winners_corpus_is_kept(tmp_path):
    target = tmp_path / "timit-proxy"

    def another_process_finishes_first():
        fake_generator("winner")(target)

    generate_atomically(target, fake_generator("loser", before_finish=another_process_finishes_first))
    assert proxy_corpus.is_complete_proxy(target)
    assert (target / "data.txt").read_text() == "winner"
    assert leftovers(tmp_path) == []
