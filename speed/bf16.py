"""bfloat16 on the CPU against float32, side by side in one run (``--precision bf16``).

Three parts (``--parts``, default all), each printing its ratios:

1. ``encode``: documents per second of one corpus sample (SciFact, ``--num-docs``) for maw's
   ``Encoder.encode`` in float32, in bfloat16 (cast weights, what ``--precision bf16`` runs) and
   under bfloat16 autocast (what it ran before), sentence-transformers in float32 and with bfloat16
   weights (``model.to(torch.bfloat16)``), interleaved over ``--repeats`` rounds
   (median). Goals: maw bf16 >= 1.8x sentence-transformers fp32 and >= 1.0x its bf16.
2. ``epoch``: one cached training epoch of ``--method`` (the optimiser steps over a reduced
   SciFact train set, then the validation pass; as ``speed/train_step.py``) in fp32 and in bf16,
   with the prefix-cache build timed apart, and the step's profile (top operators by self CPU
   time, ``torch.profiler``) in both precisions. Goal: epoch >= 1.5x faster in bf16.
3. ``quality``: zero-shot test nDCG@10 on SciFact and Cranfield (``maw evaluate`` path, the whole
   corpus) in fp32 and bf16. Goal: differences <= 0.002.

    python speed/bf16.py [--parts encode,epoch,quality] [--threads 2] [--num-docs 1000]
        [--train-queries 96] [--method finetune] [--max-steps N]

The machine is shared and noisy: each part alternates the precisions and prints medians; rerun
for a second reading before quoting a borderline ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console

from maw.config import (
    DataConfig,
    EvalConfig,
    MAWConfig,
    ModelConfig,
    RuntimeConfig,
    TrainConfig,
    default_model,
)
from maw.data import load_dataset, make_splits
from maw.plan import resolve
from maw.training.distributed import DistributedContext
from maw.training.trainer import Trainer
from maw.utils.precision import cpu_bf16_support

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared" / "datasets"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import time_epoch  # noqa: E402
from train_step import reduced  # noqa: E402  (the same reduced SciFact set as speed/train_step.py)

console = Console(width=None if sys.stdout.isatty() else 160)


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x"


# ---------------------------------------------------------------------------------------------- 1. encode
def _under_autocast(encode, *args):
    """The float32 encode under CPU bfloat16 autocast: what ``--precision bf16`` ran before it cast
    the weights (``maw.utils.precision.inference_precision``)."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return encode(*args)


def part_encode(args) -> None:
    from sentence_transformers import SentenceTransformer

    from maw.models.encoder import Encoder

    ds = load_dataset(str(SHARED / "scifact"))
    ids = sorted(ds.corpus)[:: max(1, len(ds.corpus) // args.num_docs)][: args.num_docs]
    texts = [ds.corpus[d].full_text() for d in ids]
    model = default_model()
    enc = Encoder.from_pretrained(model)
    st32 = SentenceTransformer(model, device="cpu")
    st16 = SentenceTransformer(model, device="cpu").to(torch.bfloat16)
    max_len = st32.max_seq_length
    runs = {
        "maw fp32": lambda: enc.encode(texts, max_len, 64),
        "maw bf16": lambda: enc.encode(texts, max_len, 64, amp=torch.bfloat16),
        "maw bf16 autocast (before)": lambda: _under_autocast(enc.encode, texts, max_len, 64),
        "sentence-transformers fp32": lambda: st32.encode(texts, batch_size=64),
        "sentence-transformers bf16 weights": lambda: st16.encode(texts, batch_size=64),
    }
    enc.encode(texts[:16], max_len, 16)
    enc.encode(texts[:16], max_len, 16, amp=torch.bfloat16)
    rates: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(args.repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            rates[name].append(len(texts) / (time.perf_counter() - t0))
        console.print(f"encode round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rates.items()))
    med = {k: statistics.median(v) for k, v in rates.items()}
    console.print(
        f"[bold]encode[/bold] {len(texts)} SciFact documents (max length {max_len}), docs/s, median of {args.repeats}:"
    )
    for k, v in med.items():
        console.print(f"  {k:36s} {v:7.1f} docs/s")
    console.print(
        f"  maw bf16 / sentence-transformers fp32 = {ratio(med['maw bf16'], med['sentence-transformers fp32'])} "
        f"(goal >= 1.8x); maw bf16 / sentence-transformers bf16 = "
        f"{ratio(med['maw bf16'], med['sentence-transformers bf16 weights'])} (goal >= 1.0x); "
        f"maw bf16 / maw fp32 = {ratio(med['maw bf16'], med['maw fp32'])}; "
        f"cast weights / autocast = {ratio(med['maw bf16'], med['maw bf16 autocast (before)'])}"
    )


# ---------------------------------------------------------------------------------------------- 2. epoch
def _profile_step(trainer: Trainer, top: int) -> str:
    """The top operators of one optimiser step (of epoch 2) by self CPU time."""
    batches, negatives = trainer.epoch_data(2)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        trainer.step(batches[:1], negatives, trainer.state)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=40)


def part_epoch(args) -> None:
    data_cfg = DataConfig(dataset=str(SHARED / "scifact"))
    dataset = load_dataset(data_cfg.dataset)
    splits = make_splits(dataset, data_cfg)
    ds, sp = reduced(dataset, splits, args.train_queries, None, seed=0)
    ctx = DistributedContext(device=torch.device("cpu"))
    runtime = RuntimeConfig(device="cpu", num_threads=args.threads, progress=False)
    method = args.method
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("fp32", "bf16"):
            model_cfg = ModelConfig(model=default_model(), precision=precision)
            tcfg = TrainConfig(
                num_epochs=1, save_checkpoints=False, prefix_cache_dir=str(Path(tmp) / "cache")
            )
            maw_cfg = MAWConfig() if method == "maw" else None
            plan = resolve(
                method, data_cfg, model_cfg, maw_cfg, tcfg, EvalConfig(eval_batch_size=64), runtime
            )
            trainer = Trainer(plan, ds, sp, Path(tmp) / f"run-{precision}", ctx)
            trainer.setup()
            timing = time_epoch(trainer, 1, args.max_steps)
            t0 = time.perf_counter()
            metrics, _ = trainer.validate()
            val_s = time.perf_counter() - t0
            rows[precision] = {
                "cache_s": trainer.cache_info.get("cache_seconds") or 0.0,
                "train_s": timing["seconds"],
                "steps": timing["steps"],
                "step_s": statistics.median(timing["step_seconds"]),
                "val_s": val_s,
                "val_ndcg": metrics["nDCG@10"],
                "profile": _profile_step(trainer, args.profile_top),
            }
            r = rows[precision]
            console.print(
                f"{method} {precision}: prefix cache built in {r['cache_s']:.1f}s; {r['steps']} steps {r['train_s']:.1f}s "
                f"(median {r['step_s']:.2f}s/step) + validation {val_s:.1f}s (val nDCG@10 {r['val_ndcg']:.4f})"
            )
            del trainer
    a, b = rows["fp32"], rows["bf16"]
    console.print(
        f"[bold]epoch[/bold] ({method}, {len(sp.train)} train queries, {len(ds.corpus)} docs, prefix cache on):"
    )
    console.print(
        f"  epoch (steps + validation) fp32 {a['train_s'] + a['val_s']:.1f}s, bf16 {b['train_s'] + b['val_s']:.1f}s: "
        f"{ratio(a['train_s'] + a['val_s'], b['train_s'] + b['val_s'])} faster in bf16 (goal >= 1.5x)"
    )
    console.print(
        f"  steps {ratio(a['train_s'], b['train_s'])} (median step {a['step_s']:.2f}s vs {b['step_s']:.2f}s), "
        f"validation {ratio(a['val_s'], b['val_s'])}, prefix-cache build {ratio(a['cache_s'], b['cache_s'])}"
    )
    for precision in ("fp32", "bf16"):
        console.print(f"  one optimiser step in {precision}, top operators by self CPU time:")
        console.print(rows[precision]["profile"], markup=False, highlight=False)


# ---------------------------------------------------------------------------------------------- 3. quality
def part_quality(args) -> None:
    from maw.evaluation.evaluate import run_evaluation

    for name in ("scifact", "cranfield"):
        folder = SHARED / name
        if not folder.is_dir():
            console.print(f"quality: {name}: {folder} absent, skipped")
            continue
        scores = {}
        for precision in ("fp32", "bf16"):
            plan = resolve(
                "zeroshot",
                DataConfig(dataset=str(folder)),
                ModelConfig(precision=precision),
                eval=EvalConfig(latency_queries=0),
                runtime=RuntimeConfig(device="cpu", num_threads=args.threads, progress=False),
            )
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                rec = run_evaluation(plan, out=str(Path(tmp) / "r.json"), use_cache=False)
            scores[precision] = (rec["metrics"]["nDCG@10"], time.perf_counter() - t0)
        d = scores["bf16"][0] - scores["fp32"][0]
        console.print(
            f"[bold]quality[/bold] {name} zero-shot test nDCG@10: fp32 {scores['fp32'][0]:.4f} ({scores['fp32'][1]:.0f}s), "
            f"bf16 {scores['bf16'][0]:.4f} ({scores['bf16'][1]:.0f}s); difference {d:+.4f} (goal |d| <= 0.002)"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="encode,epoch,quality")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--num-docs", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-queries", type=int, default=96)
    ap.add_argument("--method", default="finetune", choices=("finetune", "maw", "lora"))
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--profile-top", type=int, default=12)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    console.print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; CPU bfloat16 support: "
        f"{cpu_bf16_support() or 'none (bf16 is emulated)'}"
    )
    parts = {"encode": part_encode, "epoch": part_epoch, "quality": part_quality}
    for name in args.parts.split(","):
        parts[name](args)


if __name__ == "__main__":
    main()
