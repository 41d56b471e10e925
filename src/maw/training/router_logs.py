"""What the trainer logs about MAW routers, per epoch: depth histograms, entropy, gates, objective stats.

``depth_statistics_of(encoder)`` reads the blocks' depth histograms (``maw.models.maw_encoder``);
``merge_depth_stats`` adds two of them (an epoch is accumulated in pieces between checkpoints);
``gate_values(encoder)`` reads the gated parametrisation's per-head gates ``a = tanh(gate)``;
``router_log`` is the epoch's ``history[i]["router"]`` entry. Its keys, per router:

* every router: ``router``, ``depth_statistics`` / ``val_depth_statistics`` (training samples /
  greedy validation), ``policy_entropy`` / ``val_policy_entropy`` (units-weighted mean entropy of
  the router's distribution, nats; ``max_entropy`` = ln D is the uniform policy's),
  ``gate`` (``{layer: [a_h] per head]}``) and ``gate_abs_mean`` (``{layer: mean_h |a_h|}``), both
  ``{}`` when not gated;
* ``gumbel``: ``gumbel_tau`` at the epoch's end;
* ``grpo``: ``grpo_baseline``, ``mean_reward``, ``advantage_spread`` (mean within-group std of the
  raw rewards), ``advantage_abs`` (mean |Adv|), ``policy_loss``, ``kl_ref`` (mean KL to the
  reference policy per text and module; None only without a reference), ``record_entropy``;
* ``supervised``: ``oracle_label_histogram``, ``router_ce``, ``record_entropy``.
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn


def merge_depth_stats(a: dict, b: dict) -> dict:
    """Sum two ``depth_statistics`` dicts (counts and units add; entropy is the units-weighted mean)."""
    out = {}
    for layer in sorted(set(a) | set(b), key=int):
        x, y = a.get(layer), b.get(layer)
        if x is None or y is None:
            out[layer] = x or y
            continue
        ux, uy = x["units"], y["units"]
        out[layer] = {
            "counts": [
                [i + j for i, j in zip(r1, r2, strict=True)]
                for r1, r2 in zip(x["counts"], y["counts"], strict=True)
            ],
            "entropy": [
                (ex * ux + ey * uy) / (ux + uy) if ux + uy else 0.0
                for ex, ey in zip(x["entropy"], y["entropy"], strict=True)
            ],
            "units": ux + uy,
        }
    return out


def policy_entropy(stats: dict) -> float | None:
    """Units-weighted mean router entropy (nats) over layers and heads of a depth histogram."""
    num = den = 0.0
    for s in stats.values():
        for e in s["entropy"]:
            num += e * s["units"]
            den += s["units"]
    return num / den if den else None


def depth_statistics_of(encoder: nn.Module) -> dict:
    """``{layer (str): {"counts", "entropy", "units"}}`` of every MAW block since the last reset."""
    from maw.models.maw_encoder import depth_statistics

    return {str(k): v for k, v in depth_statistics(encoder).items()}


def gate_values(encoder: nn.Module) -> dict[str, list[float]]:
    """``{layer (str): [a_h] per head}`` of every gated MAW block (``a = tanh(router.gate)``)."""
    from maw.models.maw_encoder import maw_modules

    out = {}
    for m in maw_modules(encoder):
        a = m.router.gate_value()
        if a is not None:
            out[str(m.layer_number)] = [float(x) for x in a.detach().cpu()]
    return out


def _mean(s: dict[str, float], total: str, count: str) -> float | None:
    return s[total] / s[count] if s.get(count) else None


def router_log(
    kind: str, s: dict[str, float], labels: list[int], train_depth: dict, val_depth: dict, encoder: nn.Module
) -> dict[str, Any]:
    """One epoch's router entry (keys: the module docstring): depth histograms (training samples and
    greedy validation), policy entropy, gates, and the objective's running sums ``s`` turned into
    means (GRPO, supervised)."""
    from maw.models.maw_encoder import maw_modules

    gates = gate_values(encoder)
    out: dict[str, Any] = {
        "router": kind,
        "depth_statistics": train_depth,
        "val_depth_statistics": val_depth,
        "policy_entropy": policy_entropy(train_depth),
        "val_policy_entropy": policy_entropy(val_depth),
        "max_entropy": math.log(maw_modules(encoder)[0].depth),
        "gate": gates,
        "gate_abs_mean": {k: sum(abs(a) for a in v) / len(v) for k, v in gates.items()},
    }
    if kind == "gumbel":
        from maw.models.maw_encoder import maw_runtime

        out["gumbel_tau"] = float(maw_runtime(encoder).gumbel_tau)
    if kind == "grpo":
        out.update(
            grpo_baseline=maw_modules(encoder)[0].cfg.grpo_baseline,
            mean_reward=_mean(s, "reward_sum", "reward_count"),
            advantage_spread=_mean(s, "reward_std_sum", "reward_std_count"),
            advantage_abs=_mean(s, "advantage_abs_sum", "advantage_count"),
            policy_loss=_mean(s, "policy_loss_sum", "policy_count"),
            kl_ref=_mean(s, "kl_sum", "kl_count"),
            record_entropy=_mean(s, "entropy_sum", "entropy_count"),
        )
    if kind == "supervised":
        out.update(
            oracle_label_histogram=labels,
            router_ce=_mean(s, "ce_sum", "ce_count"),
            record_entropy=_mean(s, "entropy_sum", "entropy_count"),
        )
    return out
