"""The compressed-tensors layout (vLLM): exact mapping, checked by an independent reader, and refusals."""

from __future__ import annotations

import json

import pytest
import torch

import squeezeray
from squeezeray._errors import SqueezerayError
from squeezeray.export import ExportConfig
from squeezeray.export import export_model
from squeezeray.export._serving import pack_int32
from squeezeray.spaces import CompressionPlan
from squeezeray.spaces import parse_steps

# 4- and 8-bit, per channel (group = input width) and per group; q/k/v and gate/up share a scheme as vLLM fuses them
SERVABLE = {
    "q_proj": "gptq-w4g128", "k_proj": "gptq-w4g128", "v_proj": "gptq-w4g128", "o_proj": "rtn-w8",
    "gate_proj": "rtn-w4g64", "up_proj": "rtn-w4g64", "down_proj": "gptq-w8g128",
}


def _plan(layers, kinds) -> CompressionPlan:  # noqa: ANN001
    return CompressionPlan({n: parse_steps(kinds[leaf]) for n in layers if (leaf := n.rsplit(".", 1)[-1]) in kinds})


def test_pack_int32_matches_compressed_tensors() -> None:
    ct = pytest.importorskip("compressed_tensors.compressors.pack_quantized.helpers",
                             reason="compressed-tensors is not installed (pip install compressed-tensors)")
    g = torch.Generator().manual_seed(0)
    for bits in (4, 8):
        codes = torch.randint(0, 2**bits, (6, 64), generator=g, dtype=torch.int64)
        expected = ct.pack_to_int32((codes - 2 ** (bits - 1)).to(torch.int8), bits)
        assert torch.equal(pack_int32(codes, bits), expected)


def test_a_servable_plan_is_read_by_transformers_with_the_same_logits(tiny, tmp_path) -> None:  # noqa: ANN001
    pytest.importorskip("compressed_tensors", reason="compressed-tensors is not installed (pip install compressed-tensors)")
    import transformers

    out = tmp_path / "m"
    export_model(tiny, _plan(tiny.layers, SERVABLE), out, hardware="epyc-9654",
                 config=ExportConfig(measure=("size",), serving=("compressed-tensors",)))
    ours = squeezeray.load(out)  # hash check covers the subfolder too
    serving = ours.card.artifact["serving"]
    assert [s["format"] for s in serving] == ["compressed-tensors"]
    qc = json.loads((out / "compressed-tensors" / "config.json").read_text())["quantization_config"]
    assert qc["format"] == "pack-quantized" and qc["ignore"] == ["lm_head"]
    assert sorted((g["weights"]["num_bits"], g["weights"]["strategy"]) for g in qc["config_groups"].values()) == [
        (4, "channel"), (4, "group"), (8, "channel"), (8, "group")]
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out / "compressed-tensors", dtype=torch.float32)
    ids = tiny.held_out.ids[:2, :48]
    with torch.no_grad():
        assert torch.equal(theirs(input_ids=ids).logits, ours.model(input_ids=ids).logits)


def test_a_plan_that_does_not_map_is_refused_with_every_reason(tiny, tmp_path) -> None:  # noqa: ANN001
    block0 = {**SERVABLE, "k_proj": "rtn-w8", "o_proj": "rtn-w3g64", "gate_proj": "awq-w4g64",
              "up_proj": "awq-w4g64", "down_proj": "wanda-2:4+rtn-w4g64"}
    block1 = {**SERVABLE, "o_proj": "nf4-g64", "down_proj": "rtn-w4g64-asym"}
    plan = CompressionPlan({n: parse_steps((block0 if ".0." in n else block1)[n.rsplit(".", 1)[1]]) for n in tiny.layers
                           if n != tiny.head})
    with pytest.raises(SqueezerayError) as err:
        export_model(tiny, plan, tmp_path / "m", hardware="epyc-9654",
                     config=ExportConfig(measure=("size",), serving=("compressed-tensors",)))
    message = str(err.value)
    assert message.startswith("serving=compressed-tensors: this plan does not map exactly: ")
    for reason in (
        "model.layers.0.self_attn.o_proj: 3-bit (vLLM's weight-only kernels take 4 or 8 bits)",
        "model.layers.0.mlp.down_proj: pruned (nm)",
        "model.layers.0.mlp.gate_proj, model.layers.0.mlp.up_proj: has a per-channel smoothing scale",
        "model.layers.1.self_attn.o_proj: nf4 codes",
        "model.layers.1.mlp.down_proj: asymmetric",
        "model.layers.0.self_attn.q_proj and model.layers.0.self_attn.k_proj: vLLM fuses them into "
        "model.layers.0.self_attn.qkv_proj",
    ):
        assert reason in message
    assert not (tmp_path / "m").exists() and not list(tmp_path.glob(".m.partial-*"))
