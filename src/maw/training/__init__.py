"""Fine-tuning: methods (lora / finetune / maw / full), the InfoNCE training loop, GRPO and the
supervised router, frozen-prefix cache, checkpoints with exact resume, and data parallelism.

Public API (imported lazily)::

    train(plan, dataset, splits, run_dir) -> TrainResult          # plan: maw.plan.resolve(...)
    train_from_plan(plan, run_dir) -> TrainResult                 # loads the data, writes result.json
    build_model(plan) -> Encoder
    count_parameters(encoder) -> {"total", "trainable"}
    load_trained_encoder(checkpoint_or_run_dir) -> (Encoder, Plan, config.json)
    TrainResult, TrainingError, CheckpointError
"""

from __future__ import annotations

_EXPORTS = {
    "train": "maw.training.trainer",
    "train_from_plan": "maw.training.trainer",
    "load_trained_encoder": "maw.training.methods",
    "TrainResult": "maw.training.trainer",
    "TrainingError": "maw.training.trainer",
    "build_model": "maw.training.methods",
    "count_parameters": "maw.training.methods",
    "CheckpointError": "maw.training.checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'maw.training' has no attribute {name!r}")
