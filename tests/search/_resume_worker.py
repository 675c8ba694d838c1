"""Run a search on the tiny model in a subprocess (killed by the resume test mid-study)."""

from __future__ import annotations

import sys
import time

from squeezeray.search import SearchConfig
from squeezeray.search import run_search
from tests._tiny import TINY_DATA
from tests._tiny import tiny_bench

tokenizer_dir, workdir, n_trials = sys.argv[1], sys.argv[2], int(sys.argv[3])
bench = tiny_bench(tokenizer_dir)
cfg = SearchConfig(space="weights-int", n_trials=n_trials, sampler="random", seed=3, data=TINY_DATA,
                   workdir=workdir, study_name="resume", final_objectives=("size", "kl"), hardware="host")


def slow_evaluate(plan):  # noqa: ANN001, ANN201
    candidate, _ = bench.compress(plan)
    time.sleep(0.4)
    return bench.evaluate(candidate, ["size", "kl"])


print("started", flush=True)
run_search(cfg, bench=bench, progress=False, evaluate=slow_evaluate)
