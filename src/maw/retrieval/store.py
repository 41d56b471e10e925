"""On-disk embedding store: an (N, d) matrix in row shards, written once, read memory-mapped.

A store is a folder::

    meta.json             {"format", "rows": N, "dim": d, "dtype", "shard_size": S, ...}
    shard-00000.npy       rows [0, S) as a (S, d) array of ``dtype`` (float16 or float32)
    shard-00000.json      {"rows", "seconds", "device"}: written after the .npy, marks the shard done
    ...

Shard ``i`` holds rows ``[i * S, min((i + 1) * S, N))``. Each shard file is written atomically
and its ``.json`` last, so after a kill the finished shards are exactly those with both files,
and a rerun encodes only the others (:meth:`EmbeddingStore.missing`). Shards are independent, so
several processes can fill one store: rank ``r`` of ``world_size`` writes shards ``i`` with
``i % world_size == r``. Reading maps one shard at a time (:meth:`chunks`), so a search holds one
shard, not the matrix.

Storage: float16 halves the disk and page-cache footprint (N x d x 2 bytes: 6.8 GB for 8.8M x 384);
embeddings are L2-normalised, so float16's ~3 significant digits bound the score error by ~1e-3.
Search converts each shard to float32 (FAISS computes in float32).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from maw.utils.io import atomic_path, atomic_write_json, read_json

FORMAT = "maw.embeddings/1"
DTYPES = ("float16", "float32")
DEFAULT_SHARD_SIZE = 1 << 16  # 65,536 rows: 48 MiB of float16 at d = 384


class EmbeddingStore:
    """A store folder for ``rows`` x ``dim`` embeddings (created, or reopened when it matches)."""

    def __init__(
        self,
        folder: str | Path,
        rows: int,
        dim: int,
        dtype: str = "float16",
        shard_size: int = DEFAULT_SHARD_SIZE,
        meta: dict[str, Any] | None = None,
    ):
        self.check_dtype(dtype)
        if rows < 0 or dim < 1 or shard_size < 1:
            raise ValueError(f"bad store shape: rows={rows}, dim={dim}, shard_size={shard_size}")
        self.folder = Path(folder)
        plan = {"format": FORMAT, "rows": rows, "dim": dim, "dtype": dtype}
        existing = self._read_meta()
        if existing is not None and all(existing.get(k) == v for k, v in plan.items()):
            shard_size = int(existing["shard_size"])  # reopen as it was made
            self.meta = existing
        else:
            if existing is not None or self.folder.exists():
                shutil.rmtree(self.folder, ignore_errors=True)  # another plan under this name: start over
            self.meta = {**(meta or {}), **plan, "shard_size": shard_size}
            atomic_write_json(self.folder / "meta.json", self.meta)
        self.rows, self.dim, self.dtype, self.shard_size = rows, dim, dtype, shard_size

    @staticmethod
    def check_dtype(dtype: str) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"embedding dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")

    @property
    def dtype_size(self) -> int:
        return np.dtype(self.dtype).itemsize

    def _read_meta(self) -> dict[str, Any] | None:
        try:
            return read_json(self.folder / "meta.json")
        except (OSError, ValueError):
            return None

    # ------------------------------------------------------------------ layout
    @property
    def num_shards(self) -> int:
        return -(-self.rows // self.shard_size)

    @property
    def nbytes(self) -> int:
        """N x d x itemsize: the bytes an exact (flat) search reads."""
        return self.rows * self.dim * np.dtype(self.dtype).itemsize

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.dim)

    def __len__(self) -> int:
        return self.rows

    def bounds(self, i: int) -> tuple[int, int]:
        """Rows ``[start, stop)`` of shard ``i``."""
        start = i * self.shard_size
        return start, min(start + self.shard_size, self.rows)

    def _paths(self, i: int) -> tuple[Path, Path]:
        return self.folder / f"shard-{i:05d}.npy", self.folder / f"shard-{i:05d}.json"

    # ------------------------------------------------------------------ writing
    def done(self, i: int) -> bool:
        """Shard ``i`` is written: its .json and a readable .npy of the right shape and dtype."""
        npy, info = self._paths(i)
        if not info.is_file():
            return False
        try:
            arr = np.load(npy, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):
            return False
        start, stop = self.bounds(i)
        return arr.shape == (stop - start, self.dim) and arr.dtype == np.dtype(self.dtype)

    def missing(self, rank: int = 0, world_size: int = 1) -> list[int]:
        """Shards not yet written that rank ``rank`` of ``world_size`` is responsible for."""
        return [i for i in range(rank, self.num_shards, world_size) if not self.done(i)]

    @property
    def complete(self) -> bool:
        return not self.missing()

    def write(self, i: int, emb: np.ndarray, info: dict[str, Any] | None = None) -> None:
        """Write shard ``i`` from a (rows_i, d) array (cast to the store dtype), atomically."""
        start, stop = self.bounds(i)
        if emb.shape != (stop - start, self.dim):
            raise ValueError(f"shard {i} needs shape {(stop - start, self.dim)}, got {emb.shape}")
        npy, info_path = self._paths(i)
        with atomic_path(npy) as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(emb, dtype=self.dtype), allow_pickle=False)
        atomic_write_json(info_path, {"rows": stop - start, **(info or {})}, indent=None)

    def shard_info(self, i: int) -> dict[str, Any]:
        try:
            return json.loads(self._paths(i)[1].read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    # ------------------------------------------------------------------ reading
    def shard(self, i: int) -> np.ndarray:
        """Shard ``i`` memory-mapped, (rows_i, d) of the store dtype."""
        return np.load(self._paths(i)[0], mmap_mode="r", allow_pickle=False)

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(start_row, shard)`` for every shard, in order; one shard mapped at a time."""
        for i in range(self.num_shards):
            yield self.bounds(i)[0], self.shard(i)

    def to_array(self) -> np.ndarray:
        """The whole (N, d) matrix in float32, in memory (small stores, tests)."""
        out = np.empty((self.rows, self.dim), dtype=np.float32)
        for start, arr in self.chunks():
            out[start : start + len(arr)] = arr
        return out

    def __array__(self, dtype=None, copy=None):
        arr = self.to_array()
        return arr if dtype is None else arr.astype(dtype)


def iter_chunks(emb: np.ndarray | EmbeddingStore, rows: int = DEFAULT_SHARD_SIZE):
    """``(start_row, block)`` blocks of an in-memory (N, d) array or of a store's shards."""
    if isinstance(emb, EmbeddingStore):
        yield from emb.chunks()
        return
    for start in range(0, len(emb), rows):
        yield start, emb[start : start + rows]
