"""A user's labelled multiple-choice file as a local lm-eval task.

Each line of the JSONL file is one item: ``{"prompt": "...", "choices": ["...", ...], "answer": 2}``
(``answer``: the index of the right choice, or its text). The task scores the log-likelihood of
each choice after the prompt (lm-eval ``multiple_choice``: ``acc`` and ``acc_norm``), so it runs
wherever a packaged task runs: in the final stage and as a ``--max-accuracy-drop`` constraint.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from squeezeray._errors import DataError
from squeezeray.evaluation._catalog import Doc
from squeezeray.evaluation._catalog import Metric
from squeezeray.evaluation._catalog import OutputType
from squeezeray.evaluation._catalog import PackagedTask

LABELLED_SUFFIXES = (".jsonl",)
LABELLED_TEMPLATE = {"doc_to_text": "{{prompt}}", "doc_to_target": "{{answer}}", "doc_to_choice": "{{choices}}"}


def _item(row: Any, where: str) -> Doc:
    if not isinstance(row, dict):
        raise DataError(f"{where}: a JSON {type(row).__name__}, not an object with prompt, choices, answer")
    missing = [k for k in ("prompt", "choices", "answer") if k not in row]
    if missing:
        raise DataError(f"{where}: no field {missing[0]!r} (each item needs prompt, choices and answer)")
    prompt, choices, answer = row["prompt"], row["choices"], row["answer"]
    if not isinstance(prompt, str) or not prompt.strip():
        raise DataError(f"{where}: prompt must be non-empty text, got {prompt!r}")
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
        raise DataError(f"{where}: choices must be a list of at least two non-empty strings, got {choices!r}")
    if isinstance(answer, str):
        if answer not in choices:
            raise DataError(f"{where}: answer {answer!r} is not one of the choices {choices!r}")
        answer = choices.index(answer)
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise DataError(f"{where}: answer must be a choice's index (0-{len(choices) - 1}) or its text, got {answer!r}")
    return {"prompt": prompt, "choices": choices, "answer": answer}


@functools.lru_cache(maxsize=16)
def _read(path: Path, mtime_ns: int) -> tuple[Doc, ...]:  # mtime keys the cache
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"task file {str(path)!r}: cannot be read ({err})") from None
    items = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        where = f"task file {str(path)!r} line {i + 1}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: not JSON ({err.msg})") from None
        items.append(_item(row, where))
    if not items:
        raise DataError(f"task file {str(path)!r}: no items")
    return tuple(items)


def labelled_task(ref: str) -> tuple[PackagedTask, str]:
    """The lm-eval task of a labelled JSONL file, and its content digest; raises :class:`DataError` on bad items."""
    path = Path(ref).expanduser().resolve()
    if not path.is_file():
        raise DataError(f"task file {ref!r} does not exist")
    items = _read(path, path.stat().st_mtime_ns)
    digest = hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()
    name = f"user_{re.sub(r'[^A-Za-z0-9_]', '_', path.stem)}_{digest[:8]}"
    task = PackagedTask(
        name, lambda: [dict(d) for d in items], LABELLED_TEMPLATE, OutputType.MULTIPLE_CHOICE,
        (Metric.ACC, Metric.ACC_NORM), Metric.ACC, ("prompt",), "validation", str(path), "the user's",
        f"{len(items)} labelled items from {path.name}",
    )
    return task, digest
