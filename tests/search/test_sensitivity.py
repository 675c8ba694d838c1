"""Sensitivity stage: one-unit KLs, the replayed prefix, resume after a kill, the in-place swap."""

from __future__ import annotations

import pytest
import torch

from squeezeray.compress import compress_layer
from squeezeray.compress import swapped
from squeezeray.data import TokenData
from squeezeray.objectives.kl import log_probs
from squeezeray.objectives.kl import mean_kl
from squeezeray.search._sensitivity import SensitivityProbe
from squeezeray.search._sensitivity import measure_sensitivity
from squeezeray.search._sensitivity import option_label
from squeezeray.search._sensitivity import unit_options
from squeezeray.spaces import CompressionPlan
from squeezeray.spaces import GroupSpec
from squeezeray.spaces import LayerPlan
from squeezeray.spaces import Order
from squeezeray.spaces import SearchSpace
from squeezeray.spaces import parse_step
from squeezeray.spaces import preset_space

SMALL = SearchSpace("small", (GroupSpec("all", ("*",), quantize=("gptq-w3g64", "rtn-w8")),))


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(model: torch.nn.Module, snap: dict[str, torch.Tensor]) -> bool:
    sd = model.state_dict()
    return sd.keys() == snap.keys() and all(torch.equal(sd[k], snap[k]) for k in snap)


def test_unit_options_are_distinct_plans_and_map_back_from_params() -> None:
    g = GroupSpec("g", ("*",), quantize=("rtn-w8", "none"), prune=("none", "wanda-s50"),
                  orders=(Order.PRUNE_FIRST, Order.QUANT_FIRST))
    opts = unit_options(g)
    labels = [o.label for o in opts]
    assert len(labels) == len(set(labels)) == 5  # rtn, wanda+rtn, rtn+wanda, wanda alone, none
    for o in opts:
        params = {f"u/{k}": v for k, v in o.params.items()}
        assert option_label(g, params, "u") == o.label


def test_replayed_prefix_gives_the_full_forward_kl(tiny) -> None:  # noqa: ANN001
    model = tiny.original
    stats = tiny.stats(hessian=True)
    proxy = TokenData.of(tiny.calibration.ids[:2], "test")
    probe = SensitivityProbe(model, proxy)
    ref = log_probs(model, proxy.ids, batch_size=2)
    lp = LayerPlan((parse_step("gptq-w2g64"),))
    for name in ("model.layers.0.mlp.down_proj", "model.layers.1.self_attn.o_proj"):
        rep = {name: compress_layer(name, model.get_submodule(name), lp, stats[name])}
        fast = probe.kl(rep)
        with swapped(model, rep):
            full = mean_kl(ref, model, proxy.ids, batch_size=2)
        assert fast > 0
        assert fast == pytest.approx(full, rel=1e-5, abs=1e-9)


def test_sensitivity_survives_a_kill_and_resumes_where_it_stopped(tiny) -> None:  # noqa: ANN001
    units = SMALL.units(tiny.layers)
    stats = tiny.stats(hessian=True)
    proxy = TokenData.of(tiny.calibration.ids[:1], "test")
    full = measure_sensitivity(tiny.original, units, stats, proxy)
    stored: dict[str, list] = {}

    class Killed(Exception):
        pass

    def store_then_die(unit: str, rows: list) -> None:
        stored[unit] = rows
        if len(stored) == 3:
            raise Killed

    with pytest.raises(Killed):
        measure_sensitivity(tiny.original, units, stats, proxy, on_unit=store_then_die)
    assert len(stored) == 3
    calls = []

    def counting(name, linear, plan, st, *, memo):  # noqa: ANN001, ANN202
        calls.append(name)
        return compress_layer(name, linear, plan, st, memo=memo)

    resumed = measure_sensitivity(tiny.original, units, stats, proxy, done=stored, layer_fn=counting)
    remaining = [u for u in units if u.key not in stored]
    assert len(calls) == sum(len(u.layers) for u in remaining) * 2  # two options each, done units skipped
    assert [(r.unit, r.option) for r in resumed.rows] == [(r.unit, r.option) for r in full.rows]
    for a, b in zip(resumed.rows, full.rows):
        assert a.nbytes == b.nbytes
        assert a.kl == pytest.approx(b.kl, rel=1e-6, abs=1e-12)
    heat = full.heatmap()
    assert list(heat.index) == [u.key for u in units] and set(heat.columns) == {"gptq-w3g64", "rtn-w8"}


def test_in_place_swap_leaves_the_original_bit_identical(tiny) -> None:  # noqa: ANN001
    model = tiny.original
    snap = _snapshot(model)
    modules = {n: model.get_submodule(n) for n in tiny.layers}
    for preset in ("gptq-w3g64", "rtn-w8", "wanda-s50+gptq-w4g128", "gptq-w2g64"):
        plan = CompressionPlan.uniform(preset, list(tiny.layers)[: 5])
        m = tiny.evaluate_plan(plan, ["size", "kl"])
        assert m["kl"].value > 0
    with pytest.raises(RuntimeError, match="boom"), tiny.swapped(tiny.uniform("rtn-w8")):
        raise RuntimeError("boom")  # an evaluation that crashes mid-way still restores the original
    assert _same(model, snap)
    assert all(model.get_submodule(n) is mod for n, mod in modules.items())
    assert tiny.evaluate(model, ["kl"])["kl"].value == pytest.approx(0.0, abs=1e-7)


def test_nested_swap_is_refused(tiny) -> None:  # noqa: ANN001
    from squeezeray._errors import SqueezerayError

    plan = CompressionPlan.uniform("rtn-w8", list(tiny.layers)[:1])
    with tiny.swapped(plan), pytest.raises(SqueezerayError, match="already active"), tiny.swapped(plan):
        pass


def test_per_layer_presets_give_every_unit_its_own_choice(tiny) -> None:  # noqa: ANN001
    units = preset_space("per-layer").units(tiny.layers)
    assert len(units) == 4 * 2 + 1  # qkv, o, gate/up, down in each of the 2 blocks, then the token table
    assert units[-1].layers == ("lm_head",) and units[-1].group.name == "head"
    full = unit_options(preset_space("per-layer-full").groups[1])
    assert len(full) == 37 and {"awq-w2g32", "gptq-w8g128", "rtn-w8"} <= {o.label for o in full}


def test_objectives_that_read_the_original_are_measured_on_a_copy(tiny, monkeypatch) -> None:  # noqa: ANN001
    calls = []
    compress = tiny.compress
    monkeypatch.setattr(tiny, "compress", lambda plan, layer_fn=None: calls.append(plan) or compress(plan, layer_fn=layer_fn))
    plan = CompressionPlan.uniform("rtn-w8", list(tiny.layers)[:2])
    swapped_values = tiny.evaluate_plan(plan, ["size", "kl"])
    assert calls == []  # size and KL are swap-safe: measured in place
    copied = tiny.evaluate_plan(plan, ["size", "kl", "parameter_efficiency"])
    assert len(calls) == 1  # parameter efficiency reads the original's parameters: a copy
    assert copied["kl"].value == pytest.approx(swapped_values["kl"].value, rel=1e-6)
    assert copied["size"].value == swapped_values["size"].value
