"""Fine-tuning: methods (lora / finetune / maw / full), the InfoNCE training loop, GRPO and the
supervised router, frozen-prefix cache, checkpoints with exact resume, and data parallelism.

Public API (imported lazily)::

    train(method, dataset, splits, model_cfg, maw_cfg, train_cfg, eval_cfg, run_dir) -> TrainResult
    train_from_config(method, data_cfg, model_cfg, maw_cfg, train_cfg, eval_cfg, run_dir) -> TrainResult
    build_model(method, model_cfg, maw_cfg, train_cfg) -> (Encoder, first_trainable_layer_index)
    count_parameters(encoder) -> {"total", "trainable"}
    load_trained_encoder(checkpoint_dir) -> (Encoder, config)
    TrainResult, TrainingError, CheckpointError
"""

from __future__ import annotations

_EXPORTS = {
    "train": "maw.training.trainer",
    "train_from_config": "maw.training.trainer",
    "load_trained_encoder": "maw.training.trainer",
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
