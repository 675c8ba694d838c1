"""Ordering: prune→quantize vs quantize→prune (and prune→distill→quantize) at equal size.

For every group of ``config.yaml`` (the same techniques in different orders) the script compresses
the embedded model with each order and measures size, held-out perplexity and KL to the original
(plus task accuracy when ``tasks`` is set). Rows are written as they finish.

Usage: python experiments/ordering/run.py [--config experiments/ordering/config.yaml] [--only GROUP,...]
Writes results.csv and results.png beside this file and prints the README table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import compress_and_measure  # noqa: E402
from _common import load_bench  # noqa: E402
from _common import machine  # noqa: E402
from _common import pyplot  # noqa: E402
from _common import task_objectives  # noqa: E402

HERE = Path(__file__).resolve().parent


def plot(df: pd.DataFrame, path: Path) -> None:
    plt = pyplot()

    groups = list(dict.fromkeys(df["group"]))
    orders = list(dict.fromkeys(df["order"]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(orders)
    for k, (col, ax) in enumerate(zip(("perplexity", "kl"), axes)):
        for j, order in enumerate(orders):
            sub = df[df["order"] == order].set_index("group").reindex(groups)
            ax.bar([i + j * width for i in range(len(groups))], sub[col], width, label=order)
        ax.set_xticks([i + width * (len(orders) - 1) / 2 for i in range(len(groups))], groups, fontsize=8)
        ax.set_ylabel(col)
        ax.set_yscale("log")
        if k == 0:
            ax.legend(fontsize=8)
    fig.suptitle("order of techniques at equal size, SmolLM2-135M-Instruct")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=str(HERE / "config.yaml"))
    parser.add_argument("--out", default=str(HERE / "results.csv"))
    parser.add_argument("--only", default=None, help="comma-separated subset of the config's groups")
    parser.add_argument("--append", action="store_true", help="keep the rows already in --out (other groups)")
    args = parser.parse_args()
    cfg = yaml.safe_load(Path(args.config).read_text())
    groups: dict[str, dict[str, str]] = cfg["groups"]
    if args.only:
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - set(groups))
        if unknown:
            raise SystemExit(f"--only: unknown group(s) {unknown}; the config has {sorted(groups)}")
        groups = {g: groups[g] for g in wanted}
    bench, layer_fn = load_bench(cfg)
    tasks = task_objectives(bench, cfg.get("tasks") or [])
    objectives = ["size", "perplexity", "kl"]
    host = machine()
    base = bench.evaluate(bench.original, objectives)
    print(f"original: perplexity {base['perplexity'].value:.2f}", flush=True)
    rows = pd.read_csv(args.out).to_dict("records") if args.append and Path(args.out).is_file() else []
    done = {(r["group"], r["order"]) for r in rows}
    for group, orders in groups.items():
        for order, preset in orders.items():
            if (group, order) in done:
                continue
            row = {"group": group, "order": order,
                   **compress_and_measure(bench, layer_fn, preset, objectives, tasks), "machine": host}
            row["size_mib"] = row["size"] / 2**20
            rows.append(row)
            print({k: row[k] for k in ("group", "order", "plan", "size_mib", "perplexity", "kl", "compress_s")},
                  flush=True)
            pd.DataFrame(rows).to_csv(args.out, index=False)  # keep what is done if the run is stopped
    df = pd.DataFrame(rows)
    plot(df, Path(args.out).with_suffix(".png"))
    names = [t.spec.name for t in tasks]
    print(f"\noriginal perplexity {base['perplexity'].value:.2f}, held-out {base['perplexity'].where}")
    print("| techniques | order | plan | size (MiB) | perplexity | KL (nats/token) | "
          + "".join(f"{n} | " for n in names) + "time (s) |")
    print("|---|---|---|---:|---:|---:|" + "---:|" * len(names) + "---:|")
    for _, r in df.iterrows():
        accs = "".join(f" {r[n]:.3f} ± {r[n + '_stderr']:.3f} |" for n in names)
        print(f"| {r['group']} | {r['order']} | `{r['plan']}` | {r['size_mib']:.1f} | {r['perplexity']:.2f} | "
              f"{r['kl']:.4f} |{accs} {r['compress_s']:.0f} |")
    print(f"\nmachine: {host}")


if __name__ == "__main__":
    main()
