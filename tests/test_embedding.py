"""The tied token table compressed: row gather, one stored table, swap and restore, exports."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import squeezeray
from squeezeray._errors import PlanError
from squeezeray._errors import SqueezerayError
from squeezeray.compress import CompressedEmbedding
from squeezeray.compress import CompressedLinear
from squeezeray.compress import compress_layer
from squeezeray.compress import swapped
from squeezeray.export import ExportConfig
from squeezeray.export import export_model
from squeezeray.export._serving import compressed_tensors_plan
from squeezeray.models import tied_table
from squeezeray.objectives.size import DENSE_BYTES
from squeezeray.objectives.size import compressed_weights
from squeezeray.objectives.size import model_nbytes
from squeezeray.search._sensitivity import SensitivityProbe
from squeezeray.spaces import CompressionPlan
from squeezeray.spaces import parse_preset
from squeezeray.spaces import parse_steps
from squeezeray.techniques import LayerStats
from tests.conftest import correlated_inputs

ROWS, WIDTH = 50, 37  # odd width: 3- and 5-bit rows do not start on a byte


@pytest.mark.parametrize("steps", [
    "rtn-w8", "rtn-w4g16", "rtn-w3g16-asym", "gptq-w5g32", "nf4-g16", "fp8", "awq-w4g16", "w8a8-a0.5",
    "rtn-w4g16+svd-r4-res", "wanda-s50+rtn-w4g16", "magnitude-s20-rows", "svd-r6", "wanda-s30",
])
def test_gathered_rows_equal_the_dequantized_table(steps: str) -> None:
    torch.manual_seed(5)
    table = nn.Linear(WIDTH, ROWS, bias=False)
    stats = LayerStats.synthetic(correlated_inputs(200, WIDTH))
    m = compress_layer("t", table, parse_steps(steps), stats)
    ids = torch.tensor([[0, 7, 7, 49], [3, 1, 2, 48]])
    dense = m.effective_weight()
    assert torch.equal(m.rows(ids), dense[ids])
    m.materialize()
    assert torch.equal(m.rows(ids), dense[ids])
    m.release()
    with pytest.raises(IndexError):
        m.rows(torch.tensor([ROWS]))


def _head_plan(steps: str) -> CompressionPlan:
    return CompressionPlan({"lm_head": parse_steps(steps)}, name=f"head {steps}")


def test_a_tied_model_stores_one_table_and_counts_it_once(tiny) -> None:  # noqa: ANN001
    assert tiny.head == "lm_head" and "lm_head" in tiny.layers
    original_total, _ = model_nbytes(tiny.original)
    candidate, reports = tiny.compress(_head_plan("rtn-w4g32"))
    emb = candidate.get_input_embeddings()
    assert isinstance(emb, CompressedEmbedding) and emb.table is candidate.lm_head
    assert not [k for k in candidate.state_dict() if k.startswith("model.embed_tokens")]
    assert sum(k.endswith(".codes") for k in candidate.state_dict()) == 1
    table_bytes = candidate.lm_head.nbytes()
    vocab, hidden = tiny.layers["lm_head"]
    total, compressed = model_nbytes(candidate)
    assert compressed == table_bytes == reports[0].nbytes
    assert total == original_total - vocab * hidden * DENSE_BYTES + table_bytes
    assert compressed_weights(candidate) == vocab * hidden
    ids = tiny.held_out.ids[:1, :16]
    assert torch.equal(emb(ids), candidate.lm_head.effective_weight()[ids])


def test_swapping_the_tied_head_brings_the_embedding_and_restores_both(tiny) -> None:  # noqa: ANN001
    model = tiny.original
    before = {k: v.clone() for k, v in model.state_dict().items()}
    head, emb = model.lm_head, model.get_input_embeddings()
    for steps in ("rtn-w8", "gptq-w4g32", "rtn-w8"):
        with tiny.swapped(_head_plan(steps)) as m:
            assert isinstance(m.get_input_embeddings(), CompressedEmbedding)
            assert m.get_input_embeddings().table is m.lm_head
            m.tie_weights()  # lm-eval calls it: tied by construction, nothing to re-tie
            assert m.get_input_embeddings().table is m.lm_head
    assert "tie_weights" not in vars(model)  # the class's own method again
    assert model.lm_head is head and model.get_input_embeddings() is emb
    assert model.lm_head.weight is emb.weight
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_the_tied_head_cannot_be_untied_by_a_dense_replacement(tiny) -> None:  # noqa: ANN001
    vocab, hidden = tiny.layers["lm_head"]
    with pytest.raises(PlanError, match="untie"), swapped(tiny.original, {"lm_head": nn.Linear(hidden, vocab)}):
        pass
    assert tied_table(tiny.original) is not None


def test_kd_with_the_tied_table_is_refused(tiny) -> None:  # noqa: ANN001
    lp, distill = parse_preset("wanda-s50+kd-n4+gptq-w4g64")
    plan = CompressionPlan({"lm_head": lp}, distill=distill)
    with pytest.raises(PlanError, match="tied"):
        tiny.compress(plan)


def test_a_scaled_embedding_keeps_its_scale() -> None:
    from transformers.models.gemma3.modeling_gemma3 import Gemma3TextScaledWordEmbedding

    torch.manual_seed(2)
    original = Gemma3TextScaledWordEmbedding(40, 16, padding_idx=0, embed_scale=4.0)
    head = nn.Linear(16, 40, bias=False)
    head.weight = original.weight
    table = compress_layer("lm_head", head, parse_steps("rtn-w8"), LayerStats.synthetic(torch.randn(64, 16)))
    emb = CompressedEmbedding.like(original, table)
    ids = torch.tensor([[1, 5, 39]])
    with torch.no_grad():
        original.weight.copy_(table.effective_weight())
        assert torch.equal(emb(ids), original(ids))


def test_an_embedding_it_cannot_reproduce_is_refused() -> None:
    class Odd(nn.Embedding):
        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return super().forward(ids) + 1

    head = nn.Linear(8, 12, bias=False)
    table = compress_layer("lm_head", head, parse_steps("rtn-w8"), LayerStats.synthetic(torch.randn(32, 8)))
    with pytest.raises(PlanError, match="overrides forward"):
        CompressedEmbedding.like(Odd(12, 8), table)
    with pytest.raises(PlanError, match="12x8"):
        CompressedEmbedding.like(nn.Embedding(11, 8), table)


def test_batched_sensitivity_of_the_tied_head_equals_one_at_a_time(tiny) -> None:  # noqa: ANN001
    stats = tiny.stats(hessian=True)
    head = tiny.original.lm_head
    cands = [{"lm_head": compress_layer("lm_head", head, parse_steps(s), stats["lm_head"])}
             for s in ("rtn-w8", "rtn-w4g32", "gptq-w3g32")]
    probe = SensitivityProbe(tiny.original, tiny.proxy)
    batched = probe.kl_many(cands)
    single = [probe.kl(c) for c in cands]
    assert batched == pytest.approx(single, rel=1e-6)
    assert 0 < batched[0] < batched[1] < batched[2]


def test_export_reloads_the_compressed_table_and_serving_refuses_it(tiny, tmp_path) -> None:  # noqa: ANN001
    plan = CompressionPlan(
        {**{n: parse_steps("gptq-w4g64") for n in tiny.layers if n != "lm_head"}, "lm_head": parse_steps("rtn-w8")},
        name="w4 + table w8",
    )
    candidate, _ = tiny.compress(plan)
    export_model(tiny, plan, tmp_path / "m", config=ExportConfig(dense_dtype="float32", measure=("size",)),
                 hardware="epyc-9654")
    loaded = squeezeray.load(tmp_path / "m").model
    emb = loaded.get_input_embeddings()
    assert isinstance(emb, CompressedEmbedding) and emb.table is loaded.lm_head
    assert isinstance(loaded.lm_head, CompressedLinear)
    ids = tiny.held_out.ids[:2, :32]
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, candidate(input_ids=ids).logits)
    assert model_nbytes(loaded) == model_nbytes(candidate)
    _, reasons = compressed_tensors_plan(candidate)
    assert any("model.embed_tokens" in r and "tied token table" in r for r in reasons)
    with pytest.raises(SqueezerayError, match="tied token table"):
        export_model(tiny, plan, tmp_path / "ct", config=ExportConfig(measure=("size",), serving=("compressed-tensors",)),
                     hardware="epyc-9654")


def test_an_8_bit_table_keeps_the_embedded_model_close(bench) -> None:  # noqa: ANN001
    """Embedding + head of SmolLM2-135M (56.6 MB in fp16) at 8 bits: KL to the original stays tiny."""
    result = bench.evaluate_plan(_head_plan("rtn-w8"), ["kl", "size"])
    assert result["kl"].value < 0.003
    original = bench.evaluate(bench.original, ["size"])["size"].value
    vocab, hidden = bench.layers["lm_head"]
    assert original - result["size"].value > 0.49 * vocab * hidden * DENSE_BYTES


def test_a_preset_leaves_the_table_dense_unless_the_head_is_named(tiny) -> None:  # noqa: ANN001
    plain = tiny.uniform("gptq-w4g64")
    assert "lm_head" not in plain.layers and len(plain.layers) == len(tiny.layers) - 1
    with_head = tiny.uniform("gptq-w4g64", head="rtn-w8")
    assert with_head.layers["lm_head"].label() == "rtn-w8"
    assert {lp.label() for n, lp in with_head.layers.items() if n != "lm_head"} == {"gptq-w4g64"}
    with pytest.raises(PlanError):
        tiny.uniform("gptq-w4g64", head="rtn-w99")
