"""Atomic file writes, fingerprints and environment metadata shared by every writer in the package.

Every result, checkpoint and cache file goes through ``atomic_write*``: the data is written to a
temporary file in the target folder, fsync'ed and renamed over the target, so a crash or Ctrl-C
never leaves a half-written file behind.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import platform
import tempfile
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give results the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def staging_dir(parent: str | Path, prefix: str, suffix: str = ".tmp") -> Path:
    """A fresh folder in ``parent`` to build into before an atomic rename onto its final name.

    Unlike a bare ``tempfile.mkdtemp`` (mode 0700), it gets the permissions of any new folder.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
    os.chmod(tmp, 0o777 & ~_umask())
    return tmp


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy arrays / scalars, torch tensors
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__dataclass_fields__"):
        import dataclasses

        return dataclasses.asdict(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _sanitize(obj: Any) -> Any:
    """Replace NaN/inf floats by None so the output is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _sanitize(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_sanitize(v) for v in obj]
    return obj


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    text = json.dumps(_sanitize(json.loads(json.dumps(obj, default=_json_default))), indent=indent)
    atomic_write_text(path, text + "\n")


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def fingerprint(parts: Iterable[str | bytes]) -> str:
    """A short stable hash of strings/bytes (for cache keys)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8") if isinstance(part, str) else part)
        h.update(b"\x00")
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def source_commit() -> str | None:
    """The git commit of the checkout maw runs from ("<sha>+modified" when its tracked files differ),
    or None (an installed wheel, no git): which code produced a result, without naming a path."""
    import subprocess

    src = Path(__file__).resolve().parents[1]  # the maw package
    try:
        run = functools.partial(
            subprocess.run, cwd=src, capture_output=True, text=True, timeout=10, check=True
        )
        sha = run(["git", "rev-parse", "HEAD"]).stdout.strip()
        dirty = run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."]).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}+modified" if dirty else sha or None


def environment_info() -> dict[str, Any]:
    """Versions of the libraries that affect results (saved in every result file)."""
    import importlib.metadata as md

    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    for name in (
        "maw",
        "torch",
        "transformers",
        "peft",
        "faiss-cpu",
        "bm25s",
        "ir-measures",
        "pytrec-eval-terrier",
        "numpy",
    ):
        try:
            info[name] = md.version(name)
        except md.PackageNotFoundError:
            info[name] = None
    info["maw_commit"] = source_commit()
    try:
        import torch

        info["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
        info["device_name"] = (
            torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or "cpu"
        )
        info["num_threads"] = torch.get_num_threads()
        from maw.utils.precision import cpu_bf16_support

        info["cpu_bf16"] = cpu_bf16_support()  # native bfloat16 instructions (--precision bf16)
    except Exception:  # pragma: no cover - torch is a hard dependency
        pass
    return info


def default_cache_dir(sub: str) -> Path:
    """``~/.cache/maw/<sub>`` (callers may override through their config)."""
    return Path.home() / ".cache" / "maw" / sub


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    import time

    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0
