"""The grid file: equal budget per arm, seeded samples, stable cell ids, clear errors."""

from __future__ import annotations

import pytest

from conftest import grid_text
from maw.config import ConfigError
from maw.sweep.grid import load_grid

ARMS = """
[sweep.arms.lora]
lora_learning_rate = [1e-4, 5e-4]
[sweep.arms.finetune]
learning_rate = [1e-5, 2e-5, 5e-5]
finetune_layers = ["1", "2", "all"]
[sweep.arms.full]
learning_rate = [1e-5, 2e-5, 3e-5, 5e-5, 1e-4]
[sweep.arms.maw]
maw_layers = ["1", "2"]
depth_dim = [2, 4]
granularity = ["query", "head"]
policy_lr = [1e-3, 3e-3]
[sweep.arms.maw-all]
method = "maw"
finetune_layers = "all"
maw_layers = ["1", "2"]
"""


def write(tmp_path, data, model, arms=ARMS, budget=4):
    path = tmp_path / "grid.toml"
    path.write_text(grid_text(data, model, arms, budget=budget))
    return path


def test_same_budget_for_every_arm(tmp_path, tiny_data, tiny_model):
    grid = load_grid(write(tmp_path, tiny_data, tiny_model))
    counts = {a.name: len(grid.arm_cells(a.name)) for a in grid.arms}
    sizes = {a.name: a.size for a in grid.arms}
    assert sizes == {"lora": 2, "finetune": 9, "full": 5, "maw": 16, "maw-all": 2}
    # min(grid size, budget): no arm gets more configurations than another's budget
    assert counts == {"lora": 2, "finetune": 4, "full": 4, "maw": 4, "maw-all": 2}
    again = load_grid(write(tmp_path, tiny_data, tiny_model))
    assert [c.name for c in again.cells] == [c.name for c in grid.cells]  # seeded: the same sample
    # round-robin: the first configuration of every arm, then the second, ...
    assert [c.arm for c in grid.cells[:7]] == ["lora", "finetune", "full", "maw", "maw-all"] + [
        "lora",
        "finetune",
    ]
    assert [c.arm for c in grid.cells[10:]] == ["finetune", "full", "maw", "finetune", "full", "maw"]
    other = load_grid(write(tmp_path, tiny_data, tiny_model, ARMS.replace("maw-all", "zzz")))
    # an arm's sample does not depend on the other arms
    assert [c.name for c in other.arm_cells("maw")] == [c.name for c in grid.arm_cells("maw")]
    # the options reach the plans
    for cell in grid.arm_cells("maw-all"):
        plan = cell.plan()
        assert plan.layers.trainable == (1, 2) and plan.layers.maw == (int(cell.options["maw_layers"]),)
    lrs = sorted(c.plan().train.learning_rate for c in grid.arm_cells("full"))
    assert len(set(lrs)) == 4 and set(lrs) <= {1e-5, 2e-5, 3e-5, 5e-5, 1e-4}


def test_bigger_budget_takes_whole_grids(tmp_path, tiny_data, tiny_model):
    grid = load_grid(write(tmp_path, tiny_data, tiny_model, budget=100))
    assert {a.name: len(grid.arm_cells(a.name)) for a in grid.arms} == {a.name: a.size for a in grid.arms}


def test_maw_plus_lora_is_an_arm(tmp_path, tiny_data, tiny_model):
    arm = '[sweep.arms.maw-lora]\nmethod = "maw"\nfinetune_layers = "none"\nlora_layers = "all"\nlora_rank = [4, 8]\n'
    grid = load_grid(write(tmp_path, tiny_data, tiny_model, arm))
    plans = [c.plan() for c in grid.arm_cells("maw-lora")]
    assert len(plans) == 2 and {p.train.lora_rank for p in plans} == {4, 8}
    assert all(p.layers.lora == (1, 2) and p.layers.trainable == () and p.layers.maw for p in plans)


@pytest.mark.parametrize(
    "arms, match",
    [
        ("[sweep.arms.lora]\ndepth_dim = [2, 4]\n", "MAW option"),
        ("[sweep.arms.maw]\nlora_rank = [4, 8]\n", "MAW \\+ LoRA needs lora_layers"),
        ("[sweep.arms.full]\nlora_rank = [4, 8]\n", "LoRA option; method 'full' has no adapters"),
        ("[sweep.arms.full]\nseed = [1, 2]\n", "seed is not tuned"),
        ("[sweep.arms.full]\nlearning_rat = [1e-5]\n", "unknown option 'learning_rat'"),
        ("[sweep.arms.bm25]\n", "bm25 and zeroshot have nothing to tune"),
        ("[sweep.arms.maw]\ndepth_dim = [3]\n", "depth-dim"),
    ],
)
def test_bad_grids_are_clear_errors(tmp_path, tiny_data, tiny_model, arms, match):
    with pytest.raises(ConfigError, match=match):
        load_grid(write(tmp_path, tiny_data, tiny_model, arms))


def test_a_flag_cannot_pin_a_swept_option(tmp_path, tiny_data, tiny_model):
    path = write(tmp_path, tiny_data, tiny_model)
    with pytest.raises(ConfigError, match="--learning-rate: set by arm 'finetune'"):
        load_grid(path, {"train": {"learning_rate": 1e-4}})
    grid = load_grid(path, {"train": {"num_epochs": 3}})  # a shared setting: fine, and it changes the ids
    assert all(c.plan().train.num_epochs == 3 for c in grid.cells)
    assert not {c.name for c in grid.cells} & {c.name for c in load_grid(path).cells}


def test_one_dataset_per_sweep(tmp_path, tiny_data, tiny_model):
    with pytest.raises(ConfigError, match="one dataset"):
        load_grid(write(tmp_path, tiny_data, tiny_model), {"datasets": f"{tiny_data},demo"})


def test_cell_ids_follow_what_changes_results(tmp_path, tiny_data, tiny_model):
    import dataclasses

    from maw.sweep.grid import cell_id

    plan = load_grid(write(tmp_path, tiny_data, tiny_model)).cells[0].plan()
    assert cell_id(plan.with_runtime(device="cpu", num_threads=2)) == cell_id(plan)  # where, not what
    other = dataclasses.replace(plan, train=dataclasses.replace(plan.train, weight_decay=0.1))
    assert cell_id(other) != cell_id(plan)
