"""Expert rules: what they remove, why, and how the user lifts them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from squeezeray._errors import SqueezerayError
from squeezeray._errors import UnknownNameError
from squeezeray.hwprofiles import HardwareProfile
from squeezeray.hwprofiles import get_profile
from squeezeray.search._rule_apply import apply_rules
from squeezeray.search._rule_apply import explain
from squeezeray.search._rule_match import Condition
from squeezeray.search._rule_match import RuleEffect
from squeezeray.search._rule_match import Selector
from squeezeray.search._rules import Rule
from squeezeray.search._rules import default_rules
from squeezeray.search._rules import load_rules
from squeezeray.spaces._presets import preset_space
from squeezeray.spaces._space import GroupSpec
from squeezeray.spaces._space import SearchSpace

NO_FP8 = "apple-m2-max"  # formats fp32/fp16, no 2:4 speed-up, no int8
H100 = "h100-sxm"  # fp8 + int8, 2:4 speed-up 2.0, no int4
INT4 = "rtx-4090"  # lists int4


@pytest.fixture(scope="module")
def profiles() -> dict[str, HardwareProfile]:
    return {n: get_profile(n) for n in (NO_FP8, H100, INT4, "xeon-8480plus")}


def group(space: SearchSpace, name: str) -> GroupSpec:
    return next(g for g in space.groups if g.name == name)


def one_group(**choices: object) -> SearchSpace:
    return SearchSpace("t", (GroupSpec("mlp", ("*.mlp.*",), **choices),))  # type: ignore[arg-type]


def test_fp8_removed_without_fp8_units_and_reason_names_profile(profiles: dict[str, HardwareProfile]) -> None:
    out = apply_rules(preset_space("full"), profiles[NO_FP8])
    for g in out.space.groups[:4]:
        assert "fp8" not in g.quantize
    fp8 = [r for r in out.removals if r.option == "fp8"]
    assert {r.group for r in fp8} == {"attn_qkv", "attn_o", "mlp_gate_up", "mlp_down"}
    assert all(r.rule == "fp8-needs-fp8-units" and NO_FP8 in r.reason and r.field == "quantize" for r in fp8)
    kept = apply_rules(preset_space("full"), profiles[H100])
    assert "fp8" in group(kept.space, "attn_qkv").quantize


def test_nm_sparsity_only_where_accelerated(profiles: dict[str, HardwareProfile]) -> None:
    space = one_group(prune=("none", "wanda-2:4", "sparsegpt-4:8", "wanda-s50"))
    gone = apply_rules(space, profiles[NO_FP8])
    assert gone.space.groups[0].prune == ("none", "wanda-s50")
    assert {r.option for r in gone.removals} == {"wanda-2:4", "sparsegpt-4:8"}
    assert all("sparse24_speedup 1" in r.reason for r in gone.removals)
    assert apply_rules(space, profiles[H100]).space.groups[0].prune == space.groups[0].prune


def test_unavailable_sparse_speedup_counts_as_none(profiles: dict[str, HardwareProfile]) -> None:
    data = profiles[H100].to_dict()
    data["sparse24_speedup"] = {"value": None, "basis": "unavailable", "source": "test"}
    profile = HardwareProfile.from_dict(data)
    out = apply_rules(one_group(prune=("none", "wanda-2:4")), profile)
    assert out.space.groups[0].prune == ("none",)
    assert "unavailable" in out.removals[0].reason


def test_w8a8_needs_int8(profiles: dict[str, HardwareProfile]) -> None:
    space = one_group(quantize=("w8a8-a0.5", "gptq-w8g128"))
    assert apply_rules(space, profiles[NO_FP8]).space.groups[0].quantize == ("gptq-w8g128",)
    assert apply_rules(space, profiles["xeon-8480plus"]).space.groups[0].quantize == space.groups[0].quantize


def test_rtn_below_4_bits_removed_gptq_kept(profiles: dict[str, HardwareProfile]) -> None:
    space = one_group(quantize=("rtn-w3g128", "rtn-w4g128", "gptq-w3g128"))
    out = apply_rules(space, profiles[H100])
    assert out.space.groups[0].quantize == ("rtn-w4g128", "gptq-w3g128")
    assert [r.rule for r in out.removals] == ["rtn-below-4-bits"]


def test_head_stays_at_8_bits_unless_allowed(profiles: dict[str, HardwareProfile]) -> None:
    space = SearchSpace("t", (
        GroupSpec("mlp", ("*.mlp.*",), quantize=("gptq-w4g128", "gptq-w8g128")),
        GroupSpec("lm_head", ("lm_head",), quantize=("gptq-w4g128", "nf4-g64", "gptq-w8g128", "none")),
    ))
    out = apply_rules(space, profiles[H100])
    assert group(out.space, "lm_head").quantize == ("gptq-w8g128", "none")
    assert group(out.space, "mlp").quantize == ("gptq-w4g128", "gptq-w8g128")
    lifted = apply_rules(space, profiles[H100], allow=["head-and-embeddings-at-8-bits"])
    assert group(lifted.space, "lm_head").quantize == space.groups[1].quantize
    assert lifted.lifted == ("head-and-embeddings-at-8-bits",)
    assert "lifted by the user" in explain(lifted)


def test_scope_by_owned_layers(profiles: dict[str, HardwareProfile]) -> None:
    space = SearchSpace("t", (GroupSpec("rest", ("*",), quantize=("gptq-w4g128", "rtn-w8")),))
    assert apply_rules(space, profiles[H100]).space == space  # "*" as text is not the head
    out = apply_rules(space, profiles[H100], layer_names=["model.layers.0.mlp.up_proj", "lm_head"])
    assert out.space.groups[0].quantize == ("rtn-w8",)


def test_unknown_rule_in_allow_says_did_you_mean(profiles: dict[str, HardwareProfile]) -> None:
    with pytest.raises(UnknownNameError, match="Did you mean: fp8-needs-fp8-units"):
        apply_rules(preset_space("full"), profiles[H100], allow=["fp8-need-fp8-units"])


def test_allow_lifts_a_removal(profiles: dict[str, HardwareProfile]) -> None:
    out = apply_rules(preset_space("full"), profiles[NO_FP8], allow=("fp8-needs-fp8-units",))
    assert "fp8" in group(out.space, "attn_qkv").quantize
    assert not [r for r in out.removals if r.rule == "fp8-needs-fp8-units"]


def test_int4_note_only_without_int4_units(profiles: dict[str, HardwareProfile]) -> None:
    space = one_group(quantize=("gptq-w4g128", "gptq-w8g128", "nf4-g64"))
    out = apply_rules(space, profiles[H100])
    assert out.space == space  # notes remove nothing
    (note,) = out.notes_for("mlp", "gptq-w4g128")
    assert note.rule == "int4-is-memory-not-compute" and "valued for memory" in note.text
    assert not out.notes_for("mlp", "gptq-w8g128")
    assert [n.rule for n in apply_rules(space, profiles[INT4]).notes] == ["nf4-is-memory-not-compute"]


def test_never_empties_a_list_and_records_it(profiles: dict[str, HardwareProfile]) -> None:
    space = one_group(quantize=("fp8",), prune=("wanda-2:4",))
    out = apply_rules(space, profiles[NO_FP8])
    assert out.space == space
    assert {(b.rule, b.field) for b in out.blocked} == {("fp8-needs-fp8-units", "quantize"),
                                                         ("nm-needs-sparse-units", "prune")}
    assert "although rule [fp8-needs-fp8-units] objects" in explain(out)


@pytest.mark.parametrize("name", ["apple-m2-max", "h100-sxm", "xeon-8480plus"])
def test_every_preset_keeps_options_and_still_samples(profiles: dict[str, HardwareProfile], name: str) -> None:
    layers = [f"model.layers.0.{m}" for m in ("self_attn.q_proj", "self_attn.o_proj", "mlp.up_proj", "mlp.down_proj")]
    for preset in ("weights-int", "prune+quant", "full"):
        out = apply_rules(preset_space(preset), profiles[name], layer_names=layers + ["lm_head"])
        for g in out.space.groups:
            assert g.quantize and g.prune and g.lowrank
        assert out.space.size(layers) >= 1
        assert SearchSpace.from_dict(out.space.to_dict()) == out.space


def test_explain_names_rule_option_and_reason(profiles: dict[str, HardwareProfile]) -> None:
    text = explain(apply_rules(one_group(quantize=("fp8", "none")), profiles[NO_FP8]))
    assert "removed fp8 from mlp.quantize [fp8-needs-fp8-units]: apple-m2-max does not multiply in fp8" in text
    assert "no rule changed the space" in explain(apply_rules(one_group(quantize=("gptq-w8g128",)), profiles[H100]))


def test_explain_says_one_fact_once_however_many_groups_and_options_it_concerns(
    profiles: dict[str, HardwareProfile],
) -> None:
    from squeezeray.search._rule_apply import Note
    from squeezeray.search._rule_apply import RuleOutcome

    out = apply_rules(preset_space("per-layer"), profiles[H100])
    lines = explain(out).splitlines()[1:]
    int4 = [ln for ln in lines if "[int4-is-memory-not-compute]" in ln]
    assert len(out.notes) >= 12 and len(int4) == 1  # was one line per (group, option)
    assert "{attn_qkv, attn_o, mlp_gate_up, mlp_down}" in int4[0] and "gptq-w3g64" in int4[0]
    assert "each of them is dequantized" in int4[0]
    # a group name that also occurs elsewhere in the text is only replaced where the text names the group
    notes = (Note("r", "head", "rtn-w4", "rtn-w4 in group head: the output head stays", "quantize"),
             Note("r", "mlp", "rtn-w4", "rtn-w4 in group mlp: the output head stays", "quantize"))
    text = explain(RuleOutcome(out.space, "p", notes=notes))
    assert "note on rtn-w4 in {head, mlp}.quantize [r]: rtn-w4 in each group: the output head stays" in text


def test_custom_rules_in_python(profiles: dict[str, HardwareProfile]) -> None:
    rule = Rule("no-awq", Condition(profile_kind=("gpu",)), Selector(technique=("awq",)), "{option} off on {profile}")
    out = apply_rules(one_group(quantize=("awq-w4g128", "gptq-w4g128")), profiles[H100], rules=[rule])
    assert out.removals[0].reason == "awq-w4g128 off on h100-sxm"
    on_soc = apply_rules(one_group(quantize=("awq-w4g128", "gptq-w4g128")), profiles[NO_FP8], rules=[rule])
    assert on_soc.space.groups[0].quantize == ("awq-w4g128", "gptq-w4g128")
    locked = Rule("locked", Condition(always=True), Selector(kind="lowrank"), "x", RuleEffect.REMOVE, overridable=False)
    with pytest.raises(SqueezerayError, match="not overridable"):
        apply_rules(one_group(), profiles[H100], rules=[locked], allow=["locked"])


def test_default_file_loads() -> None:
    names = default_rules().names()
    assert "fp8-needs-fp8-units" in names and "int4-is-memory-not-compute" in names


def _write(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text("_type: squeezeray.Rules\n_version: 1\nrules:\n" + body)
    return p


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("  - {name: a, when: {always: true}, select: {kind: prune}, reasn: x}\n", "unknown key 'reasn'. Did you mean: reason"),
        ("  - {name: a, when: {profile_lacks_fromat: fp8}, select: {kind: prune}, reason: x}\n", "Did you mean: profile_lacks_format"),
        ("  - {name: a, when: {profile_lacks_format: fp7}, select: {kind: prune}, reason: x}\n", "profile_lacks_format='fp7'"),
        ("  - {name: a, when: {always: true}, select: {technique: [gtpq]}, reason: x}\n", "Did you mean: gptq"),
        ("  - {name: a, when: {always: true}, select: {}, reason: x}\n", "select everything"),
        ("  - {name: a, when: {always: true}, select: {kind: prune}, reason: '{profle}'}\n", r"\{profle\}.*Did you mean: profile"),
        ("  - {name: a, when: {always: true}, select: {kind: prune}, reason: x, effect: warn}\n", "effect='warn'"),
        ("  - {name: a, when: {always: true}, select: {kind: prune}, reason: x}\n"
         "  - {name: a, when: {always: true}, select: {kind: prune}, reason: y}\n", "appears twice"),
    ],
)
def test_bad_rule_files_are_rejected_by_name(tmp_path: Path, body: str, match: str) -> None:
    with pytest.raises(SqueezerayError, match=match):
        load_rules(_write(tmp_path, body))


def test_rule_file_version_checked(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text("_type: squeezeray.Rules\n_version: 9\nrules: []\n")
    with pytest.raises(SqueezerayError, match="_version=9"):
        load_rules(p)


def test_outcome_serialises(profiles: dict[str, HardwareProfile]) -> None:
    outcome = apply_rules(preset_space("full"), profiles[NO_FP8])
    data = json.loads(json.dumps(outcome.to_dict()))
    assert data["profile"] == NO_FP8 and SearchSpace.from_dict(data["space"]) == outcome.space


def test_options_a_layers_shape_cannot_take_are_removed_with_the_steps_reason(
    profiles: dict[str, HardwareProfile],
) -> None:
    layers = {f"model.layers.{i}.{leaf}": shape for i in range(2) for leaf, shape in (
        ("self_attn.q_proj", (576, 576)), ("self_attn.o_proj", (576, 576)), ("mlp.up_proj", (1536, 576)),
        ("mlp.down_proj", (576, 1536)))}
    space = preset_space("gguf")
    out = apply_rules(space, profiles["xeon-8480plus"], layer_names=list(layers), layer_shapes=layers)
    k_quants = {"gptq-q2_k", "gptq-q3_k", "gptq-q4_k", "gptq-q5_k", "gptq-q6_k"}
    assert k_quants <= set(group(out.space, "mlp_down").quantize)  # rows of 1536 = 6 super-blocks
    for name in ("attn_qkv", "attn_o", "mlp_gate_up"):
        assert not k_quants & set(group(out.space, name).quantize)
        assert "gptq-q4_0" in group(out.space, name).quantize
    why = next(r for r in out.removals if r.group == "attn_o" and r.option == "gptq-q4_k")
    assert why.rule == "layer-shape" and why.reason == (
        "gptq-q4_k does not fit model.layers.0.self_attn.o_proj (576 x 576): needs rows of whole 256-input "
        "blocks; this layer has 576 inputs")
    text = explain(out)
    assert "removed gptq-q2_k, gptq-q3_k, gptq-q4_k, gptq-q5_k, gptq-q6_k from attn_o.quantize [layer-shape]" in text
    assert text.count("[layer-shape]") == 3  # one line per group, naming the options once
    assert apply_rules(space, profiles["xeon-8480plus"], layer_names=list(layers)).space == \
        apply_rules(space, profiles["xeon-8480plus"]).space  # without shapes: no shape rule
