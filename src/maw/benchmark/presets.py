"""The benchmark's presets: defaults < ``--quick`` < ``--preset`` < ``--config FILE.toml`` < flags.

``maw benchmark`` and ``maw sweep`` build their configs with :func:`benchmark_config`: the layers
every command merges (``maw.config``: the TOML file, then the flags) with these presets below.

``--quick`` is a documented small setting for a first try (minutes, not hours, on a laptop):

==========================  =========  ==============================================
option                      quick      why
==========================  =========  ==============================================
data.train_samples          200        200 training queries (seeded subsample)
data.val_samples            50         50 validation queries
data.test_samples           all        the test split is never cut: the numbers stay comparable
train.num_epochs            1          one pass
train.patience              1
model.query_max_length      32         queries are short
model.doc_max_length        128        half the default 256: ~2x faster encoding (lowers scores a bit)
train.checkpoint_every      50         optimiser steps between ``latest`` checkpoints
eval.latency_queries        20         queries timed one at a time (instead of 50)
==========================  =========  ==============================================

``maw benchmark`` with no options at all runs the built-in demo collection with this preset.

``--preset smoke|medium|full`` are the size presets of the original harness, for corpora far
larger than a first try can afford (MS MARCO: 8.8M passages). ``smoke`` and ``medium`` subsample
the corpus (``data.corpus_size``, :func:`maw.data.subsample.subsample_corpus`): every document
judged for a train, val or test query of the run is kept, plus a random sample of the rest,
seeded by ``data.split_seed``, up to ``corpus_size`` documents. Scores on a subsampled corpus are
not comparable with full-corpus numbers; every cell records the subsample in
``dataset_info["corpus_subsample"]`` and the report says so in its first lines. "default" below
means the value is left to the layers underneath (the library default, or ``--quick``):

==========================  =======  =======  =======  ==============================================
option                      smoke    medium   full     why
==========================  =======  =======  =======  ==============================================
data.corpus_size            2000     100000   all      judged documents + a seeded sample of the rest
data.train_samples          200      1000     default  training queries (seeded subsample)
data.val_samples            50       200      default  validation queries
data.test_samples           200      all      all      smoke: 200 test queries (seeded), room for the sample
train.num_epochs            1        default  default  smoke: one pass, as ``--quick``
train.patience              1        default  default
model.query_max_length      32       default  default  smoke: ``--quick``'s lengths
model.doc_max_length        128      default  default
train.checkpoint_every      50       default  default
eval.latency_queries        20       default  default
==========================  =======  =======  =======  ==============================================

``full`` is the whole corpus with the library defaults: the numbers to compare with papers. A
preset and ``--quick`` may be combined: the preset's values win over ``--quick``'s.

Below everything sits one benchmark default that differs from the library's: the trainer's
frozen-prefix cache is stored in float32 (``train.prefix_cache_dtype``), because the benchmark
also computes the *test* corpus embeddings of the trained methods from that cache (see
``maw.training.prefix_cache.PrefixCachedRetriever``): with float32 they equal a full encode up to float
rounding. It costs twice the disk (about 1.9 GB for SciFact at 256 tokens).

Every value the user gives (in the TOML file or as a flag) wins over the presets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from maw.config import BenchmarkConfig, ConfigError, build_config, given_layers, merge_layers

BENCHMARK_DEFAULTS: dict[str, Any] = {"train": {"prefix_cache_dtype": "float32"}}

QUICK_PRESET: dict[str, Any] = {
    "data": {"train_samples": 200, "val_samples": 50, "test_samples": None},
    "train": {"num_epochs": 1, "patience": 1, "checkpoint_every": 50},
    "model": {"query_max_length": 32, "doc_max_length": 128},
    "eval": {"latency_queries": 20},
}

# the size presets of the module doc's second table (a test checks that the two agree)
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "data": {"corpus_size": 2000, "train_samples": 200, "val_samples": 50, "test_samples": 200},
        "train": {"num_epochs": 1, "patience": 1, "checkpoint_every": 50},
        "model": {"query_max_length": 32, "doc_max_length": 128},
        "eval": {"latency_queries": 20},
    },
    "medium": {
        "data": {"corpus_size": 100_000, "train_samples": 1000, "val_samples": 200, "test_samples": None}
    },
    "full": {"data": {"corpus_size": None, "test_samples": None}},
}


def _highest(layers: list[dict[str, Any]], key: str) -> Any:
    """The value of top-level ``key`` in the highest layer that says something (None: none does)."""
    value = None
    for layer in layers:
        if layer.get(key) is not None:
            value = layer[key]
    return value


def benchmark_layers(
    overrides: dict[str, Any] | None = None,
    config_file: str | Path | None = None,
    base: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The layers of ``maw benchmark`` / ``maw sweep``, lowest first: ``BENCHMARK_DEFAULTS``, the quick
    preset (when ``quick`` is on: the flag, else the TOML file, else ``base``), the size preset
    (``preset``, chosen the same way), then what the command is given (``maw.config.given_layers``:
    ``base``, the config saved in a run folder being resumed; the TOML file; ``overrides``, the
    options the user typed), and last the two choices made."""
    given = given_layers(overrides, config_file, base)
    quick = bool(_highest(given, "quick"))
    preset = _highest(given, "preset")
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"--preset: unknown value {preset!r}; choose one of {', '.join(PRESETS)}")
    presets = [BENCHMARK_DEFAULTS, QUICK_PRESET if quick else {}, PRESETS[preset] if preset else {}]
    return [*presets, *given, {"quick": quick, "preset": preset}]


def merged_config(
    overrides: dict[str, Any] | None = None,
    config_file: str | Path | None = None,
    base: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The layers of :func:`benchmark_config` merged into one nested dict (not validated yet)."""
    return merge_layers(benchmark_layers(overrides, config_file, base))


def benchmark_config(
    overrides: dict[str, Any] | None = None,
    config_file: str | Path | None = None,
    base: dict[str, Any] | None = None,
) -> BenchmarkConfig:
    """The validated configs of ``maw benchmark`` / ``maw sweep`` (:func:`benchmark_layers`)."""
    return build_config(benchmark_layers(overrides, config_file, base), config_file)
