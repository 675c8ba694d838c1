"""The block-wise, own-dtype pipeline against the one before it (issue 14): every plan's KL and perplexity.

Run once per checkout, each writing its own rows (``--label``):

    python experiments/dtype_parity/run.py --label new-float32 --dtype float32   # this checkout
    python experiments/dtype_parity/run.py --label new-auto                     # the default dtype (bfloat16)
    (cd <worktree of the older commit> && python <this file> --label old-float32 --out <this folder>)

The older pipeline (before commit 439dd7c) loaded in float32 and calibrated over the whole model; its
``Workbench.load`` takes no dtype. ``--summary`` compares the rows in ``results.csv`` and writes ``summary.csv``.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLANS = ["rtn-w4g128", "gptq-w4g128", "awq-w4g128", "sparsegpt-s50"]
FIELDS = ["label", "commit", "dtype", "plan", "kl", "perplexity", "seconds"]


def measure(label: str, dtype: str | None, out: Path) -> None:
    sys.path.insert(0, os.getcwd())  # the checkout this runs in, not necessarily this file's
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from squeezeray.workbench import DataConfig
    from squeezeray.workbench import Workbench

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    bench = Workbench.load(None, DataConfig(), **({"dtype": dtype} if dtype else {}))
    held = str(next(p.dtype for p in bench.original.parameters())).removeprefix("torch.")
    bench.evaluate(bench.original, ["kl", "perplexity"])
    rows = []
    for name in PLANS:
        t0 = time.perf_counter()
        candidate, _ = bench.compress(bench.uniform(name))
        m = bench.evaluate(candidate, ["kl", "perplexity"])
        rows.append({"label": label, "commit": commit, "dtype": held, "plan": name, "kl": m["kl"].value,
                     "perplexity": m["perplexity"].value, "seconds": round(time.perf_counter() - t0, 1)})
        print(rows[-1], flush=True)
        del candidate
    path = out / "results.csv"
    old = [r for r in csv.DictReader(path.open())] if path.is_file() else []
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows([r for r in old if r["label"] != label] + rows)


def summary(out: Path) -> None:
    rows = list(csv.DictReader((out / "results.csv").open()))
    by = {(r["label"], r["plan"]): r for r in rows}
    labels = sorted({r["label"] for r in rows})
    lines = []
    for plan in PLANS:
        ref = by.get(("old-float32", plan))
        if ref is None:
            continue
        for label in labels:
            r = by.get((label, plan))
            if r is None or label == "old-float32":
                continue
            lines.append({"plan": plan, "against": "old-float32", "label": label,
                          "kl_rel_diff": float(r["kl"]) / float(ref["kl"]) - 1,
                          "perplexity_rel_diff": float(r["perplexity"]) / float(ref["perplexity"]) - 1})
    with (out / "summary.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(lines[0]))
        w.writeheader()
        w.writerows(lines)
    for line in lines:
        print(f"{line['plan']:24s} {line['label']:12s} KL {line['kl_rel_diff']:+.2e}  ppl {line['perplexity_rel_diff']:+.2e}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label")
    ap.add_argument("--dtype", default=None, help="float32, bfloat16, ...; omitted: the checkout's default")
    ap.add_argument("--out", default=str(HERE))
    ap.add_argument("--summary", action="store_true")
    a = ap.parse_args()
    if a.summary:
        summary(Path(a.out))
    else:
        measure(a.label, a.dtype, Path(a.out))
