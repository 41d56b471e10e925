"""Tiny trained checkpoints for the export tests: maw (soft router, query and pair granularity), lora
and finetune on the demo collection, a few seconds each (the pattern of tests/training)."""

from __future__ import annotations

from pathlib import Path

VARIANTS = {
    "maw-query": ("maw", {"granularity": "query"}),
    "maw-pair": ("maw", {"granularity": "pair"}),
    "lora": ("lora", {}),
    "finetune": ("finetune", {}),
}
QUERY_MAX, DOC_MAX = 16, 48


def train_tiny(method: str, maw: dict, model_dir: Path, run_dir: Path):
    """``maw train`` in miniature: 1 epoch on 48 demo training queries; returns the TrainResult."""
    from maw.config import DataConfig, EvalConfig, MAWConfig, ModelConfig, RuntimeConfig, TrainConfig
    from maw.plan import resolve
    from maw.training.trainer import train_from_plan

    plan = resolve(
        method,
        data=DataConfig(dataset="demo", train_samples=48, val_samples=16, split_seed=13),
        model=ModelConfig(model=str(model_dir), query_max_length=QUERY_MAX, doc_max_length=DOC_MAX),
        maw=MAWConfig(depth_dim=4, **maw),
        train=TrainConfig(
            num_epochs=1,
            batch_size=8,
            learning_rate=1e-3,
            lora_learning_rate=1e-2,
            hard_negatives=1,
            hard_negative_depth=5,
            checkpoint_every=0,
            prefix_cache_dtype="float32",
        ),
        eval=EvalConfig(eval_batch_size=64),
        runtime=RuntimeConfig(device="cpu", num_threads=1, progress=False),
    )
    return train_from_plan(plan, run_dir)
