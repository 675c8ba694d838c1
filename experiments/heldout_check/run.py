"""Held-out check: a plan selected on proxy objectives, re-scored on a task; proxy-vs-task rank correlation.

1. Every searched plan (the re-measured trials of experiments/search_vs_uniform) is measured on the
   search-stage proxy (KL to the original on the calibration proxy windows), on held-out perplexity,
   and on a screening task subset (lm-eval, paired with the original); the uniform plans' rows are read
   from experiments/baselines/results.csv, measured the same way (the script checks the task matches).
2. Spearman and Kendall rank correlations between each proxy and task accuracy across the plans, with
   p-values.
3. The plan the search selected (on proxies only), the uniform plans named in ``final_reference`` and
   the original re-scored on each ``finals`` entry: another seeded subset of the task, or every item
   (``limit: null``): what the proxies promised vs what the plan delivers on the task.

Searched plans already scored in results.csv (same plan name, same screening task) are reused, and so
are selected.csv rows (same plan, same final task); ``--fresh`` re-measures all.

Usage: python experiments/heldout_check/run.py [--config experiments/heldout_check/config.yaml] [--fresh]
Writes results.csv, correlation.csv, equal_size.csv, selected.csv and results.png beside this file.

equal_size.csv: each searched plan's task accuracy against the uniform plans' accuracy front (the
uniform plans no other uniform plan beats at smaller or equal size) interpolated linearly in size at the
searched plan's size. The standard error of the difference treats the two as independent samples, which
overstates it (both are scored on the same items), so it is conservative.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import yaml
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import WORK  # noqa: E402
from _common import compress_and_measure  # noqa: E402
from _common import load_bench  # noqa: E402
from _common import machine  # noqa: E402
from _common import pyplot  # noqa: E402
from _common import task_objectives  # noqa: E402

from squeezeray.spaces import CompressionPlan  # noqa: E402

HERE = Path(__file__).resolve().parent


def searched_plans(cfg: dict) -> tuple[list[CompressionPlan], int | None]:
    if not cfg.get("max_searched"):
        return [], None
    front_csv = HERE.parent / "search_vs_uniform" / cfg["source"] / "front.csv"
    folder = WORK / f"search-vs-uniform-{cfg['source']}" / "plans"
    if not front_csv.is_file() or not folder.is_dir():
        raise SystemExit(
            f"run experiments/search_vs_uniform/run.py --space {cfg['source']} first: need {front_csv} and {folder}"
        )
    front = pd.read_csv(front_csv)
    front = front[~front["baseline"]]
    selected = front[front.get("selected", False) == True]  # noqa: E712 - pandas mask
    sel = int(selected["trial"].iloc[0]) if not selected.empty else None
    if sel is None:  # the search ran without a selector: pick on the proxy alone, as a user would
        fits = front[front["pareto"] & (front["size"] <= cfg["select_max_mib"] * 2**20)]
        sel = int(fits.sort_values("kl")["trial"].iloc[0]) if not fits.empty else None
    order = ([sel] if sel is not None else []) + [
        int(t) for t in front[front["pareto"]].sort_values("size")["trial"] if int(t) != sel
    ]
    order += [int(t) for t in front.sort_values("size")["trial"] if int(t) not in order]
    plans: list[CompressionPlan] = []
    for t in order:  # trials that found the same plan (NSGA-II re-samples front members) are scored once
        plan = CompressionPlan.load(folder / f"trial-{t}.json")
        if any(p.layers == plan.layers and p.distill == plan.distill for p in plans):
            continue
        plans.append(CompressionPlan(plan.layers, name=f"searched #{t}", distill=plan.distill))
        if len(plans) == cfg["max_searched"]:
            break
    return plans, sel


def uniform_rows(cfg: dict, task: str) -> pd.DataFrame:
    """The uniform plans measured by experiments/baselines on the same task subset."""
    base_dir = HERE.parent / "baselines"
    base_cfg = yaml.safe_load((base_dir / "config.yaml").read_text())
    if cfg["screen"] not in (base_cfg.get("tasks") or []) or base_cfg.get("data") != cfg.get("data"):
        raise SystemExit(f"screen task {cfg['screen']} / data must match experiments/baselines/config.yaml")
    df = pd.read_csv(base_dir / "results.csv")
    if task not in df.columns:
        raise SystemExit(f"experiments/baselines/results.csv has no {task!r} column: rerun the baselines")
    return df[~df["plan"].str.startswith("original")].assign(source="experiments/baselines")


def previous_rows(task: str) -> dict[str, dict]:
    """Searched plans results.csv already scored on ``task``, by plan name."""
    path = HERE / "results.csv"
    if not path.is_file():
        return {}
    df = pd.read_csv(path)
    if task not in df.columns:
        return {}
    df = df[df["plan"].str.startswith("searched") & df[task].notna()]
    keep = ["plan", "compress_s", "size", "kl", "perplexity", task, f"{task}_stderr", f"{task}_delta",
            f"{task}_delta_stderr", "machine"]
    return {r["plan"]: {k: r[k] for k in keep if k in r} for r in df.to_dict("records")}


def correlations(df: pd.DataFrame, task: str) -> pd.DataFrame:
    rows = []
    # lower KL / perplexity should mean higher accuracy: a good proxy has a strongly negative correlation
    for proxy in ("kl", "perplexity"):
        rho, p_rho = stats.spearmanr(df[proxy], df[task])
        tau, p_tau = stats.kendalltau(df[proxy], df[task])
        rows.append({"proxy": proxy, "task": task, "n_plans": len(df), "spearman": rho, "spearman_p": p_rho,
                     "kendall": tau, "kendall_p": p_tau})
    return pd.DataFrame(rows)


def uniform_front(df: pd.DataFrame, task: str) -> pd.DataFrame:
    """Uniform plans not beaten on ``task`` by a smaller-or-equal-size uniform plan, by size."""
    uni = df[~df["plan"].str.startswith("searched")].sort_values(["size", task], ascending=[True, False])
    keep, best = [], -1.0
    for _, r in uni.iterrows():
        if r[task] > best:
            keep.append(r)
            best = r[task]
    return pd.DataFrame(keep)


def equal_size(df: pd.DataFrame, task: str) -> pd.DataFrame:
    """Searched plans' accuracy against the uniform accuracy front interpolated at the same size."""
    front = uniform_front(df, task).reset_index(drop=True)
    rows = []
    for _, r in df[df["plan"].str.startswith("searched")].sort_values("size").iterrows():
        i = int((front["size"] <= r["size"]).sum()) - 1
        if i < 0 or i + 1 >= len(front):
            continue  # outside the uniform front's size range: nothing to compare at equal size
        a, b = front.iloc[i], front.iloc[i + 1]
        w = (r["size"] - a["size"]) / (b["size"] - a["size"])
        acc = (1 - w) * a[task] + w * b[task]
        se = ((1 - w) ** 2 * a[f"{task}_stderr"] ** 2 + w**2 * b[f"{task}_stderr"] ** 2) ** 0.5
        rows.append({"plan": r["plan"], "size": r["size"], task: r[task], f"{task}_stderr": r[f"{task}_stderr"],
                     "perplexity": r["perplexity"], "uniform_interpolated": acc, "uniform_stderr": se,
                     "between": f"{a['plan']} .. {b['plan']}", "difference": r[task] - acc,
                     "difference_stderr": (r[f"{task}_stderr"] ** 2 + se**2) ** 0.5})
    return pd.DataFrame(rows)


def plot(df: pd.DataFrame, task: str, path: Path) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    searched = df["plan"].str.startswith("searched")
    for mask, label, marker in ((searched, "searched", "o"), (~searched, "uniform", "s")):
        sub = df[mask]
        axes[0].errorbar(sub["size"] / 2**20, sub[task], yerr=sub[f"{task}_stderr"], fmt=marker, label=label)
        axes[1].errorbar(sub["kl"], sub[task], yerr=sub[f"{task}_stderr"], fmt=marker, label=label)
    front = uniform_front(df, task)
    axes[0].plot(front["size"] / 2**20, front[task], "k--", lw=0.8, label="uniform accuracy front")
    for _, r in df.iterrows():
        axes[0].annotate(r["plan"].replace("searched ", ""), (r["size"] / 2**20, r[task]), fontsize=7)
    axes[0].set_xlabel("size (MiB)")
    axes[1].set_xlabel("KL proxy (nats/token)")
    axes[1].set_xscale("log")
    for ax in axes:
        ax.set_ylabel(f"{task} accuracy")
        ax.legend(fontsize=8)
    fig.suptitle("size vs accuracy and proxy vs accuracy, SmolLM2-135M-Instruct")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=str(HERE / "config.yaml"))
    parser.add_argument("--fresh", action="store_true", help="re-measure plans already in results.csv")
    args = parser.parse_args()
    cfg = yaml.safe_load(Path(args.config).read_text())
    plans, selected = searched_plans(cfg)
    if not plans and not cfg.get("finals"):  # correlation over the baselines' rows only: no model needed
        task = cfg["screen"]["task"]
        df = uniform_rows(cfg, task)
        df.to_csv(HERE / "results.csv", index=False)
        corr = correlations(df, task)
        corr.to_csv(HERE / "correlation.csv", index=False)
        print(corr.to_string(index=False), flush=True)
        plot(df, task, HERE / "results.png")
        return
    bench, layer_fn = load_bench(cfg)
    host = machine()
    screen = task_objectives(bench, [cfg["screen"]])
    task = screen[0].spec.name
    objectives = ["size", "kl", "perplexity"]

    done = {} if args.fresh else previous_rows(task)
    rows = []
    for plan in plans:
        if plan.name in done:
            rows.append(done[plan.name])
            print(f"{plan.name}: reused from results.csv", flush=True)
            continue
        row = {**compress_and_measure(bench, layer_fn, plan, objectives, screen), "machine": host}
        rows.append(row)
        print({k: row[k] for k in ("plan", "size", "kl", "perplexity", task, f"{task}_stderr")}, flush=True)
        pd.DataFrame(rows).to_csv(HERE / "results.csv", index=False)
    df = pd.concat([pd.DataFrame(rows), uniform_rows(cfg, task)], ignore_index=True)
    df.to_csv(HERE / "results.csv", index=False)
    corr = correlations(df, task)
    corr.to_csv(HERE / "correlation.csv", index=False)
    print(corr.to_string(index=False), flush=True)
    eq = equal_size(df, task)
    eq.to_csv(HERE / "equal_size.csv", index=False)
    print(eq.to_string(index=False), flush=True)
    plot(df, task, HERE / "results.png")

    if selected is not None and cfg.get("finals"):
        final_rows(cfg, bench, layer_fn, df, plans, selected, task, host, args.fresh)


def final_rows(cfg: dict, bench, layer_fn, df: pd.DataFrame, plans: list[CompressionPlan], selected: int,  # noqa: ANN001
               task: str, host: str, fresh: bool) -> None:
    """The selected plan and the reference uniform plans on every final task spec (selected.csv)."""
    path = HERE / "selected.csv"
    old = pd.read_csv(path) if path.is_file() and not fresh else pd.DataFrame(columns=["plan", "final_task"])
    rows = old.to_dict("records")
    candidates = [next(p for p in plans if p.name == f"searched #{selected}")]
    candidates += [bench.uniform(preset) for preset in cfg.get("final_reference", [])]
    for spec in cfg["finals"]:
        final = task_objectives(bench, [spec])  # one objective per spec: the original is scored once for it
        name = final[0].spec.name
        label = f"{name} {'all' if spec.get('limit') is None else spec['limit']} items" + (
            f" seed {spec['seed']}" if spec.get("limit") is not None else "")
        for plan in candidates:
            if any(r["plan"] == plan.name and r["final_task"] == label for r in rows):
                print(f"{plan.name} on {label}: reused from selected.csv", flush=True)
                continue
            row = compress_and_measure(bench, layer_fn, plan, ["size", "kl", "perplexity"], final)
            screened = df[df["plan"] == plan.name].iloc[0]
            out = {
                "plan": plan.name, "size_mib": row["size"] / 2**20, "kl": row["kl"], "perplexity": row["perplexity"],
                "screen_task": f"{task} {cfg['screen']['limit']} items seed {cfg['screen']['seed']}",
                "screen_acc": screened[task], "screen_delta": screened[f"{task}_delta"],
                "final_task": label, "final_acc": row[name], "final_stderr": row[f"{name}_stderr"],
                "final_delta": row[f"{name}_delta"], "final_delta_stderr": row[f"{name}_delta_stderr"],
                "original_acc": row[name] - row[f"{name}_delta"], "machine": host,
            }
            rows.append(out)
            pd.DataFrame(rows).to_csv(path, index=False)
            print(out, flush=True)


if __name__ == "__main__":
    main()
