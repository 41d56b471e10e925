"""pyproject.toml declares what src/maw imports: every third-party module imported at the top of a
module is a core dependency; one imported only inside a function or a ``try: ... except
ImportError`` (an optional feature) is a core dependency or in a declared extra."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "maw"
# import name -> distributions that provide it, where the name says nothing about it or the
# distribution may be absent here (an extra): packages_distributions() knows the installed ones
KNOWN = {
    "faiss": {"faiss-cpu", "faiss-gpu", "faiss-gpu-cu11", "faiss-gpu-cu12"},  # any FAISS build
    "Stemmer": {"pystemmer"},
    "sentence_transformers": {"sentence-transformers"},
    "mlflow": {"mlflow"},
    "tensorboard": {"tensorboard"},
    "yaml": {"pyyaml"},
    "sklearn": {"scikit-learn"},
}
# files maw never imports itself, shipped to run elsewhere: st_module.py runs inside an exported
# model, loaded by sentence-transformers (the export extra), so its imports may come from that extra
SHIPPED = {"export/st_module.py"}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(req: str) -> tuple[str, list[str]]:
    """``"maw[export]"`` -> ("maw", ["export"]); ``"torch>=2.2,<3"`` -> ("torch", [])."""
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?", req)
    assert m, req
    return normalize(m.group(1)), [e.strip() for e in (m.group(2) or "").split(",") if e.strip()]


def declared() -> tuple[set[str], dict[str, set[str]]]:
    """(core distributions, extra -> distributions), self-references (``maw[export]``) expanded."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {requirement_name(r)[0] for r in project["dependencies"]}
    raw = project.get("optional-dependencies", {})

    def expand(extra: str, seen: set[str]) -> set[str]:
        out = set()
        for req in raw[extra]:
            name, extras = requirement_name(req)
            if name == normalize(project["name"]):
                for e in extras:
                    assert e in raw, f"[{extra}] names the undeclared extra maw[{e}]"
                    out |= expand(e, seen | {extra}) if e not in seen else set()
            else:
                out.add(name)
        return out

    return core, {extra: expand(extra, set()) for extra in raw}


def _optional_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside a function or a try that catches ImportError."""
    inside: set[int] = set()

    def catches_import_error(node: ast.Try) -> bool:
        for h in node.handlers:
            names = [h.type] if not isinstance(h.type, ast.Tuple) else list(h.type.elts)
            if h.type is None or any(
                isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError", "Exception")
                for n in names
            ):
                return True
        return False

    for node in ast.walk(tree):
        guarded = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or (
            isinstance(node, ast.Try) and catches_import_error(node)
        )
        if guarded:
            body = node.body if isinstance(node, ast.Try) else [node]
            for stmt in body:
                inside |= {id(n) for n in ast.walk(stmt) if isinstance(n, ast.Import | ast.ImportFrom)}
    return inside


def imports() -> list[tuple[str, str, bool]]:
    """(file, top-level module, optional) of every absolute import of a third-party module."""
    out = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        optional = _optional_nodes(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in ("maw", "__future__"):
                    continue
                out.append((rel, top, id(node) in optional or rel in SHIPPED))
    return out


@functools.cache
def _installed() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def distributions(top: str) -> set[str]:
    found = {normalize(d) for d in _installed().get(top, [])}
    return found | KNOWN.get(top, set()) | (set() if found or top in KNOWN else {normalize(top)})


def test_every_imported_module_is_declared():
    core, extras = declared()
    anywhere = core.union(*extras.values())
    missing = []
    for rel, top, optional in imports():
        dists = distributions(top)
        if not dists & (anywhere if optional else core):
            where = "a dependency or an extra" if optional else "a core dependency"
            missing.append(f"src/maw/{rel}: import {top} (distribution {sorted(dists)}) is not {where}")
    assert not missing, "\n".join(sorted(set(missing)))


def test_the_walk_sees_what_it_should():
    found = {(rel, top): optional for rel, top, optional in imports()}
    assert found[("cli.py", "typer")] is False  # top of the module: a core dependency
    assert found[("export/sentence_transformers.py", "sentence_transformers")] is True  # in a function
    assert found[("export/st_module.py", "sentence_transformers")] is True  # shipped with an export
    core, extras = declared()
    assert "sentence-transformers" not in core and "sentence-transformers" in extras["export"]
    assert extras["export"] | extras["reference"] <= extras["dev"]  # dev: the extras + the test tools
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def bounds(extra: str) -> list[str]:  # the sentence-transformers requirement, its extras left out
        reqs = project["optional-dependencies"][extra]
        return [
            re.sub(r"\[[^\]]*\]", "", r).replace(" ", "")
            for r in reqs
            if requirement_name(r)[0] == "sentence-transformers"
        ]

    assert bounds("dev") == bounds("reference") == bounds("export")  # the same bounds everywhere


def test_export_extra_bounds_match_the_version_check():
    """The extra's bounds are the ones ``maw export`` checks (and names in its error)."""
    from maw.export.sentence_transformers import INSTALL_HINT, ST_VERSIONS

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (req,) = project["optional-dependencies"]["export"]
    lo, hi = ST_VERSIONS
    assert req.replace(" ", "") == f"sentence-transformers>={lo[0]}.{lo[1]},<{hi[0]}"
    assert INSTALL_HINT == "pip install 'maw[export]'"


def test_export_without_sentence_transformers_names_the_extra(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from maw.cli import app
    from maw.export.sentence_transformers import ExportError, require_sentence_transformers

    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import fails
    with pytest.raises(ExportError, match=re.escape("pip install 'maw[export]'")):
        require_sentence_transformers()
    result = CliRunner().invoke(app, ["export", str(tmp_path), "--to", str(tmp_path / "out")])
    assert result.exit_code == 2 and "pip install 'maw[export]'" in result.output
    old = type(sys)("sentence_transformers")
    old.__version__ = "5.3.0"  # before sentence_transformers.base.modules existed
    monkeypatch.setitem(sys.modules, "sentence_transformers", old)
    with pytest.raises(ExportError, match=r">= 6\.0, < 7, found 5\.3\.0"):
        require_sentence_transformers()
