from __future__ import annotations

import random

import pytest

from squeezeray._errors import PlanError
from squeezeray._errors import SqueezerayError
from squeezeray.spaces import CompressionPlan
from squeezeray.spaces import GroupSpec
from squeezeray.spaces import SearchSpace
from squeezeray.spaces import Tie
from squeezeray.spaces import preset_space

LAYERS = [
    f"model.layers.{b}.{p}"
    for b in range(3)
    for p in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
              "mlp.up_proj", "mlp.down_proj")
]


@pytest.mark.parametrize("name", ["weights-int", "by-role", "prune+quant", "full", "per-layer", "per-layer-prune"])
def test_plan_to_params_to_plan_round_trip(name: str) -> None:
    space = preset_space(name)
    rng = random.Random(0)
    for _ in range(20):
        params = {k: rng.choice(v) for k, v in space.distributions(LAYERS).items()}
        try:
            plan = space.plan_from_params(params, LAYERS)
        except PlanError as err:  # a residual SVD drawn with no step before it: infeasible by nature
            assert "residual svd must come last, after a quantize or prune step" in str(err)
            continue
        again = space.plan_from_params(space.params_for(plan, LAYERS), LAYERS)
        assert again.layers == plan.layers


def test_fused_layers_share_a_choice() -> None:
    space = preset_space("weights-int")
    units = {u.key: u.layers for u in space.units(LAYERS)}
    assert len(units) == 12  # 3 blocks x (qkv, o, gate_up, down)
    qkv = [ls for k, ls in units.items() if k.startswith("attn_qkv@model.layers.1.")][0]
    assert qkv == ("model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.k_proj", "model.layers.1.self_attn.v_proj")
    params = {k: v[0] for k, v in space.distributions(LAYERS).items()}
    params["attn_qkv@model.layers.1.self_attn.qkv/quant"] = "gptq-w3g128"
    plan = space.plan_from_params(params, LAYERS)
    assert {plan.layers[n].label() for n in qkv} == {"gptq-w3g128"}


def test_block_and_all_ties() -> None:
    space = SearchSpace("t", (GroupSpec("attn", ("*.self_attn.*",), quantize=("rtn-w8", "rtn-w4g64"), tie=Tie.BLOCK),
                              GroupSpec("mlp", ("*.mlp.*",), quantize=("rtn-w8", "rtn-w4g64"), tie=Tie.ALL)))
    assert sorted(space.distributions(LAYERS)) == [
        "attn@0/quant", "attn@1/quant", "attn@2/quant", "mlp/quant"]
    assert space.size(LAYERS) == 16


def _llama_layers(n_blocks: int) -> list[str]:
    leaves = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
              "mlp.up_proj", "mlp.down_proj")
    return [f"model.layers.{b}.{leaf}" for b in range(n_blocks) for leaf in leaves] + ["lm_head"]


def test_by_role_preset_equals_the_benchmarked_by_type_space_on_smollm2() -> None:
    """The built-in preset gives the 30-block model the same units as experiments/search_vs_uniform/by-type.yaml."""
    from pathlib import Path

    layers = _llama_layers(30)
    yaml_space = SearchSpace.from_yaml(Path(__file__).parents[2] / "experiments/search_vs_uniform/by-type.yaml")
    ours = {u.key: u.layers for u in preset_space("by-role").units(layers)}
    theirs = {u.key: u.layers for u in yaml_space.units(layers)}
    assert ours.pop("head@lm_head") == ("lm_head",)  # every preset gives the head (token table) a unit of its own
    assert ours == theirs
    assert ours["first_blocks"] == tuple(layers[:14]) and ours["last_blocks"] == tuple(layers[28 * 7 : 30 * 7])
    assert not any("lm_head" in ls for ls in ours.values())


def test_blocks_resolve_against_the_model_depth() -> None:
    space = preset_space("by-role")
    for n_blocks in (4, 12):
        units = {u.key: u.layers for u in space.units(_llama_layers(n_blocks))}
        assert {int(n.split(".")[2]) for n in units["last_blocks"]} == {n_blocks - 2, n_blocks - 1}
        assert {int(n.split(".")[2]) for n in units["first_blocks"]} == {0, 1}
        assert all(2 <= int(n.split(".")[2]) < n_blocks - 2 for n in units.get("attn_qkv", ()))
    # three blocks: block 1 is both "second" and "second to last"; the first group listed takes it
    units = {u.key: u.layers for u in space.units(_llama_layers(3))}
    assert {int(n.split(".")[2]) for n in units["first_blocks"]} == {0, 1}
    assert {int(n.split(".")[2]) for n in units["last_blocks"]} == {2}
    assert "attn_qkv" not in units


def test_blocks_in_yaml_round_trip_and_bad_values_are_named(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "s.yaml"
    path.write_text("name: s\ngroups:\n  - {name: ends, match: ['*'], blocks: [0, -1], quantize: [rtn-w8, rtn-w4g64]}\n")
    space = SearchSpace.from_yaml(path)
    assert space.groups[0].blocks == (0, -1)
    assert SearchSpace.from_dict(space.to_dict()) == space
    assert "blocks" not in preset_space("weights-int").to_dict()["groups"][0]  # unchanged layout without blocks
    units = {u.key: u.layers for u in space.units(_llama_layers(5))}
    assert {int(n.split(".")[2]) for u in units.values() for n in u} == {0, 4}
    with pytest.raises(SqueezerayError, match=r"blocks=\['last'\]"):
        GroupSpec("g", ("*",), blocks=("last",))
    with pytest.raises(SqueezerayError, match="block count is needed"):
        space.group_of("model.layers.0.mlp.up_proj")


def test_params_for_rejects_plans_outside_the_space() -> None:
    space = preset_space("weights-int")
    with pytest.raises(SqueezerayError, match="not among"):
        space.params_for(CompressionPlan.uniform("rtn-w4g64", LAYERS), LAYERS)
    mixed = dict(CompressionPlan.uniform("gptq-w4g128", LAYERS).layers)
    mixed["model.layers.0.self_attn.k_proj"] = CompressionPlan.uniform("gptq-w3g128", ["x"]).layers["x"]
    with pytest.raises(SqueezerayError, match="tied layers"):
        space.params_for(CompressionPlan(mixed), LAYERS)


def test_yaml_space(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "space.yaml"
    path.write_text(
        "name: mine\ngroups:\n  - name: mlp\n    match: ['*.mlp.*']\n    quantize: [gptq-w4g64, rtn-w8]\n"
        "    prune: [none, wanda-2:4]\n    orders: [prune-first, quant-first]\n"
    )
    space = SearchSpace.from_yaml(path)
    assert SearchSpace.from_dict(space.to_dict()) == space
    assert "mlp@model.layers.0.mlp.gate_up/order" in space.distributions(LAYERS)
    path.write_text("name: bad\ngroups:\n  - name: mlp\n    match: ['*']\n    quantise: [rtn-w8]\n")
    with pytest.raises(SqueezerayError, match=r"unknown key\(s\) \['quantise'\]"):
        SearchSpace.from_yaml(path)
    path.write_text("name: bad\ngroups:\n  - name: mlp\n    match: ['*']\n    quantize: [wanda-2:4]\n")
    with pytest.raises(SqueezerayError, match="is a prune step"):
        SearchSpace.from_yaml(path)


def test_unknown_preset_space() -> None:
    with pytest.raises(SqueezerayError, match="Did you mean: weights-int"):
        preset_space("weights-ints")


def test_the_per_layer_prune_space_offers_both_pruners_at_several_sparsities_in_both_orders() -> None:
    from squeezeray.search._sensitivity import unit_options

    space = preset_space("per-layer-prune")
    units = space.units(LAYERS)
    assert len(units) == 3 * 4  # every block's q/k/v, o, gate/up and down alone (no head in LAYERS)
    labels = {o.label for o in unit_options(space.groups[1])}
    for pruner in ("wanda", "sparsegpt"):
        for s in ("s25", "s50", "2:4"):
            assert f"{pruner}-{s}+gptq-w4g128-asym-clip" in labels  # prune, then quantize the survivors
            assert f"gptq-w4g128-asym-clip+{pruner}-{s}" in labels  # quantize, then prune
    assert "gptq-w3g128-asym-clip" in labels and "rtn-w8" in labels  # and every quantizer alone
