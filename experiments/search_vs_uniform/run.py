"""Search vs uniform plans on the embedded model, and what the compressed-layer cache saves.

1. Cache: one mixed plan drawn from the space, compressed and scored (KL proxy) with an empty
   cache ("without cache": every layer compressed), then again with the cache warm. Ratio of the two.
2. Search: a fixed-budget NSGA-II search over `weights-int` (size + KL proxy), front re-measured on
   held-out perplexity; compared at equal size with uniform GPTQ at 4 and 3 bits: for each uniform plan,
   the best searched (non-baseline) plan no larger than it.

Usage: python experiments/search_vs_uniform/run.py [--trials 60] [--seed 0]
Writes results.csv (comparison), front.csv (re-measured front), uniform.csv (uniform plans on the same
objectives), cache.csv and front.png (size vs perplexity) beside this file; the plans of the re-measured
trials go to experiments/.work/search-vs-uniform/plans/ for experiments/heldout_check.
"""

from __future__ import annotations

import argparse
import random
import shutil
import time
from pathlib import Path

import pandas as pd

from squeezeray.objectives.latency import host_description
from squeezeray.search import LayerCache
from squeezeray.search import SearchConfig
from squeezeray.search import run_search
from squeezeray.spaces import CompressionPlan
from squeezeray.spaces import preset_space
from squeezeray.workbench import DataConfig
from squeezeray.workbench import Workbench

HERE = Path(__file__).resolve().parent
UNIFORM = ("rtn-w8", "gptq-w8g128", "gptq-w4g128", "gptq-w3g128", "rtn-w4g128")
COMPARED = ("gptq-w4g128", "gptq-w3g128")  # the bar: searched plans vs uniform GPTQ at 3-4 bits


def cache_cost(bench: Workbench, space_name: str, seed: int) -> dict[str, float]:
    space = preset_space(space_name)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--space", default="weights-int")
    parser.add_argument("--rerank", type=int, default=12, help="trials re-measured on held-out perplexity")
    args = parser.parse_args()
    bench = Workbench.load(None, DataConfig(), progress=False)
    # experiments/.work/cache is shared with experiments/baselines (same keys: model, layer, steps, calibration)
    workdir = HERE.parent / ".work"
    bench.cache_dir = workdir / "cache"
    machine = host_description()

    cc = cache_cost(bench, args.space, args.seed)
    pd.DataFrame([{**cc, "machine": machine}]).to_csv(HERE / "cache.csv", index=False)
    print("cache:", cc, flush=True)

    shutil.rmtree(workdir / "search-vs-uniform", ignore_errors=True)
    t0 = time.perf_counter()
    result = run_search(
        SearchConfig(space=args.space, n_trials=args.trials, sampler="nsga2", seed=args.seed,
                     final_objectives=("size", "perplexity", "kl"), rerank=args.rerank, workdir=workdir,
                     study_name="search-vs-uniform"),
        bench=bench, progress=True,
    )
    search_s = time.perf_counter() - t0
    front = result.front.sort_values("size")
    front["selected"] = front["trial"] == result.selected
    front.to_csv(HERE / "front.csv", index=False)
    plans = workdir / "search-vs-uniform" / "plans"
    plans.mkdir(parents=True, exist_ok=True)
    for t in front["trial"]:
        result.plan(int(t)).save(plans / f"trial-{int(t)}.json")
    print(f"selected trial {result.selected}: {result.selection_reason}", flush=True)

    rows = []
    searched = front[~front["baseline"]]
    uniform = []
    layer_fn = LayerCache(workdir / "cache").layer_fn(bench.loaded.fingerprint(), bench.calibration.digest)
    for preset in UNIFORM:
        candidate, _ = bench.compress(CompressionPlan.uniform(preset, bench.layers), layer_fn=layer_fn)
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
    pd.DataFrame(rows).to_csv(HERE / "results.csv", index=False)
    pd.DataFrame(uniform).to_csv(HERE / "uniform.csv", index=False)
    plot(front, pd.DataFrame(uniform), result.baseline, HERE / "front.png")


def plot(front: pd.DataFrame, uniform: pd.DataFrame, base: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    mib = 2**20
    s = front[~front["baseline"]]
    ax.scatter(s["size"] / mib, s["perplexity"], label="searched (re-measured)", s=18)
    p = s[s["pareto"]].sort_values("size")
    ax.plot(p["size"] / mib, p["perplexity"], lw=1)
    ax.scatter(uniform["size"] / mib, uniform["perplexity"], marker="s", color="k", label="uniform")
    for _, r in uniform.iterrows():
        ax.annotate(r["plan"], (r["size"] / mib, r["perplexity"]), fontsize=7)
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
