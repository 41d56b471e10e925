"""Rewrite result files written before results were portable: machine paths become names.

    python scripts/portable_results.py results/demo/sweep --dataset demo=src/maw/data/demo \
        --label /tmp/old-run-folder=<run> [--check]

Every text file under the folders (JSON, Markdown, CSV, TXT) goes through
``maw.utils.portable`` (datasets -> their key, the default backbone -> its Hub id, the package ->
``<maw>``, the Python environment -> ``<python>``, the working directory -> relative, home ->
``~``) plus the ``--label PATH=NAME`` pairs given. ``--check`` changes nothing and lists files that
still hold an absolute path of this machine (exit 1 if any).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from maw.utils.io import atomic_write_text
from maw.utils.portable import PathLabels, portable

SUFFIXES = {".json", ".md", ".csv", ".txt"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--dataset", action="append", default=[], help="KEY=PATH (a dataset folder -> its key)")
    ap.add_argument("--label", action="append", default=[], help="PATH=NAME (any other folder)")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    datasets = [(p, k) for k, p in (d.split("=", 1) for d in args.dataset)]
    labels = PathLabels.standard(datasets)
    for pair in args.label:
        path, name = pair.split("=", 1)
        labels.add(path, name)
    bad = 0
    for folder in args.folders:
        for f in sorted(Path(folder).rglob("*")):
            if not f.is_file() or f.suffix not in SUFFIXES:
                continue
            text = f.read_text(encoding="utf-8")
            new = (
                json.dumps(portable(json.loads(text), labels), indent=2) + "\n"
                if f.suffix == ".json"
                else labels.text(text)
            )
            if args.check:
                if new != text:
                    bad += 1
                    print(f"{f}: holds machine paths")
            elif new != text:
                atomic_write_text(f, new)
                print(f"{f}: rewritten")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
