"""The sweep grid: a TOML file, its arms and the equal-budget list of configurations to train.

A grid file holds the settings every cell shares (the tables of ``maw benchmark --config``:
top-level ``datasets``/``quick``/``preset``, ``[data]``, ``[model]``, ``[maw]``, ``[train]``,
``[eval]``, ``[runtime]``) and a ``[sweep]`` table::

    [sweep]
    budget = 8            # configurations per arm (the same for every arm)
    sample_seed = 0       # seed of the random sample when an arm's grid is larger than the budget
    final_seeds = [13, 42, 87]
    note = "..."          # optional: a caveat printed at the top of both reports
    pruner = "successive-halving"   # stop hopeless configurations early (or "none"; maw.sweep.pruning)
    prune_min_epochs = 1
    prune_reduction_factor = 3
    reference = "st-finetune"       # the final also trains + times sentence-transformers' fine-tune
    goals = {full = 0.70}           # test nDCG@10 goals REPORT.md checks (arm = value)

    [sweep.arms.lora]     # an arm: a name, a library method (default: the name) and its options
    lora_learning_rate = [1e-4, 5e-4, 1e-3]     # a list is an axis of the grid
    lora_rank = 8                                # a scalar is fixed for this arm

    [sweep.arms.maw-all]
    method = "maw"
    finetune_layers = "all"                      # MAW on top of a fine-tune of every layer
    maw_layers = ["4", "5", "6"]

Options of an arm are field names of :class:`maw.config.MAWConfig` and :class:`maw.config.TrainConfig`
(the same names as the flags, with underscores); the data, model and evaluation settings are shared
by every arm so that all cells see the same splits and the same encoder.

Equal tuning budget: an arm's grid is the product of its axes; an arm gets its whole grid when it
has at most ``budget`` points, else a sample of ``budget`` points drawn with
``random.Random(f"{sample_seed}:{arm}")`` (independent of the other arms). No arm is tuned more than
another; an arm with a smaller grid gets fewer configurations and the leaderboard says so.

Order: the cells run round-robin over the arms (the first configuration of every arm, then the
second, ...), so a sweep stopped part-way has tuned every arm about equally.

The cell of a configuration is named ``<arm>-<id>``, ``id`` a hash of its plan without runtime
fields (:func:`cell_id`), so a rerun with the same settings finds its finished cells, and a
changed setting makes new cells. The id names the dataset by its key and the model by its Hub id
or content hash, never by a path: a study folder and its data can move and resume.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maw.benchmark.cells import dataset_key
from maw.benchmark.presets import benchmark_config
from maw.config import (
    TRAINED_METHODS,
    BenchmarkConfig,
    ConfigError,
    MAWConfig,
    TrainConfig,
    deep_merge,
    default_model,
    load_toml,
)
from maw.plan import Plan
from maw.sweep.pruning import PrunerSpec
from maw.utils.io import fingerprint, sha256_file

SWEEP_KEYS = (
    "budget",
    "sample_seed",
    "final_seeds",
    "note",
    "arms",
    "pruner",
    "prune_min_epochs",
    "prune_reduction_factor",
    "reference",
    "goals",
)
DEFAULT_FINAL_SEEDS = (13, 42, 87)
# options an arm may set or sweep: the method's own settings (data / model / eval are shared)
ARM_SECTIONS = {"maw": MAWConfig, "train": TrainConfig}
NOT_SWEPT = ("seed",)  # tuning the training seed is selecting on noise
LORA_FIELDS = ("lora_layers", "lora_rank", "lora_alpha", "lora_dropout", "lora_learning_rate")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_+.-]*$")


def _field_sections() -> dict[str, str]:
    """field name -> section of the options an arm may use (runtime-only fields excluded)."""
    out: dict[str, str] = {}
    for section, cls in ARM_SECTIONS.items():
        for f in dataclasses.fields(cls):
            if not f.metadata.get("runtime"):
                out[f.name] = section
    return out


@dataclass(frozen=True)
class Cell:
    """One configuration of one arm: ``point`` (field -> value) on top of the grid's base config."""

    arm: str
    method: str  # the library method (lora | finetune | full | maw)
    point: tuple[tuple[str, Any], ...]  # the arm's fixed options and this configuration's axis values
    axes: tuple[str, ...]  # the swept fields (shown in the leaderboard)
    cfg: BenchmarkConfig  # the base config with ``point`` applied
    id: str  # hash of the plan (see cell_id)

    @property
    def name(self) -> str:
        return f"{self.arm}-{self.id}"

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.point)

    def label(self) -> str:
        """The swept values, e.g. ``learning_rate=2e-05, maw_layers=6`` (``-`` when nothing is swept)."""
        opts = self.options
        return ", ".join(f"{k}={opts[k]}" for k in self.axes) or "-"

    def plan(self, seed: int | None = None) -> Plan:
        """The cell's plan (training seed ``seed``, default the grid's ``train.seed``)."""
        from maw.benchmark.runner import cell_plan

        return cell_plan(
            self.cfg, self.cfg.datasets[0], self.method, self.cfg.train.seed if seed is None else seed
        )


@dataclass(frozen=True)
class Arm:
    name: str
    method: str
    fixed: dict[str, Any]
    axes: dict[str, list[Any]]

    @property
    def size(self) -> int:
        n = 1
        for values in self.axes.values():
            n *= len(values)
        return n

    def points(self) -> list[dict[str, Any]]:
        """Every configuration of the arm's grid, in axis order (the first axis varies slowest)."""
        names = list(self.axes)
        return [
            {**self.fixed, **dict(zip(names, values, strict=True))}
            for values in itertools.product(*(self.axes[n] for n in names))
        ]


@dataclass(frozen=True)
class Grid:
    """A parsed grid file: the base config, the arms, the budget and the cells to train."""

    path: str
    base: BenchmarkConfig
    arms: tuple[Arm, ...]
    budget: int
    sample_seed: int
    final_seeds: tuple[int, ...]
    cells: tuple[Cell, ...]
    raw: dict[str, Any]
    note: str = ""
    pruner: PrunerSpec = PrunerSpec(kind="none")
    reference: bool = False  # the final also times sentence-transformers' fine-tune (maw.sweep.reference)
    goals: tuple[tuple[str, float], ...] = ()  # (arm, test nDCG@10 goal) shown in REPORT.md

    @property
    def dataset(self) -> str:
        return self.base.datasets[0]

    @property
    def key(self) -> str:
        return dataset_key(self.dataset)

    @property
    def file_label(self) -> str:
        """The grid file as results show it: relative to the working directory, else its name."""
        p = Path(self.path)
        try:
            return str(p.resolve().relative_to(Path.cwd().resolve()))
        except ValueError:
            return p.name

    def arm_cells(self, arm: str) -> list[Cell]:
        return [c for c in self.cells if c.arm == arm]


def select_points(arm: Arm, budget: int, sample_seed: int) -> list[dict[str, Any]]:
    """The arm's whole grid when it has <= budget points, else a seeded sample of ``budget`` of them
    in the sample's (random) order, so the first cells of a partial sweep are spread over the grid."""
    points = arm.points()
    if len(points) <= budget:
        return points
    rng = random.Random(f"{sample_seed}:{arm.name}")
    return [points[i] for i in rng.sample(range(len(points)), budget)]


def non_default(cfg: Any) -> dict[str, Any]:
    """The fields of a (nested) config dataclass that differ from their defaults, runtime-only fields
    left out: what makes this configuration this one. A field added to the library later, with a
    default that keeps the old behaviour, leaves it unchanged."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        if f.metadata.get("runtime"):
            continue
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            sub = non_default(value)
            if sub:
                out[f.name] = sub
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        if value != default:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def cell_id(plan: Plan) -> str:
    """A short hash of what defines the experiment: the plan's non-default, non-runtime values
    (:func:`non_default`), with the dataset named by its key (``../data/scifact`` and ``scifact``
    give the same id; its content fingerprint is recorded in every cell and checked on resume,
    :func:`maw.sweep.runner.check_fingerprints`) and the backbone by :func:`model_identity`, so the
    id does not depend on where the data or the model lives."""
    values = non_default(plan)
    data = values.get("data", {})
    if "dataset" in data:
        data["dataset"] = dataset_key(data["dataset"])
    model = values.get("model", {})
    if "model" in model:
        model["model"] = model_identity(model["model"])
    return fingerprint([json.dumps(values, sort_keys=True, default=str)])[:10]


@functools.lru_cache(maxsize=16)
def model_identity(model: str) -> str:
    """The backbone as an experiment sees it: ``<default>`` for the default backbone, a Hub id as
    given, a local folder by the hash of its configuration and weight files (not its path)."""
    if model == default_model():
        return "<default>"
    folder = Path(model)
    if not folder.is_dir():
        return model  # a Hub id
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and (p.suffix in (".safetensors", ".bin") or p.name in ("config.json", "tokenizer.json"))
    )
    return "sha256:" + fingerprint([f"{p.name}={sha256_file(p)}" for p in files])


def _nested(options: dict[str, Any], sections: dict[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, value in options.items():
        out.setdefault(sections[name], {})[name] = value
    return out


def _parse_arm(name: str, table: Any, where: str, sections: dict[str, str]) -> Arm:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [sweep.arms.{name}] must be a table of options")
    if not _NAME.match(name):
        raise ConfigError(f"{where}: arm name {name!r}: use letters, digits and _ + . - (it names files)")
    table = dict(table)
    method = table.pop("method", name)
    if method not in TRAINED_METHODS:
        raise ConfigError(
            f"{where}: [sweep.arms.{name}] method {method!r}: choose one of {', '.join(TRAINED_METHODS)} "
            "(bm25 and zeroshot have nothing to tune; the final adds them)"
        )
    fixed, axes = {}, {}
    for key, value in table.items():
        if key not in sections:
            known = ", ".join(sorted(sections))
            raise ConfigError(f"{where}: [sweep.arms.{name}] unknown option {key!r}; arms take: {known}")
        if key in NOT_SWEPT:
            raise ConfigError(
                f"{where}: [sweep.arms.{name}] {key!r}: the training seed is not tuned (set [train] seed "
                "for the sweep and --seeds for the final)"
            )
        if sections[key] == "maw" and method != "maw":
            raise ConfigError(
                f"{where}: [sweep.arms.{name}] {key!r} is a MAW option; method {method!r} has no MAW"
            )
        if key in LORA_FIELDS and method not in ("lora", "maw"):
            raise ConfigError(
                f"{where}: [sweep.arms.{name}] {key!r} is a LoRA option; method {method!r} has no adapters"
            )
        if key in LORA_FIELDS and method == "maw" and "lora_layers" not in table:
            raise ConfigError(
                f"{where}: [sweep.arms.{name}] {key!r}: MAW + LoRA needs lora_layers in the arm (and "
                'finetune_layers = "none" to train the MAW routers and the adapters only)'
            )
        if key == "finetune_layers" and method not in ("finetune", "maw"):
            raise ConfigError(
                f"{where}: [sweep.arms.{name}] finetune_layers: method {method!r} does not use it"
            )
        if isinstance(value, list):
            if not value:
                raise ConfigError(f"{where}: [sweep.arms.{name}] {key}: an axis needs at least one value")
            if len(set(map(repr, value))) != len(value):
                raise ConfigError(f"{where}: [sweep.arms.{name}] {key}: repeated values {value}")
            axes[key] = value
        else:
            fixed[key] = value
    return Arm(name=name, method=method, fixed=fixed, axes=axes)


def load_grid(path: str | Path, overrides: dict[str, Any] | None = None) -> Grid:
    """Parse and validate a grid file; ``overrides`` are the command-line options (nested like the
    dataclasses) and win over the file's shared settings. Every cell's plan is resolved here, so a
    bad option fails before anything runs."""
    path = Path(path)
    where = f"--config {path}"
    raw = load_toml(path)
    sweep = raw.get("sweep")
    if not isinstance(sweep, dict):
        raise ConfigError(f"{where}: no [sweep] table (see examples/sweeps/demo.toml)")
    unknown = sorted(set(sweep) - set(SWEEP_KEYS))
    if unknown:
        raise ConfigError(f"{where}: [sweep] unknown key(s) {unknown}; known: {', '.join(SWEEP_KEYS)}")
    budget = sweep.get("budget")
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
        raise ConfigError(f"{where}: [sweep] budget must be an integer >= 1, got {budget!r}")
    sample_seed = sweep.get("sample_seed", 0)
    if not isinstance(sample_seed, int):
        raise ConfigError(f"{where}: [sweep] sample_seed must be an integer, got {sample_seed!r}")
    try:
        final_seeds = tuple(int(s) for s in sweep.get("final_seeds", DEFAULT_FINAL_SEEDS))
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: [sweep] final_seeds must be a list of integers") from None
    arms_table = sweep.get("arms")
    if not isinstance(arms_table, dict) or not arms_table:
        raise ConfigError(f"{where}: [sweep.arms.<name>] tables are needed (one per method to tune)")

    overrides = dict(overrides or {})
    sections = _field_sections()
    arms = tuple(_parse_arm(name, t, where, sections) for name, t in arms_table.items())
    for arm in arms:  # a flag must not silently pin what the grid sweeps
        for key in {*arm.axes, *arm.fixed}:
            if key in (overrides.get(sections[key]) or {}):
                raise ConfigError(
                    f"--{key.replace('_', '-')}: set by arm {arm.name!r} of {path}; remove the flag or the option"
                )
    shared = {k: v for k, v in raw.items() if k != "sweep"}
    base_dict = deep_merge(shared, overrides)
    base = _resolve(base_dict, where)
    if len(base.datasets) != 1:
        raise ConfigError(
            f"--datasets: a sweep tunes on one dataset, got {list(base.datasets)}; run one sweep per dataset "
            "(each with its own --out results/<dataset>/sweep)"
        )
    per_arm: list[list[Cell]] = []
    for arm in arms:
        per_arm.append([])
        for point in select_points(arm, budget, sample_seed):
            cfg = _resolve(
                deep_merge(base_dict, _nested(point, sections)), f"{where} [sweep.arms.{arm.name}]"
            )
            cell = Cell(arm.name, arm.method, tuple(point.items()), tuple(arm.axes), cfg, "")
            cell = dataclasses.replace(cell, id=cell_id(cell.plan()))
            per_arm[-1].append(cell)
    # round-robin over the arms: an interrupted sweep has tuned every arm about equally
    cells = [c for row in itertools.zip_longest(*per_arm) for c in row if c is not None]
    ids = [c.name for c in cells]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ConfigError(f"{where}: configurations with the same plan {dup} (an axis value changes nothing)")
    note = str(sweep.get("note", "")).strip()
    pruner = PrunerSpec(
        kind=sweep.get("pruner", "successive-halving"),
        min_epochs=sweep.get("prune_min_epochs", 1),
        reduction_factor=sweep.get("prune_reduction_factor", 3),
    )
    reference = sweep.get("reference", "none")
    if reference not in ("none", "st-finetune"):
        raise ConfigError(f'{where}: [sweep] reference: "none" or "st-finetune", got {reference!r}')
    goals = sweep.get("goals", {})
    names = {a.name for a in arms}
    if not isinstance(goals, dict) or any(
        k not in names or not isinstance(v, int | float) or isinstance(v, bool) for k, v in goals.items()
    ):
        raise ConfigError(
            f"{where}: [sweep] goals: a table arm = test nDCG@10 goal (arms: {sorted(names)}), got {goals!r}"
        )
    return Grid(
        str(path),
        base,
        arms,
        budget,
        sample_seed,
        final_seeds,
        tuple(cells),
        raw,
        note,
        pruner,
        reference == "st-finetune",
        tuple((k, float(v)) for k, v in goals.items()),
    )


def _resolve(merged: dict[str, Any], where: str) -> BenchmarkConfig:
    """``benchmark_config`` with ``merged`` as the given options (presets below, nothing above)."""
    try:
        return benchmark_config(merged)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
