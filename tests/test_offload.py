"""Offloading decoder blocks to the host (squeezeray._offload).

Without a GPU the copies are checked against the ``meta`` device: a block's tensors land there for its forward
only (a meta forward computes shapes, no numbers), and afterwards the block holds the very host tensors it had.
The numbers of an offloaded run against a whole one are checked by the ``gpu`` test at the end.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from squeezeray._errors import SqueezerayError
from squeezeray._offload import check_offload
from squeezeray._offload import offload_blocks
from squeezeray._offload import offload_of
from squeezeray._offload import on_execution_device
from squeezeray._offload import placement
from squeezeray._offload import refuse_offloaded
from squeezeray.compress import compress_layer
from squeezeray.compress import decoder_parts
from squeezeray.compress import replace_layers
from squeezeray.spaces import parse_steps
from squeezeray.techniques import LayerStats
from tests._tiny import small_llama
from tests.conftest import correlated_inputs

META = torch.device("meta")


def _run_blocks(model: nn.Module, tokens: int) -> torch.Tensor:
    """The decoder blocks' forward on meta hidden states (a whole meta forward stops at the mask's ``.item()``)."""
    _, blocks, _ = decoder_parts(model)
    h = torch.zeros(1, tokens, model.config.hidden_size, device=META)
    pe = model.model.rotary_emb(h, torch.arange(tokens, device=META)[None])
    for b in blocks:
        out = b(h, attention_mask=None, position_embeddings=pe)
        h = out[0] if isinstance(out, tuple) else out
    return h


def _block_tensors(block: nn.Module) -> dict[str, torch.Tensor]:
    return {n: t for n, t in [*block.named_parameters(), *block.named_buffers()]}


def test_a_block_is_on_the_device_for_its_own_forward_only() -> None:
    model = small_llama(seed=0, layers=2)
    _, blocks, _ = decoder_parts(model)
    before = [{n: (t, t.clone()) for n, t in _block_tensors(b).items()} for b in blocks]
    seen: list[tuple[str, str]] = []

    def probe(module: nn.Module, args: object, output: object) -> None:  # inside block 0's forward
        seen.append((blocks[0].mlp.down_proj.weight.device.type, blocks[1].mlp.down_proj.weight.device.type))

    blocks[0].mlp.register_forward_hook(probe)
    record = offload_blocks(model, META)
    assert record.blocks == 2 and record.device == "meta"
    assert record.host_bytes == sum(t.numel() * t.element_size() for b in blocks for t in _block_tensors(b).values())
    assert model.model.embed_tokens.weight.device == META and model.lm_head.weight is model.model.embed_tokens.weight
    out = _run_blocks(model, 5)
    assert out.device == META and out.shape == (1, 5, 64)
    assert seen == [("meta", "cpu")]  # block 0 copied in, block 1 still on the host
    for b, old in zip(blocks, before):
        now = _block_tensors(b)
        assert now.keys() == old.keys()
        for n, (obj, value) in old.items():
            assert now[n] is obj and torch.equal(obj, value), n  # the very host tensor, bit for bit


def test_a_failing_forward_still_puts_the_block_back() -> None:
    model = small_llama(seed=0, layers=2)
    _, blocks, _ = decoder_parts(model)
    weight = blocks[0].self_attn.q_proj.weight

    def boom(module: nn.Module, args: object) -> None:
        raise RuntimeError("boom")

    blocks[0].mlp.register_forward_pre_hook(boom)
    offload_blocks(model, META)
    with pytest.raises(RuntimeError, match="boom"):
        _run_blocks(model, 3)
    assert blocks[0].self_attn.q_proj.weight is weight and weight.device.type == "cpu"


def test_a_swapped_in_layer_and_its_materialized_weight_travel_with_their_block() -> None:
    model = small_llama(seed=0, layers=2)
    name = "model.layers.0.mlp.up_proj"
    x = correlated_inputs(128, 64)
    layer = compress_layer(name, model.get_submodule(name), parse_steps("rtn-w4g32"), LayerStats.synthetic(x))
    layer.materialize(torch.float32)
    replace_layers(model, {name: layer})
    inside: list[tuple[str, str]] = []
    layer.register_forward_pre_hook(lambda m, a: inside.append((m.codes.device.type, m._dense.device.type)))
    dense, codes = layer._dense, layer.codes
    offload_blocks(model, META)
    _run_blocks(model, 4)
    assert inside == [("meta", "meta")]
    assert layer._dense is dense and layer.codes is codes and codes.device.type == "cpu"


def test_a_layer_is_compressed_on_the_device_and_handed_back_to_the_host() -> None:
    model = small_llama(seed=0, layers=2)
    linear = model.get_submodule("model.layers.1.self_attn.o_proj")
    weight = linear.weight
    offload_blocks(model, META)
    seen: list[torch.nn.Linear] = []

    def compute(lin: nn.Linear) -> nn.Module:
        seen.append(lin)
        return nn.Identity()

    assert isinstance(on_execution_device(model, linear, compute), nn.Identity)
    assert seen[0] is not linear and seen[0].weight.device == META and seen[0].weight.shape == weight.shape
    assert linear.weight is weight and weight.device.type == "cpu"  # the original is not touched
    head = model.get_submodule("lm_head")  # outside the blocks: on the device already, computed as it is
    on_execution_device(model, head, compute)
    assert seen[1] is head


def test_a_model_that_is_not_offloaded_computes_its_layers_as_they_are() -> None:
    model = small_llama(seed=0, layers=1)
    linear = model.get_submodule("model.layers.0.mlp.gate_proj")
    assert offload_of(model) is None
    assert on_execution_device(model, linear, lambda lin: lin) is linear
    refuse_offloaded(model, "latency")  # nothing to refuse
    assert "offloaded" not in placement(model)


def test_what_an_offloaded_model_cannot_measure_is_refused_by_name() -> None:
    from squeezeray.objectives.latency import time_forward

    model = small_llama(seed=0, layers=2)
    offload_blocks(model, META)
    assert "offloaded: 2 blocks" in placement(model)
    with pytest.raises(SqueezerayError, match="latency: the model is offloaded"):
        time_forward(model, torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(SqueezerayError, match="offloaded already"):
        offload_blocks(model, META)


def test_offloading_onto_the_cpu_or_measuring_latency_offloaded_is_refused_before_loading() -> None:
    from squeezeray.models import load_model
    from squeezeray.search import SearchConfig

    with pytest.raises(SqueezerayError, match="offload=True with device 'cpu'"):
        check_offload(torch.device("cpu"), True)
    check_offload(torch.device("cpu"), False)
    with pytest.raises(SqueezerayError, match="offload=True with device 'cpu'"):
        load_model("/nonexistent/model/folder", device="cpu", offload=True)  # refused before the path is read
    with pytest.raises(SqueezerayError, match="offload=True with device 'cpu'"):
        SearchConfig(device="cpu", offload=True)


def test_the_estimate_of_an_offloaded_search_keeps_the_blocks_on_the_host() -> None:
    from squeezeray.data import DataConfig
    from squeezeray.search._footprint import estimate
    from squeezeray.search._footprint import shape_of

    with torch.device("meta"):
        shape = shape_of(small_llama(seed=0, layers=4))
    whole = estimate(shape, torch.bfloat16, DataConfig())
    off = estimate(shape, torch.bfloat16, DataConfig(), offload=True)
    block = sum(shape.layers[n][0] * shape.layers[n][1] for n in shape.blocks[0]) * 2
    assert whole.host == 0 and off.host > 4 * block
    assert off.model == whole.model - 3 * block  # four blocks on the host, one copied to the device at a time
    assert off.peak < whole.peak and "offloaded to the host" in off.describe()


@pytest.mark.gpu
def test_an_offloaded_model_on_cuda_measures_what_the_whole_one_does(tokenizer_dir: str) -> None:
    from squeezeray.spaces import CompressionPlan
    from tests._tiny import tiny_bench

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    results = []
    for offload in (False, True):
        bench = tiny_bench(tokenizer_dir)
        model = bench.original
        if offload:
            offload_blocks(model, torch.device("cuda"))
        else:
            model.to("cuda")
        plan = CompressionPlan.uniform("gptq-w4g32", [n for n in bench.layers if n != bench.head])
        results.append(bench.evaluate_plan(plan, ["kl", "perplexity"]))
        assert all(t.device.type == "cpu" for t in model.model.layers[0].parameters()) is offload
    whole, off = results
    for key in ("kl", "perplexity"):
        assert off[key].value == pytest.approx(whole[key].value, rel=1e-4), key


def test_objectives_an_offloaded_model_cannot_measure_are_refused_before_loading(capsys) -> None:  # noqa: ANN001
    from squeezeray.cli import main
    from squeezeray.objectives._registry import refuse_timed
    from squeezeray.search import SearchConfig

    refuse_timed(("size", "kl", "predicted_latency"), field="objectives", reason="here")
    with pytest.raises(SqueezerayError, match=r"final_objectives: 'lat' cannot be measured here"):
        refuse_timed(("kl", "lat"), field="final_objectives", reason="here")
    if torch.cuda.is_available():  # SearchConfig checks the device first; without a GPU offload is refused for it
        with pytest.raises(SqueezerayError, match=r"final_objectives: 'latency' cannot be measured with offload"):
            SearchConfig(device="cuda", offload=True)
    rc = main(["compress", "--plan", "rtn-w4g32", "--offload", "--objectives", "size,energy"])
    assert rc != 0 and "--objectives: 'energy' cannot be measured with offload" in capsys.readouterr().err


def test_a_copy_of_an_offloaded_model_is_offloaded_too() -> None:
    import copy

    model = small_llama(seed=0, layers=2)
    offload_blocks(model, META)
    twin = copy.deepcopy(model)  # what Workbench.compress makes for a plan that trains or reads the original
    assert offload_of(twin) == offload_of(model)
    _, blocks, _ = decoder_parts(twin)
    inside: list[str] = []
    blocks[1].mlp.register_forward_hook(lambda m, a, o: inside.append(m.up_proj.weight.device.type))
    _run_blocks(twin, 3)
    assert inside == ["meta"] and blocks[1].mlp.up_proj.weight.device.type == "cpu"
