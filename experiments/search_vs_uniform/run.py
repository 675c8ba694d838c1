"""Search vs uniform plans on the embedded model, and what the compressed-layer cache saves.

1. Cache: one mixed plan drawn from the space, compressed and scored (KL proxy) with an empty
   cache ("without cache": every layer compressed), then again with the cache warm. Ratio of the two.
2. Search: a fixed-budget NSGA-II search over `weights-int` (size + KL proxy), front re-measured on
   held-out perplexity; compared at equal size with uniform GPTQ at 4 and 3 bits: for each uniform plan,
   the best searched (non-baseline) plan no larger than it.

   Two comparisons: (a) for each uniform GPTQ plan, the best searched plan no larger than it; (b) every
   searched plan on the re-measured front whose size lies within the uniform plans' range, against the
   uniform front interpolated at its size (log-perplexity linear in size between neighbouring uniform
   plans); the geometric mean of those ratios is the "on average at equal size" figure.

Usage: python experiments/search_vs_uniform/run.py [--space by-type|weights-int|FILE.yaml] [--trials 60]
       python experiments/search_vs_uniform/run.py --space by-type --report-only   # recompute (a), (b), plot
Writes to experiments/search_vs_uniform/<space>/: results.csv (a), equal_size.csv (b), front.csv
(re-measured front), uniform.csv (uniform plans, same objectives), cache.csv and front.png; the plans of the
re-measured trials go to experiments/.work/search-vs-uniform-<space>/plans/ for experiments/heldout_check.
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import pyplot  # noqa: E402

from squeezeray._device import host_description
from squeezeray.search import LayerCache
from squeezeray.search import SearchConfig
from squeezeray.search import run_search
from squeezeray.spaces import load_space
from squeezeray.workbench import DataConfig
from squeezeray.workbench import Workbench

HERE = Path(__file__).resolve().parent
UNIFORM = ("rtn-w8", "gptq-w8g128", "gptq-w4g128", "gptq-w3g128", "rtn-w4g128")
COMPARED = ("gptq-w4g128", "gptq-w3g128")  # the bar: searched plans vs uniform GPTQ at 3-4 bits


def cache_cost(bench: Workbench, space_name: str, seed: int) -> dict[str, float]:
    space = load_space(space_name)
    layers = list(bench.layers)
    rng = random.Random(seed)
    params = {k: rng.choice(v) for k, v in space.distributions(layers).items()}
    plan = space.plan_from_params(params, layers)
    bench.stats(hessian=True)  # calibration statistics are collected once per run, not per trial
    cache = LayerCache(None)  # memory only and empty: the first pass compresses every layer
    fn = cache.layer_fn(bench.loaded.fingerprint(), bench.calibration.digest)
    times = {}
    for label in ("cold", "warm"):
        t0 = time.perf_counter()
        candidate, _ = bench.compress(plan, layer_fn=fn)
        bench.evaluate(candidate, ["size", "kl"])
        times[label] = time.perf_counter() - t0
    return {"trial_s_without_cache": times["cold"], "trial_s_with_cache": times["warm"],
            "ratio": times["cold"] / times["warm"], "plan": plan.summary().__repr__()}


def equal_size(front: pd.DataFrame, uniform: pd.DataFrame) -> pd.DataFrame:
    """Searched front plans against the uniform front interpolated at their size (log-perplexity, linear in size)."""
    # the uniform plans' own front: at equal size the better one, and a larger plan must be better
    # (sizes within 64 KiB are the same format: rtn-w4g128 and gptq-w4g128 differ only by their JSON headers)
    u = uniform.assign(bucket=(uniform["size"] / 2**16).round()).sort_values(["bucket", "perplexity"])
    u = u.drop_duplicates("bucket")
    u = u[u["perplexity"] == u["perplexity"].cummin()]
    xs, ys = u["size"].tolist(), [math.log(v) for v in u["perplexity"]]
    rows = []
    searched = front[(~front["baseline"]) & front["pareto"]]
    for _, r in searched.drop_duplicates(["size", "perplexity"]).iterrows():  # a plan sampled twice counts once
        size = float(r["size"])
        if not xs[0] <= size <= xs[-1]:
            continue
        i = max(j for j in range(len(xs)) if xs[j] <= size)
        if i == len(xs) - 1:
            interp = ys[i]
        else:
            w = (size - xs[i]) / (xs[i + 1] - xs[i])
            interp = ys[i] + w * (ys[i + 1] - ys[i])
        rows.append({"trial": int(r["trial"]), "size": size, "perplexity": float(r["perplexity"]),
                     "uniform_interpolated_ppl": math.exp(interp), "between": f"{u['plan'].iloc[i]} .. "
                     f"{u['plan'].iloc[min(i + 1, len(xs) - 1)]}",
                     "ppl_ratio": float(r["perplexity"]) / math.exp(interp), "plan": r["plan"]})
    return pd.DataFrame(rows)


def report(out: Path) -> None:
    front = pd.read_csv(out / "front.csv")
    uniform = pd.read_csv(out / "uniform.csv")
    eq = equal_size(front, uniform)
    eq.to_csv(out / "equal_size.csv", index=False)
    if not eq.empty:
        gmean = math.exp(sum(math.log(v) for v in eq["ppl_ratio"]) / len(eq))
        print(f"equal size: {len(eq)} searched front plans within the uniform range, "
              f"{int((eq['ppl_ratio'] < 1).sum())} below the uniform front; geometric-mean ppl ratio {gmean:.3f}")
    else:
        print("equal size: no searched front plan lies within the uniform plans' size range")
    base = {"perplexity": float(pd.read_csv(out / "cache.csv").get("original_ppl", pd.Series([float("nan")]))[0])}
    plot(front, uniform, base, out / "front.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--space", default=str(HERE / "by-type.yaml"), help="preset name or space YAML")
    parser.add_argument("--report-only", action="store_true", help="recompute the comparisons from saved CSVs")
    parser.add_argument("--skip-cache-cost", action="store_true",
                        help="skip step 1 (it recompresses a whole plan with an empty cache: minutes of GPTQ)")
    parser.add_argument("--rerank", type=int, default=12, help="trials re-measured on held-out perplexity")
    args = parser.parse_args()
    space_name = load_space(args.space).name
    out = HERE / space_name
    if args.report_only:
        report(out)
        return
    out.mkdir(exist_ok=True)
    study = f"search-vs-uniform-{space_name}"
    bench = Workbench.load(None, DataConfig(), progress=False)
    # experiments/.work/cache is shared with experiments/baselines (same keys: model, layer, steps, calibration)
    workdir = HERE.parent / ".work"
    bench.cache_dir = workdir / "cache"
    machine = host_description()

    original_ppl = bench.evaluate(bench.original, ["perplexity"])["perplexity"].value
    cc = {} if args.skip_cache_cost else cache_cost(bench, args.space, args.seed)
    pd.DataFrame([{**cc, "original_ppl": original_ppl, "machine": machine}]).to_csv(out / "cache.csv", index=False)
    print("cache:", cc, flush=True)

    shutil.rmtree(workdir / study, ignore_errors=True)
    t0 = time.perf_counter()
    result = run_search(
        SearchConfig(space=args.space, n_trials=args.trials, sampler="nsga2", seed=args.seed,
                     final_objectives=("size", "perplexity", "kl"), rerank=args.rerank, workdir=workdir,
                     study_name=study),
        bench=bench, progress=True,
    )
    search_s = time.perf_counter() - t0
    front = result.front.sort_values("size")
    front["selected"] = front["trial"] == result.selected
    front.to_csv(out / "front.csv", index=False)
    plans = workdir / study / "plans"
    plans.mkdir(parents=True, exist_ok=True)
    for t in front["trial"]:
        result.plan(int(t)).save(plans / f"trial-{int(t)}.json")
    print(f"selected trial {result.selected}: {result.selection_reason}", flush=True)

    rows = []
    searched = front[~front["baseline"]]
    uniform = []
    layer_fn = LayerCache(workdir / "cache").layer_fn(bench.loaded.fingerprint(), bench.calibration.digest)
    for preset in UNIFORM:
        candidate, _ = bench.compress(bench.uniform(preset), layer_fn=layer_fn)
        u = bench.evaluate(candidate, ["size", "perplexity", "kl"])
        uniform.append({"plan": preset, **{k: m.value for k, m in u.items()}, "machine": machine})
        if preset not in COMPARED:
            continue
        fits = searched[searched["size"] <= u["size"].value]
        best = fits.sort_values("perplexity").iloc[0] if not fits.empty else None
        rows.append({
            "uniform": preset, "uniform_size": u["size"].value, "uniform_ppl": u["perplexity"].value,
            "searched_trial": None if best is None else int(best["trial"]),
            "searched_size": None if best is None else float(best["size"]),
            "searched_ppl": None if best is None else float(best["perplexity"]),
            "ppl_ratio": None if best is None else float(best["perplexity"]) / u["perplexity"].value,
            "trials": args.trials, "search_s": search_s, "machine": machine,
        })
        print(rows[-1], flush=True)
    pd.DataFrame(rows).to_csv(out / "results.csv", index=False)
    pd.DataFrame(uniform).to_csv(out / "uniform.csv", index=False)
    report(out)


def plot(front: pd.DataFrame, uniform: pd.DataFrame, base: dict[str, float], path: Path) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    mib = 2**20
    s = front[~front["baseline"]]
    ax.scatter(s["size"] / mib, s["perplexity"], label="searched (re-measured)", s=18)
    p = s[s["pareto"]].sort_values("size")
    ax.plot(p["size"] / mib, p["perplexity"], lw=1)
    ax.scatter(uniform["size"] / mib, uniform["perplexity"], marker="s", color="k", label="uniform")
    for _, r in uniform.iterrows():
        ax.annotate(r["plan"], (r["size"] / mib, r["perplexity"]), fontsize=7)
    if base["perplexity"] == base["perplexity"]:  # not NaN
        ax.axhline(base["perplexity"], ls=":", color="gray", label="original")
    ax.set_xlabel("size (MiB)")
    ax.set_ylabel("held-out perplexity")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("searched plans vs uniform, SmolLM2-135M-Instruct")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
