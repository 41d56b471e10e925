"""Results that name things, not the paths of the machine that ran them.

Committed results (sweep and benchmark cells, manifests, study reports) must move between
machines: they name datasets by their key (``scifact``), the default backbone by its Hub id, the
checkpoint folder as ``<checkpoints>``, paths in a benchmark run folder relative to it, and paths
under the working directory relative to that.
:func:`portable` rewrites every string of a JSON-like value with :class:`PathLabels`; the
writers of committed results call it (``maw.benchmark.cells.write_cell``, ``maw.sweep``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def _spellings(path: str | Path) -> list[str]:
    """A path as typed, absolute and resolved (symlinks), without a trailing separator."""
    out = {str(path).rstrip("/\\")}
    p = Path(path)
    for q in (p.absolute(), p.resolve()):
        out.add(str(q).rstrip("/\\"))
    return [s for s in out if s and s not in (".", "/")]


@dataclass
class PathLabels:
    """Ordered (path prefix -> label) replacements; longer prefixes first."""

    pairs: list[tuple[str, str]] = field(default_factory=list)

    def add(self, path: str | Path | None, label: str) -> PathLabels:
        if path:
            for s in _spellings(path):
                if s != label:
                    self.pairs.append((s, label))
        self.pairs.sort(key=lambda kv: -len(kv[0]))
        return self

    @classmethod
    def standard(
        cls,
        datasets: Iterable[tuple[str | Path | None, str]] = (),
        checkpoints: str | Path | None = None,
        run_dir: str | Path | None = None,
        models: Iterable[str | None] = (),
    ) -> PathLabels:
        """Datasets (path -> key), the checkpoints folder (-> ``<checkpoints>``), a run folder (paths
        in it become relative to it), the default backbone (-> its Hub id), other local model folders (-> their folder
        name; experiments identify them by content, ``maw.sweep.grid.model_identity``), the package (-> ``<maw>``), the Python
        environment (-> ``<python>``), the working directory (-> relative) and home (-> ``~``)."""
        from maw.config import default_model

        labels = cls()
        for path, key in datasets:
            labels.add(path, key)
        labels.add(checkpoints, "<checkpoints>")
        if run_dir:  # paths inside a run folder are written relative to it
            for sp in _spellings(run_dir):
                labels.pairs += [(sp + os.sep, ""), (sp, ".")]
        labels.add(default_model(), DEFAULT_MODEL_ID)
        for model in models:
            if model and model != default_model() and Path(model).is_dir():
                labels.add(model, Path(model).resolve().name)
        labels.add(Path(__file__).resolve().parents[1], "<maw>")  # the package (the demo collection)
        labels.add(sys.prefix, "<python>")
        if sys.base_prefix != sys.prefix:
            labels.add(sys.base_prefix, "<python>")
        cwd = os.getcwd()
        for s in _spellings(cwd):
            labels.pairs.append((s + os.sep, ""))
            labels.pairs.append((s, "."))
        labels.add(Path.home(), "~")
        labels.pairs.sort(key=lambda kv: -len(kv[0]))
        return labels

    def text(self, s: str) -> str:
        for prefix, label in self.pairs:
            if prefix in s:
                s = s.replace(prefix, label)
        return s


def portable(value: Any, labels: PathLabels) -> Any:
    """``value`` (dicts, lists, strings, numbers) with every machine path replaced (see module doc)."""
    if isinstance(value, str):
        return labels.text(value)
    if isinstance(value, dict):
        return {
            portable(k, labels) if isinstance(k, str) else k: portable(v, labels) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [portable(v, labels) for v in value]
    return value


def cell_labels(cell: dict[str, Any], **folders: str | Path | None) -> PathLabels:
    """The labels of a result cell: its dataset's argument and source folder name its key."""
    info = cell.get("dataset_info") or {}
    key = str(cell.get("dataset") or info.get("name") or "dataset")
    model = ((cell.get("config") or {}).get("model") or {}).get("model")
    return PathLabels.standard(
        [(info.get("argument"), key), (info.get("source"), key)], models=[model], **folders
    )
