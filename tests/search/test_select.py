"""Selection from a Pareto front under constraints and weights."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from squeezeray._errors import SqueezerayError
from squeezeray.objectives import Direction
from squeezeray.search._select import Constraints
from squeezeray.search._select import select

MIN, MAX = Direction.MINIMIZE, Direction.MAXIMIZE
BASE = {"size": 1000.0, "perplexity": 10.0, "latency": 10.0, "kl": 0.0, "accuracy": 0.6}
DIRS = {"size": MIN, "perplexity": MIN, "latency": MIN, "kl": MIN, "accuracy": MAX}


@pytest.fixture
def front() -> pd.DataFrame:
    # trial:       tiny+bad  small     medium    fast      big+good
    return pd.DataFrame({
        "trial": [3, 5, 8, 11, 14],
        "size": [200.0, 300.0, 450.0, 500.0, 700.0],
        "perplexity": [13.0, 10.8, 10.3, 10.4, 10.05],
        "latency": [9.0, 8.0, 7.0, 4.0, 9.5],
        "kl": [0.40, 0.10, 0.05, 0.06, 0.01],
        "accuracy": [0.45, 0.57, 0.59, 0.585, 0.6],
    })


def pick(front: pd.DataFrame, weights: dict[str, float], **limits: object) -> int:
    return select(front, baseline=BASE, directions=DIRS, constraints=Constraints(**limits), weights=weights).trial


def test_constraints_change_the_pick(front: pd.DataFrame) -> None:
    w = {"size": 1.0, "perplexity": 1.0}
    assert pick(front, w) == 5  # size -70%, perplexity +8%: best unconstrained mix
    assert pick(front, w, max_accuracy_drop=0.05) == 8  # perplexity 13.0 and 10.8 rise too much
    assert pick(front, w, max_accuracy_drop=0.05, max_latency_ms=5) == 11


def test_weights_change_the_pick(front: pd.DataFrame) -> None:
    assert pick(front, {"size": 1.0}) == 3
    assert pick(front, {"latency": 1.0}) == 11
    assert pick(front, {"perplexity": 1.0}) == 14
    assert pick(front, {"accuracy": 1.0}) == 14


def test_selection_explains_itself(front: pd.DataFrame) -> None:
    sel = select(front, baseline=BASE, directions=DIRS, constraints=Constraints(max_accuracy_drop=0.05),
                 weights={"size": 1.0, "perplexity": 1.0})
    assert sel.trial == 8 and sel.row["size"] == 450.0 and isinstance(sel.row["trial"], int)
    assert sel.rejected == {"max_accuracy_drop": 2}
    assert sel.feasible == 3 and sel.runner_up == 11
    assert sel.score == pytest.approx(-(-0.55 + 0.03) / 2)
    assert sel.margin == pytest.approx(sel.score - (-(-0.5 + 0.04) / 2))
    assert sel.costs["size"] == pytest.approx(-0.55)
    for text in ("trial 8", "max_accuracy_drop", "3.00% <= 5.00%", "size 0.5", "runner-up trial 11", "Rejected"):
        assert text in sel.reason


def test_accuracy_drop_applies_to_every_quality_column(front: pd.DataFrame) -> None:
    # trial 11: perplexity +4% passes, accuracy -2.5% passes; trial 8 likewise; require <=2%:
    assert pick(front, {"size": 1.0}, max_accuracy_drop=0.02) == 14
    only_acc = front.drop(columns=["perplexity"])
    assert pick(only_acc, {"size": 1.0}, max_accuracy_drop=0.03) == 8  # accuracy 0.59 vs 0.6: -1.7%


def test_size_limits_bytes_and_ratio(front: pd.DataFrame) -> None:
    assert pick(front, {"perplexity": 1.0}, max_size_bytes=460) == 8
    assert pick(front, {"perplexity": 1.0}, max_size_ratio=0.3) == 5


def test_zero_baseline_uses_absolute_difference(front: pd.DataFrame) -> None:
    sel = select(front, baseline=BASE, directions=DIRS, constraints=Constraints(), weights={"kl": 1.0})
    assert sel.trial == 14 and sel.score == pytest.approx(-0.01)
    assert "absolute: baseline is 0" in sel.reason


def test_ties_go_to_the_lower_trial() -> None:
    df = pd.DataFrame({"trial": [7, 2], "size": [500.0, 500.0]})
    assert pick(df, {"size": 1.0}) == 2


def test_infeasible_names_the_worst_constraint_and_the_closest(front: pd.DataFrame) -> None:
    with pytest.raises(SqueezerayError) as err:
        pick(front, {"size": 1.0}, max_latency_ms=3.0, max_accuracy_drop=0.05)
    msg = str(err.value)
    assert msg.startswith("no candidate meets the constraints: max_latency_ms=3 ms excluded 5 of 5")
    assert "closest: trial 11 at 4 ms" in msg
    assert "max_accuracy_drop=5.00% excluded 2 of 5 (closest: trial 5 at 8.00%" in msg


def test_unknown_weight_says_did_you_mean(front: pd.DataFrame) -> None:
    with pytest.raises(SqueezerayError, match="weight 'perplexty'.*Did you mean: perplexity"):
        pick(front, {"perplexty": 1.0})


def test_constraint_column_missing(front: pd.DataFrame) -> None:
    with pytest.raises(SqueezerayError, match="'energy' is not an objective column"):
        pick(front, {"size": 1.0}, max_energy_j=1.0)
    with pytest.raises(SqueezerayError, match="needs one of the columns perplexity, accuracy"):
        pick(front[["trial", "size"]], {"size": 1.0}, max_accuracy_drop=0.1)
    assert pick(front.rename(columns={"latency": "predicted_latency"}), {"size": 1.0},
                max_latency_ms=5.0, latency_objective="predicted_latency") == 11


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_accuracy_drop": 1.5}, r"max_accuracy_drop=1.5: must be in \(0, 1\)"),
        ({"max_latency_ms": -1}, "max_latency_ms=-1: must be > 0"),
        ({"max_size_bytes": float("nan")}, "max_size_bytes=nan"),
        ({"max_energy_j": "5"}, "max_energy_j='5'"),
        ({"accuracy_objectives": ()}, "accuracy_objectives"),
    ],
)
def test_constraints_validated(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(SqueezerayError, match=match):
        Constraints(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("weights", "baseline", "match"),
    [
        ({"size": -1.0}, BASE, r"weights\['size'\]=-1.0"),
        ({"size": 0.0}, BASE, "at least one weight"),
        ({}, BASE, "non-empty mapping"),
        ({"size": 1.0}, {"perplexity": 10.0}, "baseline has no value for 'size'"),
    ],
)
def test_bad_weights_and_baseline(
    front: pd.DataFrame, weights: dict[str, float], baseline: dict[str, float], match: str
) -> None:
    with pytest.raises(SqueezerayError, match=match):
        select(front, baseline=baseline, directions=DIRS, constraints=Constraints(), weights=weights)


def test_bad_front() -> None:
    with pytest.raises(SqueezerayError, match="needs a 'trial' column"):
        pick(pd.DataFrame({"size": [1.0]}), {"size": 1.0})
    with pytest.raises(SqueezerayError, match="repeated: \\[1\\]"):
        pick(pd.DataFrame({"trial": [1, 1], "size": [1.0, 2.0]}), {"size": 1.0})
    with pytest.raises(SqueezerayError, match="trial 4 has no value"):
        pick(pd.DataFrame({"trial": [4], "size": [float("nan")]}), {"size": 1.0})


def test_selection_serialises(front: pd.DataFrame) -> None:
    sel = select(front, baseline=BASE, directions=DIRS, constraints=Constraints(), weights={"size": 1.0})
    assert json.loads(json.dumps(sel.to_dict()))["trial"] == 3
