"""The study's outside reference: sentence-transformers' own fine-tune of the backbone, timed.

``st-finetune`` trains the same backbone the way a sentence-transformers user would: every weight,
``SentenceTransformerTrainer`` with ``MultipleNegativesRankingLoss`` (in-batch negatives, scale
1 / temperature), on the same training examples (train split, one per (query, positive)) with the
same mined hard negative per example (the first epoch's draw of ``maw.training.negatives``),
batch size, learning rate, warm-up and precision as the ``full`` arm's defaults, for a fixed 3
epochs (no validation, no early stopping: sentence-transformers' usual recipe). Then it retrieves
the test queries like every dense cell. Its training seconds are the denominator of the report's
"full vs sentence-transformers" time ratio; its test score is a sanity check of the toolkit's
``full`` (same data, same model, another trainer).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from maw.config import BenchmarkConfig, ConfigError

METHOD = "st-finetune"
EPOCHS = 3


def st_finetune_cell(
    ds, seed: int, cfg: BenchmarkConfig, run_dir: Path, epochs: int = EPOCHS
) -> dict[str, Any]:
    """Train, time and evaluate the sentence-transformers reference; returns a benchmark cell."""
    import gc
    import traceback

    from maw.benchmark.cells import new_cell
    from maw.benchmark.runner import _dense_cell, _device, cell_plan, store_dir

    plan = cell_plan(cfg, ds.name, "full", seed)
    cell = new_cell(
        ds.key, METHOD, seed, {**plan.to_dict(), "seed": seed, "reference": METHOD, "epochs": epochs}
    )
    t0 = time.perf_counter()
    try:
        if ds.dataset is None:
            ds.load()
        cell["dataset_info"] = ds.info
        folder, train_s, steps = _train(
            ds, plan, run_dir / "st-finetune" / f"seed{seed}", epochs, _device(plan)
        )
        cell["runtimes"]["train_s"] = train_s
        cell["train_setup"] = {
            "epochs": epochs,
            "optimizer_steps": steps,
            "trainer": "SentenceTransformerTrainer",
        }
        from maw.models.encoder import Encoder

        encoder = Encoder.from_pretrained(str(folder), normalize=plan.model.normalize)
        eval_plan = cell_plan(cfg, ds.name, "zeroshot", seed)
        _dense_cell(
            cell, encoder, ds, eval_plan, store_dir(eval_plan, run_dir, ds.key) / f"{METHOD}-seed{seed}"
        )
        cell["status"], cell["error"] = "ok", None
    except Exception as exc:  # recorded, the final goes on
        cell["status"], cell["error"] = "failed", f"{type(exc).__name__}: {exc}".strip()
        cell["traceback"] = traceback.format_exc()
    finally:
        gc.collect()
    cell["cell_seconds"] = time.perf_counter() - t0
    return cell


def _train(ds, plan, out: Path, epochs: int, device: str) -> tuple[Path, float, int]:
    """Fine-tune with sentence-transformers; returns (saved model folder, training seconds, steps)."""
    try:
        from datasets import Dataset
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer import losses
        from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer
        from sentence_transformers.sentence_transformer.training_args import (
            BatchSamplers,
            SentenceTransformerTrainingArguments,
        )
    except ImportError as exc:  # pragma: no cover - an install without the extra
        raise ConfigError(
            f"the sentence-transformers reference needs sentence-transformers and datasets ({exc}); "
            "pip install 'maw[reference]'"
        ) from None
    from maw.training.distributed import DistributedContext
    from maw.training.negatives import epoch_negatives
    from maw.training.trainer import Trainer

    train = plan.train
    # the full arm's own examples and negatives: set up its trainer, take its data, train nothing
    trainer = Trainer(
        plan, ds.dataset, ds.splits, out / "setup", DistributedContext(device=torch.device(device))
    )
    trainer.setup()
    negatives = epoch_negatives(
        trainer.examples, trainer.candidates, max(train.hard_negatives, 1), train.seed, 1
    )
    rows: dict[str, list[str]] = {"anchor": [], "positive": []}
    if train.hard_negatives:
        rows["negative"] = []
    corpus, queries = ds.dataset.corpus, ds.dataset.queries
    for ex, negs in zip(trainer.examples, negatives, strict=True):
        if train.hard_negatives and not negs:
            continue
        rows["anchor"].append(queries[ex.query_id])
        rows["positive"].append(corpus[ex.doc_id].full_text())
        if train.hard_negatives:
            rows["negative"].append(corpus[negs[0]].full_text())
    del trainer

    model = SentenceTransformer(plan.model.model, device=device)
    model.max_seq_length = plan.model.doc_max_length
    bf16 = plan.model.precision == "bf16"
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out / "trainer"),
        num_train_epochs=epochs,
        per_device_train_batch_size=train.batch_size,
        learning_rate=train.learning_rate,
        weight_decay=train.weight_decay,
        **_warmup(train.warmup_ratio),
        max_grad_norm=train.max_grad_norm,
        bf16=bf16,
        fp16=plan.model.precision == "fp16" and device.startswith("cuda"),
        use_cpu=device == "cpu",
        seed=train.seed,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        save_strategy="no",
        report_to=[],
        logging_steps=10,
        disable_tqdm=True,
    )
    loss = losses.MultipleNegativesRankingLoss(model, scale=1.0 / train.temperature)
    st = SentenceTransformerTrainer(model=model, args=args, train_dataset=Dataset.from_dict(rows), loss=loss)
    t0 = time.perf_counter()
    st.train()
    seconds = time.perf_counter() - t0
    folder = out / "model"
    model[0].auto_model.save_pretrained(str(folder), safe_serialization=True)
    model.tokenizer.save_pretrained(str(folder))
    return folder, seconds, int(st.state.global_step)


def _warmup(ratio: float) -> dict[str, float]:
    """The warm-up as a fraction of the steps: transformers 5 takes it as a float ``warmup_steps``
    (``warmup_ratio`` is deprecated there), transformers 4 only as ``warmup_ratio``."""
    import transformers

    major = int(transformers.__version__.split(".")[0])
    return {"warmup_steps" if major >= 5 else "warmup_ratio": ratio}
