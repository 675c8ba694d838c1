"""The pure statistics behind accuracy, loyalty and robustness."""

from __future__ import annotations

import math

import numpy as np
import pytest

from squeezeray._errors import SqueezerayError
from squeezeray.evaluation import choice_probs
from squeezeray.evaluation import compare_choices
from squeezeray.evaluation import gold_probability
from squeezeray.evaluation import js_divergence
from squeezeray.evaluation import mean_stderr
from squeezeray.evaluation import paired_difference
from squeezeray.evaluation import perplexity_from_logliks
from squeezeray.evaluation import robustness_score
from squeezeray.evaluation import select_docs


def test_select_docs_is_seeded_sorted_and_nested() -> None:
    a = select_docs(570, 20, seed=0)
    assert a == select_docs(570, 20, seed=0)
    assert a != select_docs(570, 20, seed=1)
    assert list(a) == sorted(set(a)) and len(a) == 20 and all(0 <= i < 570 for i in a)
    assert set(a) <= set(select_docs(570, 100, seed=0))  # a search subset is inside the bigger one
    assert select_docs(5, None, seed=3) == select_docs(5, 9, seed=3) == (0, 1, 2, 3, 4)
    with pytest.raises(SqueezerayError, match="limit=0"):
        select_docs(5, 0, seed=0)


def test_mean_stderr_matches_the_binomial_formula() -> None:
    x = [1.0] * 13 + [0.0] * 7
    mean, se = mean_stderr(x)
    assert mean == pytest.approx(0.65)
    assert se == pytest.approx(math.sqrt(0.65 * 0.35 / 19))  # sample std (ddof=1) / sqrt(n)
    assert math.isnan(mean_stderr([1.0])[1])
    with pytest.raises(SqueezerayError):
        mean_stderr([])


def test_paired_difference_cancels_shared_item_difficulty() -> None:
    a = np.array([1, 1, 0, 0, 1, 0, 1, 1], dtype=float)
    assert paired_difference(a, a) == (0.0, 0.0)
    b = a.copy()
    b[0] = 0
    d, se = paired_difference(b, a)
    assert d == pytest.approx(-1 / 8) and 0 < se < mean_stderr(a)[1]


def test_perplexity_from_logliks() -> None:
    ppl, se = perplexity_from_logliks([-1.0, -3.0])
    assert ppl == pytest.approx(math.exp(2.0))
    assert se == pytest.approx(ppl * 1.0)  # std(ddof=1) = sqrt(2), / sqrt(2)


def test_js_divergence_bounds() -> None:
    p = choice_probs(np.array([-1.0, -2.0, -4.0]))
    assert p.sum() == pytest.approx(1.0) and np.argmax(p) == 0
    assert js_divergence(p, p) == 0.0
    assert js_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)  # disjoint: 1 bit
    q = np.array([0.2, 0.5, 0.3])
    assert js_divergence(p, q) == pytest.approx(js_divergence(q, p))
    with pytest.raises(SqueezerayError):
        js_divergence(p, np.array([0.5, 0.5]))


def test_compare_choices_of_identical_and_flipped_models() -> None:
    ref = [np.array([-1.0, -2.0]), np.array([-3.0, -1.0, -2.0]), np.array([-0.5, -0.7])]
    gold = [0, 1, 1]
    same = compare_choices(ref, [r.copy() for r in ref], gold)
    assert (same.label_loyalty, same.probability_loyalty, same.js_mean) == (1.0, 1.0, 0.0)
    assert same.acc_reference == same.acc_candidate == pytest.approx(2 / 3)
    flipped = compare_choices(ref, [-r for r in ref], gold)
    assert flipped.label_loyalty == 0.0 and flipped.probability_loyalty < 1.0 and flipped.js_max > 0
    with pytest.raises(SqueezerayError):
        compare_choices(ref, ref[:2], gold)


def test_gold_probability_and_robustness_score() -> None:
    scores = [np.array([0.0, 0.0]), np.array([0.0, -np.log(3.0)])]
    assert gold_probability(scores, [0, 0]) == pytest.approx((0.5 + 0.75) / 2)
    assert robustness_score(0.5, [0.5, 0.5, 0.5]) == 1.0  # nothing moved: 100%
    assert robustness_score(0.5, [0.4, 0.6]) == pytest.approx(0.8)  # a rise costs as much as a fall
    assert robustness_score(0.2, [0.8]) < 0  # can fall below zero
    with pytest.raises(SqueezerayError):
        robustness_score(0.0, [0.1])
    with pytest.raises(SqueezerayError):
        robustness_score(0.5, [])
