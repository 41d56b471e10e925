"""The study statistics: the MDE formula, the planned comparisons and the one sentence."""

from __future__ import annotations

import math

import numpy as np

from maw.benchmark.cells import new_cell
from maw.sweep.study import _family, headline, mde, planned_pairs


def test_mde_matches_a_hand_computation():
    # z_{0.975} = 1.959964, z_{0.8} = 0.841621: (1.959964 + 0.841621) * 0.2 / sqrt(100)
    assert math.isclose(mde(0.2, 100), 2.801585 * 0.02, rel_tol=1e-6)
    # alpha = 0.05 / 3: z_{1 - 0.05/6} = 2.393980
    assert math.isclose(
        mde(0.1, 300, alpha=0.05 / 3), (2.393980 + 0.841621) * 0.1 / math.sqrt(300), rel_tol=1e-5
    )


def _cells(method, scores_by_seed):
    out = []
    for seed, scores in scores_by_seed.items():
        c = new_cell("d", method, seed, {})
        pq = {f"q{i}": float(v) for i, v in enumerate(scores)}
        c.update(status="ok", per_query={"nDCG@10": pq}, metrics={"nDCG@10": float(np.mean(scores))})
        out.append(c)
    return out


def test_planned_pairs_use_validation_only():
    arms = {
        "lora": {"method": "lora", "val_score": 0.60, "options": {}},
        "finetune": {"method": "finetune", "val_score": 0.65, "options": {}},
        "full": {"method": "full", "val_score": 0.64, "options": {}},
        "maw": {"method": "maw", "val_score": 0.66, "options": {}},
        "maw-all": {"method": "maw", "val_score": 0.62, "options": {"finetune_layers": "all"}},
        "maw-lora": {
            "method": "maw",
            "val_score": 0.61,
            "options": {"finetune_layers": "none", "lora_layers": "all"},
        },
    }
    best, pairs, strongest = planned_pairs(arms)
    assert best == "maw" and strongest == "finetune"
    assert pairs == [
        ("maw", "lora"), ("maw", "finetune"), ("maw", "full"), ("maw-all", "full"), ("maw-lora", "lora"),
    ]  # fmt: skip


def test_no_difference_sentence_states_the_detectable_effect():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.8, size=80)
    cells = {
        "maw": _cells("maw", {s: base + rng.normal(0, 0.05, 80) for s in (1, 2, 3)}),
        "finetune": _cells("finetune", {s: base + rng.normal(0, 0.05, 80) for s in (1, 2, 3)}),
        "lora": _cells("lora", {s: base - 0.2 + rng.normal(0, 0.05, 80) for s in (1, 2, 3)}),
    }
    rows = _family(cells, [("maw", "finetune"), ("maw", "lora")], "nDCG@10", 0.05)
    ft = next(r for r in rows if r["baseline"] == "finetune")
    assert ft["verdict"] == "n.s." and ft["family_size"] == 2
    # the seed-averaged per-query differences and the MDE from their SD
    avg = lambda m: np.mean([[c["per_query"]["nDCG@10"][f"q{i}"] for i in range(80)] for c in cells[m]], 0)  # noqa: E731
    d = avg("maw") - avg("finetune")
    assert math.isclose(ft["sd_diff"], d.std(ddof=1)) and math.isclose(ft["diff"], d.mean(), abs_tol=1e-12)
    assert math.isclose(ft["mde_holm"], mde(d.std(ddof=1), 80, 0.025))
    assert ft["holm_ci_low"] < 0 < ft["holm_ci_high"]  # the interval agrees with "no significant difference"
    s = headline("maw", "finetune", rows)
    assert s.startswith("MAW (maw) showed no significant difference from the strongest capacity-matched")
    assert " matched" not in s and "equivalent" not in s.replace("no equivalence is claimed", "")
    assert f"could have detected a difference of ≥ {ft['mde_holm']:.4f} nDCG@10" in s
    assert "untrained" not in s
    assert "untrained: the selected epoch was 0 in every seed" in headline(
        "maw", "finetune", rows, untrained=["maw"]
    )
    lost = headline("lora", "maw", _family(cells, [("lora", "maw")], "nDCG@10", 0.05))
    assert lost.startswith("MAW (lora) lost to")
    assert "with 80% power the test detects a difference of ≥ " in lost  # the power, also when significant
    assert headline(None, "finetune", rows).startswith("No verdict")
    # with a margin fixed in the grid, the equivalence test decides "equivalent within ±m"
    eq = _family(cells, [("maw", "finetune"), ("maw", "lora")], "nDCG@10", 0.05, margin=0.05)
    assert next(r for r in eq if r["baseline"] == "finetune")["verdict"] == "equivalent"
    assert headline("maw", "finetune", eq).startswith(
        "MAW (maw) was equivalent to the strongest capacity-matched baseline (finetune"
    )
    tight = _family(cells, [("maw", "finetune")], "nDCG@10", 0.05, margin=1e-4)
    assert "Equivalence within ±0.0001 nDCG@10 was not shown" in headline("maw", "finetune", tight)


def test_remaining_cost_projects_from_the_finished_cells_epoch_times():
    """Two arms of 3 configurations, 4 epochs, prune at epoch 1, final seeds (13, 42, 87) with sweep
    seed 42: arm a has one finished cell (epochs of 100 s, one paused epoch of 900 s: the median
    ignores it; epoch-0 validation 20 s, 4 epochs run), arm b none (all arms' medians apply)."""
    from types import SimpleNamespace

    from maw.sweep.pruning import PrunerSpec
    from maw.sweep.study import remaining_cost

    hist = [{"epoch": 0, "val_seconds": 20.0}] + [
        {"epoch": e, "seconds": s} for e, s in ((1, 100.0), (2, 900.0), (3, 100.0), (4, 100.0))
    ]
    done = {"status": "ok", "score": 0.7, "epochs_run": 4, "history": hist}
    missing = {"status": "missing"}
    grid = SimpleNamespace(
        base=SimpleNamespace(train=SimpleNamespace(num_epochs=4, seed=42)),
        pruner=PrunerSpec(min_epochs=1),
        final_seeds=(13, 42, 87),
    )
    left = remaining_cost({"a": [done, missing, missing], "b": [missing] * 3}, grid)
    # a: 2 cells, 20 + 100 each at least, 20 + 400 at most; b: its first runs on (420), 2 x 120 .. 420
    assert left == {
        "sweep_low_s": 2 * 120 + 420 + 2 * 120,
        "sweep_high_s": 5 * 420,
        "final_s": 2 * 420 + 2 * 420,  # 2 seeds other than 42, per arm, 4 epochs (b: num_epochs)
    }
    # final cells already finished (arm a at seed 13) are not projected again
    assert remaining_cost({"a": [done, missing, missing], "b": [missing] * 3}, grid, {"a": {13}})[
        "final_s"
    ] == (420 + 2 * 420)
    assert remaining_cost({"a": [missing]}, grid) is None
    none = SimpleNamespace(**{**vars(grid), "pruner": PrunerSpec(kind="none")})
    assert remaining_cost({"a": [done, missing]}, none)["sweep_low_s"] == 420


def test_pruning_cost_in_seconds_and_in_epochs():
    """A pruned cell would have run as many epochs as the median unpruned cell of its arm; the floor is
    what the best possible successive halving would have spent."""
    from maw.sweep.study import pruning_cost

    def cell(epochs: int, pruned: bool, per_epoch: float) -> dict:
        hist = [{"epoch": e, "seconds": per_epoch} for e in range(1, epochs + 1)]
        return {
            "status": "ok",
            "epochs_run": epochs,
            "pruned": pruned,
            "train_s": epochs * per_epoch,
            "history": hist,
        }

    records = {
        "a": [cell(4, False, 10.0), cell(1, True, 20.0), cell(3, True, 10.0)],
        "b": [{"status": "missing"}],
    }
    assert pruning_cost(records, max_epochs=4) == {
        "train_s": 40 + 20 + 30,
        "unpruned_estimate_s": 40 + 80 + 40,
        "epochs": 8,
        "unpruned_epochs": 12,
        "floor_epochs": 3 + 3,  # all three to epoch 1, the winner on to epoch 4
    }
    assert pruning_cost(records, max_epochs=4, first_rung=2)["floor_epochs"] == 3 * 2 + 2


def test_rungs_below_the_last_epoch():
    from maw.sweep.pruning import PrunerSpec

    assert PrunerSpec(min_epochs=1, reduction_factor=3).rungs(4) == [1, 3]
    assert PrunerSpec(min_epochs=1, reduction_factor=3).rungs(10) == [1, 3, 9]
    assert PrunerSpec(min_epochs=2, reduction_factor=2).rungs(2) == []
    assert PrunerSpec(kind="none").rungs(10) == []


def test_sweep_curves_draw_each_configuration_and_mark_the_pruned(tmp_path, monkeypatch):
    """The figure's data are the cells' validation histories in run order; a pruned configuration
    ends in a cross at its last epoch; the best is thick; the rungs are drawn."""
    from maw.benchmark import plots
    from maw.sweep.study import sweep_curves

    def cell(name, scores, pruned_at=None):
        hist = [{"epoch": e, "val": {"nDCG@10": v, "R@100": 1.0}} for e, v in enumerate(scores)]
        return {
            "cell": name,
            "status": "ok",
            "score": max(scores),
            "history": hist,
            "pruned": pruned_at is not None,
            "pruned_at_epoch": pruned_at,
        }

    records = {
        "lora": [cell("lora-a", [0.70, 0.72, 0.75, 0.76]), cell("lora-b", [0.70, 0.71], pruned_at=1)],
        "maw": [{"cell": "maw-c", "status": "missing"}],
    }
    curves = sweep_curves(records)
    assert curves["maw"] == []
    a, b = curves["lora"]
    assert (a["name"], a["epochs"], a["scores"], a["pruned_at"], a["best"]) == (
        "lora-a",
        [0, 1, 2, 3],
        [0.70, 0.72, 0.75, 0.76],
        None,
        True,
    )
    assert (b["pruned_at"], b["best"]) == (1, False)

    figs = []
    real = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: (figs.append(fig), real(fig, path))[1])
    path = plots.plot_sweep_curves(tmp_path / "curves.png", "t", curves, rungs=[1, 3])
    assert path.read_bytes()[:4] == b"\x89PNG"
    visible = [ax for ax in figs[-1].axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["lora"]  # an arm with nothing finished has no panel
    lines = visible[0].get_lines()
    curves_drawn = [ln for ln in lines if ln.get_linestyle() == "-"]
    assert [ln.get_linewidth() for ln in curves_drawn] == [2.6, 1.2]  # the best is thick
    crosses = [ln for ln in lines if ln.get_marker() == "x"]
    assert (
        len(crosses) == 1 and list(crosses[0].get_xdata()) == [1] and list(crosses[0].get_ydata()) == [0.71]
    )
    rung_lines = [ln for ln in lines if ln.get_linestyle() == ":"]
    assert sorted(ln.get_xdata()[0] for ln in rung_lines) == [1, 3]
    labels = [t.get_text() for t in visible[0].get_legend().get_texts()]
    assert labels == ["lora-a: 0.7600 best", "lora-b: 0.7100 (pruned @ 1)"]


def test_a_resumed_cell_counts_the_processes_before_its_resume():
    """full resumed at epoch 3 (epochs 0-2 ran in an earlier process): its wall adds their seconds."""
    from maw.sweep.study import cell_wall, earlier_seconds

    hist = [{"epoch": 0, "val_seconds": 10.0}] + [{"epoch": e, "seconds": 100.0} for e in (1, 2, 3, 4)]
    assert earlier_seconds(hist, None) == 0.0
    assert earlier_seconds(hist, {"epoch": 3, "step_in_epoch": 0}) == 10.0 + 2 * 100.0
    resumed = {"cell_s": 205.0, "history": hist, "resumed_from": {"epoch": 3, "step_in_epoch": 0}}
    assert cell_wall(resumed) == 205.0 + 210.0
    assert cell_wall({"cell_s": 415.0, "history": hist, "resumed_from": None}) == 415.0
