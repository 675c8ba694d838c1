"""The token table compressed: size and held-out perplexity of uniform linear plans with the tied
embedding / output head at 16, 8, 6 and 4 bits, on each model of the config.

Usage: python experiments/embedding/run.py [--config experiments/embedding/config.yaml] [--only smollm2]
       python experiments/embedding/run.py --replot     # the table and plot from results.csv
Writes results.csv beside this file (rewritten as each row finishes) and results.png, and prints the
README table. Every plan is swapped into the one loaded model in place (no copy); compressed layers
come from the shared experiments cache.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import load_bench  # noqa: E402
from _common import machine  # noqa: E402
from _common import pyplot  # noqa: E402

HERE = Path(__file__).resolve().parent
OBJECTIVES = ["size", "perplexity", "kl"]


def _rows_for(model: str, cfg: dict, host: str, done: list[dict], out: Path) -> list[dict]:
    bench, layer_fn = load_bench({"model": model, "data": cfg["data"]})
    vocab, hidden = bench.layers[bench.head]
    base = bench.evaluate(bench.original, OBJECTIVES)
    where = base["perplexity"].where
    rows = [{"model": model, "linear": "none", "head": "none", "head_bits": 16.0, "size": base["size"].value,
             "perplexity": base["perplexity"].value, "kl": base["kl"].value, "seconds": 0.0, "eval": where}]
    for linear in cfg["linear"]:
        for head in cfg["head"]:
            plan = bench.uniform(linear, head=None if head == "none" else head)
            t0 = time.perf_counter()
            m = bench.evaluate_plan(plan, OBJECTIVES, layer_fn=layer_fn)
            rows.append({"model": model, "linear": linear, "head": head, "size": m["size"].value,
                         "perplexity": m["perplexity"].value, "kl": m["kl"].value,
                         "seconds": time.perf_counter() - t0, "eval": where})
            print(rows[-1], flush=True)
            _write(done + rows, out, host)
    frame = pd.DataFrame(rows)
    dense = frame[frame["head"] == "none"].set_index("linear")["size"]
    table_dense = vocab * hidden * 2
    for r in rows:  # the table's bits: its stored bytes over its weights (size minus the same plan's dense table)
        if r["head"] != "none":
            r["head_bits"] = 8.0 * (r["size"] - dense[r["linear"]] + table_dense) / (vocab * hidden)
        elif r["linear"] != "none":
            r["head_bits"] = 16.0
    del bench
    gc.collect()
    return rows


def _write(rows: list[dict], out: Path, host: str) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    df["size_mib"] = df["size"] / 2**20
    orig = df[df["linear"] == "none"].set_index("model")["size"]
    df["size_ratio"] = df["size"] / df["model"].map(orig)
    dense = df[df["head"] == "none"].set_index(["model", "linear"])
    key = list(zip(df["model"], df["linear"]))
    df["ppl_vs_dense_table"] = df["perplexity"].to_numpy() / dense.loc[key, "perplexity"].to_numpy() - 1
    df["shrink_vs_dense_table"] = 1 - df["size"].to_numpy() / dense.loc[key, "size"].to_numpy()
    df["machine"] = host
    df.to_csv(out, index=False)
    return df


def _plot(df: pd.DataFrame, path: Path) -> None:
    plt = pyplot()
    models = list(dict.fromkeys(df["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        sub = df[(df["model"] == model) & (df["linear"] != "none")]
        for linear, g in sub.groupby("linear", sort=False):
            ax.plot(g["size_mib"], g["perplexity"], "o-", label=f"linear {linear}")
            for _, r in g.iterrows():
                ax.annotate(r["head"], (r["size_mib"], r["perplexity"]), fontsize=7)
        orig = df[(df["model"] == model) & (df["linear"] == "none")].iloc[0]
        ax.axhline(orig["perplexity"], color="grey", ls=":", label=f"original {orig['size_mib']:.0f} MiB")
        ax.set_xlabel("size (MiB)")
        ax.set_ylabel("held-out perplexity")
        ax.set_title(f"{model}: token table (embedding + head) at 16/8/6/4 bits")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def table(df: pd.DataFrame) -> str:
    """The README table (every figure from the CSV)."""
    lines = ["| model | linear layers | token table | table bits | size (MiB) | size / original | perplexity | "
             "vs 16-bit table: perplexity | vs 16-bit table: size |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for _, r in df.iterrows():
        head = "16-bit (dense)" if r["head"] == "none" else r["head"]
        lines.append(f"| {r['model']} | {r['linear']} | {head} | {r['head_bits']:.2f} | {r['size_mib']:.1f} | "
                     f"{r['size_ratio']:.3f} | {r['perplexity']:.2f} | {r['ppl_vs_dense_table']:+.2%} | "
                     f"{-r['shrink_vs_dense_table']:+.1%} |")
    lines.append(f"\nmachine: {df['machine'].iloc[0]}")
    for model, where in dict(zip(df["model"], df["eval"])).items():
        lines.append(f"{model}: perplexity on {where}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=str(HERE / "config.yaml"))
    parser.add_argument("--out", default=str(HERE / "results.csv"))
    parser.add_argument("--only", default=None, help="comma-separated subset of the config's models")
    parser.add_argument("--replot", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    if not args.replot:
        cfg = yaml.safe_load(Path(args.config).read_text())
        models = cfg["models"] if not args.only else args.only.split(",")
        host = machine()
        rows: list[dict] = []
        for model in models:
            rows += _rows_for(model, cfg, host, rows, out)
            _write(rows, out, host)
    df = pd.read_csv(out)
    _plot(df, out.with_suffix(".png"))
    print(table(df))


if __name__ == "__main__":
    main()
