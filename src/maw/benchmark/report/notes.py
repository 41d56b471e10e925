"""The warnings a reader must see before any figure: subsampled corpora, missing or failed cells,
a single seed, and how the trained cells selected their epoch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from maw.evaluation.metrics import SELECTION_METRIC


def run_notes(missing: list[dict[str, Any]], seeds: Sequence[int], n_configured: int | None) -> list[str]:
    """The warnings a reader must see first: missing cells and a single seed."""
    notes = []
    if missing:
        total = f" of {n_configured}" if n_configured else ""
        lines = [
            f"{m['dataset']} {m['method']} seed {m['seed']}: "
            + ("not on disk" if m["status"] == "not on disk" else f"failed ({m['error']})")
            for m in missing
        ]
        notes.append(
            f"INCOMPLETE RUN: {len(missing)}{total} configured cells (datasets x methods x seeds in config.json) "
            "are missing or failed; the figures below come from the finished cells only:\n"
            + "\n".join(f"  - {line}" for line in lines)
        )
    if len(seeds) == 1:
        notes.append(
            f"ONE SEED ({seeds[0]}): every trained method is a single training run, so training variance is "
            "unknown; the figures are single runs, not mean ± std."
        )
    return notes


def subsample_notes(reports: list[dict[str, Any]], config: dict[str, Any] | None) -> list[str]:
    """The first warning of a report: the datasets whose corpus was subsampled (a size preset or
    ``data.corpus_size``; ``dataset_info["corpus_subsample"]``, see :mod:`maw.data.subsample`)."""
    lines = []
    for rep in reports:
        sub = (rep.get("dataset_info") or {}).get("corpus_subsample")
        if sub:
            lines.append(
                f"{rep['dataset']}: {sub['documents']:,} of {sub['of']:,} documents (seed {sub['seed']}): "
                f"all {sub['judged']:,} documents judged for the train, val and test queries used, plus "
                f"{sub['random']:,} drawn at random from the rest"
                + (
                    f" ({sub['judged_absent']:,} judged ids are not in the corpus)"
                    if sub.get("judged_absent")
                    else ""
                )
            )
    if not lines:
        return []
    preset = (config or {}).get("preset")
    how = f"--preset {preset}" if preset else "data.corpus_size"
    return [
        f"SUBSAMPLED CORPUS ({how}): scores are not comparable with full-corpus numbers (with fewer "
        "distractors they are usually higher):\n" + "\n".join(f"  - {line}" for line in lines)
    ]


def validation_notes(cells: list[dict[str, Any]]) -> list[str]:
    """How the trained cells selected their epoch: validation on the full corpus or on a pool
    (``train_setup["validation"]``, see :mod:`maw.training.validation`), per dataset."""
    kinds: dict[str, set[str]] = {}
    for c in cells:
        setup = c.get("train_setup") or {}
        v, n = setup.get("validation"), setup.get("validation_documents")
        if v and v == "full corpus" and n:
            v = f"full corpus ({n:,} documents)"
        if v and c.get("status") == "ok":
            kinds.setdefault(c["dataset"], set()).add(v)
    if not kinds:
        return []
    lines = [f"{ds}: {'; '.join(sorted(v))}" for ds, v in sorted(kinds.items())]
    pooled = any("pool" in v for vs in kinds.values() for v in vs)
    head = f"Model selection (early stopping, best epoch) used validation {SELECTION_METRIC} retrieved from"
    if pooled:
        head += " (a pool re-ranks judged + BM25 documents: its scores are higher than full-corpus ones)"
    return [head + ":\n" + "\n".join(f"  - {line}" for line in lines)]
