"""Seeded text perturbations."""

from __future__ import annotations

import random
import re

import pytest

from squeezeray._errors import SqueezerayError
from squeezeray.evaluation import Perturbation
from squeezeray.evaluation import perturb_doc
from squeezeray.evaluation import perturb_text

TEXT = "Which technology was developed most recently? Sarah told Maria that _ always wins.\nAnswer:"


@pytest.mark.parametrize("kind", list(Perturbation))
def test_each_kind_edits_and_is_seeded(kind: Perturbation) -> None:
    a = perturb_text(TEXT, kind, rate=0.2, rng=random.Random("s"))
    assert a != TEXT
    assert a == perturb_text(TEXT, kind, rate=0.2, rng=random.Random("s"))
    # punctuation, digits, blanks and line breaks survive every perturbation
    assert re.sub(r"[A-Za-z ]", "", a) == re.sub(r"[A-Za-z ]", "", TEXT)
    assert perturb_text(TEXT, kind, rate=0.0, rng=random.Random("s")) == TEXT  # rate 0 is the identity


def test_what_each_kind_changes() -> None:
    typo = perturb_text(TEXT, Perturbation.TYPO, rate=0.2, rng=random.Random(1))
    assert sorted(typo) == sorted(TEXT) and typo.lower() != TEXT.lower()  # letters moved, none lost
    casing = perturb_text(TEXT, Perturbation.CASING, rate=0.2, rng=random.Random(1))
    assert casing.lower() == TEXT.lower() and casing != TEXT
    space = perturb_text(TEXT, Perturbation.WHITESPACE, rate=0.2, rng=random.Random(1))
    assert re.sub(" +", " ", space) == TEXT and len(space) > len(TEXT)


def test_at_least_one_edit_and_no_more_than_asked() -> None:
    short = "Is it cold?"
    out = perturb_text(short, Perturbation.CASING, rate=0.01, rng=random.Random(0))
    assert sum(a != b for a, b in zip(out, short)) >= 1  # one word flipped even at a tiny rate
    assert perturb_text("a b", Perturbation.TYPO, rate=1.0, rng=random.Random(0)) == "a b"  # nothing eligible
    with pytest.raises(SqueezerayError, match="rate"):
        perturb_text(short, Perturbation.TYPO, rate=1.5, rng=random.Random(0))


def test_perturb_doc_edits_only_the_named_fields() -> None:
    doc = {"question": TEXT, "choices": {"text": ["a", "b"]}, "answerKey": "A"}
    out = perturb_doc(doc, ("question",), Perturbation.TYPO, rate=0.3, seed=0, doc_id=7)
    assert out["question"] != TEXT and out["choices"] == doc["choices"] and doc["question"] == TEXT
    assert out == perturb_doc(doc, ("question",), Perturbation.TYPO, rate=0.3, seed=0, doc_id=7)
    assert out != perturb_doc(doc, ("question",), Perturbation.TYPO, rate=0.3, seed=0, doc_id=8)
    with pytest.raises(SqueezerayError, match="not a string"):
        perturb_doc(doc, ("choices",), Perturbation.TYPO, rate=0.3, seed=0, doc_id=7)
