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

Every encoder family (``maw.models.families``) is cached the same way. MPNet's relative position
bias is not stored: ``Encoder.run_layers`` (the suffix runner) recomputes it for the padded batch
from token indices, and right padding leaves the valid tokens' relative positions, hence their bias,
unchanged; its table is hashed into the key with the embeddings.

Caches are keyed by a hash of the prefix weights (embeddings + layers ``[0, k)``), the tokenizer,
the texts, the max length, ``k`` and the dtype, so runs with the same frozen prefix (e.g.
finetune / LoRA / MAW on the last layer) share one cache when given the same ``cache_dir``.
A folder is built under a temporary name and renamed into place: a killed build leaves no
half-written cache (its temporary folder is removed by the next build once its process is gone).

Building at scale (memory independent of the number of tokens):

1. :meth:`PrefixCache.plan` finds the key; for a cache that does not exist yet it counts the tokens
   of every text, ``TOKENIZE_CHUNK`` texts per tokenizer call (the tokenizer's output, ~250 B a
   token, lives for one chunk; 8 B a text are kept), which gives the exact size
   ``total_tokens x hidden_size x itemsize`` of ``hidden.bin`` before anything runs.
2. The caller decides: above ``MAX_CACHE_BYTES`` (50 GB; at d = 384 in float16 that is about 65M
   tokens, e.g. 0.9M passages of 70 tokens) the trainer does not cache and runs the frozen prefix live (logged, and
   recorded in the result as ``prefix_cache_skipped``); the count stops as soon as the cap is
   passed. :func:`check_free_space` raises :class:`PrefixCacheSpaceError` (naming the folder, the
   bytes needed and free, and the fixes) when the disk cannot hold the cache.
3. :meth:`PrefixCache.build` runs the prefix over ``batch_size`` texts at a time in the same
   longest-first order as a one-shot build (so the bytes written are identical for any chunking),
   tokenising each batch on its own, and writes every text's rows with ``os.pwrite`` (no memory map
   of the file being written, so resident memory does not grow with the file).

Texts are any ``Sequence[str]`` (a list, or :class:`CorpusTexts`: a corpus read on demand).
:func:`training_prefix` gives the trainer its prefix states: cached, or live (:class:`LivePrefix`).

:class:`PrefixCachedRetriever` retrieves with a trained encoder whose corpus passes through the
frozen layers once, from the cache (``maw benchmark``'s test retrieval of trained cells).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from maw.config import ConfigError
from maw.data.types import RetrievalDataset, Splits
from maw.models.encoder import Encoder
from maw.plan import Plan
from maw.retrieval.dense import CorpusRows, DenseRetriever, rank_and_world
from maw.utils.io import atomic_write_json, fingerprint, read_json, staging_dir
from maw.utils.precision import amp_key, inference_precision

CACHE_FORMAT = 1
_DTYPES = {"float16": np.float16, "float32": np.float32}
TOKENIZE_CHUNK = 10_000  # texts per tokenizer call of the token-count pass
MAX_CACHE_BYTES = 50 * 10**9  # above this the trainer runs the frozen prefix live (see the module doc)

log = logging.getLogger(__name__)


class PrefixCacheSpaceError(ConfigError):
    """The cache folder's disk cannot hold the cache about to be built (names folder, bytes, fixes)."""


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


def check_free_space(folder: str | Path, needed: int) -> None:
    """Raise :class:`PrefixCacheSpaceError` unless ``folder``'s disk has ``needed`` bytes free."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise PrefixCacheSpaceError(
            f"--prefix-cache-dir: {folder} has {_gb(free)} ({free} bytes) free but the frozen-prefix cache "
            f"needs {_gb(needed)} ({needed} bytes); free space there, point --prefix-cache-dir at a larger "
            "disk, or train with --no-prefix-cache (the frozen layers then run at every step)"
        )


class CorpusTexts(Sequence):
    """``Document.full_text()`` of a corpus in its id order, read on demand (no string kept per document).

    Slices of a memory-mapped ``CorpusTable`` are one sequential read (``full_texts(start, stop)``).
    """

    def __init__(self, corpus: Mapping):
        self.corpus = corpus
        self._ids = None if hasattr(corpus, "full_texts") else list(corpus)

    def __len__(self) -> int:
        return len(self.corpus)

    def __getitem__(self, i):
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            if step != 1:
                return [self[j] for j in range(start, stop, step)]
            if self._ids is None:
                return self.corpus.full_texts(start, stop)
            return [self.corpus[d].full_text() for d in self._ids[start:stop]]
        if self._ids is None:
            return self.corpus.document(range(len(self))[i]).full_text()
        return self.corpus[self._ids[i]].full_text()

    def __iter__(self) -> Iterator[str]:
        for start in range(0, len(self), TOKENIZE_CHUNK):
            yield from self[start : start + TOKENIZE_CHUNK]


class DocTexts(Mapping):
    """``doc_id -> Document.full_text()`` of a corpus, read on demand (for :class:`LivePrefix`)."""

    def __init__(self, corpus: Mapping):
        self.corpus = corpus

    def __getitem__(self, doc_id: str) -> str:
        return self.corpus[doc_id].full_text()

    def __len__(self) -> int:
        return len(self.corpus)

    def __iter__(self) -> Iterator[str]:
        return iter(self.corpus)


def token_counts(
    encoder: Encoder, texts: Sequence[str], max_length: int, stop_above: int | None = None
) -> np.ndarray:
    """(N,) int64 tokens of each text after truncation, ``TOKENIZE_CHUNK`` texts per tokenizer call.

    With ``stop_above``, stops after the first chunk that takes the running total above it and
    returns the counts so far (fewer than N).
    """
    parts, total = [], 0
    for start in range(0, len(texts), TOKENIZE_CHUNK):
        part = encoder.token_lengths(texts[start : start + TOKENIZE_CHUNK], max_length, TOKENIZE_CHUNK)
        parts.append(part)
        total += int(part.sum())
        if stop_above is not None and total > stop_above:
            break
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class CachePlan:
    """What building one cache means, known before building it (:meth:`PrefixCache.plan`).

    ``lengths``: (N,) token counts (None when the cache exists); ``complete`` False when the count
    stopped early above ``max_bytes`` (``total_tokens`` and ``nbytes`` are then lower bounds).
    """

    name: str
    folder: Path
    key: str
    exists: bool
    total_tokens: int
    hidden_size: int
    dtype: str
    max_length: int
    upto: int
    lengths: np.ndarray | None = None
    complete: bool = True
    amp: str = "float32"  # autocast dtype of the prefix pass ("bfloat16" / "float16"; maw.utils.precision)

    @property
    def nbytes(self) -> int:
        """Bytes of ``hidden.bin``: total_tokens x hidden_size x itemsize."""
        return self.total_tokens * self.hidden_size * np.dtype(_DTYPES[self.dtype]).itemsize

    @property
    def write_bytes(self) -> int:
        """Bytes a build writes (``hidden.bin`` + ``offsets.npy``; 0 when the cache exists)."""
        return 0 if self.exists else self.nbytes + 8 * (len(self.lengths) + 1)


def over_cap_reason(plans: Sequence[CachePlan], max_bytes: int) -> str | None:
    """Why caches of this total size are not built (None when they fit under ``max_bytes``)."""
    total = sum(p.nbytes for p in plans)
    if total <= max_bytes:
        return None
    at_least = "" if all(p.complete for p in plans) else "at least "
    return (
        f"the frozen-prefix cache would take {at_least}{_gb(total)} "
        f"({', '.join(p.name for p in plans)}), above the {_gb(max_bytes)} cap; running the frozen layers live"
    )


def prefix_fingerprint(encoder: Encoder, upto: int) -> str:
    """Hash of the input modules' (embeddings; MPNet: + its position bias table) and layers
    ``[0, upto)``'s tensors and the tokenizer identity (BERT keys are those of older caches)."""
    h = hashlib.sha256()
    h.update(
        f"{encoder.model_name}\x00{type(encoder.tokenizer).__name__}\x00{len(encoder.tokenizer)}\x00{upto}".encode()
    )
    modules = encoder.family.input_modules(encoder.backbone) + [
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
    def key(
        encoder: Encoder, texts: Sequence[str], max_length: int, upto: int, dtype: str, amp: str = "float32"
    ) -> str:
        return fingerprint(
            [
                prefix_fingerprint(encoder, upto),
                fingerprint(texts),
                str(max_length),
                str(upto),
                dtype,
                str(CACHE_FORMAT),
            ]
            + amp_key(amp, encoder.device)  # how the pass ran; float32 keys are those of older caches
        )

    @classmethod
    def plan(
        cls,
        encoder: Encoder,
        texts: Sequence[str],
        max_length: int,
        upto: int,
        cache_dir: str | Path,
        dtype: str = "float16",
        name: str = "prefix",
        max_bytes: int | None = None,
        amp: str = "float32",
    ) -> CachePlan:
        """Where the cache of ``texts`` lives, whether it exists and its exact size (token-count pass)."""
        if dtype not in _DTYPES:
            raise ValueError(f"--prefix-cache-dtype: must be one of {sorted(_DTYPES)}, got {dtype!r}")
        key = cls.key(encoder, texts, max_length, upto, dtype, amp)
        folder = Path(cache_dir) / f"{name}-{key}"
        common = dict(
            name=name, folder=folder, key=key, dtype=dtype, max_length=max_length, upto=upto, amp=amp
        )
        if (folder / "meta.json").is_file():
            meta = read_json(folder / "meta.json")
            return CachePlan(
                exists=True,
                total_tokens=int(meta["total_tokens"]),
                hidden_size=int(meta["hidden_size"]),
                **common,
            )
        itemsize = np.dtype(_DTYPES[dtype]).itemsize
        stop = None if max_bytes is None else max_bytes // (encoder.hidden_size * itemsize)
        lengths = token_counts(encoder, texts, max_length, stop_above=stop)
        return CachePlan(
            exists=False,
            total_tokens=int(lengths.sum()),
            hidden_size=encoder.hidden_size,
            lengths=lengths,
            complete=len(lengths) == len(texts),
            **common,
        )

    @classmethod
    def build(
        cls,
        plan: CachePlan,
        encoder: Encoder,
        texts: Sequence[str],
        batch_size: int = 128,
        show_progress: bool = False,
    ) -> PrefixCache:
        """Build the planned cache (atomically) and open it; opens it when it exists."""
        if plan.exists or (plan.folder / "meta.json").is_file():
            return cls(plan.folder)
        if not plan.complete:
            raise ValueError(
                f"{plan.folder}: the token count stopped at the size cap; plan without max_bytes"
            )
        cache_dir = plan.folder.parent
        cache_dir.mkdir(parents=True, exist_ok=True)
        _remove_stale_builds(cache_dir, f".{plan.folder.name}.")
        tmp = staging_dir(cache_dir, prefix=f".{plan.folder.name}.{os.getpid()}.")
        try:
            cls._build(encoder, texts, plan, tmp, batch_size, show_progress)
            try:
                os.rename(tmp, plan.folder)
            except OSError:  # built concurrently by another process: keep theirs
                if not (plan.folder / "meta.json").is_file():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return cls(plan.folder)

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
        """Open ``cache_dir/<name>-<key>`` if it exists, else check the free space, build it (atomically)
        and open it. No size cap here: callers that apply one use :meth:`plan` and :func:`over_cap_reason`."""
        plan = cls.plan(encoder, texts, max_length, upto, cache_dir, dtype, name)
        if not plan.exists:
            check_free_space(cache_dir, plan.write_bytes)
        return cls.build(plan, encoder, texts, batch_size, show_progress)

    @staticmethod
    @torch.inference_mode()
    def _build(
        encoder: Encoder,
        texts: Sequence[str],
        plan: CachePlan,
        folder: Path,
        batch_size: int,
        show_progress: bool,
    ) -> None:
        was_training = encoder.training
        encoder.eval()
        device, dim, dtype = encoder.device, plan.hidden_size, _DTYPES[plan.dtype]
        lengths = plan.lengths
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        row_bytes = dim * np.dtype(dtype).itemsize
        order = np.argsort(-lengths, kind="stable")  # longest first: little padding
        starts = range(0, len(order), batch_size)
        if show_progress:
            from rich.progress import track

            starts = track(
                starts, description=f"prefix cache ({plan.name})", total=len(starts), transient=True
            )
        pad_id = encoder.tokenizer.pad_token_id or 0
        amp = None if plan.amp == "float32" else getattr(torch, plan.amp)
        with inference_precision(encoder, amp, device), open(folder / "hidden.bin", "wb") as fh:
            fh.truncate(max(int(offsets[-1]), 1) * row_bytes)  # (total_tokens, d), row-major
            for start in starts:
                rows = order[start : start + batch_size]
                ids = encoder.tokenizer(
                    [texts[int(r)] for r in rows], truncation=True, max_length=plan.max_length, padding=False
                )["input_ids"]
                if [len(x) for x in ids] != lengths[rows].tolist():
                    raise RuntimeError(f"{plan.folder}: the texts changed while the cache was being built")
                width = int(lengths[rows].max())
                input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for i, x in enumerate(ids):
                    input_ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
                    mask[i, : len(x)] = 1
                out = encoder.prefix(input_ids.to(device), mask.to(device), plan.upto)
                out = out.float().cpu().numpy()
                for i, r in enumerate(rows):
                    n = int(lengths[r])
                    os.pwrite(fh.fileno(), out[i, :n].astype(dtype).tobytes(), int(offsets[r]) * row_bytes)
        np.save(folder / "offsets.npy", offsets, allow_pickle=False)
        atomic_write_json(
            folder / "meta.json",
            {
                "format": CACHE_FORMAT,
                "key": plan.key,
                "name": plan.name,
                "model": encoder.model_name,
                "upto": plan.upto,
                "max_length": plan.max_length,
                "dtype": plan.dtype,
                "amp": plan.amp,
                "num_texts": len(lengths),
                "total_tokens": int(offsets[-1]),
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


def training_prefix(
    plan: Plan,
    encoder: Encoder,
    dataset: RetrievalDataset,
    splits: Splits,
    cache_dir: Path,
    ctx,
    encode_dtype: torch.dtype | None,
) -> tuple[CachedPrefix | LivePrefix, dict[str, Any]]:
    """The trainer's frozen-prefix states of the train / val queries and the corpus, and what to
    record about them: cached (rank 0 builds, the others open) or live when the cache is off,
    ``k = 0``, or the caches would exceed ``prefix_cache_max_gb`` (default ``MAX_CACHE_BYTES``)."""
    from maw.training.distributed import rank0_first
    from maw.utils.precision import dtype_name

    cfg, k = plan.train, plan.layers.first_trainable
    q_ids = sorted(set(splits.train) | set(splits.val))
    q_texts = {q: dataset.queries[q] for q in q_ids}
    max_lengths = {"query": plan.model.query_max_length, "doc": plan.model.doc_max_length}

    def live(reason: str | None = None):
        texts = {"query": q_texts, "doc": DocTexts(dataset.corpus)}
        provider = LivePrefix(encoder, k, texts, max_lengths, trainable=plan.layers.train_embeddings)
        info = {"prefix_cache": False, "first_trainable": k}
        return provider, info if reason is None else {**info, "prefix_cache_skipped": reason}

    if not (cfg.prefix_cache and k > 0):
        return live()
    t0 = time.perf_counter()
    max_bytes = int(cfg.prefix_cache_max_gb * 1e9)
    texts = {"queries": [q_texts[q] for q in q_ids], "docs": CorpusTexts(dataset.corpus)}
    lengths = {"queries": max_lengths["query"], "docs": max_lengths["doc"]}
    amp = dtype_name(encode_dtype)

    def build():  # rank 0: plan both caches, apply the cap and the free-space check, build
        dtype = cfg.prefix_cache_dtype
        plans = [
            PrefixCache.plan(encoder, texts[n], lengths[n], k, cache_dir, dtype, n, max_bytes, amp=amp)
            for n in ("queries", "docs")
        ]
        reason = over_cap_reason(plans, max_bytes)
        if reason is not None:
            return None, reason
        check_free_space(cache_dir, sum(p.write_bytes for p in plans))
        show, batch = plan.runtime.progress, plan.eval.eval_batch_size
        caches = [PrefixCache.build(p, encoder, texts[p.name], batch, show) for p in plans]
        return [str(c.folder) for c in caches], None

    folders, reason = rank0_first(ctx, build)
    if reason is not None:
        log.warning("%s: %s", plan.method, reason)
        return live(reason)
    qc, dc = (PrefixCache(f) for f in folders)
    info = {
        "prefix_cache": True,
        "first_trainable": k,
        "cache_dir": str(cache_dir),
        "query_cache": str(qc.folder),
        "doc_cache": str(dc.folder),
        "cache_bytes": qc.nbytes + dc.nbytes,
        "cache_seconds": time.perf_counter() - t0,
        "dtype": cfg.prefix_cache_dtype,
        "amp": amp,
    }
    return CachedPrefix(qc, q_ids, dc, list(dataset.corpus)), info


# ---------------------------------------------------------------------------------------------- retrieval
class PrefixCachedRetriever(DenseRetriever):
    """A ``DenseRetriever`` whose corpus embeddings come from the trainer's frozen-prefix cache.

    The hidden states entering the first trainable layer ``k`` of every document were computed
    once by the trainer (``maw.training.prefix_cache``); only layers ``[k, N)`` of the trained
    encoder run on the corpus here. The cache is used only when its key (prefix weights, texts,
    max length, k, dtype) matches the trained encoder and the corpus, so the embeddings equal a
    full encode up to float rounding (float32 cache) or float16 storage of the prefix states.
    As in ``DenseRetriever``, the embeddings go shard by shard into an embedding store
    (``embedding_dtype``, under ``cache_dir``), each rank encoding its shards under torch.distributed.
    Queries are encoded by the full model. ``docs_per_second`` is the full model's throughput
    (what indexing new documents costs), timed on ``throughput_sample`` documents spread evenly
    over the corpus (typical lengths) after an untimed warm-up batch.
    """

    def __init__(
        self,
        encoder,
        doc_cache_dir: str | Path,
        first_trainable: int,
        throughput_sample: int,
        **kwargs,
    ):
        super().__init__(encoder, **kwargs)
        self.prefix_cache = PrefixCache(doc_cache_dir)
        self.first_trainable = first_trainable
        self.throughput_sample = throughput_sample

    def embed_corpus(self, corpus):
        """The store of document embeddings (sharded across ranks as in ``DenseRetriever``), then
        (rank 0) the full model's throughput on a sample."""
        rows = CorpusRows(corpus)
        texts = rows.texts(0, len(rows))
        cache, k = self.prefix_cache, self.first_trainable
        amp = cache.meta.get("amp", "float32")
        if amp != self.amp:
            raise RuntimeError(
                f"prefix cache {cache.folder} was built under {amp} autocast, the retriever encodes in {self.amp}"
            )
        if PrefixCache.key(
            self.encoder, texts, self.doc_max_length, k, cache.meta["dtype"], amp
        ) != cache.meta.get("key"):
            raise RuntimeError(
                f"prefix cache {cache.folder} does not match the trained encoder and the corpus"
            )
        self.fingerprint_extra = f"prefix cache {cache.meta['key']} + layers {k + 1}..N"
        self.encoder.eval()
        ids, store = super().embed_corpus(corpus)
        self.timings.update(
            doc_encode_mode=f"prefix cache + layers {k + 1}..N",
            prefix_cache=str(cache.folder),
            prefix_cache_dtype=cache.meta["dtype"],
        )
        if rank_and_world()[0] == 0:
            n = max(1, min(self.throughput_sample, len(texts)))
            sample = texts[:: max(1, len(texts) // n)][:n]
            self._encode(sample[:8], self.doc_max_length, self.batch_size)  # warm-up, not timed
            t1 = time.perf_counter()
            self._encode(sample, self.doc_max_length, self.batch_size)
            full = time.perf_counter() - t1
            self.timings.update(
                docs_per_second=len(sample) / full if full > 0 else None, docs_per_second_sample=len(sample)
            )
        return ids, store

    @torch.inference_mode()
    def encode_shard(self, rows, start: int, stop: int, description: str) -> np.ndarray:
        """Embeddings of corpus rows [start, stop): layers [k, N) over their cached states (cache
        row i is corpus row i), longest first so that batches hold similar lengths."""
        cache, k = self.prefix_cache, self.first_trainable
        out = np.empty((stop - start, self.encoder.hidden_size), dtype=np.float32)
        order = start + np.argsort(-cache.lengths[start:stop], kind="stable")
        with self._precision():
            for b in range(0, len(order), self.batch_size):
                batch = order[b : b + self.batch_size]
                hidden, mask = cache.batch(batch.tolist(), self.device)
                emb = self.encoder.suffix(hidden, mask, k)
                out[batch - start] = emb.float().cpu().numpy()
        return out
