"""Token loyalty on a tiny random Llama: 1 for the model itself, below 1 for a perturbed copy."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from squeezeray._errors import SqueezerayError
from squeezeray.data import TokenData
from squeezeray.objectives import Direction
from squeezeray.objectives import EvalContext
from squeezeray.objectives import Provenance
from squeezeray.objectives import get_objective
from squeezeray.objectives.kl import KLDivergence
from squeezeray.objectives.token_loyalty import TokenLabelLoyalty
from squeezeray.objectives.token_loyalty import TokenProbabilityLoyalty
from squeezeray.objectives.token_loyalty import js_divergence_bits
from squeezeray.objectives.token_loyalty import top1_agreement


@pytest.fixture(scope="module")
def models() -> tuple[torch.nn.Module, torch.nn.Module]:
    from transformers import LlamaConfig
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    original = LlamaForCausalLM(cfg).eval()
    perturbed = copy.deepcopy(original)
    with torch.no_grad():
        for p in perturbed.parameters():
            p.add_(0.3 * p.std() * torch.randn_like(p))
    return original, perturbed


@pytest.fixture(scope="module")
def proxy() -> TokenData:
    return TokenData.of(torch.randint(0, 64, (3, 16), generator=torch.Generator().manual_seed(1)), "random ids")


def ctx(original: torch.nn.Module, candidate: torch.nn.Module, data: TokenData) -> EvalContext:
    return EvalContext(original, candidate, data, data)


@pytest.mark.parametrize("cls", [TokenLabelLoyalty, TokenProbabilityLoyalty])
def test_self_is_one_and_perturbed_is_less(models, proxy: TokenData, cls) -> None:  # noqa: ANN001
    original, perturbed = models
    c = ctx(original, original, proxy)
    same = cls().measure(c)
    assert same.value == 1.0
    assert same.name == cls.name and same.provenance is Provenance.COMPUTED and same.unit == "fraction"
    assert cls.direction is Direction.MAXIMIZE
    c.candidate = perturbed
    other = cls().measure(c)
    assert 0.0 <= other.value < 1.0
    assert other.details["positions"] == 3 * 16


def test_reuses_the_kl_cache_across_batch_sizes(models, proxy: TokenData) -> None:  # noqa: ANN001
    original, perturbed = models
    c = ctx(original, perturbed, proxy)
    KLDivergence(batch_size=2).measure(c)  # fills ctx.reference["kl-logprobs:<digest>"] in batches of 2
    assert list(c.reference) == [f"kl-logprobs:{proxy.digest}"]
    a = TokenProbabilityLoyalty(batch_size=3).measure(c).value
    b = TokenProbabilityLoyalty(batch_size=1).measure(ctx(original, perturbed, proxy)).value
    assert a == pytest.approx(b, abs=1e-6)
    assert list(c.reference) == [f"kl-logprobs:{proxy.digest}"]


def test_registry_names() -> None:
    assert isinstance(get_objective("token_label_loyalty"), TokenLabelLoyalty)
    assert isinstance(get_objective("token_prob_loyalty", batch_size=4), TokenProbabilityLoyalty)
    with pytest.raises(SqueezerayError, match="batch_size=0"):
        TokenLabelLoyalty(batch_size=0)


def test_js_divergence_bits_bounds() -> None:
    logp = torch.log_softmax(torch.randn(2, 5, 8), dim=-1)
    logq = torch.log_softmax(torch.randn(2, 5, 8), dim=-1)
    assert torch.equal(js_divergence_bits(logp, logp), torch.zeros(2, 5))
    js = js_divergence_bits(logp, logq)
    assert js.shape == (2, 5) and bool((js > 0).all()) and bool((js < 1).all())
    assert torch.allclose(js, js_divergence_bits(logq, logp), atol=1e-6)
    disjoint_p = torch.log(torch.tensor([[1.0, 0.0], [0.5, 0.5]]))
    disjoint_q = torch.log(torch.tensor([[0.0, 1.0], [0.5, 0.5]]))
    assert js_divergence_bits(disjoint_p, disjoint_q).tolist() == pytest.approx([1.0, 0.0])
    # one known value: P = (1, 0), Q = (1/2, 1/2) -> JS = 1.5 - 0.75 log2 3
    half = torch.log(torch.tensor([0.5, 0.5]))
    expect = 1.5 - 0.75 * math.log2(3)
    assert float(js_divergence_bits(disjoint_p[0], half)) == pytest.approx(expect, abs=1e-6)
    assert top1_agreement(logp, logp).all()
