"""A partial study's report says so in its title, summary and every figure title, is written beside a complete
report of the same name (never over it without --force), and deletes no tracked file."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import optuna
import pytest

from cellc.cli import main
from cellc.harness.trials_file import TRIALS_FILE

from planted_bench import BENCH, plant_bench


@pytest.fixture(scope="module")
def benches(tmp_path_factory) -> tuple[Path, Path]:
    complete = tmp_path_factory.mktemp("complete")
    plant_bench(complete, trials=10, cells=("vanilla", "nfg"), tasks=("jsb",))
    partial = tmp_path_factory.mktemp("partial")
    url = plant_bench(partial, trials=10, cells=("vanilla", "nfg"), tasks=("jsb",))
    storage = optuna.storages.RDBStorage(url)
    for summary in optuna.get_all_study_summaries(storage):  # the bench was planned for 16 trials per study
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        study.set_user_attr("settings", {**study.user_attrs["settings"], "trials": 16})
    return complete, partial


@pytest.mark.slow
def test_partial_report_is_marked_and_written_beside_a_complete_one(benches, tmp_path):
    complete, partial = benches
    reports = tmp_path / "reports"
    reports.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=reports, check=True)
    assert main(["report", "--name", BENCH, "--out", str(complete), "--report-dir", str(reports)]) == 0
    kept = (reports / f"{BENCH}.md").read_bytes()
    (reports / BENCH / "old.png").write_bytes(b"tracked figure")
    subprocess.run(["git", "add", "-A"], cwd=reports, check=True)

    assert main(["report", "--name", BENCH, "--out", str(partial), "--report-dir", str(reports)]) == 0
    assert (reports / f"{BENCH}.md").read_bytes() == kept  # the complete report is untouched
    assert (reports / BENCH / "old.png").exists()
    text = (reports / f"{BENCH}.partial.md").read_text()
    note = "partial: 20 of 32 trials"
    assert text.splitlines()[0] == f"# LSTM Odyssey report: `{BENCH}` ({note})"
    summary = text.split("## Summary")[1].split("## 1.")[0]
    assert "Partial: 20 of 32 trials" in summary
    assert (reports / f"{BENCH}.partial" / TRIALS_FILE).is_file()
    figures = sorted((reports / f"{BENCH}.partial").glob("*.png"))
    assert figures and all(f"{BENCH}.partial/{p.name}" in text for p in figures)

    # with --force it replaces the complete report, and a complete report never deletes a tracked figure
    assert main(["report", "--name", BENCH, "--out", str(partial), "--report-dir", str(reports), "--force"]) == 0
    assert (reports / f"{BENCH}.md").read_text().splitlines()[0].endswith(f"({note})")
    assert (reports / BENCH / "old.png").exists()
    (reports / BENCH / "stale.png").write_bytes(b"untracked")
    assert main(["report", "--name", BENCH, "--out", str(complete), "--report-dir", str(reports)]) == 0
    assert not (reports / BENCH / "stale.png").exists() and (reports / BENCH / "old.png").exists()


def test_every_figure_title_says_partial():
    from cellc.analysis.context import gather_context
    from cellc.analysis.document import build_report
    from cellc.analysis.fanova import ForestSettings
    from cellc.analysis.load import facts_from_studies, load_bench

    with tempfile.TemporaryDirectory() as folder:
        url = plant_bench(Path(folder), trials=9, cells=("vanilla", "nfg"), tasks=("jsb",))
        studies = load_bench(url, BENCH)
    for study in studies:
        study.attrs["settings"] = {**study.attrs["settings"], "trials": 12}
    import cellc.analysis.figures as fig

    titles: list[str] = []
    original = fig.png_bytes

    def capture(figure):
        titles.append(" ".join(t.get_text() for t in figure.texts) + " " + " ".join(
            ax.get_title(loc="left") for ax in figure.axes))
        return original(figure)

    fig.png_bytes = capture
    try:
        bundle = build_report(BENCH, studies, gather_context(["vanilla", "nfg"], "cellc report"), "f",
                              ForestSettings(trees=4, resamples=5), facts_from_studies(studies))
    finally:
        fig.png_bytes = original
    assert len(titles) == len(bundle.figures) == 5
    assert all("(partial: 18 of 24 trials)" in t for t in titles), titles
