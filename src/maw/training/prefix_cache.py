"""Frozen-prefix cache: the hidden states entering the first trainable layer, computed once.

When only the top layers train (first trainable layer ``k > 0``), the embeddings and layers
``[0, k)`` are frozen: their output for a text never changes during training. ``PrefixCache``
computes it once per text and stores it on disk, compactly:

* ``hidden.bin``: a numpy memmap ``(total_tokens, d)`` in float16 (default) or float32 — only the
  valid (non-padding) tokens of every text, concatenated in input order;
* ``offsets.npy``: ``(N + 1,)`` int64, text ``i`` owns rows ``offsets[i]:offsets[i+1]``;
* ``meta.json``: shape, dtype, ``k``, max length, model and the cache key (written last).

Each training step and each validation pass then runs only ``Encoder.suffix(hidden, mask, k)``.
The prefix is computed in eval mode (no dropout): a cached value must be deterministic. The
uncached path (``LivePrefix``) computes the same eval-mode prefix under ``no_grad``, recomputed
every step (the benchmark compares the two).

Padding does not change the valid tokens' states (masked attention), so a text's cached states
equal those it gets inside any padded batch, up to float rounding (and float16 storage, ~1e-3
relative, when ``prefix_cache_dtype="float16"``).

Caches are keyed by a hash of the prefix weights (embeddings + layers ``[0, k)``), the tokenizer,
the texts, the max length, ``k`` and the dtype, so runs with the same frozen prefix (e.g.
finetune / LoRA / MAW on the last layer) share one cache when given the same ``cache_dir``.
A folder is built under a temporary name and renamed into place: a killed build leaves no
half-written cache (its temporary folder is removed by the next build once its process is gone).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from maw.models.encoder import Encoder
from maw.utils.io import atomic_write_json, fingerprint, read_json, staging_dir

CACHE_FORMAT = 1
_DTYPES = {"float16": np.float16, "float32": np.float32}


def prefix_fingerprint(encoder: Encoder, upto: int) -> str:
    """Hash of the embeddings' and layers ``[0, upto)``'s tensors and the tokenizer identity."""
    h = hashlib.sha256()
    h.update(
        f"{encoder.model_name}\x00{type(encoder.tokenizer).__name__}\x00{len(encoder.tokenizer)}\x00{upto}".encode()
    )
    modules = [("embeddings", encoder.backbone.embeddings)] + [
        (f"layer{i}", encoder.layers[i]) for i in range(upto)
    ]
    for prefix, module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            t = tensor.detach().to("cpu").contiguous().reshape(-1)
            h.update(f"\x00{prefix}.{name}\x00{t.dtype}\x00{tuple(tensor.shape)}\x00".encode())
            h.update(memoryview(t.view(torch.uint8).numpy()))
    return h.hexdigest()[:16]


def _remove_stale_builds(cache_dir: Path, prefix: str) -> None:
    """Delete temporary build folders ``<prefix><pid>.*.tmp`` left by processes that no longer run."""
    for tmp in cache_dir.glob(f"{prefix}*.tmp"):
        try:
            pid = int(tmp.name[len(prefix) :].split(".", 1)[0])
        except ValueError:
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:  # alive, owned by someone else
            pass


class PrefixCache:
    """Hidden states entering layer ``k`` for a fixed list of texts (see the module docstring)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.meta = read_json(self.folder / "meta.json")
        if self.meta.get("format") != CACHE_FORMAT:
            raise ValueError(f"{self.folder}: unsupported prefix-cache format {self.meta.get('format')!r}")
        self.offsets = np.load(self.folder / "offsets.npy", allow_pickle=False)
        n_tokens, dim = int(self.meta["total_tokens"]), int(self.meta["hidden_size"])
        self.hidden = np.memmap(
            self.folder / "hidden.bin",
            dtype=_DTYPES[self.meta["dtype"]],
            mode="r",
            shape=(max(n_tokens, 1), dim),
        )
        self.lengths = np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def nbytes(self) -> int:
        return (
            int(self.meta["total_tokens"])
            * int(self.meta["hidden_size"])
            * np.dtype(_DTYPES[self.meta["dtype"]]).itemsize
        )

    def batch(
        self, rows: Sequence[int], device: torch.device | str = "cpu"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded float32 hidden states (B, L_max, d) and the (B, L_max) long mask of ``rows``."""
        lengths = [int(self.lengths[r]) for r in rows]
        width = max(lengths) if lengths else 0
        dim = int(self.meta["hidden_size"])
        out = np.zeros((len(rows), width, dim), dtype=np.float32)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, (r, n) in enumerate(zip(rows, lengths, strict=True)):
            start = int(self.offsets[r])
            out[i, :n] = self.hidden[start : start + n]
            mask[i, :n] = 1
        return torch.from_numpy(out).to(device), torch.from_numpy(mask).to(device)

    # ------------------------------------------------------------------ building
    @staticmethod
    def key(encoder: Encoder, texts: Sequence[str], max_length: int, upto: int, dtype: str) -> str:
        return fingerprint(
            [
                prefix_fingerprint(encoder, upto),
                fingerprint(texts),
                str(max_length),
                str(upto),
                dtype,
                str(CACHE_FORMAT),
            ]
        )

    @classmethod
    def open_or_build(
        cls,
        encoder: Encoder,
        texts: Sequence[str],
        max_length: int,
        upto: int,
        cache_dir: str | Path,
        dtype: str = "float16",
        batch_size: int = 128,
        name: str = "prefix",
        show_progress: bool = False,
    ) -> PrefixCache:
        """Open ``cache_dir/<name>-<key>`` if it exists, else build it (atomically) and open it."""
        if dtype not in _DTYPES:
            raise ValueError(f"--prefix-cache-dtype: must be one of {sorted(_DTYPES)}, got {dtype!r}")
        cache_dir = Path(cache_dir)
        key = cls.key(encoder, texts, max_length, upto, dtype)
        final = cache_dir / f"{name}-{key}"
        if (final / "meta.json").is_file():
            return cls(final)
        cache_dir.mkdir(parents=True, exist_ok=True)
        _remove_stale_builds(cache_dir, f".{name}-{key}.")
        tmp = staging_dir(cache_dir, prefix=f".{name}-{key}.{os.getpid()}.")
        try:
            cls._build(encoder, texts, max_length, upto, tmp, dtype, batch_size, key, show_progress, name)
            try:
                os.rename(tmp, final)
            except OSError:  # built concurrently by another process: keep theirs
                if not (final / "meta.json").is_file():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return cls(final)

    @staticmethod
    @torch.inference_mode()
    def _build(
        encoder: Encoder,
        texts: Sequence[str],
        max_length: int,
        upto: int,
        folder: Path,
        dtype: str,
        batch_size: int,
        key: str,
        show_progress: bool,
        name: str,
    ) -> None:
        was_training = encoder.training
        encoder.eval()
        device = encoder.device
        ids = encoder.tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)[
            "input_ids"
        ]
        lengths = np.array([len(x) for x in ids], dtype=np.int64)
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        total, dim = int(offsets[-1]), encoder.hidden_size
        hidden = np.memmap(folder / "hidden.bin", dtype=_DTYPES[dtype], mode="w+", shape=(max(total, 1), dim))
        order = np.argsort(-lengths, kind="stable")
        starts = range(0, len(order), batch_size)
        if show_progress:
            from rich.progress import track

            starts = track(starts, description=f"prefix cache ({name})", total=len(starts), transient=True)
        pad_id = encoder.tokenizer.pad_token_id or 0
        for start in starts:
            rows = order[start : start + batch_size]
            width = int(lengths[rows].max())
            input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for i, r in enumerate(rows):
                n = int(lengths[r])
                input_ids[i, :n] = torch.tensor(ids[r], dtype=torch.long)
                mask[i, :n] = 1
            out = encoder.prefix(input_ids.to(device), mask.to(device), upto).float().cpu().numpy()
            for i, r in enumerate(rows):
                n = int(lengths[r])
                hidden[offsets[r] : offsets[r] + n] = out[i, :n]
        hidden.flush()
        del hidden
        np.save(folder / "offsets.npy", offsets, allow_pickle=False)
        atomic_write_json(
            folder / "meta.json",
            {
                "format": CACHE_FORMAT,
                "key": key,
                "name": name,
                "model": encoder.model_name,
                "upto": upto,
                "max_length": max_length,
                "dtype": dtype,
                "num_texts": len(ids),
                "total_tokens": total,
                "hidden_size": dim,
            },
        )
        encoder.train(was_training)


class CachedPrefix:
    """Prefix hidden states of queries and documents served from two ``PrefixCache``s."""

    def __init__(
        self, queries: PrefixCache, query_ids: Sequence[str], docs: PrefixCache, doc_ids: Sequence[str]
    ):
        self.caches = {"query": queries, "doc": docs}
        self.rows = {
            "query": {q: i for i, q in enumerate(query_ids)},
            "doc": {d: i for i, d in enumerate(doc_ids)},
        }

    def lengths(self, kind: str, ids: Sequence[str]) -> list[int]:
        cache, rows = self.caches[kind], self.rows[kind]
        return [int(cache.lengths[rows[i]]) for i in ids]

    def hidden(
        self, kind: str, ids: Sequence[str], device: torch.device | str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, d) states entering layer k and the (B, L) mask for the texts ``ids`` of ``kind``."""
        rows = self.rows[kind]
        return self.caches[kind].batch([rows[i] for i in ids], device)


class LivePrefix:
    """The uncached path: tokenize and run the embeddings + layers ``[0, k)`` at every call.

    With a frozen prefix this runs under ``no_grad``; with trainable embeddings (method ``full``,
    ``k = 0``) it keeps the graph.
    """

    def __init__(
        self,
        encoder: Encoder,
        upto: int,
        texts: dict[str, dict[str, str]],
        max_lengths: dict[str, int],
        trainable: bool = False,
    ):
        self.encoder = encoder
        self.upto = upto
        self.texts = texts  # kind -> id -> text
        self.max_lengths = max_lengths
        self.trainable = trainable

    def lengths(self, kind: str, ids: Sequence[str]) -> list[int]:
        return self.encoder.token_lengths([self.texts[kind][i] for i in ids], self.max_lengths[kind]).tolist()

    def hidden(
        self, kind: str, ids: Sequence[str], device: torch.device | str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        tok = self.encoder.tokenize([self.texts[kind][i] for i in ids], self.max_lengths[kind])
        input_ids, mask = tok["input_ids"].to(device), tok["attention_mask"].to(device)
        if self.trainable and torch.is_grad_enabled():
            return self.encoder.prefix(input_ids, mask, self.upto), mask
        with torch.no_grad():
            return self.encoder.prefix(input_ids, mask, self.upto), mask
