from __future__ import annotations

import json

import pytest

from squeezeray._errors import PlanError
from squeezeray._errors import UnknownNameError
from squeezeray.spaces import CompressionPlan
from squeezeray.spaces import LayerPlan
from squeezeray.spaces import parse_steps
from squeezeray.techniques import GPTQConfig
from squeezeray.techniques import SparsityPattern
from squeezeray.techniques import WandaConfig

LAYERS = {"blk.0.q": (64, 96), "blk.0.down": (96, 256)}
LABELS = [
    "rtn-w8", "rtn-w3g32-asym", "gptq-w4g64", "gptq-w4g64-noact", "awq-w4g32", "awq-w3g32-noclip", "nf4-g64", "fp8", "fp8-g32",
    "w8a8-a0.5", "magnitude-s50", "wanda-2:4", "wanda-4:8", "sparsegpt-s60", "magnitude-s25-rows", "wanda-s50-heads",
    "svd-r16", "wanda-2:4+gptq-w4g64", "gptq-w4g64+sparsegpt-2:4", "rtn-w3g32+svd-r8-res",
]


@pytest.mark.parametrize("label", LABELS)
def test_preset_label_round_trip(label: str) -> None:
    lp = parse_steps(label)
    assert lp.label() == label
    assert LayerPlan.from_list(json.loads(json.dumps(lp.to_list()))) == lp


def test_plan_json_round_trip(tmp_path) -> None:  # noqa: ANN001
    plan = CompressionPlan(
        {"blk.0.q": parse_steps("wanda-2:4+gptq-w4g64"), "blk.0.down": parse_steps("rtn-w3g32-asym")}, name="mixed"
    )
    path = tmp_path / "plan.json"
    plan.save(path)
    again = CompressionPlan.load(path)
    assert again == plan
    assert again.layers["blk.0.q"].steps[0].pattern is SparsityPattern.NM
    assert again.to_dict()["_version"] == 1
    again.check(LAYERS)


def test_plan_is_frozen() -> None:
    plan = CompressionPlan.uniform("rtn-w8", LAYERS)
    with pytest.raises(TypeError):
        plan.layers["blk.0.q"] = parse_steps("rtn-w4")  # type: ignore[index]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: GPTQConfig(bits=9), r"gptq.bits=9: must be one of 2, 3, 4, 5, 6, 7, 8"),
        (lambda: GPTQConfig(bits=4, group_size=1), r"gptq.group_size=1"),
        (lambda: WandaConfig(sparsity=1.0), r"wanda.sparsity=1.0: must be a number in \[0, 1\)"),
        (lambda: WandaConfig(sparsity=-0.1), r"wanda.sparsity=-0.1"),
        (lambda: WandaConfig(pattern="diagonal"), r"wanda.pattern='diagonal': must be one of"),
        (lambda: WandaConfig(pattern="nm", n=4, m=4, sparsity=None), r"n:m='4:4'"),
        (lambda: WandaConfig(pattern="nm", n=2, m=4, sparsity=0.3), r"contradicts 2:4"),
        (lambda: parse_steps("svd-r8+rtn-w4"), r"non-residual svd must be the only step"),
        (lambda: parse_steps("rtn-w4+svd-r8-res+magnitude-s50"), r"residual svd must come last"),
        (lambda: parse_steps("rtn-w4+gptq-w4"), r"at most one quantize step"),
        (lambda: parse_steps("rtn-w4-bogus"), r"cannot read 'bogus'"),
        (lambda: parse_steps("rtn-s50"), r"rtn has no setting sparsity"),
    ],
)
def test_bad_settings_name_field_and_value(make, message: str) -> None:  # noqa: ANN001
    with pytest.raises(PlanError, match=message):
        make()


def test_unknown_technique_says_did_you_mean() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean: gptq"):
        parse_steps("gtpq-w4")


def test_check_against_model_layers() -> None:
    with pytest.raises(PlanError, match=r"'blk.0.qq' is not a compressible.*Did you mean: blk.0.q"):
        CompressionPlan({"blk.0.qq": parse_steps("rtn-w8")}).check(LAYERS)
    with pytest.raises(PlanError, match=r"blk.0.q.*group_size=128: exceeds the layer's input width 96"):
        CompressionPlan({"blk.0.q": parse_steps("rtn-w4g128")}).check(LAYERS)
    with pytest.raises(PlanError, match=r"m=8: does not divide"):
        CompressionPlan({"blk.0.q": parse_steps("wanda-4:8")}).check({"blk.0.q": (64, 100)})
    with pytest.raises(PlanError, match=r"rank=64: must be below"):
        CompressionPlan({"blk.0.q": parse_steps("svd-r64")}).check(LAYERS)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "is not valid JSON"),
        ('{"_type": "x", "_version": 1, "layers": {}}', "plan: _type='x', expected 'squeezeray.CompressionPlan'"),
        ('{"_type": "squeezeray.CompressionPlan", "_version": 99, "layers": {}}', "_version=99"),
        ('{"_type": "squeezeray.CompressionPlan", "_version": 1, "layers": {"a": [{"bits": 4}]}}', "'technique' field"),
        (
            '{"_type": "squeezeray.CompressionPlan", "_version": 1, "layers": {"a": [{"technique": "rtn", "bitz": 4}]}}',
            "unknown field.*'bitz'",
        ),
    ],
)
def test_corrupted_plan_files(tmp_path, text: str, message: str) -> None:  # noqa: ANN001
    path = tmp_path / "plan.json"
    path.write_text(text)
    with pytest.raises(PlanError, match=message):
        CompressionPlan.load(path)


def test_missing_plan_file(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(PlanError, match="does not exist"):
        CompressionPlan.load(tmp_path / "nope.json")
