"""The frozen-prefix cache: equals the live prefix, compact, reused, rebuilt when weights change."""

from __future__ import annotations

import numpy as np
import torch

from maw.training.methods import build_model
from maw.training.prefix_cache import CachedPrefix, LivePrefix, PrefixCache

TEXTS = [
    "The kalor bridge stands in osmar. It was completed in 1931.",
    "short",
    "which library in delt is famous for rare books and old maps and copper bells",
    "",
]


def _live(enc, k, texts, max_len):
    enc.eval()
    live = LivePrefix(enc, k, {"doc": dict(enumerate(texts))}, {"doc": max_len})
    return live.hidden("doc", list(range(len(texts))), "cpu")


def test_cached_states_equal_live_prefix_float32_and_float16(tiny, tmp_path):
    plan = tiny.plan("finetune")
    enc, k = build_model(plan), plan.layers.first_trainable
    live_h, live_m = _live(enc, k, TEXTS, 24)
    cache = PrefixCache.open_or_build(enc, TEXTS, 24, k, tmp_path, "float32", batch_size=2)
    h, m = cache.batch(list(range(len(TEXTS))))
    assert torch.equal(m, live_m)
    valid = m.bool()
    torch.testing.assert_close(h[valid], live_h[valid], atol=1e-5, rtol=0)
    # compact: only valid tokens are stored
    assert cache.meta["total_tokens"] == int(live_m.sum()) == cache.offsets[-1]
    assert cache.hidden.shape == (int(live_m.sum()), 32)
    c16 = PrefixCache.open_or_build(enc, TEXTS, 24, k, tmp_path, "float16", batch_size=3)
    h16, _ = c16.batch([2, 0])
    torch.testing.assert_close(h16[valid[[2, 0]]], live_h[[2, 0]][valid[[2, 0]]], atol=2e-2, rtol=1e-2)
    assert c16.nbytes * 2 == cache.nbytes
    # the suffix on cached states gives the same embeddings as the full encoder
    emb = enc.suffix(h, m, k)
    tok = enc.tokenize(TEXTS, 24)
    torch.testing.assert_close(emb, enc(tok["input_ids"], tok["attention_mask"]), atol=1e-5, rtol=0)


def test_cache_is_reused_and_keyed_by_weights_and_texts(tiny, tmp_path):
    plan = tiny.plan("finetune")
    enc, k = build_model(plan), plan.layers.first_trainable
    c1 = PrefixCache.open_or_build(enc, TEXTS, 24, k, tmp_path, "float32")
    mtime = (c1.folder / "hidden.bin").stat().st_mtime_ns
    c2 = PrefixCache.open_or_build(enc, TEXTS, 24, k, tmp_path, "float32")
    assert c2.folder == c1.folder and (c2.folder / "hidden.bin").stat().st_mtime_ns == mtime
    # training the last layer does not change the prefix key; changing a prefix weight does
    with torch.no_grad():
        enc.layers[1].output.dense.weight.add_(1.0)
    assert PrefixCache.open_or_build(enc, TEXTS, 24, k, tmp_path, "float32").folder == c1.folder
    with torch.no_grad():
        enc.layers[0].output.dense.weight.add_(1.0)
    assert PrefixCache.open_or_build(enc, TEXTS, 24, k, tmp_path, "float32").folder != c1.folder
    assert PrefixCache.open_or_build(enc, TEXTS[:2], 24, k, tmp_path, "float32").folder != c1.folder
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_cached_prefix_serves_queries_and_docs_by_id(tiny, tmp_path):
    plan = tiny.plan("finetune")
    enc, k = build_model(plan), plan.layers.first_trainable
    qc = PrefixCache.open_or_build(enc, ["q one", "q two two"], 8, k, tmp_path, "float32", name="q")
    dc = PrefixCache.open_or_build(enc, TEXTS, 24, k, tmp_path, "float32", name="d")
    cp = CachedPrefix(qc, ["qa", "qb"], dc, ["d0", "d1", "d2", "d3"])
    h, m = cp.hidden("query", ["qb", "qa"], "cpu")
    assert m.sum(1).tolist() == cp.lengths("query", ["qb", "qa"])
    assert np.all(np.array(cp.lengths("doc", ["d1", "d3"])) >= 2)  # [CLS] ... [SEP] even when empty


def test_stale_temporary_builds_of_dead_processes_are_removed(tiny, tmp_path):
    import subprocess
    import sys

    plan = tiny.plan("finetune")
    enc, k = build_model(plan), plan.layers.first_trainable
    key = PrefixCache.key(enc, TEXTS, 24, k, "float32")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / f".prefix-{key}.{int(dead.stdout)}.abc.tmp"
    stale.mkdir()
    alive = tmp_path / f".prefix-{key}.{__import__('os').getpid()}.def.tmp"
    alive.mkdir()
    PrefixCache.open_or_build(enc, TEXTS, 24, k, tmp_path, "float32")
    assert not stale.exists() and alive.exists()
