"""The embedded model, compressed for real (one model load for the session)."""

from __future__ import annotations

import pytest
import torch

from squeezeray.compress import CompressedLinear
from squeezeray.objectives.size import model_nbytes
from squeezeray.spaces import CompressionPlan

pytestmark = pytest.mark.slow


def test_original_against_itself(bench) -> None:  # noqa: ANN001
    r = bench.evaluate(bench.original, ["kl", "perplexity", "size"])
    assert r["kl"].value == pytest.approx(0.0, abs=1e-6)
    assert 10 < r["perplexity"].value < 60
    n_params = sum(p.numel() for p in bench.original.parameters())  # tied head counted once
    assert r["size"].value == 2 * n_params
    assert len(bench.layers) == 211  # every linear layer and the tied output head (the token table)
    assert bench.head == "lm_head" and bench.layers["lm_head"] == (49152, 576)


def test_uniform_8bit_keeps_perplexity_within_one_percent(bench) -> None:  # noqa: ANN001
    base = bench.evaluate(bench.original, ["perplexity"])["perplexity"].value
    candidate, reports = bench.compress(bench.uniform("rtn-w8"))
    assert len(reports) == 210
    assert all(isinstance(candidate.get_submodule(n), CompressedLinear) for n in bench.layers if n != bench.head)
    assert not isinstance(candidate.get_submodule(bench.head), CompressedLinear)  # a preset leaves the table
    r = bench.evaluate(candidate, ["perplexity", "size", "kl"])
    assert abs(r["perplexity"].value / base - 1) < 0.01
    total, compressed = model_nbytes(candidate)
    assert r["size"].value == total
    assert compressed == sum(rep.nbytes for rep in reports)
    assert 0 < r["kl"].value < 0.02


def test_gptq_beats_rtn_at_4_bits(bench) -> None:  # noqa: ANN001
    ppl = {}
    for preset in ("rtn-w4g64", "gptq-w4g64"):
        candidate, _ = bench.compress(bench.uniform(preset))
        ppl[preset] = bench.evaluate(candidate, ["perplexity"])["perplexity"].value
    assert ppl["gptq-w4g64"] < ppl["rtn-w4g64"]


def test_original_model_is_not_modified(bench) -> None:  # noqa: ANN001
    before = bench.original.model.layers[0].mlp.down_proj.weight.detach().clone()
    bench.compress(CompressionPlan.uniform("sparsegpt-2:4", list(bench.layers)[:7]))
    assert torch.equal(bench.original.model.layers[0].mlp.down_proj.weight, before)
    assert isinstance(bench.original.model.layers[0].mlp.down_proj, torch.nn.Linear)
