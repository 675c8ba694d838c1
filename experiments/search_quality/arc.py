"""ARC-Easy on all validation items, paired with the original, for the evo front plans at 3.25-4 bits
against uniform GPTQ 3- and 4-bit: ``python experiments/search_quality/arc.py [--model M]``.

Reads the evo study the search-quality run left under ``experiments/.work`` and its ``plans.csv``;
writes ``<model>/arc_easy.csv``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import optuna
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from experiments._common import WORK  # noqa: E402
from experiments._common import load_bench  # noqa: E402
from experiments._common import measure  # noqa: E402
from experiments._common import task_objectives  # noqa: E402
from squeezeray.spaces import SearchSpace  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--bits", default="3.25,4.0", help="band of front plans scored (average bits)")
    args = ap.parse_args()
    cfg = yaml.safe_load((HERE / "config.yaml").read_text())
    if args.model:
        cfg["model"] = args.model
    name = cfg["model"] or "smollm2-135m"
    out = HERE / name.replace("/", "_")
    lo, hi = (float(x) for x in args.bits.split(","))
    plans = pd.read_csv(out / "plans.csv")
    picked = plans[(plans["method"] == "evo") & plans["avg_bits"].between(lo, hi)]
    bench, layer_fn = load_bench(cfg)
    study_name = f"evo-s{cfg['seed']}"
    db = WORK / "search_quality" / out.name / study_name / "study.db"
    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{db}")
    space = SearchSpace.from_dict(study.user_attrs["space"])
    tasks = task_objectives(bench, [{"task": "arc_easy", "limit": None}])
    rows = [{"plan": "original", "trial": -1, **measure(bench, bench.original, [], tasks)}]
    todo = [(f"uniform {p}", -1, bench.uniform(p))
            for p in ("gptq-w3g128", "gptq-w4g128", "gptq-w3g128-asym-clip", "gptq-w4g128-asym-clip")]
    todo += [(f"evo #{int(r.trial)}", int(r.trial), space.plan_from_params(study.trials[int(r.trial)].params, bench.layers))
             for r in picked.itertuples()]
    for label, trial, plan in todo:
        candidate, _ = bench.compress(plan, layer_fn=layer_fn)
        row = {"plan": label, "trial": trial, **measure(bench, candidate, ["size", "perplexity"], tasks)}
        print(row, flush=True)
        rows.append(row)
        del candidate
        pd.DataFrame(rows).to_csv(out / "arc_easy.csv", index=False)


if __name__ == "__main__":
    main()
