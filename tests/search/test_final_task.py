"""The accuracy-aware final stage: task objectives keyed by task, paired SEs on the front, a bound on the task."""

from __future__ import annotations

import pandas as pd
import pytest

from squeezeray._errors import SqueezerayError
from squeezeray._errors import UnknownNameError
from squeezeray.cli import _final_objectives
from squeezeray.cli import build_parser
from squeezeray.objectives import Direction
from squeezeray.objectives import is_objective
from squeezeray.objectives import objective_class
from squeezeray.objectives import objective_key
from squeezeray.objectives import split_objective_name
from squeezeray.objectives.accuracy import Accuracy
from squeezeray.search import SearchConfig
from squeezeray.search import run_search
from squeezeray.search._select import Constraints
from squeezeray.search._select import select
from tests._tiny import TINY_DATA


def test_task_keyed_names_parse_and_key_by_task() -> None:
    assert split_objective_name("accuracy:arc_easy@570") == ("accuracy", "arc_easy", 570)
    assert split_objective_name("accuracy:hellaswag") == ("accuracy", "hellaswag", None)
    assert split_objective_name("kl") == ("kl", None, None)
    assert objective_key("accuracy:arc_easy@570") == "accuracy:arc_easy"
    assert objective_class("accuracy:piqa") is Accuracy
    assert is_objective("accuracy:piqa") and not is_objective("delta:accuracy:piqa")
    with pytest.raises(SqueezerayError, match="kl takes no task"):
        split_objective_name("kl:arc_easy")
    with pytest.raises(SqueezerayError, match="positive integer, got '0'"):
        split_objective_name("accuracy:arc_easy@0")
    with pytest.raises(UnknownNameError, match="Did you mean: accuracy"):
        split_objective_name("acuracy:arc_easy")
    with pytest.raises(SqueezerayError, match="give the task"):
        SearchConfig(final_objectives=("size", "accuracy:"))


def test_the_cli_adds_one_paired_task_objective_per_final_task() -> None:
    parser = build_parser()
    args = parser.parse_args(["search", "--final-task", "arc_easy,piqa", "--final-limit", "100"])
    assert _final_objectives(args) == ("size", "perplexity", "kl", "latency", "accuracy:arc_easy@100",
                                       "accuracy:piqa@100")
    with pytest.raises(SqueezerayError, match="--final-limit 5: give the task"):
        _final_objectives(parser.parse_args(["search", "--final-limit", "5"]))
    with pytest.raises(SqueezerayError, match="positive number"):
        _final_objectives(parser.parse_args(["search", "--final-task", "arc_easy", "--final-limit", "0"]))


def test_the_workbench_builds_a_paired_task_objective(tiny) -> None:  # noqa: ANN001
    obj = tiny.objective("accuracy:arc_easy@7")
    assert isinstance(obj, Accuracy)
    assert (obj.name, obj.limit, obj.paired, obj.spec.name) == ("accuracy:arc_easy", 7, True, "arc_easy")


def test_max_accuracy_drop_binds_on_the_task_column() -> None:
    front = pd.DataFrame({
        "trial": [1, 2, 3],
        "size": [300.0, 400.0, 600.0],
        "perplexity": [10.2, 10.3, 10.1],  # every plan within 5% on perplexity
        "accuracy:arc_easy": [0.50, 0.58, 0.59],  # trial 1 loses 17% of the original's accuracy
        "delta:accuracy:arc_easy": [-0.1, -0.02, -0.01],  # a detail column: never bound or weighted
    })
    base = {"size": 1000.0, "perplexity": 10.0, "accuracy:arc_easy": 0.6}
    dirs = {"size": Direction.MINIMIZE, "perplexity": Direction.MINIMIZE, "accuracy:arc_easy": Direction.MAXIMIZE}
    weights = {"size": 1.0, "perplexity": 1.0}
    free = select(front, baseline=base, directions=dirs, constraints=Constraints(), weights=weights)
    bound = select(front, baseline=base, directions=dirs, constraints=Constraints(max_accuracy_drop=0.05),
                   weights=weights)
    assert free.trial == 1 and bound.trial == 2
    assert "accuracy:arc_easy" in bound.reason


@pytest.mark.slow
def test_the_front_is_re_measured_on_the_task_with_paired_errors(tiny, tmp_path) -> None:  # noqa: ANN001
    cfg = SearchConfig(space="weights-int", n_trials=4, sampler="random", seed=0, data=TINY_DATA, workdir=tmp_path,
                       final_objectives=("size", "kl", "accuracy:arc_easy@6"), rerank=2)
    result = run_search(cfg, bench=tiny, progress=False)
    front = result.front
    assert {"accuracy:arc_easy", "delta:accuracy:arc_easy", "delta_stderr:accuracy:arc_easy"} <= set(front.columns)
    assert front["accuracy:arc_easy"].between(0, 1).all() and (front["delta_stderr:accuracy:arc_easy"] >= 0).all()
    assert "accuracy:arc_easy" in result.baseline
