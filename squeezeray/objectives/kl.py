"""KL divergence of next-token distributions against the original model (the cheap proxy)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from squeezeray.objectives._base import BaseObjective
from squeezeray.objectives._base import Direction
from squeezeray.objectives._base import EvalContext
from squeezeray.objectives._base import Measurement
from squeezeray.objectives._base import Provenance
from squeezeray.objectives._base import materialized


@torch.no_grad()
def log_probs(model: nn.Module, windows: torch.Tensor, *, batch_size: int = 2) -> list[torch.Tensor]:
    """Next-token log-probabilities, one (B, T, V) float32 tensor per batch."""
    out = []
    for start in range(0, windows.shape[0], batch_size):
        logits = model(input_ids=windows[start : start + batch_size], use_cache=False).logits.float()
        out.append(F.log_softmax(logits, dim=-1))
    return out


def kl_sum(logp: torch.Tensor, logits: torch.Tensor) -> float:
    """Sum over tokens of KL(P || Q) for reference log-probs ``logp`` and candidate ``logits`` (both (B, T, V)),
    one sequence at a time (its float32 temporaries, not the batch's)."""
    total = 0.0
    for row in range(logits.shape[0]):
        p = logp[row]
        logq = F.log_softmax(logits[row].float(), dim=-1)
        total += float((p.exp() * (p - logq)).sum())
    return total


@torch.no_grad()
def mean_kl(reference: list[torch.Tensor], model: nn.Module, windows: torch.Tensor, *, batch_size: int = 2) -> float:
    """Mean over tokens of KL(P_reference || P_model), in nats."""
    total = 0.0
    count = 0
    for i, start in enumerate(range(0, windows.shape[0], batch_size)):
        logits = model(input_ids=windows[start : start + batch_size], use_cache=False).logits  # (B, T, V)
        total += kl_sum(reference[i], logits)
        count += logits.shape[0] * logits.shape[1]
    return total / count


class KLDivergence(BaseObjective):
    """Mean per-token KL(original || candidate) on the proxy windows."""

    name = "kl"
    swap_safe = True  # measures the candidate alone (reference results come from the cache)
    direction = Direction.MINIMIZE
    unit = "nats/token"

    def __init__(self, *, batch_size: int = 2) -> None:
        self.batch_size = batch_size

    @classmethod
    def infeasible_value(cls, reference: float) -> float:
        """100 nats/token: the original's KL is 0, so twice it plus one would be a plausible real value."""
        return 100.0

    def measure(self, ctx: EvalContext) -> Measurement:
        key = f"kl-logprobs:{ctx.proxy_data.digest}"
        if key not in ctx.reference:
            ctx.reference[key] = log_probs(ctx.original, ctx.proxy_data.ids, batch_size=self.batch_size)
        with materialized(ctx.candidate):
            kl = mean_kl(ctx.reference[key], ctx.candidate, ctx.proxy_data.ids, batch_size=self.batch_size)
        return Measurement(
            self.name, max(kl, 0.0), self.unit, Provenance.COMPUTED, ctx.proxy_data.source,
            {"tokens": int(ctx.proxy_data.ids.numel())},
        )
