"""Search vs uniform plans on the embedded model, and what the compressed-layer cache saves.

1. Cache: one mixed plan drawn from the space, compressed and scored (KL proxy) with an empty
   cache ("without cache": every layer compressed), then again with the cache warm. Ratio of the two.
2. Search: a fixed-budget NSGA-II search over `weights-int` (size + KL proxy), front re-measured on
   held-out perplexity; compared at equal size with uniform GPTQ at 4 and 3 bits: for each uniform plan,
   the best searched (non-baseline) plan no larger than it.

Usage: python experiments/search_vs_uniform/run.py [--trials 60] [--seed 0]
Writes results.csv (comparison), front.csv (re-measured front) and cache.csv beside this file.
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
                     final_objectives=("size", "perplexity", "kl"), rerank=40, workdir=workdir,
                     study_name="search-vs-uniform"),
        bench=bench, progress=True,
    )
    search_s = time.perf_counter() - t0
    front = result.front.sort_values("size")
    front.to_csv(HERE / "front.csv", index=False)

    rows = []
    searched = front[~front["baseline"]]
    for preset in ("gptq-w4g128", "gptq-w3g128"):
        candidate, _ = bench.compress(CompressionPlan.uniform(preset, bench.layers))
        u = bench.evaluate(candidate, ["size", "perplexity"])
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


if __name__ == "__main__":
    main()
