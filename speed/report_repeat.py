"""Two identical ``maw benchmark`` runs: do their reports reach the same conclusions?

Runs ``maw benchmark --out WORK --run-name a`` and then ``... --run-name b`` with the same extra
flags (default: the built-in demo, all methods but full, seed 42), then compares, per dataset:

* the headline verdict (MAW vs its capacity-matched baseline) and every significance verdict;
* every efficiency conclusion (``results.json`` -> ``efficiency[*].text``, e.g. "no difference
  resolved (...)" or "maw faster: median ..."; the medians differ from run to run, so a resolved
  conclusion is compared by its direction);
* the test metrics (identical runs on CPU must give identical scores).

and prints each difference, then SAME or DIFFERENT per part.

    python speed/report_repeat.py [-- EXTRA maw benchmark FLAGS]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(work: Path, name: str, extra: list[str]) -> tuple[dict, float]:
    cmd = [sys.executable, "-m", "maw.cli", "benchmark", "--out", str(work), "--run-name", name, *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return json.loads((work / name / "results.json").read_text()), time.perf_counter() - t0


def conclusion(text: str) -> str:
    """An efficiency text without its medians: "maw faster", or the unresolved reason."""
    return text.split(":")[0] if not text.startswith("no difference") else text


def parts(results: dict) -> dict[str, dict]:
    out: dict[str, dict] = {"verdict": {}, "significance": {}, "efficiency": {}, "metrics": {}}
    for ds, rep in results["datasets"].items():
        out["verdict"][ds] = (rep.get("verdict") or {}).get("outcome")
        for s in rep.get("significance", []):
            out["significance"][(ds, s["method"], s["baseline"], s["metric"])] = s.get("degenerate") or (
                "significant" if s.get("significant") else "n.s."
            )
        for e in rep.get("efficiency", []):
            out["efficiency"][(ds, e["method"], e["baseline"], e["figure"])] = conclusion(e["text"])
        for m, summary in rep.get("methods", {}).items():
            for metric, st in summary.get("metrics", {}).items():
                out["metrics"][(ds, m, metric)] = st.get("mean")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("extra", nargs="*", help="maw benchmark flags (after --)")
    args = ap.parse_args()
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="maw-repeat-"))
    (a, wa), (b, wb) = run(work, "a", args.extra), run(work, "b", args.extra)
    print(f"run a: {wa:.0f} s, run b: {wb:.0f} s ({work})")
    pa, pb = parts(a), parts(b)
    for part in pa:
        keys = sorted(set(pa[part]) | set(pb[part]), key=str)
        diff = [k for k in keys if pa[part].get(k) != pb[part].get(k)]
        for k in diff:
            print(f"  {part} {k}: a {pa[part].get(k)!r}, b {pb[part].get(k)!r}")
        print(f"{part:<13} {'SAME' if not diff else 'DIFFERENT'} ({len(keys)} compared, {len(diff)} differ)")
    resolved = sorted({v for v in pa["efficiency"].values()})
    print("efficiency conclusions in run a:", "; ".join(resolved))


if __name__ == "__main__":
    main()
