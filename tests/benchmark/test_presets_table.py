"""Size presets (--preset smoke|medium|full): each sets exactly what the table in its docstring says."""

from __future__ import annotations

import re

import pytest

import maw.benchmark.presets as presets
from maw.benchmark.presets import PRESETS, QUICK_PRESET, benchmark_config, merged_config
from maw.config import BenchmarkConfig, ConfigError, DataConfig, from_dict


def docstring_table(header: str) -> dict[str, list[str]]:
    """The rows of the reST table of the module doc whose header line starts with ``header``:
    option -> the cells after it (up to the 'why' column)."""
    lines = presets.__doc__.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    columns = lines[start].split()[1:-1]  # between "option" and "why"
    rows: dict[str, list[str]] = {}
    for line in lines[start + 2 :]:
        if line.startswith("==="):
            break
        cells = line.split()
        rows[cells[0]] = cells[1 : 1 + len(columns)]
    return {"columns": columns, **rows}


def get(d: dict, dotted: str, missing=KeyError):
    for part in dotted.split("."):
        if part not in d:
            return missing
        d = d[part]
    return d


def expected(cell: str):
    return None if cell == "all" else int(cell)


def test_table_lists_every_preset_and_every_option_they_set():
    table = docstring_table("option                      smoke")
    assert table.pop("columns") == ["smoke", "medium", "full"] == list(PRESETS)
    set_anywhere = {
        f"{section}.{name}" for p in PRESETS.values() for section, opts in p.items() for name in opts
    }
    assert set_anywhere <= set(table), set_anywhere - set(table)
    for option, cells in table.items():
        for name, cell in zip(PRESETS, cells, strict=True):
            value = get(PRESETS[name], option)
            if cell == "default":
                assert value is KeyError, f"{name} sets {option} but the table says default"
            else:
                assert value == expected(cell), (name, option, value, cell)


@pytest.mark.parametrize("name", list(PRESETS))
def test_resolved_config_has_the_table_values_and_defaults_elsewhere(name):
    table = docstring_table("option                      smoke")
    column = table.pop("columns").index(name)
    cfg = benchmark_config({"preset": name})
    plain = benchmark_config({})
    assert cfg.preset == name and not cfg.quick
    for option, cells in table.items():
        section, field = option.split(".")
        got = getattr(getattr(cfg, section), field)
        want = (
            getattr(getattr(plain, section), field) if cells[column] == "default" else expected(cells[column])
        )
        assert got == want, (name, option)


def test_smoke_is_quick_plus_a_small_corpus_and_quick_alone_keeps_the_corpus():
    smoke = merged_config({"preset": "smoke"})
    quick = merged_config({"quick": True})
    for section, opts in QUICK_PRESET.items():
        for key in opts:
            if (section, key) != ("data", "test_samples"):
                assert smoke[section][key] == quick[section][key], (section, key)
    assert smoke["data"]["corpus_size"] == 2000
    assert benchmark_config({"quick": True}).data.corpus_size is None
    assert benchmark_config({}).preset is None and benchmark_config({}).data.corpus_size is None


def test_layers_preset_over_quick_then_file_then_flags(tmp_path):
    both = benchmark_config({"quick": True, "preset": "medium"})
    assert both.data.corpus_size == 100_000 and both.data.train_samples == 1000  # preset over quick
    assert both.train.num_epochs == 1  # quick's, medium leaves it
    toml = tmp_path / "c.toml"
    toml.write_text('preset = "smoke"\n[data]\ncorpus_size = 3000\n')
    from_file = benchmark_config({}, config_file=toml)
    assert from_file.preset == "smoke" and from_file.data.corpus_size == 3000  # the file wins over its preset
    flags = benchmark_config({"preset": "medium", "data": {"corpus_size": 500}}, config_file=toml)
    assert flags.preset == "medium" and flags.data.corpus_size == 500 and flags.data.train_samples == 1000


def test_resume_keeps_the_saved_preset_and_values():
    from maw.config import to_dict

    saved = to_dict(benchmark_config({"preset": "smoke", "run_name": "r"}))
    again = benchmark_config({}, base=saved)
    assert again.preset == "smoke" and again.data == benchmark_config({"preset": "smoke"}).data
    assert from_dict(BenchmarkConfig, saved) == again


def test_unknown_preset_and_bad_size_name_the_option():
    with pytest.raises(ConfigError, match=re.escape("--preset: unknown value 'huge'")):
        benchmark_config({"preset": "huge"})
    with pytest.raises(ConfigError, match="--corpus-size"):
        DataConfig(corpus_size=0)
