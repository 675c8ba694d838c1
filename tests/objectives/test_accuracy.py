"""Accuracy through lm-eval on the embedded model, offline."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from squeezeray._errors import SqueezerayError
from squeezeray._errors import UnknownNameError
from squeezeray.data import TokenData
from squeezeray.objectives import OBJECTIVES
from squeezeray.objectives import Direction
from squeezeray.objectives import EvalContext
from squeezeray.objectives import Provenance
from squeezeray.objectives import get_objective
from squeezeray.objectives.accuracy import Accuracy
from tests.evaluation._helpers import forbid_network

NEW = ("accuracy", "label_loyalty", "probability_loyalty", "robustness", "logit_agreement")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("accuracy-run")


def test_objectives_are_registered_and_fail_clearly_without_a_tokenizer() -> None:
    tiny = torch.nn.Linear(2, 2)
    data = TokenData.of(torch.zeros(1, 8, dtype=torch.long), "zeros")
    ctx = EvalContext(tiny, tiny, data, data)
    for name in NEW:
        obj = get_objective(name)
        assert obj.direction is Direction.MAXIMIZE
        if name != "logit_agreement":
            with pytest.raises(SqueezerayError, match="needs the model's tokenizer"):
                obj.measure(ctx)
    assert set(NEW) <= set(OBJECTIVES.names())


def test_settings_are_checked_before_any_work() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean: arc_easy"):
        Accuracy(task="arc_esay")
    with pytest.raises(SqueezerayError, match="limit=0"):
        Accuracy(task="piqa", limit=0)
    with pytest.raises(SqueezerayError, match="batch_size"):
        Accuracy(task="piqa", batch_size=0)
    with pytest.raises(SqueezerayError, match="not metric='acc_norm'"):
        Accuracy(task="winogrande", metric="acc_norm")


@pytest.mark.slow
def test_accuracy_on_20_items_offline_with_stderr(bench, run_dir: Path) -> None:  # noqa: ANN001
    obj = Accuracy(task="arc_easy", limit=20, seed=0, tokenizer=bench.loaded.tokenizer, run_dir=run_dir, paired=True)
    with forbid_network() as attempts:
        m = bench.evaluate(bench.original, [obj])["accuracy"]
    assert attempts == []
    assert m.provenance is Provenance.COMPUTED and m.unit == "fraction"
    d = m.details
    assert (d["task"], d["metric"], d["n"], d["n_total"]) == ("arc_easy", "acc", 20, 570)
    assert 0.2 <= m.value <= 0.9  # SmolLM2-135M: about 0.5 on ARC-Easy
    assert d["stderr"] == pytest.approx(math.sqrt(m.value * (1 - m.value) / 19))  # binomial, ddof=1
    assert 0 <= d["acc_norm"] <= 1 and d["acc_norm_stderr"] > 0
    assert (d["original"], d["delta_vs_original"], d["delta_stderr"]) == (m.value, 0.0, 0.0)
    json.dumps(m.to_dict())  # serialisable
    assert (run_dir / "tasks" / "arc_easy.yaml").is_file() and (run_dir / "data" / "arc_easy.jsonl").is_file()


@pytest.mark.slow
def test_a_users_yaml_task(bench, tmp_path: Path) -> None:  # noqa: ANN001
    data = tmp_path / "count.jsonl"
    rows = [{"q": f"{a}, {a + 1}, {a + 2},", "good": f"{a + 3}", "bad": "zebra"} for a in (1, 10, 40)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "count.yaml").write_text(
        "task: count_up\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        "doc_to_text: '{{q}}'\n"
        "doc_to_choice: '{{[good, bad]}}'\n"
        "doc_to_target: 0\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    obj = Accuracy(task=str(tmp_path / "count.yaml"), tokenizer=bench.loaded.tokenizer, run_dir=tmp_path / "run")
    with forbid_network() as attempts:
        m = obj.measure(bench.context(bench.original))
    assert attempts == []
    assert (m.details["task"], m.details["n"]) == ("count_up", 3)
    assert m.value == 1.0  # counting on beats "zebra"
