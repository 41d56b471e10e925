"""The fused C++ soft-pair kernel: equal to the float64 formula and to the PyTorch path, used by
default where it applies, and a build failure falls back with a warning."""

from __future__ import annotations

import pytest
import torch
from maw_testkit import padded_batch, randomize_routers, tiny_encoder

from maw.attention import soft_pair_kernel
from maw.config import MAWConfig
from maw.models.maw_encoder import depth_statistics, maw_modules, maw_runtime
from tiny_bert import inject_maw

needs_kernel = pytest.mark.skipif(
    not soft_pair_kernel.load(), reason="the C++ soft-pair kernel could not be built here (see the warning)"
)


def reference(q, kT, v, key_bias, W, b, row_valid, key_valid, keep, p):
    """float64 formula of a tile: out, chosen-depth counts (H, D), entropy sums (H,) over valid units."""
    S = torch.matmul(q, kT)  # (n, H, D, T, Lk)
    n, H, D, T, Lk = S.shape
    z = torch.matmul(W, S.detach().reshape(n, H, D, T * Lk)).view(n, H, D, T, Lk) + b[:, :, None, None]
    w = torch.softmax(z, 2)
    A = (w * S).sum(2) * D
    P = torch.softmax(A + key_bias[:, None, None, :], -1) * keep / (1 - p)
    unit = (row_valid[:, :, None] & key_valid[:, None, :])[:, None]  # (n, 1, T, Lk)
    choice = z.argmax(2)
    counts = torch.stack([((choice == d) & unit).sum((0, 2, 3)) for d in range(D)], 1)
    ent = (-(w * torch.log_softmax(z, 2)).sum(2) * unit).sum((0, 2, 3))
    return P @ v, counts, ent


@needs_kernel
@pytest.mark.parametrize(
    "D,g,T,Lk,p,dh",
    [
        (32, 1, 7, 37, 0.0, 32),
        (8, 4, 5, 16, 0.3, 16),
        (1, 8, 3, 5, 0.0, 6),
        (2, 3, 4, 33, 0.1, 64),
        (64, 1, 2, 17, 0.0, 6),
        (4, 2, 9, 20, 0.2, 32),
    ],
)
def test_kernel_tile_equals_the_float64_formula(D, g, T, Lk, p, dh):
    """Output, statistics and the gradients of q, k, v and the router, with padded keys (additive
    bias) and, when p > 0, the same dropout mask (the kernel draws it with ``torch.rand``). Value
    widths: multiples of 32 and of 16 floats and neither; query rows in groups of 4 and not."""
    torch.manual_seed(D + g)
    n, H = 2, 3
    q = torch.randn(n, H, D, T, g, dtype=torch.float64) * 0.3
    kT = torch.randn(n, H, D, g, Lk, dtype=torch.float64)
    v = torch.randn(n, H, Lk, dh, dtype=torch.float64)
    W = torch.randn(H, D, D, dtype=torch.float64) * 0.5
    b = torch.randn(H, D, dtype=torch.float64) * 0.1
    row_valid, key_valid = torch.rand(n, T) > 0.2, torch.rand(n, Lk) > 0.2
    key_valid[:, 0] = True
    key_bias = (~key_valid).double() * torch.finfo(torch.float32).min
    ins64 = [x.clone().requires_grad_() for x in (q, kT, v, W, b)]
    ins32 = [x.float().requires_grad_() for x in (q, kT, v, W, b)]
    torch.manual_seed(7)
    keep = (torch.rand(n, H, T, Lk) >= p).double() if p > 0 else torch.ones(())
    torch.manual_seed(7)
    q32, k32, v32, W32, b32 = ins32
    out32, counts32, ent32 = soft_pair_kernel.SoftPairAttention.apply(
        q32, k32, v32, key_bias.float(), W32, b32, row_valid, key_valid, True, p
    )
    out, counts, ent = reference(
        ins64[0], ins64[1], ins64[2], key_bias, ins64[3], ins64[4], row_valid, key_valid, keep, p
    )
    assert out32.dtype == torch.float32 and out32.shape == (n, H, T, dh)
    torch.testing.assert_close(out32.double(), out, atol=2e-5, rtol=1e-5)
    assert torch.equal(counts32, counts.double())
    torch.testing.assert_close(ent32, ent, atol=1e-4, rtol=1e-5)
    dout = torch.randn(n, H, T, dh, dtype=torch.float64)
    g64 = torch.autograd.grad(out, ins64, dout)
    g32 = torch.autograd.grad(out32, ins32, dout.float())
    for name, a, r in zip(("q", "kT", "v", "W", "b"), g32, g64, strict=True):
        torch.testing.assert_close(
            a.double(), r, atol=1e-5 * max(1.0, r.abs().max().item()), rtol=0, msg=name
        )
    if Lk > key_valid.sum(1).min():  # padded keys get exactly no gradient
        assert (g32[1].transpose(-1, -2)[~key_valid[:, None, None, :].expand(n, H, D, Lk)] == 0).all()
    _, counts0, ent0 = soft_pair_kernel.SoftPairAttention.apply(
        q32, k32, v32, key_bias.float(), W32, b32, row_valid, key_valid, False, 0.0
    )
    assert counts0.sum() == 0 and ent0.sum() == 0  # statistics only when asked


def _encoder(fused: bool, dropout: float = 0.0, **cfg):
    enc = tiny_encoder(0, dropout=dropout)
    inject_maw(enc, MAWConfig(maw_layers="all", granularity="pair", router="soft", **cfg))
    randomize_routers(enc)
    maw_runtime(enc).fused_kernel = fused  # False: the PyTorch tiles
    return enc


@needs_kernel
@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_encoder_with_kernel_equals_the_pytorch_path(tau):
    """Embeddings, depth statistics and every gradient: kernel vs the PyTorch tiles (training mode,
    padding, tiles of several rows and texts)."""
    ids, mask = padded_batch()
    results = []
    for fused in (True, False):
        enc = _encoder(fused, depth_dim=4, tau=tau, tile_size=3)
        enc.train()
        emb = enc(ids, mask)
        emb.pow(2).sum().backward()  # any loss whose gradient depends on every position
        grads = {n: p.grad for n, p in enc.named_parameters() if p.grad is not None}
        results.append((emb.detach(), depth_statistics(enc), grads))
    (e1, s1, g1), (e0, s0, g0) = results
    torch.testing.assert_close(e1, e0, atol=1e-5, rtol=0)
    for layer in s0:
        assert s1[layer]["counts"] == s0[layer]["counts"] and s1[layer]["units"] == s0[layer]["units"]
        assert s1[layer]["entropy"] == pytest.approx(s0[layer]["entropy"], abs=1e-6)
    assert set(g1) == set(g0) and any("router" in n for n in g0)
    for n in g0:
        torch.testing.assert_close(g1[n], g0[n], atol=1e-5, rtol=1e-4, msg=lambda m, n=n: f"{n}: {m}")


@needs_kernel
def test_kernel_runs_by_default_where_it_applies(monkeypatch):
    calls = []
    real = soft_pair_kernel.SoftPairAttention.apply
    monkeypatch.setattr(soft_pair_kernel.SoftPairAttention, "apply", lambda *a: calls.append(1) or real(*a))
    ids, mask = padded_batch()
    enc = _encoder(True, depth_dim=4, tile_size=2, tile_elements=0)
    with torch.no_grad():
        enc(ids, mask)
    # without dropout the kernel stores nothing per tile: one call per layer for the whole batch
    assert len(calls) == len(maw_modules(enc)), "float32 CPU soft pair attention must use the kernel"
    calls.clear()
    enc = _encoder(True, dropout=0.1, depth_dim=4, tile_size=2, tile_elements=0).train()
    # attention dropout: tiles of 2 rows bound the (texts, H, rows, keys) keep-mask
    enc(ids, mask)
    assert len(calls) == len(maw_modules(enc)) * -(-ids.shape[1] // 2)
    calls.clear()
    with torch.no_grad():
        _encoder(True, depth_dim=4, router_hidden=8)(ids, mask)  # MLP router: PyTorch path
        _encoder(True, depth_dim=4).double()(ids, mask)  # float64: PyTorch path
    assert not calls


def test_build_failure_falls_back_with_a_warning(monkeypatch):
    from torch.utils import cpp_extension

    def broken(**kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(cpp_extension, "load", broken)
    soft_pair_kernel.load.cache_clear()
    try:
        with pytest.warns(
            RuntimeWarning, match="could not build the fused CPU soft-pair kernel.*no compiler here"
        ):
            assert soft_pair_kernel.load() is False
        ids, mask = padded_batch()
        with torch.no_grad():  # still runs, on the PyTorch path
            assert torch.isfinite(_encoder(True, depth_dim=4)(ids, mask)).all()
    finally:
        soft_pair_kernel.load.cache_clear()
