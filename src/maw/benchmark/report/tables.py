"""Numbers as text: value formatting, plain-text and Markdown tables, ``results.csv`` and ``summary.txt``."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from typing import Any

from maw.evaluation.metrics import PRIMARY_METRICS


def fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, float) and not math.isfinite(v):
        return "∞" if v > 0 else "−∞"
    if isinstance(v, int | float) and float(v).is_integer() and abs(v) >= 1000:
        return f"{int(v):,}"
    if isinstance(v, float):
        if abs(v) >= 1e5 or (v != 0 and abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.{digits}f}"
    return str(v)


def mean_std(st: dict[str, Any], seed_independent: bool, multi_seed: bool, digits: int = 4) -> str:
    """ "m ± s" over two or more runs; one run: the value alone (marked when other methods have more)."""
    if st.get("mean") is None:
        return "—"
    value = fmt(st["mean"], digits)
    if seed_independent:
        return value + " (seed-indep.)"
    if st.get("n", 0) >= 2 and st.get("std") is not None:
        return f"{value} ± {fmt(st['std'], digits)}"
    return value + (" (1 run)" if multi_seed else "")


def timing_text(t: dict[str, Any]) -> str:
    """Median [IQR] (n) of a timed figure; a single value says so."""
    if not t["n"]:
        return "—"
    if t["n"] == 1:
        return f"{fmt(t['median'], 2)} (single measurement)"
    return f"{fmt(t['median'], 2)} [{fmt(t['q25'], 2)}, {fmt(t['q75'], 2)}] (n={t['n']})"


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def md_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda x: str(x).replace("|", "\\|")  # noqa: E731
    out = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(out)


def csv_text(cells: Iterable[dict[str, Any]]) -> str:
    """``results.csv``: a header, then :func:`csv_rows`."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["dataset", "method", "seed", "metric", "value"])
    writer.writerows(csv_rows(cells))
    return buf.getvalue()


def csv_rows(cells: Iterable[dict[str, Any]]) -> list[tuple[str, str, int, str, Any]]:
    """(dataset, method, seed, metric, value) for every figure of every ok cell (None = not
    applicable / not measured: no row)."""
    rows = []
    for c in cells:
        if c["status"] != "ok":
            continue
        figs = {**c["metrics"], **c["runtimes"], **{f"params_{k}": v for k, v in c["params"].items()}}
        rows += [(c["dataset"], c["method"], c["seed"], k, v) for k, v in figs.items() if v is not None]
    return rows


def metric_rows(rep: dict[str, Any], multi_seed: bool) -> list[list[str]]:
    return [
        [m, *[mean_std(s["metrics"].get(k, {}), s["seed_independent"], multi_seed) for k in PRIMARY_METRICS]]
        for m, s in rep["methods"].items()
    ]


def metrics_heading(multi_seed: bool) -> str:
    if multi_seed:
        return "primary test metrics, mean ± std over seeds"
    return "primary test metrics, one training run per method (training variance unknown)"


def summary_text(reports: list[dict[str, Any]], notes: Sequence[str] = (), multi_seed: bool = True) -> str:
    out = [f"MAW benchmark summary: {metrics_heading(multi_seed)}", ""]
    out += [line for note in notes for line in (note, "")]
    for rep in reports:
        out.append(f"== {rep['dataset']} ==")
        rows = [
            r + [str(len(s["seeds"]))]
            for r, s in zip(metric_rows(rep, multi_seed), rep["methods"].values(), strict=True)
        ]
        if rows:
            out.append(text_table(["method", *PRIMARY_METRICS, "seeds"], rows))
        for f in rep["failed"]:
            out.append(f"FAILED {f['method']} seed {f['seed']}: {f['error']}")
        out += ["", rep["verdict"]["sentence"], ""]
    return "\n".join(out).rstrip() + "\n"
