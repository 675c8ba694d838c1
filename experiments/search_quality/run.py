"""Search quality on one model: the engine's front against uniform presets, the solver and other samplers.

Run from the repository root: ``python experiments/search_quality/run.py [--model gemma3-270m]``.
Writes ``<model>/plans.csv`` (one row per measured plan), ``<model>/hypervolume.csv`` (hypervolume
of the (size, KL) front against evaluations used), ``<model>/summary.csv`` and ``<model>/front.png``.

Average bits = 8 x the stored bytes of the compressed layers (codes, scales, zero points) over their
weight count. Perplexity ratios compare a plan with uniform GPTQ interpolated at equal size
(log-perplexity linear in size between the neighbouring uniform GPTQ plans).
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
from experiments._common import pyplot  # noqa: E402
from experiments._common import at_budgets  # noqa: E402
from squeezeray.objectives import Direction  # noqa: E402
from squeezeray.objectives.size import average_bits  # noqa: E402
from squeezeray.search import SearchConfig  # noqa: E402
from squeezeray.search import run_search  # noqa: E402
from squeezeray.search._pareto import hypervolume  # noqa: E402
from squeezeray.search._pareto import pareto_mask  # noqa: E402
from squeezeray.search._evo import EvoConfig  # noqa: E402
from squeezeray.spaces import CompressionPlan  # noqa: E402
from squeezeray.spaces import load_space  # noqa: E402

HERE = Path(__file__).resolve().parent
FINAL = ["size", "perplexity", "kl"]
CLIP_LINE = "uniform-gptq-asym-clip"  # the strong uniform line: what the space's options give every layer alike


def measure_plan(bench, layer_fn, plan: CompressionPlan) -> dict[str, float]:  # noqa: ANN001
    m = bench.evaluate_plan(plan, FINAL, layer_fn=layer_fn)
    d = m["size"].details
    return {"size": m["size"].value, "perplexity": m["perplexity"].value, "kl": m["kl"].value,
            "avg_bits": average_bits(d["compressed_layer_bytes"], d["compressed_weights"])}


def targets(band: list) -> list[float]:
    """Average bits at which front plans are re-measured (see main)."""
    coarse = np.arange(band[0], band[1] + 1e-9, 0.25)
    return sorted({round(float(x), 3) for x in [*coarse, *np.arange(3.0, 3.5 + 1e-9, 0.1)]})


def band_ratio(plans: pd.DataFrame, reference: pd.DataFrame, lo: float, hi: float, step: float = 0.05) -> float:
    """Geometric mean, over evenly spaced bits in [lo, hi], of the method's perplexity over the reference's,
    each interpolated at those bits (log-perplexity linear between measured plans; a curve is its plans'
    lower envelope). Only bits both curves cover count; nan when fewer than half of them are covered."""
    at = np.arange(lo, hi + 1e-9, step)
    mine, ref = lower_envelope(plans), lower_envelope(reference)
    if mine.empty or ref.empty:
        return float("nan")
    ratios = np.array([interpolate_log(mine["avg_bits"].to_numpy(), mine["perplexity"].to_numpy(), b)
                       / interpolate_log(ref["avg_bits"].to_numpy(), ref["perplexity"].to_numpy(), b) for b in at])
    ratios = ratios[np.isfinite(ratios)]
    return float(np.exp(np.mean(np.log(ratios)))) if 2 * len(ratios) >= len(at) else float("nan")


def budget_ratio(plans: pd.DataFrame, reference: pd.DataFrame, lo: float, hi: float, step: float = 0.05) -> float:
    """Geometric mean, over budgets every ``step`` bits in [lo, hi], of the best measured plan that fits the
    budget (lowest perplexity at or below it: what a user with that budget gets) over the reference
    interpolated at the budget; nan when a budget has no plan."""
    at = np.arange(lo, hi + 1e-9, step)
    ref = lower_envelope(reference)
    ratios = []
    for b in at:
        fits = plans[plans["avg_bits"] <= b + 1e-9]["perplexity"]
        r = interpolate_log(ref["avg_bits"].to_numpy(), ref["perplexity"].to_numpy(), b)
        ratios.append(fits.min() / r if len(fits) else float("nan"))
    return float(np.exp(np.mean(np.log(ratios))))


def lower_envelope(plans: pd.DataFrame) -> pd.DataFrame:
    """Plans that no smaller-or-equal plan beats on perplexity, by average bits."""
    out, best = [], np.inf
    for _, r in plans.sort_values(["avg_bits", "perplexity"]).iterrows():
        if r["perplexity"] < best:
            out.append(r)
            best = r["perplexity"]
    return pd.DataFrame(out)


def interpolate_log(sizes: np.ndarray, ppls: np.ndarray, at: float) -> float:
    """Uniform perplexity at size ``at``: log-perplexity linear in size between neighbours (nan outside)."""
    order = np.argsort(sizes)
    s, p = sizes[order], np.log(ppls[order])
    if at < s[0] or at > s[-1]:
        return float("nan")
    return float(np.exp(np.interp(at, s, p)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--methods", default=None, help="comma-separated subset of the config's methods")
    ap.add_argument("--replot", action="store_true", help="redraw front.png from the committed CSVs only")
    ap.add_argument("--summary-only", action="store_true",
                    help="recompute summary.csv from the committed plans.csv and hypervolume.csv (search times kept)")
    args = ap.parse_args()
    cfg = yaml.safe_load((HERE / "config.yaml").read_text())
    if args.model:
        cfg["model"] = args.model
    n_trials = args.trials or cfg["trials"]
    methods = args.methods.split(",") if args.methods else cfg["methods"]
    name = cfg["model"] or "smollm2-135m"
    out = HERE / name.replace("/", "_")
    out.mkdir(parents=True, exist_ok=True)
    if args.summary_only:
        old = pd.read_csv(out / "summary.csv").set_index("method")["search_seconds"].to_dict()
        df = pd.read_csv(out / "plans.csv")
        add_envelope_ratio(df)
        df.to_csv(out / "plans.csv", index=False)
        summarize(df, pd.read_csv(out / "hypervolume.csv"), out, cfg["bits"], old, None)
        return
    if args.replot:
        plot(pd.read_csv(out / "plans.csv"), pd.read_csv(out / "hypervolume.csv"), out, name)
        return
    t_start = time.time()
    bench, layer_fn = load_bench(cfg)
    rows: list[dict] = []

    # uniform presets on the same layers the space covers
    for preset in cfg["uniform"]:
        t0 = time.perf_counter()
        r = measure_plan(bench, layer_fn, bench.uniform(preset))
        rows.append({"method": uniform_line(preset), "plan": preset, "trial": -1, **r,
                     "seconds": time.perf_counter() - t0})
        print(f"uniform {preset}: {r}", flush=True)
    uni = pd.DataFrame([r for r in rows if r["method"] == "uniform-gptq"])  # the g128 line
    space = load_space(cfg["space"])
    if cfg.get("table", "dense") == "dense":  # the token table 16-bit for every method, as the uniform plans keep it
        space = space.with_groups([g for g in space.groups if g.name != "head"])
    band = cfg["bits"]
    hv_rows: list[dict] = []
    timings: dict[str, float] = {}
    for method in methods:
        t0 = time.perf_counter()
        sc = SearchConfig(
            model=cfg["model"], space=space, sampler=method, n_trials=n_trials, seed=cfg["seed"],
            objectives=("size", "kl"), final_objectives=("size", "kl"), rerank=1,
            workdir=WORK / "search_quality" / out.name, study_name=f"{method}-s{cfg['seed']}",
            evo=EvoConfig(bits_min=band[0], bits_max=band[1], sensitivity_seqs=cfg["sensitivity"]["seqs"],
                          sensitivity_len=cfg["sensitivity"]["len"], screen=cfg.get("screen", 0),
                          candidates=cfg.get("candidates", 8)),
        )
        result = run_search(sc, bench=bench, resume="auto", progress=False)
        if "search_seconds" not in result.study.user_attrs:  # the first run's time; a resumed run re-measures only
            result.study.set_user_attr("search_seconds", time.perf_counter() - t0)
        timings[method] = float(result.study.user_attrs["search_seconds"])
        if result.sensitivity is not None:
            result.sensitivity.to_csv(out / "sensitivity.csv", index=False)
            result.solver_front.to_csv(out / "solver_front.csv", index=False)
        study = result.study
        done = [t for t in study.get_trials(deepcopy=False)
                if t.user_attrs.get("outcome") == "ok" and "duplicate_of" not in t.user_attrs and t.values]
        done.sort(key=lambda t: t.number)
        vals = np.array([t.values for t in done], dtype=float)
        ref = np.array([1.05 * uni["size"].max(), 1.0])  # 1 nat/token: far worse than any plan in the band
        for k in range(1, len(done) + 1):
            hv_rows.append({"method": method, "evaluations": k,
                            "hypervolume": hypervolume(vals[:k], [Direction.MINIMIZE] * 2, ref)})
        searched = [t for t in done if not t.user_attrs.get("baseline")]
        mask = pareto_mask(np.array([t.values for t in searched]), [Direction.MINIMIZE] * 2) if searched else []
        front = sorted((t for t, m in zip(searched, mask) if m), key=lambda t: t.values[0])
        # re-measure, at evenly spaced bits (every 0.25 bit over the band, every 0.1 bit over 3.0-3.5 where the
        # goal is stated), the front plan nearest and the largest one not above (bits are affine in size)
        bits_of = np.poly1d(np.polyfit(uni["size"], uni["avg_bits"], 1))
        picked = at_budgets(front, [float(bits_of(t.values[0])) for t in front], targets(band))
        groups = [("front", picked)]
        if method == "evo":
            groups.append(("solver", [t for t in done if t.user_attrs.get("solver_seed")]))
        for kind, trials in groups:
            for t in trials:
                plan = result.plan(t.number)
                r = measure_plan(bench, layer_fn, plan)
                rows.append({"method": method if kind == "front" else "solver", "plan": json.dumps(plan.summary()),
                             "trial": t.number, **r, "search_kl": t.values[1], "seconds": 0.0})
                print(f"{method} {kind} #{t.number}: {r}", flush=True)
        pd.DataFrame(rows).to_csv(out / "plans.csv", index=False)
    df = pd.DataFrame(rows)
    df["uniform_gptq_ppl_at_size"] = [interpolate_log(uni["size"].to_numpy(), uni["perplexity"].to_numpy(), s)
                                      for s in df["size"]]
    df["ppl_ratio_vs_uniform_gptq"] = df["perplexity"] / df["uniform_gptq_ppl_at_size"]
    add_envelope_ratio(df)
    df.to_csv(out / "plans.csv", index=False)
    hv = pd.DataFrame(hv_rows)
    hv.to_csv(out / "hypervolume.csv", index=False)
    summarize(df, hv, out, band, timings, time.time() - t_start)
    plot(df, hv, out, name)


def uniform_line(preset: str) -> str:
    """The uniform line a preset belongs to: ``uniform-<tech>[-<words>]`` for g128, ``...-g<n>`` otherwise.

    ``gptq-w3g128`` -> ``uniform-gptq`` (the line the issue's ratio is stated against),
    ``gptq-w3g64-asym-clip`` -> ``uniform-gptq-asym-clip-g64``."""
    tech, grid, *words = preset.split("-")
    group = "" if grid.endswith("g128") else "-g" + grid.split("g")[1]
    return "-".join(["uniform", tech, *words]) + group


def add_envelope_ratio(df: pd.DataFrame) -> None:
    """Each plan's perplexity over the best uniform GPTQ plan (any group size or grid) interpolated at its size,
    and over the uniform asym+clip g128 line (``CLIP_LINE``) when the run measured it."""
    env = lower_envelope(df[df["method"].str.startswith("uniform-gptq")])
    df["ppl_ratio_vs_best_uniform_gptq"] = [
        p / interpolate_log(env["size"].to_numpy(), env["perplexity"].to_numpy(), s)
        for s, p in zip(df["size"], df["perplexity"])]
    clip = df[df["method"] == CLIP_LINE]
    if len(clip):
        df["ppl_ratio_vs_clip_line"] = [
            p / interpolate_log(clip["size"].to_numpy(), clip["perplexity"].to_numpy(), s)
            for s, p in zip(df["size"], df["perplexity"])]


def summarize(df: pd.DataFrame, hv: pd.DataFrame, out: Path, band: list, timings: dict, total: float | None) -> None:
    rows = []
    g4 = df[(df["method"] == "uniform-gptq") & (df["plan"] == "gptq-w4g128")].iloc[0]
    line = df[df["method"] == "uniform-gptq"]  # g128, the line the ratio is stated against
    envelope = df[df["method"].str.startswith("uniform-gptq")]  # every uniform GPTQ plan (any group size and grid)
    clip_line = df[df["method"] == CLIP_LINE]  # GPTQ g128 with zero points and the clipping search
    g4c = df[(df["method"] == CLIP_LINE) & (df["plan"] == "gptq-w4g128-asym-clip")]
    for method, sub in df[~df["method"].str.startswith("uniform")].groupby("method"):
        inb = sub[(sub["avg_bits"] >= 3.0) & (sub["avg_bits"] <= 3.5)]
        band_all = sub[(sub["avg_bits"] >= band[0]) & (sub["avg_bits"] <= band[1])]
        ratios = band_all["ppl_ratio_vs_uniform_gptq"].dropna()
        last = hv[hv["method"] == method]["hypervolume"]
        rows.append({
            "method": method, "plans": len(sub),
            "geo_mean_ratio_3.0_3.5_bits": float(np.exp(np.log(inb["ppl_ratio_vs_uniform_gptq"].dropna()).mean()))
            if len(inb) else float("nan"),
            "plans_3.0_3.5_bits": len(inb),
            "band_ratio_3.0_3.5_vs_g128": band_ratio(sub, line, 3.0, 3.5),
            "band_ratio_3.0_3.5_vs_gptq_envelope": band_ratio(sub, envelope, 3.0, 3.5),
            "band_ratio_3.14_3.5_vs_gptq_envelope": band_ratio(sub, envelope, 3.14, 3.5),
            "budget_ratio_3.0_3.5_vs_g128": budget_ratio(sub, line, 3.0, 3.5),
            "budget_ratio_3.0_3.5_vs_gptq_envelope": budget_ratio(sub, envelope, 3.0, 3.5),
            "budget_ratio_3.14_3.5_vs_gptq_envelope": budget_ratio(sub, envelope, 3.14, 3.5),
            "band_ratio_3.0_3.5_vs_clip_line": band_ratio(sub, clip_line, 3.0, 3.5) if len(clip_line) else float("nan"),
            "budget_ratio_3.0_3.5_vs_clip_line": budget_ratio(sub, clip_line, 3.0, 3.5) if len(clip_line)
            else float("nan"),
            "geo_mean_ratio_band": float(np.exp(np.log(ratios).mean())) if len(ratios) else float("nan"),
            "worst_ratio_band": float(ratios.max()) if len(ratios) else float("nan"),
            "smaller_and_better_than_gptq_w4g128": int(((sub["size"] < g4["size"])
                                                        & (sub["perplexity"] < g4["perplexity"])).sum()),
            "smaller_and_better_than_gptq_w4g128_asym_clip": int(((sub["size"] < g4c["size"].iloc[0])
                                                                  & (sub["perplexity"] < g4c["perplexity"].iloc[0])).sum())
            if len(g4c) else -1,
            "final_hypervolume": float(last.iloc[-1]) if len(last) else float("nan"),
            "search_seconds": timings.get(method, float("nan")),
        })
    s = pd.DataFrame(rows)
    s.to_csv(out / "summary.csv", index=False)
    if total is not None:  # the conditions line says whether anything else ran: edit it by hand when something did
        (out / "machine.txt").write_text(f"{machine()}\nthe whole script: {total:.0f} s, nothing else running\n")
    print(s.to_string(index=False))


def plot(df: pd.DataFrame, hv: pd.DataFrame, out: Path, name: str) -> None:
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 5))
    for method, sub in df.groupby("method"):
        sub = sub.sort_values("avg_bits")
        style = "-o" if method.startswith("uniform") else "o"
        a.plot(sub["avg_bits"], sub["perplexity"], style, label=method, alpha=0.8, ms=4)
    a.set_yscale("log")
    a.set_ylim(20, 300)  # 2.5-2.9 bits lie far above (perplexity 500-80,000): see plans.csv
    a.set_xlabel("average bits per weight (searched layers)")
    a.set_ylabel("held-out perplexity")
    a.set_xlim(2.9, 6.3)
    a.legend()
    a.set_title(f"{name}: front plans vs uniform")
    for method, sub in hv.groupby("method"):
        b.plot(sub["evaluations"], sub["hypervolume"], label=method)
    b.set_xlabel("evaluations (trials measured; evo's sensitivity stage not counted)")
    b.set_ylabel("hypervolume (size x KL)")
    b.legend()
    fig.tight_layout()
    fig.savefig(out / "front.png", dpi=110)


if __name__ == "__main__":
    main()
