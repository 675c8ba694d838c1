"""Logits a few positions at a time: the same numbers as the model's own forward, checked, or the whole forward."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from squeezeray.objectives._logits import LogitChunks
from squeezeray.objectives.kl import log_probs
from squeezeray.objectives.kl import mean_kl
from squeezeray.objectives.perplexity import perplexity
from tests._tiny import small_gemma3
from tests._tiny import small_llama


def _llama() -> torch.nn.Module:
    return small_llama(seed=3, layers=2)


def _gemma3_softcapped() -> torch.nn.Module:
    return small_gemma3(seed=4, layers=2, final_logit_softcapping=0.5)  # small: leaving it out fails the check


class _Scaled(torch.nn.Module):
    """A causal LM whose forward does more than decoder + head (scales its logits)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config

    def get_decoder(self) -> torch.nn.Module:
        return self.inner.get_decoder()

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.inner.get_output_embeddings()

    def forward(self, **kw):  # noqa: ANN003, ANN201
        out = self.inner(**kw)
        out.logits = out.logits * 3.0
        return out


def _ids(n: int = 3, t: int = 300) -> torch.Tensor:
    return torch.randint(0, 300, (n, t), generator=torch.Generator().manual_seed(0))


def _whole_perplexity(model: torch.nn.Module, ids: torch.Tensor) -> float:
    with torch.no_grad():
        logits = model(input_ids=ids, use_cache=False).logits.float()
    return math.exp(float(F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))))


@pytest.mark.parametrize("make", [_llama, _gemma3_softcapped], ids=["llama", "gemma3-softcapped"])
def test_chunked_logits_are_the_models_own(make) -> None:  # noqa: ANN001
    model, ids = make(), _ids()
    stream = LogitChunks(model, ids, chunk=64)
    assert stream.path.startswith("decoder once, head on 64 positions")
    with torch.no_grad():
        full = model(input_ids=ids, use_cache=False).logits.float()
    parts = list(stream(ids))
    assert [(r, a.start, a.stop) for r, a, _ in parts][:6] == [(0, 0, 64), (0, 64, 128), (0, 128, 192), (0, 192, 256),
                                                               (0, 256, 300), (1, 0, 64)]
    for row, at, logits in parts:
        torch.testing.assert_close(logits, full[row, at], rtol=1e-5, atol=1e-5)
    assert perplexity(model, ids, batch_size=2)[0] == pytest.approx(_whole_perplexity(model, ids), rel=1e-5)
    ref = log_probs(model, ids, batch_size=2)
    assert ref.shape == (3, 300, 300)
    for row in range(3):
        torch.testing.assert_close(ref.read(row, slice(0, 300)), F.log_softmax(full[row], dim=-1), rtol=1e-5, atol=1e-5)
    assert mean_kl(ref, model, ids, batch_size=2) == pytest.approx(0.0, abs=1e-6)


def test_a_forward_that_is_not_decoder_plus_head_runs_whole() -> None:
    model, ids = _Scaled(_llama()), _ids(2, 40)
    stream = LogitChunks(model, ids)
    assert stream.path.startswith("whole forward (its forward's logits are not decoder + head")
    assert perplexity(model, ids)[0] == pytest.approx(_whole_perplexity(model, ids), rel=1e-5)
