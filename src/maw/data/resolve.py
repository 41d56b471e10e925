"""Find a dataset by name or path, download it when needed, and load it whatever its format.

Resolution order of :func:`resolve_dataset` for ``name_or_path``:

1. ``"demo"``: the small collection shipped inside the package (``maw/data/demo``).
2. An existing path (folder).
3. ``$MAW_DATA_DIR/NAME`` (the documented data location, like BEIR's; the only environment
   variable the package reads).
4. ``data_dir/NAME`` when ``data_dir`` is given, else ``~/.cache/maw/datasets/NAME``.
5. Download of the official BEIR zip for NAME (see ``maw.data.download.BEIR_DATASETS``) into
   the folder of step 4.

When everything fails, ONE DataError lists every location tried and the URL. Names of the form
``cqadupstack/android`` resolve ``cqadupstack`` then take its ``android`` sub-folder.

:func:`load_dataset` also takes ``ir_datasets`` collections, which have no folder of their own:
``irds:<id>`` (e.g. ``irds:beir/scifact/test``) and the short names ``trec-dl-2019``,
``trec-dl-2020`` and ``lotte-DOMAIN[-dev|-test][-search|-forum]`` (a local folder of the same name,
steps 3-4, wins over a short name). They are read by :mod:`maw.data.irds`, which documents how ids
map to the train / dev / test splits.
"""

from __future__ import annotations

import logging
import os
from importlib import resources
from pathlib import Path

from maw.data.beir import load_beir
from maw.data.download import BEIR_DATASETS, NOT_PUBLIC, download_and_extract
from maw.data.irds import is_irds, load_irds, short_name
from maw.data.lotte import is_lotte_folder, load_lotte
from maw.data.msmarco import load_msmarco
from maw.data.types import DataError, RetrievalDataset
from maw.utils.io import default_cache_dir

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "MAW_DATA_DIR"
DEMO = "demo"


def demo_path() -> Path:
    """Folder of the packaged demo collection (BEIR format)."""
    path = Path(str(resources.files("maw.data").joinpath("demo")))
    if not (path / "corpus.jsonl").is_file():
        raise DataError(f"the packaged demo collection is missing from {path}; reinstall maw")
    return path


def detect_format(folder: str | Path) -> str | None:
    """ "beir", "msmarco", "lotte" or None, from the files present in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    if (
        (folder / "corpus.jsonl").exists()
        or (folder / "queries.jsonl").exists()
        or (folder / "qrels").is_dir()
    ):
        return "beir"
    if is_lotte_folder(folder):
        return "lotte"
    if (folder / "collection.tsv").exists() or any(folder.glob("qrels.*.tsv")):
        return "msmarco"
    return None


def dataset_root(folder: str | Path) -> Path:
    """The folder that holds the data files: ``folder`` itself, or its single wrapping sub-folder.

    BEIR zips unzipped by hand give ``NAME/NAME/corpus.jsonl``; that inner folder is returned.
    A folder of several collections (e.g. cqadupstack) raises a DataError naming them.
    """
    folder = Path(folder)
    if detect_format(folder):
        return folder
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX")))
    with_data = [p for p in subdirs if detect_format(p)]
    if len(subdirs) == 1 and with_data:
        return with_data[0]
    if with_data:
        names = ", ".join(p.name for p in with_data)
        raise DataError(
            f"{folder} holds {len(with_data)} collections ({names}); load one of them, e.g. {folder / with_data[0].name}"
        )
    raise DataError(
        f"{folder} is not a recognised dataset folder: expected BEIR (corpus.jsonl, queries.jsonl, qrels/<split>.tsv), "
        "MS MARCO (collection.tsv, queries.<set>.tsv, qrels.<set>.tsv) or LoTTE "
        "(collection.tsv, questions.<set>.tsv, qas.<set>.jsonl)"
    )


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith((".", "~", os.sep)) or os.sep in text or (os.altsep is not None and os.altsep in text)
    )


def resolve_dataset(
    name_or_path: str | Path,
    data_dir: str | Path | None = None,
    download: bool = True,
    show_progress: bool = False,
) -> Path:
    """Return the folder of a dataset, downloading the official BEIR zip if needed (see module doc).

    Raises:
        DataError: not found anywhere and not downloadable; the message lists every location
            tried and, for known names, the URL and the download error.
    """
    text = str(name_or_path)
    if text == DEMO:
        return demo_path()
    if is_irds(text):
        raise DataError(
            f"dataset {text!r} is an ir_datasets id: it has no folder; load it with maw.data.load_dataset"
        )
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise DataError(f"dataset path {path} is a file; give the folder that holds the data files")

    head, _, rest = text.partition("/")
    if rest and head in BEIR_DATASETS:  # e.g. cqadupstack/android
        sub = resolve_dataset(head, data_dir, download, show_progress) / rest
        if not sub.is_dir():
            raise DataError(
                f"{sub} does not exist; {head} has: {', '.join(sorted(p.name for p in sub.parent.iterdir() if p.is_dir()))}"
            )
        return sub
    if _looks_like_path(text):
        raise DataError(f"dataset folder not found: {path.resolve()}")

    tried: list[str] = [f"path {path.resolve()}"]
    env_dir = os.environ.get(DATA_DIR_ENV)
    if env_dir:
        candidate = Path(env_dir).expanduser() / text
        if candidate.is_dir():
            return candidate
        tried.append(f"${DATA_DIR_ENV}/{text} = {candidate}")
    else:
        tried.append(f"${DATA_DIR_ENV} (not set)")
    home = Path(data_dir).expanduser() if data_dir is not None else default_cache_dir("datasets")
    candidate = home / text
    if candidate.is_dir():
        return candidate
    tried.append(f"{'data_dir' if data_dir is not None else 'cache'} {candidate}")

    where = "\n  - ".join(tried)
    source = BEIR_DATASETS.get(text)
    if source is None:
        hint = (
            f"{text!r} is listed by BEIR but not publicly downloadable; build it with BEIR's instructions"
            if text in NOT_PUBLIC
            else f"{text!r} is not a known dataset name; known: demo, {', '.join(sorted(BEIR_DATASETS))}; "
            "ir_datasets ids as irds:<id> (e.g. irds:beir/scifact/test), trec-dl-2019, trec-dl-2020, "
            "lotte-DOMAIN"
        )
        raise DataError(
            f"dataset {text!r} not found. Looked in:\n  - {where}\n{hint}, or pass a folder path."
        )
    if not download:
        raise DataError(
            f"dataset {text!r} not found and downloading is disabled. Looked in:\n  - {where}\n"
            f"Download {source.url} and unzip it into {home}."
        )
    try:
        logger.info("dataset %s not found locally; downloading %s into %s", text, source.url, candidate)
        return download_and_extract(source.url, candidate, md5=source.md5, show_progress=show_progress)
    except DataError as exc:
        raise DataError(
            f"dataset {text!r} not found and could not be downloaded. Looked in:\n  - {where}\n"
            f"Download from {source.url} failed: {exc}\n"
            f"Without internet, download the zip elsewhere and unzip it into {home} (or ${DATA_DIR_ENV})."
        ) from None


def load_folder(folder: str | Path, name: str | None = None) -> RetrievalDataset:
    """Load a dataset folder of any supported format (detected from the files present)."""
    root = dataset_root(folder)
    fmt = detect_format(root)
    if fmt == "beir":
        return load_beir(root, name=name)
    if fmt == "lotte":
        return load_lotte(root, name=name)
    return load_msmarco(root, name=name)


def _is_irds_argument(text: str, data_dir: str | Path | None) -> bool:
    """``irds:<id>``, or a short name (trec-dl-2019, lotte-science) with no local folder of that name."""
    if is_irds(text):
        return True
    try:
        is_short = short_name(text) is not None
    except DataError:  # lotte-<unknown domain>: load_irds explains, unless a folder has that name
        is_short = True
    if not is_short:
        return False
    try:
        resolve_dataset(text, data_dir=data_dir, download=False)
    except DataError:
        return True
    return False


def load_dataset(name_or_path: str | Path, data_dir: str | Path | None = None) -> RetrievalDataset:
    """Resolve ``name_or_path`` (see :func:`resolve_dataset`) and load it as a RetrievalDataset.

    Named datasets keep their name ("demo", "scifact", "cqadupstack-android"); folders are named
    after the folder. ``irds:<id>`` and the short names of :mod:`maw.data.irds` are read through
    ``ir_datasets`` and keep the argument as their name (``data_dir`` does not apply to them).
    """
    text = str(name_or_path)
    if _is_irds_argument(text, data_dir):
        return load_irds(text)
    folder = resolve_dataset(text, data_dir=data_dir)
    is_name = text == DEMO or not Path(text).expanduser().exists()
    name = text.replace("/", "-") if is_name else None
    return load_folder(folder, name=name)
