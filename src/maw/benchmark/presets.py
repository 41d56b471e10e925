"""Resolving the benchmark configuration: defaults < ``--quick`` preset < ``--config FILE.toml`` < flags.

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
latency_queries             20         queries timed one at a time (instead of 50)
==========================  =========  ==============================================

``maw benchmark`` with no options at all runs the built-in demo collection with this preset.

Below everything sits one benchmark default that differs from the library's: the trainer's
frozen-prefix cache is stored in float32 (``train.prefix_cache_dtype``), because the benchmark
also computes the *test* corpus embeddings of the trained methods from that cache (see
``maw.benchmark.runner.PrefixCachedRetriever``): with float32 they equal a full encode up to float
rounding. It costs twice the disk (about 1.9 GB for SciFact at 256 tokens).

Every value the user gives (in the TOML file or as a flag) wins over the preset.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

from maw.config import BenchmarkConfig, ConfigError, from_dict, load_toml, to_dict

BENCHMARK_DEFAULTS: dict[str, Any] = {"train": {"prefix_cache_dtype": "float32"}}

QUICK_PRESET: dict[str, Any] = {
    "data": {"train_samples": 200, "val_samples": 50, "test_samples": None},
    "train": {"num_epochs": 1, "patience": 1, "checkpoint_every": 50},
    "model": {"query_max_length": 32, "doc_max_length": 128},
    "latency_queries": 20,
}


def split_list(text: str) -> list[str]:
    """ "a, b,c" -> ["a", "b", "c"] (empty items dropped)."""
    return [x.strip() for x in str(text).split(",") if x.strip()]


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``override``, recursing into nested dicts (neither is modified)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    """The raw tables of a ``--config`` file (validated by ``maw.config.load_toml``: unknown keys,
    bad TOML and missing files raise ConfigError naming the file)."""
    load_toml(path)
    with Path(path).open("rb") as fh:
        return tomllib.load(fh)


def resolve_config(
    overrides: dict[str, Any] | None = None,
    config_file: str | Path | None = None,
    base: dict[str, Any] | None = None,
) -> BenchmarkConfig:
    """Build the run's BenchmarkConfig.

    Layers, lowest first: dataclass defaults, ``BENCHMARK_DEFAULTS``, the quick preset (when ``quick`` is on: the flag, else
    the TOML file, else ``base``), ``base`` (the resolved config saved in a run folder being resumed),
    the TOML file, ``overrides`` (the options the user typed, nested like the dataclasses, e.g.
    ``{"train": {"num_epochs": 2}}``). Returns a validated config.
    """
    overrides = overrides or {}
    base = base or {}
    file_layer = read_toml(config_file) if config_file else {}
    quick = False
    for layer in (base, file_layer, overrides):  # the highest layer that says something wins
        if layer.get("quick") is not None:
            quick = bool(layer["quick"])
    merged = to_dict(BenchmarkConfig())
    for layer in (BENCHMARK_DEFAULTS, QUICK_PRESET if quick else {}, base, file_layer, overrides):
        merged = deep_merge(merged, layer)
    merged["quick"] = quick
    for key in ("datasets", "methods", "seeds"):  # "a,b" in a TOML file is accepted like the flags
        if isinstance(merged.get(key), str):
            merged[key] = split_list(merged[key])
    try:
        merged["seeds"] = [int(s) for s in merged["seeds"]]
    except (TypeError, ValueError):
        raise ConfigError(f"--seeds: expected integers, got {merged['seeds']!r}") from None
    try:
        cfg = from_dict(BenchmarkConfig, merged)
    except TypeError as exc:  # e.g. a table given as a scalar
        raise ConfigError(f"--config: {exc}") from None
    cfg.validate()
    return cfg


# ``maw benchmark`` flag -> dotted config field (flags left at None are not overrides).
FLAG_PATHS: dict[str, str] = {
    "datasets": "datasets",
    "methods": "methods",
    "seeds": "seeds",
    "out": "out",
    "run_name": "run_name",
    "quick": "quick",
    "tracker": "tracker",
    "data_dir": "data.data_dir",
    "train_samples": "data.train_samples",
    "val_samples": "data.val_samples",
    "test_samples": "data.test_samples",
    "model": "model.model",
    "num_layers": "model.num_layers",
    "query_max_length": "model.query_max_length",
    "doc_max_length": "model.doc_max_length",
    "maw_layers": "maw.maw_layers",
    "depth_dim": "maw.depth_dim",
    "router": "maw.router",
    "granularity": "maw.granularity",
    "num_epochs": "train.num_epochs",
    "batch_size": "train.batch_size",
    "learning_rate": "train.learning_rate",
    "lora_learning_rate": "train.lora_learning_rate",
    "policy_lr": "maw.policy_lr",
    "finetune_layers": "train.finetune_layers",
    "lora_layers": "train.lora_layers",
    "device": "train.device",
    "eval_batch_size": "eval.eval_batch_size",
    "top_k": "eval.top_k",
}


def overrides_from_flags(flags: dict[str, Any]) -> dict[str, Any]:
    """Nested overrides from the flags the user gave (``None`` = not given). Lists: "a,b" strings."""
    out: dict[str, Any] = {}
    for name, value in flags.items():
        if value is None:
            continue
        if name not in FLAG_PATHS:
            raise ConfigError(f"--{name.replace('_', '-')}: not a benchmark option")
        if name in ("datasets", "methods", "seeds") and isinstance(value, str):
            value = split_list(value)
            if name == "seeds":
                try:
                    value = [int(v) for v in value]
                except ValueError:
                    raise ConfigError(
                        f"--seeds: expected comma-separated integers, got {flags[name]!r}"
                    ) from None
        node = out
        *parents, leaf = FLAG_PATHS[name].split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out
