"""Download + safe extraction: file:// and a local HTTP server, checksums, corrupt zips, zip-slip."""

from __future__ import annotations

import functools
import hashlib
import http.server
import stat
import threading
import zipfile
from pathlib import Path

import pytest

from maw.data import DataError, load_beir
from maw.data.download import BEIR_DATASETS, download_and_extract


def zip_folder(folder: Path, archive: Path, top: str | None = None) -> Path:
    """Zip ``folder`` (as BEIR does: members under ``top/``)."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder).as_posix()
            zf.write(path, f"{top}/{rel}" if top else rel)
    return archive


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def beir_zip(tmp_path, make_beir) -> Path:
    src = make_beir(tmp_path / "src" / "toy")
    return zip_folder(src, tmp_path / "toy.zip", top="toy")


@pytest.fixture
def http_root(tmp_path):
    """Serve tmp_path/www on 127.0.0.1 (random port) from a daemon thread; yields (root, base_url)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - keep test output clean
        pass


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


def test_file_url_with_md5(beir_zip, tmp_path):
    target = tmp_path / "cache" / "toy"
    out = download_and_extract(beir_zip.as_uri(), target, md5=md5(beir_zip))
    assert out == target and (target / "corpus.jsonl").is_file() and (target / "qrels" / "test.tsv").is_file()
    assert len(load_beir(target).corpus) == 6
    assert leftovers(target.parent) == ["toy"]  # the temp zip and staging folder are gone


def test_http_server(beir_zip, http_root, tmp_path):
    root, base = http_root
    (root / "toy.zip").write_bytes(beir_zip.read_bytes())
    target = tmp_path / "cache" / "toy"
    download_and_extract(f"{base}/toy.zip", target, md5=md5(beir_zip), timeout=10)
    assert len(load_beir(target).queries) == 6


def test_http_404(http_root, tmp_path):
    _, base = http_root
    with pytest.raises(DataError, match=r"download of http://127\.0\.0\.1:\d+/missing\.zip failed: HTTP 404"):
        download_and_extract(f"{base}/missing.zip", tmp_path / "cache" / "x", timeout=10)
    assert leftovers(tmp_path / "cache") == []


def test_checksum_mismatch_leaves_nothing(beir_zip, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"checksum mismatch .* expected 0{32}; the download was discarded"):
        download_and_extract(beir_zip.as_uri(), cache / "toy", md5="0" * 32)
    assert leftovers(cache) == []


def test_corrupt_zip(beir_zip, tmp_path):
    data = bytearray(beir_zip.read_bytes())
    data[len(data) // 3 : len(data) // 3 + 64] = b"\x00" * 64  # damage member data (CRC fails)
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(bytes(data))
    with pytest.raises(DataError, match="damaged.zip"):
        download_and_extract(damaged.as_uri(), tmp_path / "cache" / "toy")
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"this is not a zip file at all")
    with pytest.raises(DataError, match=r"garbage\.zip is not a valid zip file"):
        download_and_extract(garbage.as_uri(), tmp_path / "cache" / "toy")
    assert leftovers(tmp_path / "cache") == []


@pytest.mark.parametrize("member", ["../evil.txt", "toy/../../evil.txt", "ABSOLUTE"])
def test_zip_slip_is_refused(tmp_path, member):
    cache = tmp_path / "deep" / "cache"
    cache.mkdir(parents=True)
    absolute = tmp_path / "abs_evil.txt"
    name = str(absolute) if member == "ABSOLUTE" else member
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("toy/corpus.jsonl", '{"_id": "d", "text": "t"}\n')
        zf.writestr(zipfile.ZipInfo(name), "pwned")
    with pytest.raises(DataError, match=r"refusing member '.*evil\.txt'"):
        download_and_extract(archive.as_uri(), cache / "toy")
    assert not absolute.exists()
    assert not (tmp_path / "deep" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert leftovers(cache) == []


def test_symlink_member_is_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("toy/corpus.jsonl")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(DataError, match=r"refusing member 'toy/corpus\.jsonl': symbolic links"):
        download_and_extract(archive.as_uri(), tmp_path / "cache" / "toy")
    assert leftovers(tmp_path / "cache") == []


def test_unreachable_url(tmp_path):
    with pytest.raises(DataError, match="download of file:.*nowhere.zip failed"):
        download_and_extract((tmp_path / "nowhere.zip").as_uri(), tmp_path / "cache" / "x")


def test_existing_target_is_not_overwritten(beir_zip, tmp_path):
    target = tmp_path / "cache" / "toy"
    target.mkdir(parents=True)
    with pytest.raises(DataError, match="already exists"):
        download_and_extract(beir_zip.as_uri(), target)


def test_beir_table():
    for name in (
        "msmarco",
        "nq",
        "hotpotqa",
        "fiqa",
        "scifact",
        "nfcorpus",
        "arguana",
        "scidocs",
        "trec-covid",
        "quora",
    ):
        src = BEIR_DATASETS[name]
        assert src.url == f"https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"
        assert src.md5 is None or (len(src.md5) == 32 and int(src.md5, 16) >= 0)
    assert BEIR_DATASETS["scifact"].md5 == "5f7d1de60b170fc8027bb7898e2efca1"
    assert "robust04" not in BEIR_DATASETS and "signal1m" not in BEIR_DATASETS
