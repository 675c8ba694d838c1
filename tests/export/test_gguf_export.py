"""GGUF export: read back by an independent reader (transformers' GGUF loader), the card's hash, refusals."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from squeezeray._errors import SqueezerayError
from squeezeray.export import ExportConfig
from squeezeray.export import export_model
from squeezeray.spaces import CompressionPlan
from squeezeray.spaces import parse_steps


def _mixed(bench) -> CompressionPlan:  # noqa: ANN001
    """Q4_0 query/value (o_proj from the min/max grid of rtn-w4g32), Q4_1 key, Q5_0 gate, Q5_1 up, Q8_0 down
    and token table, and the K-quants on the down projections of blocks 0-4 (RTN, so the test needs no
    Hessians; GPTQ on these grids is checked in tests/techniques/test_gguf.py)."""
    kinds = {"q_proj": "rtn-q4_0", "k_proj": "rtn-q4_1", "v_proj": "rtn-q4_0", "o_proj": "rtn-w4g32",
             "gate_proj": "rtn-q5_0", "up_proj": "rtn-q5_1", "down_proj": "rtn-q8_0", "lm_head": "rtn-q8_0"}
    k_quants = {f"model.layers.{i}.mlp.down_proj": f"rtn-{t}" for i, t in enumerate(("q6_k", "q5_k", "q4_k", "q3_k",
                                                                                   "q2_k"))}
    return CompressionPlan({n: parse_steps(k_quants.get(n, kinds[n.rsplit(".", 1)[-1]])) for n in bench.layers},
                           name="gguf-mixed")


@pytest.mark.slow
def test_a_gguf_export_is_read_back_by_transformers_with_the_same_weights(bench, tmp_path) -> None:  # noqa: ANN001
    import transformers

    plan = _mixed(bench)
    exported = export_model(bench, plan, tmp_path / "out", config=ExportConfig(serving=("gguf",), measure=("size",)))
    card = json.loads((tmp_path / "out" / "card.json").read_text())
    (entry,) = card["artifact"]["serving"]
    path = tmp_path / "out" / entry["path"]
    assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()  # the card's hash is the file's
    types = entry["tensor_types"]
    assert types["blk.0.attn_q.weight"] == "Q4_0" and types["blk.0.attn_output.weight"] == "Q4_0"
    assert types["blk.3.ffn_gate.weight"] == "Q5_0" and types["blk.6.ffn_down.weight"] == "Q8_0"
    assert [types[f"blk.{i}.ffn_down.weight"] for i in range(5)] == ["Q6_K", "Q5_K", "Q4_K", "Q3_K", "Q2_K"]
    assert types["blk.3.ffn_up.weight"] == "Q5_1" and types["blk.2.attn_k.weight"] == "Q4_1"  # k: rows permuted
    assert types["token_embd.weight"] == "Q8_0" and types["output_norm.weight"] == "F32"
    loaded = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    candidate = exported.model  # squeezeray's own artifact of the same plan, loaded back
    from squeezeray.compress import CompressedLinear
    from squeezeray.compress._embedding import CompressedEmbedding

    for name, module in candidate.named_modules():
        if isinstance(module, CompressedLinear):
            theirs = loaded.get_submodule(name).weight
            assert torch.equal(theirs, module.effective_weight()), name  # codes x fp16 scales, exactly
        elif isinstance(module, CompressedEmbedding):
            assert torch.equal(loaded.get_submodule(name).weight, module.table.effective_weight())
    norm = "model.layers.0.input_layernorm.weight"
    assert torch.equal(loaded.state_dict()[norm], bench.original.state_dict()[norm])
    ours = bench.evaluate(candidate, ["perplexity"])["perplexity"].value
    theirs_ppl = bench.evaluate(loaded, ["perplexity"])["perplexity"].value
    assert abs(theirs_ppl / ours - 1) < 1e-3
    assert exported.card.artifact["serving"][0]["format"] == "gguf"


@pytest.mark.slow
def test_a_plan_gguf_cannot_hold_is_refused_naming_the_layer(bench, tmp_path) -> None:  # noqa: ANN001
    plan = CompressionPlan({n: parse_steps("rtn-w4g128" if n.endswith("down_proj") else "rtn-q8_0")
                            for n in bench.layers if n != "lm_head"})
    with pytest.raises(SqueezerayError) as err:
        export_model(bench, plan, tmp_path / "out", config=ExportConfig(serving=("gguf",), measure=("size",)))
    text = str(err.value)
    assert "serving=gguf" in text and "model.layers.0.mlp.down_proj: 4-bit in groups of 128" in text
    assert not (tmp_path / "out").exists()  # nothing half-written
