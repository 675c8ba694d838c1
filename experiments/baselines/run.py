"""Baselines: size, perplexity, KL and task accuracy of uniform plans on the embedded model.

Usage: python experiments/baselines/run.py [--config experiments/baselines/config.yaml] [--only rtn-w8,...]
       python experiments/baselines/run.py --add-tasks   # keep results.csv, score only tasks it lacks
Writes results.csv beside this file (one row per plan, rewritten as each finishes), plots size vs
perplexity and size vs accuracy to results.png, and prints a markdown table for the README.
Task accuracy is lm-eval on a seeded subset of each task (``tasks:`` in the config), with its
standard error and its paired difference to the original on the same items.
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
from _common import measure  # noqa: E402
from _common import task_objectives  # noqa: E402


HERE = Path(__file__).resolve().parent


def _table(rows: list[dict], out: str, host: str, where: str) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    df["size_mib"] = df["size"] / 2**20
    df["size_ratio"] = df["size"] / df["size"].iloc[0]
    df["machine"] = host
    df["eval"] = where
    df.to_csv(out, index=False)
    return df


def _plot(df: pd.DataFrame, tasks: list[str], path: Path) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, 1 + len(tasks), figsize=(5.5 * (1 + len(tasks)), 4.5), squeeze=False)
    panels = [("perplexity", None)] + [(t, f"{t}_stderr") for t in tasks]
    for ax, (col, err) in zip(axes[0], panels):
        ax.errorbar(df["size_mib"], df[col], yerr=None if err is None else df[err], fmt="o")
        for _, row in df.iterrows():
            ax.annotate(row["plan"].split(" ")[0], (row["size_mib"], row[col]), fontsize=7)
        ax.set_xlabel("size (MiB)")
        ax.set_ylabel(col)
        if col == "perplexity":
            ax.set_yscale("log")
    fig.suptitle("uniform plans on SmolLM2-135M-Instruct")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _add_tasks(bench, layer_fn, tasks: list, plans: list[str], out: str) -> tuple[list[dict], str]:  # noqa: ANN001
    """The rows of ``out`` with the tasks they lack scored (plans compressed again through the layer cache)."""
    old = pd.read_csv(out)
    where = str(old["eval"].iloc[0])
    keep = [c for c in old.columns if c not in ("size_mib", "size_ratio", "machine", "eval")]
    rows = [{k: r[k] for k in keep} for r in old.to_dict("records")]
    for row in rows:
        is_original = row["plan"].startswith("original")
        missing = [t for t in tasks if pd.isna(row.get(t.spec.name))]
        if not missing or (not is_original and row["plan"] not in plans):
            continue
        candidate = bench.original if is_original else bench.compress(
            bench.uniform(row["plan"]), layer_fn=layer_fn)[0]
        row.update(measure(bench, candidate, [], missing))
        print({k: row[k] for k in row if any(k.startswith(t.spec.name) for t in missing) or k == "plan"}, flush=True)
        _table(rows, out, machine(), where)
    return rows, where


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=str(HERE / "config.yaml"))
    parser.add_argument("--out", default=str(HERE / "results.csv"))
    parser.add_argument("--only", default=None, help="comma-separated subset of the config's plans")
    parser.add_argument("--add-tasks", action="store_true",
                        help="keep the rows of --out and score only the config's tasks they lack")
    args = parser.parse_args()
    cfg = yaml.safe_load(Path(args.config).read_text())
    plans = cfg["plans"] if not args.only else args.only.split(",")
    bench, layer_fn = load_bench(cfg)
    tasks = task_objectives(bench, cfg.get("tasks") or [])
    objectives = ["size", "perplexity", "kl"]
    host = machine()
    if args.add_tasks:
        rows, where = _add_tasks(bench, layer_fn, tasks, plans, args.out)
    else:
        base = bench.evaluate(bench.original, objectives)  # once: its values and where perplexity was measured
        where = base["perplexity"].where
        rows = [{"plan": "original (fp16 storage)", **{k: m.value for k, m in base.items()},
                 **measure(bench, bench.original, [], tasks), "compress_s": 0.0}]
        print(rows[-1], flush=True)
        for preset in plans:
            rows.append(compress_and_measure(bench, layer_fn, preset, objectives, tasks))
            print(rows[-1], flush=True)
            _table(rows, args.out, host, where)  # keep what is done if the run is stopped
    df = _table(rows, args.out, host, where)
    names = [t.spec.name for t in tasks]
    _plot(df, names, Path(args.out).with_suffix(".png"))

    print()
    print("| plan | size (MiB) | size ratio | perplexity | KL (nats/token) | "
          + "".join(f"{n} (Δ vs original) | " for n in names) + "compress time (s) |")
    print("|---|---:|---:|---:|---:|" + "---:|" * len(names) + "---:|")
    for _, row in df.iterrows():
        accs = "".join(
            f" {row[n]:.2f} ({row[n + '_delta']:+.2f} ± {row[n + '_delta_stderr']:.2f}) |" for n in names
        )
        print(f"| {row['plan']} | {row['size_mib']:.1f} | {row['size_ratio']:.3f} | {row['perplexity']:.2f} | "
              f"{row['kl']:.4f} |{accs} {row['compress_s']:.0f} |")
    print(f"\nmachine: {host}; perplexity on {where}")
    if tasks:
        print("accuracy: " + ", ".join(f"{t.spec.name} {t.limit} items (seed {t.seed})" for t in tasks))


if __name__ == "__main__":
    main()
