"""Download and safely extract the official BEIR zips.

``BEIR_DATASETS`` lists the public BEIR collections with the zip URL and the md5 published in the
BEIR README's dataset table (https://github.com/beir-cellar/beir#beers-available-datasets).
BioASQ, Signal-1M, TREC-NEWS and Robust04 are not redistributed by BEIR (licences) and are absent.

:func:`download_and_extract` streams the URL (any scheme urllib handles: https, http, file) to a
temporary file, checks the md5 when one is known, validates the zip, refuses members that would
land outside the target (``..``, absolute paths, drive letters, symlinks), extracts into a
temporary folder and renames it into place, so a failure at any step leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from maw.data.types import DataError
from maw.utils.io import staging_dir

logger = logging.getLogger(__name__)

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"


@dataclass(frozen=True)
class DatasetSource:
    """Where a named dataset is downloaded from."""

    url: str
    md5: str | None = None  # as published by the provider; None = not verified
    note: str = ""


def _beir(name: str, md5: str | None, note: str = "") -> DatasetSource:
    return DatasetSource(BEIR_URL.format(name=name), md5, note)


# md5 values copied from the BEIR README dataset table.
BEIR_DATASETS: dict[str, DatasetSource] = {
    "msmarco": _beir(
        "msmarco", "444067daf65d982533ea17ebd59501e4", "splits train/dev/test (test = TREC DL 2019)"
    ),
    "trec-covid": _beir("trec-covid", "ce62140cb23feb9becf6270d0d1fe6d1"),
    "nfcorpus": _beir("nfcorpus", "a89dba18a62ef92f7d323ec890a0d38d"),
    "nq": _beir("nq", "d4d3d2e48787a744b6f6e691ff534307"),
    "hotpotqa": _beir("hotpotqa", "f412724f78b0d91183a0e86805e16114"),
    "fiqa": _beir("fiqa", "17918ed23cd04fb15047f73e6c3bd9d9"),
    "arguana": _beir("arguana", "8ad3e3c2a5867cdced806d6503f29b99"),
    "webis-touche2020": _beir("webis-touche2020", "46f650ba5a527fc69e0a6521c5a23563"),
    "cqadupstack": _beir(
        "cqadupstack", "4e41456d7df8ee7760a7f866133bda78", "12 sub-forums; load one as cqadupstack/<forum>"
    ),
    "quora": _beir("quora", "18fb154900ba42a600f84b839c173167"),
    "dbpedia-entity": _beir("dbpedia-entity", "c2a39eb420a3164af735795df012ac2c"),
    "scidocs": _beir("scidocs", "38121350fc3a4d2f48850f6aff52e4a9"),
    "fever": _beir("fever", "5a818580227bfb4b35bb6fa46d9b6c03"),
    "climate-fever": _beir("climate-fever", "8b66f0a9126c521bae2bde127b4dc99d"),
    "scifact": _beir("scifact", "5f7d1de60b170fc8027bb7898e2efca1"),
}

# Listed by BEIR but not publicly downloadable: the error message points users to BEIR's instructions.
NOT_PUBLIC = ("bioasq", "signal1m", "trec-news", "robust04")


def md5_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def fetch(url: str, dest: Path, timeout: float = 60.0, show_progress: bool = False) -> int:
    """Stream ``url`` into the file ``dest``; returns the number of bytes. Errors -> DataError."""
    try:
        response = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - user-chosen dataset URL
    except urllib.error.HTTPError as exc:
        raise DataError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"download of {url} failed: {reason}") from None
    total = int(response.headers.get("Content-Length") or 0) or None
    written = 0
    progress = None
    if show_progress:
        from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

        progress = Progress(
            "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn()
        )
        progress.start()
        task = progress.add_task(f"download {url.rsplit('/', 1)[-1]}", total=total)
    try:
        with response, open(dest, "wb") as out:
            while block := response.read(1 << 20):
                out.write(block)
                written += len(block)
                if progress is not None:
                    progress.update(task, completed=written)
    except OSError as exc:
        raise DataError(f"download of {url} failed after {written} bytes: {exc}") from None
    finally:
        if progress is not None:
            progress.stop()
    if total is not None and written != total:
        raise DataError(f"download of {url} is truncated: got {written} of {total} bytes")
    return written


def check_members(zf: zipfile.ZipFile, archive: str) -> list[zipfile.ZipInfo]:
    """Return the archive's members, refusing any that could write outside the extraction folder.

    Refused: absolute paths, Windows drive letters or backslash paths, ``..`` components, and
    symbolic links. The error names the member and the archive.
    """
    members = zf.infolist()
    for info in members:
        name = info.filename
        path = PurePosixPath(name)
        mode = info.external_attr >> 16
        if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or "\\" in name:
            raise DataError(f"{archive}: refusing member {name!r}: absolute or non-POSIX path")
        if ".." in path.parts:
            raise DataError(
                f"{archive}: refusing member {name!r}: it would be written outside the target folder"
            )
        if stat.S_ISLNK(mode):
            raise DataError(f"{archive}: refusing member {name!r}: symbolic links are not allowed")
    return members


def _single_top_folder(folder: Path) -> Path:
    """The one sub-folder of ``folder`` when it holds nothing else (BEIR zips wrap NAME/)."""
    entries = [p for p in folder.iterdir() if p.name != "__MACOSX"]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return folder


def extract_zip(archive: Path, target_dir: Path, label: str | None = None) -> Path:
    """Safely extract ``archive`` so its content (minus a single wrapping folder) is ``target_dir``.

    ``label`` names the archive in error messages (e.g. its URL; default: the path).
    """
    target_dir = Path(target_dir)
    name = label or str(archive)
    if not zipfile.is_zipfile(archive):
        raise DataError(f"{name} is not a valid zip file (corrupt or incomplete download)")
    staging = staging_dir(target_dir.parent, prefix=f".{target_dir.name}.", suffix=".extract")
    try:
        try:
            with zipfile.ZipFile(archive) as zf:
                members = check_members(zf, name)
                bad = zf.testzip()
                if bad is not None:
                    raise DataError(f"{name}: member {bad!r} is corrupt (CRC mismatch)")
                root = staging.resolve()
                for info in members:
                    dest = (staging / info.filename).resolve()
                    if dest != root and root not in dest.parents:  # belt and braces after check_members
                        raise DataError(
                            f"{name}: refusing member {info.filename!r}: escapes the target folder"
                        )
                    zf.extract(info, staging)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as exc:
            raise DataError(f"{name} is not a valid zip file: {exc}") from None
        content = _single_top_folder(staging)
        try:
            os.replace(content, target_dir)
        except OSError:
            if target_dir.exists():  # another process finished first: keep theirs
                logger.info("%s appeared while extracting; keeping the existing copy", target_dir)
            else:
                raise
        return target_dir
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def download_and_extract(
    url: str,
    target_dir: str | Path,
    md5: str | None = None,
    timeout: float = 60.0,
    show_progress: bool = False,
) -> Path:
    """Download the zip at ``url`` and extract it as ``target_dir`` (atomically; see module doc).

    Args:
        url: https://, http:// or file:// URL of a zip.
        target_dir: final folder; a zip with a single top folder (``NAME/...``) is unwrapped, so
            ``target_dir/corpus.jsonl`` exists for BEIR zips.
        md5: expected md5 of the zip (verified when given).

    Returns:
        ``target_dir``.

    Raises:
        DataError: network/file error, md5 mismatch, corrupt zip, unsafe member. Nothing is left
            behind (no partial zip, no partial folder).
    """
    target_dir = Path(target_dir).expanduser()
    if target_dir.exists():
        raise DataError(f"{target_dir} already exists; remove it to download again")
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target_dir.name}.", suffix=".zip.part", dir=target_dir.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        logger.info("downloading %s", url)
        fetch(url, tmp_path, timeout=timeout, show_progress=show_progress)
        if md5 is not None:
            got = md5_file(tmp_path)
            if got.lower() != md5.lower():
                raise DataError(
                    f"checksum mismatch for {url}: md5 {got}, expected {md5}; the download was discarded"
                )
        return extract_zip(tmp_path, target_dir, label=url)
    finally:
        tmp_path.unlink(missing_ok=True)
