"""The ``maw`` command line (typer + rich).

Each command builds the config dataclasses of ``maw.config`` from its flags and hands them to one
library function; it holds no logic of its own. User errors (``ConfigError``, ``DataError``) are
printed as one red line naming the flag or file, with exit code 2.

Adding a command: define a function decorated with ``@app.command()`` below the existing ones,
build its config, and call the library inside ``with user_errors():``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console

from maw.config import ConfigError, DataConfig, EvalConfig, ModelConfig, default_model

app = typer.Typer(
    name="maw",
    help="Multi-Attention-Weight (MAW) transformers for dense retrieval, and a benchmark harness.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main() -> None:
    """Multi-Attention-Weight (MAW) transformers for dense retrieval, and a benchmark harness."""


def fail(message: str, code: int = 2) -> None:
    """Print ``message`` as an error on stderr and exit with ``code``."""
    from rich.text import Text

    # soft_wrap: one line however long (no newlines inside paths); Text: brackets are not markup
    Console(stderr=True, soft_wrap=True).print(
        Text.assemble(("error: ", "bold red"), message), highlight=False
    )
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn configuration and data errors into a one-line message and exit code 2."""
    from maw.data.types import DataError

    try:
        yield
    except (ConfigError, DataError, FileNotFoundError) as exc:
        fail(str(exc))


@app.command()
def evaluate(
    dataset: Annotated[
        str, typer.Option(help="Dataset name (demo, scifact, ...) or path to a BEIR-format folder.")
    ] = "demo",
    method: Annotated[str, typer.Option(help="Retrieval method: bm25 | zeroshot.")] = "bm25",
    model: Annotated[
        str | None, typer.Option(help="Encoder (HF id or path) for zeroshot; default all-MiniLM-L6-v2.")
    ] = None,
    split: Annotated[str, typer.Option(help="Qrels split to evaluate (qrels/<split>.tsv).")] = "test",
    out: Annotated[
        str | None, typer.Option(help="Result JSON (default runs/evaluate/<dataset>-<method>-<split>.json).")
    ] = None,
    test_samples: Annotated[
        int | None, typer.Option(help="Evaluate a seeded random subset of N queries.")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Encoding batch size.")] = 128,
    query_max_length: Annotated[int, typer.Option(help="Max query length in tokens.")] = 64,
    doc_max_length: Annotated[int, typer.Option(help="Max document length in tokens.")] = 256,
    top_k: Annotated[int, typer.Option(help="Documents retrieved per query.")] = 1000,
    num_layers: Annotated[int | None, typer.Option(help="Keep only the first N encoder layers.")] = None,
    data_dir: Annotated[str | None, typer.Option(help="Where named datasets are looked for.")] = None,
    cache_dir: Annotated[
        str | None, typer.Option(help="Embedding cache folder (default ~/.cache/maw/embeddings).")
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Do not read or write the embedding cache.")
    ] = False,
    device: Annotated[str | None, typer.Option(help="cpu | cuda (default: cuda when available).")] = None,
    latency_queries: Annotated[
        int, typer.Option(help="Queries timed one at a time for the latency figure.")
    ] = 50,
    seed: Annotated[int, typer.Option(help="Seed of --test-samples subsampling.")] = 13,
    quiet: Annotated[bool, typer.Option("--quiet", help="No table, no progress bars.")] = False,
) -> None:
    """Retrieve one split's queries from the full corpus and write all metrics to one JSON file."""
    from maw.evaluation.evaluate import EvaluateConfig, run_evaluation

    with user_errors():
        cfg = EvaluateConfig(
            method=method,
            data=DataConfig(dataset=dataset, data_dir=data_dir, test_samples=test_samples, split_seed=seed),
            model=ModelConfig(
                model=model or default_model(),
                num_layers=num_layers,
                query_max_length=query_max_length,
                doc_max_length=doc_max_length,
            ),
            eval=EvalConfig(split=split, top_k=top_k, eval_batch_size=batch_size, cache_dir=cache_dir),
            out=out,
            use_cache=not no_cache,
            device=device,
            latency_queries=latency_queries,
            show_progress=not quiet,
        )
        if method == "bm25" and model is not None:
            raise ConfigError("--model: only used by --method zeroshot")
        cfg.validate()
        run_evaluation(cfg, console=None if quiet else Console())


@app.command()
def benchmark(
    datasets: Annotated[
        str | None, typer.Option(help="Comma-separated dataset names or BEIR folders (default: demo).")
    ] = None,
    methods: Annotated[
        str | None,
        typer.Option(help="Comma-separated: bm25,zeroshot,lora,finetune,maw,full (default: all but full)."),
    ] = None,
    seeds: Annotated[str | None, typer.Option(help="Comma-separated training seeds (default: 42).")] = None,
    train_samples: Annotated[int | None, typer.Option(help="Subsample N training queries (seeded).")] = None,
    val_samples: Annotated[int | None, typer.Option(help="Subsample N validation queries.")] = None,
    test_samples: Annotated[int | None, typer.Option(help="Subsample N test queries (default: all).")] = None,
    num_epochs: Annotated[int | None, typer.Option(help="Training epochs (default: 3).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Training batch size (default: 32).")] = None,
    eval_batch_size: Annotated[
        int | None, typer.Option(help="Encoding batch size for retrieval (default: 128).")
    ] = None,
    learning_rate: Annotated[
        float | None, typer.Option(help="Learning rate of finetune / maw encoder weights (default: 2e-5).")
    ] = None,
    lora_learning_rate: Annotated[
        float | None, typer.Option(help="Learning rate of LoRA adapters (default: 5e-4).")
    ] = None,
    policy_lr: Annotated[float | None, typer.Option(help="MAW router learning rate (default: 1e-3).")] = None,
    num_layers: Annotated[int | None, typer.Option(help="Keep only the first N encoder layers.")] = None,
    maw_layers: Annotated[
        str | None, typer.Option(help="1-indexed MAW layers: '6', '5,6', 'all', 'last' (default: last).")
    ] = None,
    finetune_layers: Annotated[
        str | None, typer.Option(help="Layers that train for finetune/maw (default: the MAW layers).")
    ] = None,
    lora_layers: Annotated[
        str | None, typer.Option(help="Layers with LoRA adapters (default: last).")
    ] = None,
    depth_dim: Annotated[
        int | None, typer.Option(help="MAW depth dimension D (divides the head size) (default: 8).")
    ] = None,
    router: Annotated[
        str | None, typer.Option(help="MAW router: soft | gumbel | grpo | supervised (default: soft).")
    ] = None,
    granularity: Annotated[
        str | None, typer.Option(help="Routing granularity: pair | query | head (default: query).")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Backbone (HF id or path) (default: all-MiniLM-L6-v2).")
    ] = None,
    query_max_length: Annotated[int | None, typer.Option(help="Max query tokens (default: 64).")] = None,
    doc_max_length: Annotated[int | None, typer.Option(help="Max document tokens (default: 256).")] = None,
    top_k: Annotated[
        int | None, typer.Option(help="Documents retrieved per test query (default: 1000).")
    ] = None,
    data_dir: Annotated[str | None, typer.Option(help="Where named datasets are looked for.")] = None,
    device: Annotated[str | None, typer.Option(help="cpu | cuda (default: cuda when available).")] = None,
    out: Annotated[str | None, typer.Option(help="Parent folder of run folders (default: runs).")] = None,
    run_name: Annotated[
        str | None, typer.Option(help="Run folder name under --out (default: a timestamp); rerun to resume.")
    ] = None,
    resume: Annotated[
        str | None, typer.Option(help="Resume an existing run folder with its saved config.")
    ] = None,
    quick: Annotated[
        bool | None,
        typer.Option("--quick", help="Small documented preset for a first try (see maw.benchmark.presets)."),
    ] = None,
    config: Annotated[
        str | None, typer.Option("--config", help="TOML file with the same options; flags override it.")
    ] = None,
    tracker: Annotated[
        str | None, typer.Option(help="none | tensorboard | mlflow (local files) (default: none).")
    ] = None,
    report_only: Annotated[
        bool, typer.Option("--report-only", help="Only rebuild the reports of --resume / --run-name.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress output.")] = False,
) -> None:
    """Run the benchmark grid (datasets x methods x seeds), resumable; write reports and REPORT.md.

    With no options at all: the built-in demo collection, all methods but full, with the --quick
    preset (1 epoch, shorter max lengths; a few minutes on 2 CPU cores), offline.
    """
    from pathlib import Path

    from maw.benchmark.presets import overrides_from_flags, resolve_config
    from maw.benchmark.report import build_reports
    from maw.benchmark.runner import run_benchmark, run_folder
    from maw.utils.io import read_json

    console = Console(stderr=True, quiet=quiet)
    with user_errors():
        flags = dict(locals())
        flags = {
            k: flags[k]
            for k in (
                "datasets",
                "methods",
                "seeds",
                "train_samples",
                "val_samples",
                "test_samples",
                "num_epochs",
                "batch_size",
                "eval_batch_size",
                "learning_rate",
                "lora_learning_rate",
                "policy_lr",
                "num_layers",
                "maw_layers",
                "finetune_layers",
                "lora_layers",
                "depth_dim",
                "router",
                "granularity",
                "model",
                "query_max_length",
                "doc_max_length",
                "top_k",
                "data_dir",
                "device",
                "out",
                "run_name",
                "quick",
                "tracker",
            )
        }
        if config is None and resume is None and not report_only and all(v is None for v in flags.values()):
            flags["quick"] = True  # no options at all: the demo collection with the --quick preset
            console.print(
                "no options: the built-in demo collection with the --quick preset "
                "(see `maw benchmark --help`)",
                highlight=False,
            )
        base = None
        if resume is not None:
            folder = Path(resume)
            if not (folder / "config.json").is_file():
                raise ConfigError(f"--resume: {folder} is not a benchmark run folder (no config.json)")
            if out is not None or run_name is not None:
                raise ConfigError("--resume: give either --resume FOLDER or --out/--run-name, not both")
            base = read_json(folder / "config.json")
            flags["out"], flags["run_name"] = str(folder.parent), folder.name
        cfg = resolve_config(overrides_from_flags(flags), config_file=config, base=base)
        cfg.train.progress = cfg.train.progress and not quiet
        if report_only:
            if cfg.run_name is None:
                raise ConfigError("--report-only: name the run with --resume FOLDER or --run-name NAME")
            folder = run_folder(cfg)
            if not (folder / "cells").is_dir():
                raise ConfigError(f"--report-only: {folder} has no cells/ folder")
            build_reports(folder)
            console.print(f"reports rebuilt in {folder}")
            return
        outcome = run_benchmark(
            cfg, log=lambda msg: console.print(msg, highlight=False, markup=False, soft_wrap=True)
        )
    if outcome.interrupted:
        raise typer.Exit(130)
    if outcome.failed:
        console.print(
            f"[bold red]{len(outcome.failed)} cell(s) failed[/bold red]; see {outcome.run_dir}/summary.txt"
        )
        raise typer.Exit(1)


@app.command("train")
def train_command(
    dataset: Annotated[
        str, typer.Option(help="Dataset name (demo, scifact, ...) or path to a BEIR-format folder.")
    ] = "demo",
    method: Annotated[str, typer.Option(help="lora | finetune | maw | full.")] = "maw",
    run_dir: Annotated[
        str | None,
        typer.Option(
            help="Checkpoints, history and result.json (default: runs/train/<dataset>-<method>-seed<seed>); rerun to resume."
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Backbone (HF id or path) (default: all-MiniLM-L6-v2).")
    ] = None,
    num_layers: Annotated[int | None, typer.Option(help="Keep only the first N encoder layers.")] = None,
    data_dir: Annotated[str | None, typer.Option(help="Where named datasets are looked for.")] = None,
    val_fraction: Annotated[
        float,
        typer.Option(help="Share of train queries carved out for validation when there is no dev split."),
    ] = 0.1,
    train_samples: Annotated[int | None, typer.Option(help="Subsample N training queries (seeded).")] = None,
    val_samples: Annotated[int | None, typer.Option(help="Subsample N validation queries (seeded).")] = None,
    num_epochs: Annotated[int, typer.Option(help="Training epochs.")] = 3,
    batch_size: Annotated[int, typer.Option(help="Examples per micro-batch (in-batch negatives).")] = 32,
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per optimiser step.")] = 1,
    learning_rate: Annotated[
        float, typer.Option(help="AdamW learning rate of the encoder weights (finetune / maw / full).")
    ] = 2e-5,
    lora_learning_rate: Annotated[float, typer.Option(help="AdamW learning rate of LoRA adapters.")] = 5e-4,
    weight_decay: Annotated[
        float, typer.Option(help="AdamW weight decay (not on biases / LayerNorm / routers).")
    ] = 0.01,
    warmup_ratio: Annotated[float, typer.Option(help="Share of optimiser steps with linear warmup.")] = 0.1,
    max_grad_norm: Annotated[float, typer.Option(help="Gradient clipping norm.")] = 1.0,
    temperature: Annotated[float, typer.Option(help="InfoNCE temperature.")] = 0.05,
    hard_negatives: Annotated[
        int, typer.Option(help="BM25-mined negatives per query (0 = in-batch only).")
    ] = 1,
    hard_negative_depth: Annotated[int, typer.Option(help="Mine negatives from the BM25 top-k.")] = 30,
    patience: Annotated[
        int, typer.Option(help="Early stopping: epochs without val nDCG@10 improvement.")
    ] = 2,
    finetune_layers: Annotated[
        str | None,
        typer.Option(
            help="Layers that train for finetune/maw ('6', '5,6', 'all') (default: last / the MAW layers)."
        ),
    ] = None,
    lora_layers: Annotated[str, typer.Option(help="Layers with LoRA adapters.")] = "last",
    lora_rank: Annotated[int, typer.Option(help="LoRA rank.")] = 8,
    lora_alpha: Annotated[int, typer.Option(help="LoRA alpha.")] = 16,
    lora_dropout: Annotated[float, typer.Option(help="LoRA dropout.")] = 0.05,
    maw_layers: Annotated[
        str, typer.Option(help="1-indexed MAW layers: '6', '5,6', 'all', 'last'.")
    ] = "last",
    depth_dim: Annotated[int, typer.Option(help="MAW depth dimension D (divides the head size).")] = 8,
    router: Annotated[str, typer.Option(help="MAW router: soft | gumbel | grpo | supervised.")] = "soft",
    granularity: Annotated[str, typer.Option(help="Routing granularity: pair | query | head.")] = "query",
    depth_projection: Annotated[str, typer.Option(help="split | project.")] = "split",
    group_size: Annotated[int, typer.Option(help="GRPO samples per batch (G).")] = 4,
    clip_eps: Annotated[float, typer.Option(help="GRPO clipping epsilon.")] = 0.2,
    kl_beta: Annotated[float, typer.Option(help="GRPO KL weight.")] = 0.01,
    ref_update: Annotated[
        int, typer.Option(help="GRPO: refresh the reference policy every N optimiser steps.")
    ] = 100,
    oracle_every: Annotated[
        int, typer.Option(help="Supervised router: oracle labels every N optimiser steps.")
    ] = 1,
    policy_lr: Annotated[float, typer.Option(help="MAW router learning rate.")] = 1e-3,
    no_prefix_cache: Annotated[
        bool, typer.Option("--no-prefix-cache", help="Recompute the frozen layers every step.")
    ] = False,
    prefix_cache_dtype: Annotated[
        str, typer.Option(help="float16 | float32 storage of the frozen-prefix cache.")
    ] = "float16",
    cache_dir: Annotated[
        str | None,
        typer.Option(help="Frozen-prefix cache folder, shareable between runs (default: RUN_DIR/cache)."),
    ] = None,
    checkpoint_every: Annotated[
        int, typer.Option(help="Save RUN_DIR/latest every N optimiser steps (0 = epoch ends only).")
    ] = 100,
    no_resume: Annotated[
        bool, typer.Option("--no-resume", help="Refuse to continue an existing RUN_DIR/latest.")
    ] = False,
    precision: Annotated[str, typer.Option(help="fp32 | bf16 | fp16 (autocast; CUDA only).")] = "fp32",
    gradient_checkpointing: Annotated[
        bool, typer.Option("--gradient-checkpointing", help="Recompute activations in backward (CUDA only).")
    ] = False,
    query_max_length: Annotated[int, typer.Option(help="Max query tokens.")] = 64,
    doc_max_length: Annotated[int, typer.Option(help="Max document tokens.")] = 256,
    eval_batch_size: Annotated[
        int, typer.Option(help="Encoding batch size for validation and the cache.")
    ] = 128,
    seed: Annotated[
        int, typer.Option(help="Training seed (data order, negatives, init, dropout, samples).")
    ] = 42,
    split_seed: Annotated[int, typer.Option(help="Seed of carving / subsampling the splits.")] = 13,
    device: Annotated[str | None, typer.Option(help="cpu | cuda (default: cuda when available).")] = None,
    num_threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars and no table.")] = False,
) -> None:
    """Fine-tune an encoder (lora / finetune / maw / full) with InfoNCE; select on the validation split.

    Writes RUN_DIR/best and RUN_DIR/latest checkpoints, history.json and result.json. Rerunning the
    same command resumes from RUN_DIR/latest. Multi-process: launch with torchrun.
    """
    from pathlib import Path

    from maw.config import MAWConfig, TrainConfig
    from maw.training.checkpoint import CheckpointError
    from maw.training.trainer import TrainingError, train_from_config

    with user_errors():
        if method not in ("lora", "finetune", "maw", "full"):
            raise ConfigError(f"--method: {method!r} is not trainable; choose lora, finetune, maw or full")
        data_cfg = DataConfig(
            dataset=dataset,
            data_dir=data_dir,
            val_fraction=val_fraction,
            train_samples=train_samples,
            val_samples=val_samples,
            split_seed=split_seed,
        )
        model_cfg = ModelConfig(
            model=model or default_model(),
            num_layers=num_layers,
            query_max_length=query_max_length,
            doc_max_length=doc_max_length,
        )
        maw_cfg = MAWConfig(
            depth_dim=depth_dim,
            router=router,
            granularity=granularity,
            depth_projection=depth_projection,
            maw_layers=maw_layers,
            group_size=group_size,
            clip_eps=clip_eps,
            kl_beta=kl_beta,
            ref_update=ref_update,
            oracle_every=oracle_every,
            policy_lr=policy_lr,
        )
        train_cfg = TrainConfig(
            num_epochs=num_epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            lora_learning_rate=lora_learning_rate,
            weight_decay=weight_decay,
            warmup_ratio=warmup_ratio,
            max_grad_norm=max_grad_norm,
            grad_accum=grad_accum,
            temperature=temperature,
            hard_negatives=hard_negatives,
            hard_negative_depth=hard_negative_depth,
            patience=patience,
            finetune_layers=finetune_layers,
            lora_layers=lora_layers,
            lora_rank=lora_rank,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
            prefix_cache=not no_prefix_cache,
            precision=precision,
            gradient_checkpointing=gradient_checkpointing,
            seed=seed,
            device=device,
            num_threads=num_threads,
            checkpoint_every=checkpoint_every,
            resume=not no_resume,
            cache_dir=cache_dir,
            prefix_cache_dtype=prefix_cache_dtype,
            progress=not quiet,
        )
        train_cfg.validate()
        if method == "maw":
            maw_cfg.validate()
        eval_cfg = EvalConfig(eval_batch_size=eval_batch_size)
        name = Path(dataset).name if Path(dataset).exists() else dataset
        folder = Path(run_dir) if run_dir else Path("runs") / "train" / f"{name}-{method}-seed{seed}"
        if no_resume and (folder / "latest").exists():
            raise ConfigError(f"--no-resume: {folder}/latest exists; choose another --run-dir or remove it")
        try:
            result = train_from_config(method, data_cfg, model_cfg, maw_cfg, train_cfg, eval_cfg, folder)
        except (CheckpointError, TrainingError) as exc:
            fail(str(exc), code=1)
    if result.setup.get("rank", 0) != 0 or quiet:
        return
    from rich.table import Table

    table = Table(title=f"maw train {method} on {dataset}: best epoch {result.best_epoch}")
    for col in ("epoch", "train loss", "val nDCG@10", "val R@100", "seconds"):
        table.add_column(col, justify="right")
    for h in result.history:
        loss = h.get("train_loss")
        table.add_row(
            str(h["epoch"]),
            "-" if loss is None else f"{loss:.4f}",
            f"{h['val']['nDCG@10']:.4f}",
            f"{h['val']['R@100']:.4f}",
            f"{h.get('seconds', h.get('val_seconds', 0.0)):.1f}",
        )
    console = Console()
    console.print(table)
    console.print(
        f"params: {result.params}; checkpoints: {result.best_dir}, {result.latest_dir}; result: {folder / 'result.json'}"
    )


if __name__ == "__main__":  # pragma: no cover
    app()
