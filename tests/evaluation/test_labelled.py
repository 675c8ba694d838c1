"""A user's labelled JSONL (prompt, choices, answer) as a task: checked on read, scored through lm-eval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from squeezeray._errors import DataError
from squeezeray.evaluation import resolve_task
from squeezeray.objectives.accuracy import Accuracy
from tests.evaluation._helpers import forbid_network


def _write(path: Path, rows: list[object]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


COUNT = [{"prompt": f"{a}, {a + 1}, {a + 2},", "choices": [f" {a + 3}", " zebra"], "answer": 0} for a in (1, 10, 40)]


def test_a_labelled_file_resolves_to_a_content_keyed_task(tmp_path: Path) -> None:
    ref = _write(tmp_path / "count.jsonl", [*COUNT[:2], {**COUNT[2], "answer": " 43"}])  # answer by text
    spec = resolve_task(ref)
    assert spec.kind.value == "labelled" and spec.name.startswith("user_count_") and spec.metric.value == "acc"
    assert [d["answer"] for d in spec.packaged.read()] == [0, 0, 0]
    changed = _write(tmp_path / "count.jsonl", COUNT[:2])
    assert resolve_task(changed).key != spec.key  # a changed file is a different task for every cache


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": "p", "choices": ["a", "b"]}, "line 1: no field 'answer'"),
        ({"prompt": "p", "choices": ["a"], "answer": 0}, "at least two non-empty strings"),
        ({"prompt": "p", "choices": ["a", "b"], "answer": 2}, "answer must be a choice's index (0-1)"),
        ({"prompt": "p", "choices": ["a", "b"], "answer": "c"}, "answer 'c' is not one of the choices"),
        (["p", ["a", "b"], 0], "a JSON list, not an object"),
    ],
    ids=["no-answer", "one-choice", "index-out-of-range", "unknown-text", "not-an-object"],
)
def test_bad_items_name_the_file_and_line(tmp_path: Path, row: object, message: str) -> None:
    ref = _write(tmp_path / "task.jsonl", [row])
    with pytest.raises(DataError) as err:
        resolve_task(ref)
    assert message in str(err.value) and "task.jsonl" in str(err.value)


def test_an_empty_or_missing_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no items"):
        resolve_task(str(tmp_path / "empty.jsonl"))
    with pytest.raises(DataError, match="does not exist"):
        resolve_task(str(tmp_path / "nowhere.jsonl"))


@pytest.mark.slow
def test_a_labelled_task_scores_offline_paired(bench, tmp_path: Path) -> None:  # noqa: ANN001
    ref = _write(tmp_path / "count.jsonl", COUNT)
    obj = Accuracy(task=ref, tokenizer=bench.loaded.tokenizer, run_dir=tmp_path / "run", paired=True)
    with forbid_network() as attempts:
        m = obj.measure(bench.context(bench.original))
    assert attempts == []
    assert (m.details["n"], m.details["n_total"]) == (3, 3)
    assert m.value == 1.0 and m.details["delta_vs_original"] == 0.0  # counting on beats "zebra"
    assert bench.objective(f"accuracy:{ref}@2").name == f"accuracy:{ref}"  # the search's task-keyed form
