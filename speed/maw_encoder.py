"""all-MiniLM-L6-v2 with MAW on layer 6 vs the same model without MAW: inference and training step.

    python speed/maw_encoder.py                   # batch 32, length 256, pair / D=32 / soft
    python speed/maw_encoder.py --quick           # batch 8, length 128
    python speed/maw_encoder.py --also query,head # extra rows for the other granularities

Measured side by side in one process, alternating base and MAW runs. Each ratio is the median over
repeats of the ratio within one repeat (base and MAW timed back to back), printed with the range of
those per-repeat ratios (on a shared machine it shows how much the load moved) and the ratio of the
best times (minimum over repeats: the least disturbed run of each side).

* inference: ``Encoder.forward`` under ``torch.inference_mode`` (eval mode) on a full batch of
  ``--length`` tokens (no padding); throughput ratio = MAW texts/s / base texts/s (goal >= 0.7);
  MAW is timed with depth statistics on (the default) and off (``set_track_statistics``).
* training step: layer 6 trainable (plus the router), everything else frozen; forward in train
  mode (dropout on), in-batch InfoNCE (first half of the batch as queries, second half as their
  documents), backward and an AdamW step; ratio = MAW step time / base step time (goal <= 1.5).

Timings use ``--threads`` torch threads (default 1, for stable numbers on a shared CPU).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from maw.config import MAWConfig, default_model
from maw.models.encoder import Encoder
from maw.models.maw_encoder import inject_maw, router_parameters, set_track_statistics
from maw.plan import resolve_maw


def make_batch(enc: Encoder, batch: int, length: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    tok = enc.tokenizer
    specials = set(tok.all_special_ids)
    ids = torch.randint(1000, tok.vocab_size, (batch, length), generator=g)
    ids = torch.where(torch.isin(ids, torch.tensor(sorted(specials))), torch.tensor(1000), ids)
    ids[:, 0], ids[:, -1] = tok.cls_token_id, tok.sep_token_id
    return ids, torch.ones(batch, length, dtype=torch.long)


def build(layer: int, maw_cfg: MAWConfig | None) -> tuple[Encoder, torch.optim.Optimizer]:
    enc = Encoder.from_pretrained(default_model())
    if maw_cfg is not None:
        inject_maw(enc, maw_cfg, resolve_maw(maw_cfg, enc.num_layers, enc.head_size, enc.model_name))
        torch.manual_seed(0)
        with torch.no_grad():  # a trained-looking (non-uniform) router
            for _, p in router_parameters(enc):
                p.normal_(0, 0.05)
    for p in enc.parameters():
        p.requires_grad_(False)
    params = list(enc.layers[layer - 1].parameters())
    for p in params:
        p.requires_grad_(True)
    return enc, torch.optim.AdamW(params, lr=1e-5)


def infer(enc: Encoder, ids, mask) -> float:
    enc.eval()
    with torch.inference_mode():
        t0 = time.perf_counter()
        enc(ids, mask)
        return time.perf_counter() - t0


def train_step(enc: Encoder, opt, ids, mask) -> float:
    enc.train()
    t0 = time.perf_counter()
    emb = enc(ids, mask)
    half = len(emb) // 2  # first half "queries", second half their "documents": in-batch InfoNCE
    loss = F.cross_entropy(emb[:half] @ emb[half:].T / 0.05, torch.arange(half))
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def paired(base: list[float], maw: list[float], inverse: bool = False) -> str:
    """Median of the per-repeat time ratios maw/base (base/maw with ``inverse``: a throughput ratio),
    their range, and the ratio of the best (minimum) times, e.g. ``0.712 (0.690-0.731; best 0.720)``."""
    def ratio(b: float, m: float) -> float:
        return b / m if inverse else m / b

    r = sorted(ratio(b, m) for b, m in zip(base, maw, strict=True))
    return f"{statistics.median(r):.3f} ({r[0]:.3f}-{r[-1]:.3f}; best {ratio(min(base), min(maw)):.3f})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--depth", type=int, default=32)
    p.add_argument("--granularity", default="pair")
    p.add_argument("--router", default="soft")
    p.add_argument("--tile-size", type=int, default=None, help="default: MAWConfig's")
    p.add_argument("--layer", type=int, default=6)
    p.add_argument("--also", default="", help="extra granularities to time, e.g. query,head")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--train-repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="batch 8, length 128")
    p.add_argument("--no-train", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.batch, args.length = 8, 128
    if args.threads:
        torch.set_num_threads(args.threads)
    grans = [args.granularity] + [g for g in args.also.split(",") if g and g != args.granularity]

    base, base_opt = build(args.layer, None)
    ids, mask = make_batch(base, args.batch, args.length)
    print(f"all-MiniLM-L6-v2, batch {args.batch}, length {args.length}, MAW layer {args.layer}, D={args.depth}, "
          f"router {args.router}, torch threads {torch.get_num_threads()}, repeats {args.repeats}/{args.train_repeats}")
    for gran in grans:
        kw = {} if args.tile_size is None else {"tile_size": args.tile_size}
        cfg = MAWConfig(depth_dim=args.depth, granularity=gran, router=args.router, maw_layers=str(args.layer), **kw)
        maw, maw_opt = build(args.layer, cfg)
        infer(base, ids, mask), infer(maw, ids, mask)  # warm-up
        tb, tm, tn = [], [], []
        for _ in range(args.repeats):
            tb.append(infer(base, ids, mask))
            set_track_statistics(maw, True)
            tm.append(infer(maw, ids, mask))
            set_track_statistics(maw, False)
            tn.append(infer(maw, ids, mask))
        set_track_statistics(maw, True)
        b, m, n = statistics.median(tb), statistics.median(tm), statistics.median(tn)
        print(f"[{gran}] inference: base {args.batch / b:.2f} texts/s ({b:.3f} s/batch), "
              f"MAW {args.batch / m:.2f} texts/s ({m:.3f} s), without depth statistics {args.batch / n:.2f} texts/s "
              f"({n:.3f} s)")
        print(f"[{gran}] inference throughput ratio MAW/base = {paired(tb, tm, inverse=True)} (statistics on), "
              f"{paired(tb, tn, inverse=True)} (off); goal >= 0.7")
        if args.no_train:
            continue
        train_step(base, base_opt, ids, mask), train_step(maw, maw_opt, ids, mask)  # warm-up
        sb, sm = [], []
        for _ in range(args.train_repeats):
            sb.append(train_step(base, base_opt, ids, mask))
            sm.append(train_step(maw, maw_opt, ids, mask))
        b, m = statistics.median(sb), statistics.median(sm)
        print(f"[{gran}] training step (layer {args.layer} + router trainable): base {b:.3f} s, MAW {m:.3f} s, "
              f"ratio MAW/base = {paired(sb, sm)}; goal <= 1.5")


if __name__ == "__main__":
    main()
