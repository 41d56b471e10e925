"""Data layer: loaders for BEIR / MS MARCO / LoTTE folders, dataset resolution and download, splits.

Public API::

    load_dataset(name_or_path, data_dir=None) -> RetrievalDataset   # "demo", "scifact", a folder, ...
    resolve_dataset(name_or_path, data_dir=None, download=True) -> Path
    make_splits(dataset, cfg: DataConfig) -> Splits
    require_training_split(splits, name) -> Qrels
    load_beir(folder, name=None) / load_msmarco(folder, name=None) / load_lotte(folder, name=None)
"""

from __future__ import annotations

from maw.data.beir import load_beir
from maw.data.lotte import load_lotte
from maw.data.msmarco import load_msmarco
from maw.data.resolve import demo_path, load_dataset, load_folder, resolve_dataset
from maw.data.splits import make_splits, require_training_split
from maw.data.types import DataError, Document, Qrels, RetrievalDataset, Run, Splits

__all__ = [
    "DataError",
    "Document",
    "Qrels",
    "RetrievalDataset",
    "Run",
    "Splits",
    "demo_path",
    "load_beir",
    "load_dataset",
    "load_folder",
    "load_lotte",
    "load_msmarco",
    "make_splits",
    "require_training_split",
    "resolve_dataset",
]
