"""Label / probability loyalty, robustness and logit agreement on the embedded model.

Winogrande items are the cheapest multiple-choice items (two short contexts), and
every test uses the same 20 of them, so the original is scored once for the module.
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

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def settings(bench, tmp_path_factory: pytest.TempPathFactory) -> dict:  # noqa: ANN001
    run_dir: Path = tmp_path_factory.mktemp("loyalty-run")
    return {"task": "winogrande", "limit": 20, "seed": 0, "tokenizer": bench.loaded.tokenizer, "run_dir": run_dir}


def test_original_is_loyal_to_itself(bench, settings: dict) -> None:  # noqa: ANN001
    same = copy.deepcopy(bench.original)  # scored on its own, not taken from the original's cache
    with forbid_network() as attempts:
        m = bench.evaluate(same, [LabelLoyalty(**settings)])["label_loyalty"]
    assert attempts == []
    d = m.details
    assert m.value == 1.0 and d["probability_loyalty"] == 1.0 and d["js_mean_bits"] == 0.0
    assert d["n"] == 20 and d["acc_original"] == d["acc_candidate"]
    assert bench.evaluate(bench.original, [ProbabilityLoyalty(**settings)])["probability_loyalty"].value == 1.0


def test_a_damaged_copy_is_less_loyal(bench, settings: dict) -> None:  # noqa: ANN001
    damaged = damaged_copy(bench.original, noise=0.05)
    m = bench.evaluate(damaged, [ProbabilityLoyalty(**settings)])["probability_loyalty"]
    d = m.details
    assert 0.0 < m.value < 1.0 and d["js_mean_bits"] > 0
    assert m.value == pytest.approx(1 - d["js_mean_bits"])
    assert 0.0 <= d["label_loyalty"] <= 1.0


def test_robustness_of_an_identical_model_is_100_percent(bench, settings: dict) -> None:  # noqa: ANN001
    identity = bench.evaluate(bench.original, [Robustness(rate=0.0, **settings)])["robustness"]
    assert identity.value == 100.0  # rate 0: every perturbation is the identity
    assert all(identity.details[f"items_changed_{k}"] == 0.0 for k in ("typo", "casing", "whitespace"))
    rs = bench.evaluate(bench.original, [Robustness(perturbations=["casing"], rate=0.1, **settings)])["robustness"]
    d = rs.details
    assert d["rs_relative"] == 100.0 and rs.value == d["rs_original"]  # the candidate is the original
    assert d["items_changed_casing"] == 1.0 and rs.unit == "%"
    assert rs.value == pytest.approx(100 * (1 - abs(d["p_clean"] - d["p_casing"]) / d["p_clean"]))


def test_settings_are_checked(settings: dict) -> None:
    with pytest.raises(SqueezerayError, match="no perturb fields"):
        Robustness(**{**settings, "task": "lambada_openai"})
    with pytest.raises(SqueezerayError, match="perturbations"):
        Robustness(perturbations=["typo", "leet"], **settings)
    with pytest.raises(SqueezerayError, match="rate"):
        Robustness(rate=2.0, **settings)
    with pytest.raises(SqueezerayError, match="not multiple_choice"):
        LabelLoyalty(**{**settings, "task": "lambada_openai"}).harness()


def test_logit_agreement(bench) -> None:  # noqa: ANN001
    obj = LogitAgreement(max_windows=1)
    same = bench.evaluate(bench.original, [obj])["logit_agreement"]  # computed, not short-cut
    assert same.value == 1.0 and same.details["windows_identical"] == 1.0 and same.details["topk_logprob_mae"] == 0.0
    worse = bench.evaluate(damaged_copy(bench.original, noise=0.05), [obj])["logit_agreement"]
    assert 0.0 < worse.value < 1.0 and worse.details["topk_logprob_mae"] > 0
    assert worse.details["first_divergence"] < 1.0 and worse.details["tokens"] == 512
