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
from squeezeray.objectives._logits import LogitChunks
from squeezeray.objectives._reference import LogProbFile
from squeezeray.objectives._reference import reference_log_probs


@torch.no_grad()
def log_probs(model: nn.Module, windows: torch.Tensor, *, batch_size: int = 2) -> LogProbFile:
    """Next-token log-probabilities of ``model`` on ``windows`` (N, T), in a :class:`LogProbFile` (written a few
    positions at a time: :class:`~squeezeray.objectives._logits.LogitChunks`)."""
    return reference_log_probs(LogitChunks(model, windows), windows, batch_size=batch_size)


def kl_sum(logp: torch.Tensor, logits: torch.Tensor) -> float:
    """Sum over positions of KL(P || Q) for reference log-probs ``logp`` and candidate ``logits`` (same shape,
    (..., V)), in float32."""
    logq = F.log_softmax(logits.float(), dim=-1)
    return float((logp.exp() * (logp - logq)).sum())


@torch.no_grad()
def mean_kl(reference: LogProbFile, model: nn.Module, windows: torch.Tensor, *, batch_size: int = 2) -> float:
    """Mean over tokens of KL(P_reference || P_model), in nats (the reference read one chunk at a time)."""
    stream = LogitChunks(model, windows)
    total = 0.0
    count = 0
    for start in range(0, windows.shape[0], batch_size):
        ids = windows[start : start + batch_size]
        for row, at, logits in stream(ids):
            total += kl_sum(reference.read(start + row, at).to(logits.device), logits)
        count += ids.numel()
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
