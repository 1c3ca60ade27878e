"""`cellc report` on a planted Optuna storage: content, figures, and byte-identical regeneration."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cellc.analysis.fanova import ForestSettings
from cellc.analysis.load import facts_from_studies, load_bench
from cellc.analysis.task_analysis import analyse_task, group_by_task
from cellc.cli import main
from cellc.harness.trials_file import TRIALS_FILE

from planted_bench import BENCH, plant_bench

FAST = ForestSettings(trees=8, min_samples_leaf=2, seed=0, resamples=20)


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    plant_bench(root, trials=20)
    return root


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_report_regenerates_byte_identical_from_storage(planted, tmp_path, capsys):
    reports = tmp_path / "reports"
    argv = ["report", "--name", BENCH, "--out", str(planted), "--report-dir", str(reports)]
    assert main(argv) == 0
    first = _snapshot(reports)
    (reports / BENCH / "stale.png").write_bytes(b"old")
    assert main(argv) == 0
    assert _snapshot(reports) == first  # identical bytes, and the stale figure is gone
    text = first[f"{BENCH}.md"].decode()
    linked = set(re.findall(r"\]\((planted/[^)]+\.png)\)", text))
    assert linked == {k for k in first if k.endswith(".png")}
    assert len(linked) == 10  # comparison, best of k, importance, marginals, interactions for two tasks
    assert (reports / BENCH / TRIALS_FILE).is_file()  # every report ships its trials
    for section in ("## 1. Variant comparison", "## 2. Hyper-parameter importance", "## 3. Marginals",
                    "## 4. Interactions", "## 5. Cells", "## 6. Versus the paper", "## 7. Reproducibility"):
        assert section in text
    assert "TIMIT (proxy data)" in text and "Not compared: TIMIT (proxy data)" in text
    assert "p_{f} \\odot c_{t-1}" in text and "4N(M+N) + 7N" in text  # vanilla, rendered from the IR
    assert "cellc bench --profile quick --name planted" in text and " cores, " in text
    assert "Wilcoxon signed-rank" in text and "unpaired" in text and "Fisher's exact test" in text
    assert "| 0/20 (0 %; 0 div., 0 triv.) " in text and "failures vs vanilla (Fisher)" in text
    assert "Holm" in text and "BH q" in text and "TOST" in text and "| no difference " not in text.split("## 6.")[0]  # a verdict column never says it
    assert "**Different search setup**" in text and "different search setup (agree)" in text
    assert "first frame is never predicted and never scored" in text
    assert f"cellc report --trials {reports / BENCH / TRIALS_FILE}" in text  # how to rebuild it from the file
    assert main([*argv, "--format", "html"]) == 0
    page = (reports / f"{BENCH}.html").read_text()
    assert page.count("<img ") == 10 and "<table>" in page and '<h2 id="5-cells">' in page
    assert "\\begin{aligned}" in page and "<strong>worse</strong>" in page


def test_planted_verdicts_and_importance_reach_the_report(planted):
    studies = load_bench(f"sqlite:///{planted / 'studies.db'}", BENCH)
    facts = facts_from_studies(studies)
    tasks = {t: analyse_task(t, g, FAST, facts=facts[t]) for t, g in group_by_task(studies).items()}
    jsb = tasks["jsb"]
    verdicts = {t.cell: t.verdict for t in jsb.paired}
    assert verdicts == {"vanilla": "baseline", "nfg": "worse", "np": "equivalent"}  # np repeats vanilla within 0.01
    assert jsb.counts["nfg"].diverged == 1 and jsb.counts["nfg"].failed == 1
    assert jsb.summaries["nfg"].diverged == 1 and jsb.test("nfg").pairs == 20  # the diverged trial is a worst rank
    lr = jsb.importance.main[0]
    assert lr.name == "learning rate" and lr.fraction > 0.6
    assert all(c.fraction < lr.fraction / 4 for c in jsb.importance.components if c is not lr)
    assert not jsb.is_proxy and tasks["timit"].is_proxy


def test_versus_paper_marks_agreement(planted):
    from cellc.analysis.paper import importance_rows, verdict_rows

    studies = load_bench(f"sqlite:///{planted / 'studies.db'}", BENCH)
    jsb = analyse_task("jsb", group_by_task(studies)["jsb"], FAST, facts=facts_from_studies(studies)["jsb"])
    rows = {r.finding: r for r in verdict_rows(jsb)}
    assert rows["NFG vs V"].agreement == "agree"  # planted worse; the paper: worse on all tasks
    assert rows["NP vs V"].agreement == "agree"
    top = {r.finding: r for r in importance_rows(jsb)}["most important hyper-parameter"]
    assert top.ours.startswith("learning rate") and top.agreement in (True, None)  # None: intervals overlap


def test_report_of_unknown_bench_is_a_clear_error(planted, tmp_path, capsys):
    code = main(["report", "--name", "nope", "--out", str(planted), "--report-dir", str(tmp_path)])
    assert code == 2
    assert "no studies named nope/" in capsys.readouterr().err


def test_report_name_must_be_a_plain_name_and_write_errors_are_one_message(planted, tmp_path, capsys):
    (tmp_path / "keep.png").write_bytes(b"png")
    code = main(["report", "--name", "..", "--out", str(planted), "--report-dir", str(tmp_path / "reports")])
    assert code == 2 and "--name '..'" in capsys.readouterr().err
    assert (tmp_path / "keep.png").exists()
    (tmp_path / "file").write_text("not a folder")
    code = main(["report", "--name", BENCH, "--out", str(planted), "--report-dir", str(tmp_path / "file")])
    err = capsys.readouterr().err
    assert code == 1 and "cannot write the report" in err and "Traceback" not in err


def test_cells_section_shows_the_stored_equations_else_says_recompiled():
    from cellc.analysis.context import gather_context
    from cellc.analysis.document import cells_section

    stored = {"vanilla": {"hash": "0" * 16, "equations_text": ["y = stored_text(x)"],
                          "equations_latex": ["y = \\mathrm{stored}(x)"], "formula": "1NM", "description": "what ran"}}
    context = gather_context(["vanilla", "nfg"], "cellc report", stored)
    assert context.cells["vanilla"].stored and not context.cells["nfg"].stored
    text = "\n".join(cells_section(["vanilla", "nfg"], context))
    vanilla, nfg = text.split("### nfg")
    vanilla = vanilla.split("### vanilla")[1]
    assert "y = stored_text(x)" in vanilla and "what ran" in vanilla and "Recompiled" not in vanilla
    assert "Recompiled from the current spec" in nfg


def test_search_setup_differences_from_the_paper_profile():
    from cellc.analysis.paper import DIFFERENT_SETUP, FindingRow, different_setup, setup_differences
    from cellc.harness.profiles import PROFILES, apply_overrides

    assert setup_differences(PROFILES["paper"].model_dump()) == []
    quick = apply_overrides(PROFILES["quick"], {"space": {"lr": {"low": 3e-3, "high": 1e-1}}}).model_dump()
    diffs = setup_differences(quick)
    assert any("25 epochs" in d for d in diffs) and any("80 training sequences" in d for d in diffs)
    assert any(d.startswith("lr range [0.003, 0.1]") for d in diffs) and len(diffs) == 3
    rows = different_setup([FindingRow("a", "worse", "worse", "agree"), FindingRow("b", "x", "y", False),
                            FindingRow("c", "x", "y", None), FindingRow("d", "x", "y", "-")])
    assert [r.agreement for r in rows] == [f"{DIFFERENT_SETUP} (agree)", f"{DIFFERENT_SETUP} (disagree)",
                                           f"{DIFFERENT_SETUP} (undetermined)", "-"]


def test_paper_verdict_agreement_rules():
    from cellc.analysis.paper import agrees

    assert agrees("worse", "worse") == "agree"
    assert agrees("worse", "inconclusive") == "inconclusive"  # never read as agreement, whatever the paper found
    assert agrees("no difference", "inconclusive") == "inconclusive"  # non-significance is no agreement either
    assert agrees("no difference", "equivalent") == "agree"  # only a shown equivalence is
    assert agrees("worse", "better") == "disagree" and agrees("worse", "equivalent") == "disagree"
    assert agrees("no difference", "worse") == "disagree"
    assert agrees("not worse", "better") == "agree" and agrees("not better", "worse") == "agree"
    assert agrees("not worse", "equivalent") == "agree"
    assert agrees("worse", "not tested") is None
    # a significant shift the equivalence test shows to lie within the margin is negligible: no difference of
    # practical size, which is what a "no difference" / "not worse" / "not better" finding claims
    assert agrees("no difference", "better", within_margin=True) == "agree"
    assert agrees("not worse", "worse", within_margin=True) == "agree"
    assert agrees("no difference", "better") == "disagree"  # a shift not shown negligible
    assert agrees("better", "worse", within_margin=True) == "disagree"  # the paper's direction findings: as before


def test_html_conversion_of_the_markdown_subset():
    from cellc.analysis.html import markdown_to_html

    page = markdown_to_html("# T <x>\n\n- **a** and `b<c>`\n\n| h |\n|---|\n| *i* |\n\n![alt](d/f.png)\n"
                            "\n```text\ny = 1 < 2\n```\n", "t")
    assert '<h1 id="t-x">T &lt;x&gt;</h1>' in page
    assert "<li><strong>a</strong> and <code>b&lt;c&gt;</code></li>" in page
    assert "<th>h</th>" in page and "<td><em>i</em></td>" in page
    assert '<img alt="alt" src="d/f.png">' in page and "<pre><code>y = 1 &lt; 2</code></pre>" in page


def test_published_results_stand_beside_the_best_trial_of_the_same_model(planted):
    """JSB's LSTM of Chung et al. 2014 beside vanilla's best trial chosen by validation (its test score, not the
    lowest test score); a model the bench did not run (gru here) gets no row."""
    from cellc.analysis.paper import published_rows

    studies = load_bench(f"sqlite:///{planted / 'studies.db'}", BENCH)
    facts = facts_from_studies(studies)
    task = analyse_task("jsb", group_by_task(studies)["jsb"], ForestSettings(trees=8, resamples=0),
                        facts=facts.get("jsb"))
    (row,) = published_rows(task)
    vanilla = [r for r in task.records["vanilla"] if r.finished and r.test_at_best is not None]
    chosen = min(vanilla, key=lambda r: (r.best_valid, r.number))
    assert row.finding.startswith("best vanilla") and row.paper == "8.67 (LSTM, Chung et al. 2014)"
    assert row.ours == f"{chosen.test_at_best:.3f}"


def test_a_significant_shift_within_the_margin_is_said_so():
    from cellc.analysis.document import _verdict_cell
    from cellc.analysis.paired import PairedTest
    from cellc.analysis.paper import verdict_text

    both = PairedTest(cell="np", pairs=199, shift=-0.006, shift_ci=None, p=0.01, p_holm=0.04, tost=1e-15,
                      tost_holm=1e-14, verdict="better")
    assert both.within_margin and verdict_text(both, 0.1) == "better, within ±0.1 (TOST)"
    assert _verdict_cell(both) == "**better**, within the margin"
    shift_only = both.model_copy(update={"tost_holm": 0.2})
    assert not shift_only.within_margin and verdict_text(shift_only, 0.1) == "better"
    assert _verdict_cell(shift_only) == "**better**"
    equivalent = both.model_copy(update={"p_holm": 0.3, "verdict": "equivalent"})
    assert verdict_text(equivalent, 0.1) == "equivalent" and _verdict_cell(equivalent) == "equivalent"
