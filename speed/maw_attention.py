"""Forward + backward of ONE attention block: standard SDPA vs MAW naive vs MAW tiled.

    python speed/maw_attention.py                 # B=8, H=12, d_h=32, L in {128,256,512}, D in {8,32}
    python speed/maw_attention.py --quick         # L in {128, 256}, fewer repeats
    python speed/maw_attention.py --device cuda

Block = the q/k/v projections + attention (+ the MAW router), input ``x (B, L, H*d_h)`` with
``requires_grad``; loss = <out, fixed random tensor>; pair granularity, soft router (the costliest
MAW setting). Each (implementation, L, D) runs in a fresh subprocess so peak memory is its own.
Memory, on CPU, two ways: "RSS" = increase of the peak RSS (``resource.getrusage().ru_maxrss``)
during the first full-size forward+backward (after a small warm-up; glibc's mmap threshold is
fixed so freed large blocks leave RSS), and "tensor" = peak bytes of live tensors created during
a forward+backward, tracked op by op with a ``TorchDispatchMode`` (exact, allocator-independent).
On CUDA: ``torch.cuda.max_memory_allocated`` over the memory allocated before (RSS column).
Time = median over repeats after the warm-up; each implementation's timing process alternates its
steps with the standard block's, and its time ratio uses that process's standard median (robust to
load changes on a shared machine). Memory ratios are vs the standard block at the same L.
The naive implementation is skipped where its estimated memory (5D tensor x 6) exceeds --max-naive-gb.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

from maw.config import MAWConfig


def _worker(args: argparse.Namespace) -> dict:
    """Memory of one implementation (``--measure memory``), or its time alternated with the
    standard block's time in the same process (``--measure time``)."""
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

    def standard(x, bias):
        n = x.shape[1]
        qh = q(x).view(B, n, H, dh).transpose(1, 2)
        kh = k(x).view(B, n, H, dh).transpose(1, 2)
        vh = v(x).view(B, n, H, dh).transpose(1, 2)
        return F.scaled_dot_product_attention(qh, kh, vh, attn_mask=bias).transpose(1, 2).reshape(B, n, d)

    maw = None
    if args.impl != "standard":
        cfg = MAWConfig(depth_dim=args.depth, granularity="pair", router="soft", implementation=args.impl,
                        tile_size=args.tile_size, tile_elements=args.tile_elements)
        maw = MAWSelfAttention(cfg, H, dh, q, k, v, dropout_p=0.0).to(device)
        with torch.no_grad():  # a trained-looking router (non-uniform weights)
            maw.router.weight.normal_(0, 0.1)

    def make_inputs(n):
        x = torch.randn(B, n, d, device=device, requires_grad=True)
        return x, torch.zeros(B, 1, 1, n, device=device), torch.randn(B, n, d, device=device)

    def run(block, inputs):
        x, bias, seed = inputs
        (block(x, bias) * seed).sum().backward()
        x.grad = None
        for m in (q, k, v) + ((maw,) if maw is not None else ()):
            m.zero_grad(set_to_none=True)

    def block(x, bias):
        return standard(x, bias) if maw is None else maw(x, bias)[0]

    run(block, make_inputs(16))  # warm-up on a small input: library initialisation is not counted
    inputs = make_inputs(L)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def timed(fn) -> float:
        sync()
        t0 = time.perf_counter()
        run(fn, inputs)
        sync()
        return time.perf_counter() - t0

    if args.measure == "time":
        run(standard, make_inputs(16))
        times, std_times = [], []
        for _ in range(args.repeats):
            std_times.append(timed(standard))
            times.append(timed(block))
        return {"time_s": statistics.median(times), "std_time_s": statistics.median(std_times)}
    if device.type == "cuda":
        sync()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run(block, inputs)
        sync()
        return {"peak_bytes": int(torch.cuda.max_memory_allocated() - before), "tensor_peak_bytes": None}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run(block, inputs)
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    tracker = _LiveTensorBytes()
    with tracker:
        run(block, inputs)
    return {"peak_bytes": int(peak), "tensor_peak_bytes": tracker.peak}


def _live_tensor_bytes_mode():
    """A TorchDispatchMode that tracks the bytes of live tensor storages created by ops (forward
    and backward) and their peak: the CPU analogue of ``torch.cuda.max_memory_allocated``."""
    import weakref

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class LiveTensorBytes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.live = self.peak = 0
            self.seen: set[int] = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, tuple | list) else (out,):
                if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                    st = t.untyped_storage()
                    key, n = st.data_ptr(), st.nbytes()
                    if n and key not in self.seen:
                        self.seen.add(key)
                        self.live += n
                        self.peak = max(self.peak, self.live)
                        weakref.finalize(st, self._free, key, n)
            return out

        def _free(self, key: int, n: int) -> None:
            self.live -= n
            self.seen.discard(key)

    return LiveTensorBytes


def _LiveTensorBytes():
    return _live_tensor_bytes_mode()()


def _run_config(args, impl: str, L: int, D: int) -> dict:
    """Two fresh subprocesses: one measures memory, one measures time."""
    cmd = [sys.executable, __file__, "--worker", "--impl", impl, "--length", str(L), "--depth", str(D),
           "--batch", str(args.batch), "--heads", str(args.heads), "--head-size", str(args.head_size),
           "--tile-size", str(args.tile_size), "--tile-elements", str(args.tile_elements), "--repeats", str(args.repeats), "--device", args.device,
           "--threads", str(args.threads)]
    out = {}
    for measure in ("memory", "time"):
        env = dict(os.environ)
        if measure == "memory":
            # A fixed mmap threshold makes glibc return large freed blocks to the OS, so the peak RSS
            # follows live memory instead of heap fragmentation (same for every implementation). It
            # slows allocation down, hence the separate timing process without it.
            env["MALLOC_MMAP_THRESHOLD_"] = "131072"
        res = subprocess.run(cmd + ["--measure", measure], capture_output=True, text=True, env=env)
        if res.returncode != 0:
            return {"error": f"{measure}: " + (res.stderr.strip().splitlines() or ["failed"])[-1]}
        out.update(json.loads(res.stdout.strip().splitlines()[-1]))
    return out


def _mib(n) -> str:
    return "-" if n is None else f"{n / 2**20:.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="L in {128, 256} and 2 repeats")
    p.add_argument("--lengths", default=None, help="comma list (default 128,256,512)")
    p.add_argument("--depths", default="8,32")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--head-size", type=int, default=32)
    p.add_argument("--tile-size", type=int, default=MAWConfig.tile_size, help="query rows per tile (MAWConfig)")
    p.add_argument("--tile-elements", type=int, default=MAWConfig.tile_elements,
                   help="max elements of a 5D tile (MAWConfig; 0 = rows only)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: stable timings on a shared CPU; 0 = torch default)")
    p.add_argument("--max-naive-gb", type=float, default=12.0)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--impl", default="standard", help=argparse.SUPPRESS)
    p.add_argument("--length", type=int, default=128, help=argparse.SUPPRESS)
    p.add_argument("--depth", type=int, default=8, help=argparse.SUPPRESS)
    p.add_argument("--measure", default="time", choices=["time", "memory"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(_worker(args)))
        return
    if args.quick:
        args.repeats = min(args.repeats, 2)
    lengths = [int(x) for x in (args.lengths or ("128,256" if args.quick else "128,256,512")).split(",")]
    depths = [int(x) for x in args.depths.split(",")]
    print(f"MAW attention block fwd+bwd: B={args.batch} H={args.heads} d_h={args.head_size} pair/soft, "
          f"tile_size={args.tile_size} rows, tile_elements={args.tile_elements}, device={args.device}, "
          f"threads={args.threads}, repeats={args.repeats}")
    header = (f"{'L':>5} {'D':>3} {'impl':>8} {'time s':>9} {'RSS MiB':>9} {'tensor MiB':>10} {'time x':>8} "
              f"{'RSS x':>7} {'tensor x':>8}")
    print(header)
    print("-" * len(header))
    rows = []
    for L in lengths:
        std = _run_config(args, "standard", L, 1)
        if "error" in std:
            print(f"{L:>5}   - standard   failed: {std['error']}")
            continue
        print(f"{L:>5} {'-':>3} {'standard':>8} {std['time_s']:>9.4f} {std['peak_bytes'] / 2**20:>9.1f} "
              f"{_mib(std.get('tensor_peak_bytes')):>10} {1:>8.2f} {1:>7.2f} {1:>8.2f}")
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
                tr = r["time_s"] / r["std_time_s"]  # standard timed alternately in the same process
                mr = r["peak_bytes"] / max(std["peak_bytes"], 1)
                tp, sp = r.get("tensor_peak_bytes"), std.get("tensor_peak_bytes")
                tpr = tp / sp if tp and sp else None
                rows.append({"L": L, "D": D, "impl": impl, **r, "time_ratio": tr, "rss_ratio": mr, "tensor_ratio": tpr})
                print(f"{L:>5} {D:>3} {impl:>8} {r['time_s']:>9.4f} {r['peak_bytes'] / 2**20:>9.1f} {_mib(tp):>10} "
                      f"{tr:>8.2f} {mr:>7.2f} {f'{tpr:.2f}' if tpr else '-':>8}")
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
