"""Domain calibration against generic calibration, judged on the user's task.

Run from the repository root: ``python experiments/domain/run.py``. Writes ``results.csv`` (one row per
plan: arm, average bits, size, held-out BoolQ perplexity, ARC-Easy accuracy with its SE and its paired
delta to the original), ``summary.csv`` and ``front.png``; ``machine.txt`` says where and how long.

Average bits = 8 x the stored bytes of the compressed layers (codes, scales, zero points) over their
weight count; the token table stays 16-bit in every plan.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from experiments._common import WORK  # noqa: E402
from experiments._common import load_bench  # noqa: E402
from experiments._common import machine  # noqa: E402
from experiments._common import measure  # noqa: E402
from experiments._common import pyplot  # noqa: E402
from experiments._common import searched_front  # noqa: E402
from experiments._common import spread  # noqa: E402
from experiments._common import task_objectives  # noqa: E402
from squeezeray.data import arrow_table  # noqa: E402
from squeezeray.objectives.size import average_bits  # noqa: E402
from squeezeray.search import LayerCache  # noqa: E402
from squeezeray.search import SearchConfig  # noqa: E402
from squeezeray.search import run_search  # noqa: E402
from squeezeray.search._evo import EvoConfig  # noqa: E402
from squeezeray.spaces import load_space  # noqa: E402

HERE = Path(__file__).resolve().parent
OUT_DIR = WORK / "domain"


def science_text(path: Path) -> int:
    """ARC-Challenge and OpenBookQA validation questions with their right answers, one JSONL row each."""
    rows = []
    for folder, question in (("ai2_arc/ARC-Challenge/validation", "question"), ("openbookqa/main/validation", "question_stem")):
        for r in arrow_table(folder).to_pylist():  # type: ignore[attr-defined]
            answer = r["choices"]["text"][r["choices"]["label"].index(r["answerKey"])]
            rows.append({"text": f"Question: {r[question]}\nAnswer: {answer}"})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return len(rows)


def bits_of(m: dict) -> float:
    d = m["size"].details
    return average_bits(d["compressed_layer_bytes"], d["compressed_weights"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replot", action="store_true", help="redraw front.png and summary.csv from results.csv")
    args = ap.parse_args()
    cfg = yaml.safe_load((HERE / "config.yaml").read_text())
    if args.replot:
        df = pd.read_csv(HERE / "results.csv")
        summarize(df)
        plot(df)
        return
    t_start = time.time()
    n_docs = science_text(OUT_DIR / "science.jsonl")
    print(f"science text: {n_docs} questions", flush=True)
    rows: list[dict] = []
    task = cfg["task"]
    for arm, source in cfg["arms"].items():
        data = {**cfg["data"], "calib_data": source.format(work=OUT_DIR)}
        bench, _ = load_bench({**cfg, "data": data})
        # the search's own layer cache, so the plans scored below are not compressed a second time
        layer_fn = LayerCache(OUT_DIR / "runs" / "cache").layer_fn(bench.loaded.fingerprint(), bench.calibration.digest)
        tasks = task_objectives(bench, [{"task": task, "limit": None}])
        if not rows:
            rows.append({"arm": "original", "plan": "original", "trial": -1, "avg_bits": 16.0,
                         **measure(bench, bench.original, ["size", "perplexity"], tasks)})
            print(rows[-1], flush=True)
        space = load_space(cfg["space"])
        space = space.with_groups([g for g in space.groups if g.name != "head"])  # the table 16-bit everywhere
        t0 = time.perf_counter()
        sc = SearchConfig(
            model=cfg["model"], space=space, sampler="evo", n_trials=cfg["trials"], seed=cfg["seed"],
            objectives=("size", "kl"), final_objectives=("size", "kl"), rerank=1, data=bench.data,
            workdir=OUT_DIR / "runs", study_name=f"{arm}-s{cfg['seed']}",
            evo=EvoConfig(bits_min=cfg["bits"][0], bits_max=cfg["bits"][1],
                          sensitivity_seqs=cfg["sensitivity"]["seqs"], sensitivity_len=cfg["sensitivity"]["len"]),
        )
        result = run_search(sc, bench=bench, resume="auto", progress=False)
        search_s = time.perf_counter() - t0
        front = searched_front(result.study)
        todo = [(f"uniform {p}", -1, bench.uniform(p)) for p in cfg["uniform"]]
        inband = []
        for t in front:
            plan = result.plan(t.number)
            m = bench.evaluate_plan(plan, ["size"], layer_fn=layer_fn)
            if cfg["bits"][0] <= bits_of(m) <= cfg["bits"][1]:
                inband.append((f"searched #{t.number}", t.number, plan))
        todo += spread(inband, cfg["front"])
        for label, trial, plan in todo:
            t1 = time.perf_counter()
            candidate, _ = bench.compress(plan, layer_fn=layer_fn)
            ms = bench.evaluate(candidate, ["size"])
            row = {"arm": arm, "plan": label, "trial": trial, "avg_bits": bits_of(ms),
                   **measure(bench, candidate, ["size", "perplexity"], tasks), "search_s": search_s,
                   "measure_s": time.perf_counter() - t1}
            del candidate
            rows.append(row)
            print(row, flush=True)
            pd.DataFrame(rows).to_csv(HERE / "results.csv", index=False)
        del bench
    df = pd.DataFrame(rows)
    df.to_csv(HERE / "results.csv", index=False)
    (HERE / "machine.txt").write_text(
        f"{machine()}\nwall time {time.time() - t_start:.0f} s (one process, nothing else running)\n")
    summarize(df)
    plot(df)


def summarize(df: pd.DataFrame) -> None:
    """Per arm: its searched plans' mean accuracy, and the other arm's front interpolated at their bits."""
    acc = "arc_easy"
    searched = df[df["plan"].str.startswith("searched")]
    rows = []
    for arm, sub in searched.groupby("arm"):
        other = searched[searched["arm"] != arm].sort_values("avg_bits")
        g4 = df[(df["arm"] == "boolq") & (df["plan"] == "uniform gptq-w4g128")].iloc[0]
        interp = np.interp(sub["avg_bits"], other["avg_bits"], other[acc]) if len(other) else np.nan
        rows.append({
            "arm": arm, "plans": len(sub), "mean_bits": sub["avg_bits"].mean(), "mean_accuracy": sub[acc].mean(),
            "mean_stderr": sub[f"{acc}_stderr"].mean(),
            "other_arm_at_same_bits": float(np.mean(interp)),
            "vs_other_arm_points": 100 * float(np.mean(sub[acc].to_numpy() - interp)),
            "vs_uniform_gptq_w4g128_boolq_points": 100 * float(sub[acc].mean() - g4[acc]),
            "uniform_gptq_w4g128_bits": float(g4["avg_bits"]),
        })
    s = pd.DataFrame(rows)
    s.to_csv(HERE / "summary.csv", index=False)
    print(s.to_string(index=False))


def plot(df: pd.DataFrame) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    colors = {"boolq": "tab:blue", "science": "tab:green"}
    for (arm, kind), sub in df[df["arm"] != "original"].groupby(
            [df["arm"], df["plan"].str.split(" ").str[0]]):
        sub = sub.sort_values("avg_bits")
        ax.errorbar(sub["avg_bits"], sub["arc_easy"], yerr=sub["arc_easy_stderr"], fmt="-o" if kind == "searched" else "--s",
                    color=colors.get(arm, "gray"), capsize=3, label=f"{kind} ({arm} calibration)")
    orig = df[df["arm"] == "original"]
    if len(orig):
        ax.axhline(float(orig["arc_easy"].iloc[0]), color="black", lw=0.8, label="original (16-bit)")
    ax.set_xlabel("average bits per weight (compressed layers)")
    ax.set_ylabel("ARC-Easy accuracy (570 items, ±1 SE)")
    ax.set_title("SmolLM2-135M: calibration text vs task accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "front.png", dpi=120)


if __name__ == "__main__":
    main()
