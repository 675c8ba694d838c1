"""Seeded text perturbations: typos, casing and whitespace.

Each perturbation makes ``max(1, round(rate * eligible))`` edits at seeded
places (none when ``rate`` is 0, which is the identity); an edit never touches
punctuation, digits or line breaks, so templates and blanks (Winogrande's
``_``) survive. The random stream is keyed by (seed, kind, document, field),
so the original and every candidate see exactly the same perturbed text.
"""

from __future__ import annotations

import enum
import random
import re
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from squeezeray._errors import SqueezerayError


class Perturbation(str, enum.Enum):
    TYPO = "typo"  # swap two adjacent inner letters of a word of 4+ letters ("answer" -> "asnwer")
    CASING = "casing"  # flip a word's case: lower -> UPPER, anything with capitals -> lower
    WHITESPACE = "whitespace"  # double a single space between two words


_WORD4 = re.compile(r"[A-Za-z]{4,}")
_WORD2 = re.compile(r"[A-Za-z]{2,}")
_GAP = re.compile(r"(?<=\S) (?=\S)")


def _typo_spans(text: str) -> list[tuple[int, int]]:
    # words with at least one pair of distinct adjacent inner letters (a swap changes them)
    out = []
    for m in _WORD4.finditer(text):
        w = m.group()
        if any(w[j] != w[j + 1] for j in range(1, len(w) - 2)):
            out.append(m.span())
    return out


def _typo(word: str, rng: random.Random) -> str:
    j = rng.choice([j for j in range(1, len(word) - 2) if word[j] != word[j + 1]])
    return word[:j] + word[j + 1] + word[j] + word[j + 2 :]


def _casing(word: str, rng: random.Random) -> str:  # noqa: ARG001 (same signature as the others)
    return word.lower() if any(c.isupper() for c in word) else word.upper()


def _whitespace(gap: str, rng: random.Random) -> str:  # noqa: ARG001
    return gap + " "


def perturb_text(text: str, kind: Perturbation, *, rate: float, rng: random.Random) -> str:
    """``text`` with ``max(1, round(rate * eligible))`` seeded edits of one kind (none if ``rate`` is 0).

    Args:
        text: The text to edit.
        kind: Which perturbation.
        rate: Share of eligible places (words, or gaps between words) to edit, in [0, 1].
        rng: Source of the places (and of the typo position within a word).
    """
    if not 0.0 <= rate <= 1.0:
        raise SqueezerayError(f"perturbation rate={rate}: must be in [0, 1]")
    if kind is Perturbation.TYPO:
        spans, edit = _typo_spans(text), _typo
    elif kind is Perturbation.CASING:
        spans, edit = [m.span() for m in _WORD2.finditer(text)], _casing
    elif kind is Perturbation.WHITESPACE:
        spans, edit = [m.span() for m in _GAP.finditer(text)], _whitespace
    else:  # pragma: no cover - the enum is closed
        raise SqueezerayError(f"unknown perturbation {kind!r}")
    if rate == 0.0 or not spans:
        return text
    n = min(len(spans), max(1, round(rate * len(spans))))
    chosen = sorted(rng.sample(range(len(spans)), n), reverse=True)  # right to left keeps offsets valid
    for i in chosen:
        a, b = spans[i]
        text = text[:a] + edit(text[a:b], rng) + text[b:]
    return text


def perturb_doc(
    doc: Mapping[str, Any],
    fields: Sequence[str],
    kind: Perturbation,
    *,
    rate: float,
    seed: int,
    doc_id: int,
) -> dict[str, Any]:
    """A copy of ``doc`` with each of ``fields`` perturbed (other fields untouched).

    Args:
        doc: A task document.
        fields: Names of string fields to edit.
        kind: Which perturbation.
        rate: See :func:`perturb_text`.
        seed: Run seed; with ``kind``, ``doc_id`` and the field name it keys the random stream.
        doc_id: The document's index in the task.
    """
    out = dict(doc)
    for field in fields:
        value = doc.get(field)
        if not isinstance(value, str):
            raise SqueezerayError(
                f"perturb field {field!r}: document {doc_id} has {type(value).__name__}, not a string; "
                f"fields: {', '.join(sorted(doc))}"
            )
        rng = random.Random(f"{seed}|{kind.value}|{doc_id}|{field}")
        out[field] = perturb_text(value, kind, rate=rate, rng=rng)
    return out
