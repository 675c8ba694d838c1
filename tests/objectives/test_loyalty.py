"""Label / probability loyalty, robustness and logit agreement.

The claims the issue names (the original is loyal to itself, RS of an identical
model is 100%) are checked on the embedded model; the rest of the machinery on the
tiny random Llama (same tokenizer, ~20x cheaper). Winogrande items are the
cheapest multiple-choice items (two short contexts), and the tests on one model
share one 20-item subset, so its original is scored once.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from squeezeray._errors import SqueezerayError
from squeezeray.objectives.loyalty import LabelLoyalty
from squeezeray.objectives.loyalty import LogitAgreement
from squeezeray.objectives.loyalty import ProbabilityLoyalty
from squeezeray.objectives.loyalty import Robustness
from tests.evaluation._helpers import damaged_copy
from tests.evaluation._helpers import forbid_network

KINDS = ("typo", "casing", "whitespace")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("loyalty-run")


def _settings(wb, run_dir: Path) -> dict:  # noqa: ANN001
    return {"task": "winogrande", "limit": 20, "seed": 0, "tokenizer": wb.loaded.tokenizer, "run_dir": run_dir}


@pytest.mark.slow
def test_embedded_model_is_loyal_to_itself_and_fully_robust_to_identity(bench, run_dir: Path) -> None:  # noqa: ANN001
    settings = _settings(bench, run_dir)
    same = copy.deepcopy(bench.original)  # scored on its own, not taken from the original's cache
    with forbid_network() as attempts:
        m = bench.evaluate(same, [LabelLoyalty(**settings)])["label_loyalty"]
    assert attempts == []
    d = m.details
    assert m.value == 1.0 and d["probability_loyalty"] == 1.0 and d["js_mean_bits"] == 0.0
    assert d["n"] == 20 and d["acc_original"] == d["acc_candidate"]
    assert bench.evaluate(bench.original, [ProbabilityLoyalty(**settings)])["probability_loyalty"].value == 1.0
    rs = bench.evaluate(same, [Robustness(rate=0.0, **settings)])["robustness"]
    assert rs.value == 100.0 and rs.details["rs_relative"] == 100.0  # identity perturbations, identical model
    assert all(rs.details[f"items_changed_{k}"] == 0.0 for k in KINDS)


def test_a_damaged_copy_is_less_loyal(tiny, run_dir: Path) -> None:  # noqa: ANN001
    settings = _settings(tiny, run_dir)
    assert tiny.evaluate(tiny.original, [LabelLoyalty(**settings)])["label_loyalty"].value == 1.0
    m = tiny.evaluate(damaged_copy(tiny.original, noise=0.5), [ProbabilityLoyalty(**settings)])["probability_loyalty"]
    d = m.details
    assert 0.0 < m.value < 1.0 and d["js_mean_bits"] > 0
    assert m.value == pytest.approx(1 - d["js_mean_bits"])
    assert 0.0 <= d["label_loyalty"] <= 1.0


def test_robustness_score(tiny, run_dir: Path) -> None:  # noqa: ANN001
    settings = _settings(tiny, run_dir)
    rs = tiny.evaluate(tiny.original, [Robustness(rate=0.2, **settings)])["robustness"]
    d = rs.details
    assert d["rs_relative"] == 100.0 and rs.value == d["rs_original"]  # the candidate is the original
    assert all(d[f"items_changed_{k}"] == 1.0 for k in KINDS) and rs.unit == "%"
    expected = sum(1 - abs(d["p_clean"] - d[f"p_{k}"]) / d["p_clean"] for k in KINDS) / 3
    assert rs.value == pytest.approx(100 * expected)
    other = tiny.evaluate(damaged_copy(tiny.original, noise=0.5), [Robustness(rate=0.2, **settings)])["robustness"]
    assert other.details["rs_original"] == rs.value  # the original's side comes from the cache
    assert other.details["rs_relative"] == pytest.approx(100 * other.value / rs.value)
    assert other.details["p_clean"] != d["p_clean"]


def test_settings_are_checked(tiny, run_dir: Path) -> None:  # noqa: ANN001
    settings = _settings(tiny, run_dir)
    with pytest.raises(SqueezerayError, match="no perturb fields"):
        Robustness(**{**settings, "task": "lambada_openai"})
    with pytest.raises(SqueezerayError, match="perturbations"):
        Robustness(perturbations=["typo", "leet"], **settings)
    with pytest.raises(SqueezerayError, match="rate"):
        Robustness(rate=2.0, **settings)
    with pytest.raises(SqueezerayError, match="not multiple_choice"):
        LabelLoyalty(**{**settings, "task": "lambada_openai"}).harness()


def test_logit_agreement(tiny) -> None:  # noqa: ANN001
    obj = LogitAgreement(max_windows=1)
    same = tiny.evaluate(tiny.original, [obj])["logit_agreement"]  # computed, not short-cut
    assert same.value == 1.0 and same.details["windows_identical"] == 1.0 and same.details["topk_logprob_mae"] == 0.0
    worse = tiny.evaluate(damaged_copy(tiny.original, noise=0.5), [obj])["logit_agreement"]
    assert 0.0 < worse.value < 1.0 and worse.details["topk_logprob_mae"] > 0
    assert worse.details["first_divergence"] < 1.0 and worse.details["tokens"] == 128
