"""The committed demo study (results/demo/sweep): its verdict says what was shown, and REPORT.md /
study.json are what ``write_report`` makes from the committed cells today (rebuild them with
``maw sweep --config examples/sweeps/demo.toml --final --report-only`` when the wording changes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OUT = Path("results/demo/sweep")  # relative: REPORT.md names its data folder as the CLI writes it


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    import os

    from maw.sweep.grid import load_grid
    from maw.sweep.study import report_markdown, study

    if not (REPO / OUT / "study.json").is_file():
        pytest.skip("no committed demo study")
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        grid = load_grid("examples/sweeps/demo.toml", {})  # as `maw sweep --config ... --final` does
        s = study(OUT, grid, tuple(grid.final_seeds))
        return s, report_markdown(s, OUT)
    finally:
        os.chdir(cwd)


def test_demo_verdict_says_what_was_shown(demo):
    s, _ = demo
    committed = json.loads((REPO / OUT / "study.json").read_text())
    head = committed["headline"]
    assert head == s["headline"]
    row = next(r for r in s["comparisons"]["nDCG@10"] if (r["method"], r["baseline"]) == ("maw", "full"))
    assert row["verdict"] == "n.s." and row["diff"] < 0
    # no "matched", no equivalence without a margin fixed before the final
    assert " matched" not in head and committed["equivalence_margin"] is None
    assert "equivalent" not in head.replace("no equivalence is claimed", "")
    assert head.startswith("MAW (maw) showed no significant difference from the strongest capacity-matched")
    assert f"could have detected a difference of ≥ {row['mde_holm']:.4f} nDCG@10" in head
    # MAW's selected epoch was 0 in every seed: flagged as untrained
    assert s["methods"]["maw"]["best_epochs"] == [0, 0, 0] and s["untrained"] == ["maw"]
    assert "The maw arm is untrained: the selected epoch was 0 in every seed" in head


def test_committed_demo_report_is_current(demo):
    s, markdown = demo
    report = (REPO / OUT / "REPORT.md").read_text()
    assert report == markdown
    assert "| maw vs full | -0.0410 |" in report
    assert "no significant difference (could detect ≥ 0.0629); maw untrained" in report
    assert "equivalent within ±0" not in report and "so nothing is called equivalent" in report
    committed = json.loads((REPO / OUT / "study.json").read_text())
    assert committed["comparisons"] == json.loads(json.dumps(s["comparisons"]))
