"""A search driver on the test cluster, run in a subprocess that the resume test kills mid-sweep."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"

from squeezeray.search import RayConfig  # noqa: E402
from squeezeray.search import RayExecutor  # noqa: E402
from squeezeray.search import SearchConfig  # noqa: E402
from squeezeray.search import run_search  # noqa: E402
from tests._tiny import TINY_DATA  # noqa: E402
from tests.cluster._helpers import SavedTinyBench  # noqa: E402
from tests.cluster._helpers import SlowEvaluate  # noqa: E402

address, tokenizer_dir, model_path, workdir, n_trials = sys.argv[1:5] + [int(sys.argv[5])]
factory = SavedTinyBench(tokenizer_dir, model_path)
markers = Path(workdir) / "markers"
markers.mkdir(parents=True, exist_ok=True)
cfg = SearchConfig(space="weights-int", n_trials=n_trials, sampler="random", seed=0, data=TINY_DATA, workdir=workdir,
                   final_objectives=("size", "kl"), rerank=2, study_name="s")
executor = RayExecutor(
    RayConfig(address=address, workers=2), bench_factory=factory,
    evaluate=SlowEvaluate(str(markers), 1.5),
    runtime_env={"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}},
)
print("started", flush=True)
run_search(cfg, bench=factory(), progress=False, executor=executor)
