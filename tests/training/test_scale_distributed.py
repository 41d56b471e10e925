"""Mined lists are computed by rank 0 only and read by the other ranks (two CPU processes, gloo)."""

from __future__ import annotations

import json
from pathlib import Path

from _tiny import run_two_ranks


def _worker(rank: int, world: int, store: str, cache_dir: str, out: str, fail: bool) -> None:
    import torch.distributed as dist

    from maw.training.distributed import DistributedContext
    from maw.training.negatives import cached_lists

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    ctx = DistributedContext(rank=rank, world_size=world)

    def compute():
        Path(out, f"computed-{rank}").write_text("1")
        if fail:
            raise ValueError("no BM25 today")
        return {"q1": ["d3", "d1"], "q2": []}

    try:
        lists, info = cached_lists("bm25-negatives", ["k"], compute, cache_dir, ctx)
        result = {"lists": lists, "reused": info["reused"]}
    except Exception as exc:  # noqa: BLE001 - the test checks what each rank saw
        result = {"error": f"{type(exc).__name__}: {exc}"}
    Path(out, f"rank-{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def _run(tmp_path: Path, name: str, fail: bool = False) -> tuple[dict[int, dict], list[str]]:
    """Two ranks call ``cached_lists``: what each returned, and which ranks ran ``compute``."""
    out = tmp_path / name
    out.mkdir()
    store, cache = str(tmp_path / f"{name}.store"), str(tmp_path / "cache")
    got = run_two_ranks(_worker, lambda r: (r, 2, store, cache, str(out), fail), out)
    return got, sorted(p.name for p in out.glob("computed-*"))


def test_rank0_mines_and_the_others_read(tmp_path):
    got, computed = _run(tmp_path, "first")
    assert computed == ["computed-0"]  # rank 1 never computed
    assert got[0]["lists"] == got[1]["lists"] == {"q1": ["d3", "d1"], "q2": []}
    assert not got[0]["reused"] and not got[1]["reused"]
    again, computed = _run(tmp_path, "second")
    assert computed == [] and again[0]["reused"] and again[1]["lists"] == got[0]["lists"]


def test_an_error_on_rank0_reaches_the_other_ranks(tmp_path):
    got, computed = _run(tmp_path, "fail", fail=True)
    assert computed == ["computed-0"]
    assert got[0]["error"] == "ValueError: no BM25 today"
    assert got[1]["error"] == "RuntimeError: rank 0 failed: ValueError: no BM25 today"
