"""Forward + backward of ONE attention block: standard SDPA vs MAW naive vs MAW tiled.

    python benchmarks/maw_attention.py                 # B=8, H=12, d_h=32, L in {128,256,512}, D in {8,32}
    python benchmarks/maw_attention.py --quick         # L in {128, 256}, fewer repeats
    python benchmarks/maw_attention.py --device cuda

Block = the q/k/v projections + attention (+ the MAW router), input ``x (B, L, H*d_h)`` with
``requires_grad``; loss = <out, fixed random tensor>; pair granularity, soft router (the costliest
MAW setting). Each (implementation, L, D) runs in a fresh subprocess so peak memory is its own:
on CPU the peak-RSS increase (``resource.getrusage().ru_maxrss``) during the first forward+backward
over the RSS after building inputs; on CUDA ``torch.cuda.max_memory_allocated`` over the allocated
memory before. Time = median over repeats after one warm-up. Ratios are vs standard at the same L.
The naive implementation is skipped where its estimated memory (5D tensor x 6) exceeds --max-naive-gb.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def _worker(args: argparse.Namespace) -> dict:
    import torch
    import torch.nn.functional as F
    from torch import nn

    from maw.attention.maw import MAWSelfAttention
    from maw.config import MAWConfig

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    B, H, dh, L = args.batch, args.heads, args.head_size, args.length
    d = H * dh
    q, k, v = (nn.Linear(d, d).to(device) for _ in range(3))
    if args.impl == "standard":

        def block(x, bias):
            n = x.shape[1]
            qh = q(x).view(B, n, H, dh).transpose(1, 2)
            kh = k(x).view(B, n, H, dh).transpose(1, 2)
            vh = v(x).view(B, n, H, dh).transpose(1, 2)
            return F.scaled_dot_product_attention(qh, kh, vh, attn_mask=bias).transpose(1, 2).reshape(B, n, d)

    else:
        cfg = MAWConfig(depth_dim=args.depth, granularity="pair", router="soft", implementation=args.impl,
                        tile_size=args.tile_size)
        maw = MAWSelfAttention(cfg, H, dh, q, k, v, dropout_p=0.0).to(device)
        with torch.no_grad():  # a trained-looking router (non-uniform weights)
            maw.router.weight.normal_(0, 0.1)

        def block(x, bias):
            return maw(x, bias)[0]

    def make_inputs(n):
        x = torch.randn(B, n, d, device=device, requires_grad=True)
        return x, torch.zeros(B, 1, 1, n, device=device), torch.randn(B, n, d, device=device)

    def run(x, bias, seed):
        out = block(x, bias)
        (out * seed).sum().backward()
        x.grad = None
        for m in (q, k, v):
            m.zero_grad(set_to_none=True)
        if args.impl != "standard":
            maw.zero_grad(set_to_none=True)

    run(*make_inputs(16))  # warm-up on a small input: library initialisation is not counted
    x, bias, seed = make_inputs(L)

    def step():
        run(x, bias, seed)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    if device.type == "cuda":
        sync()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        sync()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        step()
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    times = []
    for _ in range(args.repeats):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return {"time_s": statistics.median(times), "peak_bytes": int(peak)}


def _run_config(args, impl: str, L: int, D: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--impl", impl, "--length", str(L), "--depth", str(D),
           "--batch", str(args.batch), "--heads", str(args.heads), "--head-size", str(args.head_size),
           "--tile-size", str(args.tile_size), "--repeats", str(args.repeats), "--device", args.device,
           "--threads", str(args.threads)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return {"error": (res.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="L in {128, 256} and 2 repeats")
    p.add_argument("--lengths", default=None, help="comma list (default 128,256,512)")
    p.add_argument("--depths", default="8,32")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--head-size", type=int, default=32)
    p.add_argument("--tile-size", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: stable timings on a shared CPU; 0 = torch default)")
    p.add_argument("--max-naive-gb", type=float, default=12.0)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--impl", default="standard", help=argparse.SUPPRESS)
    p.add_argument("--length", type=int, default=128, help=argparse.SUPPRESS)
    p.add_argument("--depth", type=int, default=8, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(_worker(args)))
        return
    if args.quick:
        args.repeats = min(args.repeats, 2)
    lengths = [int(x) for x in (args.lengths or ("128,256" if args.quick else "128,256,512")).split(",")]
    depths = [int(x) for x in args.depths.split(",")]
    print(f"MAW attention block fwd+bwd: B={args.batch} H={args.heads} d_h={args.head_size} pair/soft, "
          f"tile={args.tile_size}, device={args.device}, repeats={args.repeats}")
    header = f"{'L':>5} {'D':>3} {'impl':>8} {'time s':>9} {'peak MiB':>9} {'time x':>8} {'mem x':>8}"
    print(header)
    print("-" * len(header))
    rows = []
    for L in lengths:
        std = _run_config(args, "standard", L, 1)
        print(f"{L:>5} {'-':>3} {'standard':>8} {std['time_s']:>9.4f} {std['peak_bytes'] / 2**20:>9.1f} {1:>8.2f} {1:>8.2f}")
        for D in depths:
            for impl in ("naive", "tiled"):
                est_gb = 6 * args.batch * args.heads * L * L * D * 4 / 2**30
                if impl == "naive" and est_gb > args.max_naive_gb:
                    print(f"{L:>5} {D:>3} {impl:>8}   skipped: needs ~{est_gb:.0f} GiB (> --max-naive-gb)")
                    rows.append({"L": L, "D": D, "impl": impl, "skipped_est_gb": est_gb})
                    continue
                r = _run_config(args, impl, L, D)
                if "error" in r:
                    print(f"{L:>5} {D:>3} {impl:>8}   failed: {r['error']}")
                    continue
                tr = r["time_s"] / std["time_s"]
                mr = r["peak_bytes"] / max(std["peak_bytes"], 1)
                rows.append({"L": L, "D": D, "impl": impl, **r, "time_ratio": tr, "mem_ratio": mr})
                print(f"{L:>5} {D:>3} {impl:>8} {r['time_s']:>9.4f} {r['peak_bytes'] / 2**20:>9.1f} {tr:>8.2f} {mr:>8.2f}")
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
