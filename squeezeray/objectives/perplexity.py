"""Perplexity on the held-out text."""

from __future__ import annotations

import math

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
def perplexity(model: nn.Module, windows: torch.Tensor, *, batch_size: int = 4) -> tuple[float, int]:
    """exp(mean next-token NLL) over non-overlapping windows.

    Args:
        model: Causal LM.
        windows: (n, seq_len) int64 token ids; each window is scored on its own.
        batch_size: Windows per forward pass.

    Returns:
        (perplexity, number of scored tokens).
    """
    nll = 0.0
    count = 0
    for start in range(0, windows.shape[0], batch_size):
        ids = windows[start : start + batch_size]  # (B, T)
        logits = model(input_ids=ids, use_cache=False).logits  # (B, T, V) in the model's dtype
        for row in range(ids.shape[0]):  # one window's float32 logits and log-softmax at a time, not the batch's
            nll += float(F.cross_entropy(logits[row, :-1].float(), ids[row, 1:], reduction="sum"))
        count += ids[:, 1:].numel()
        del logits
    return math.exp(nll / count), count


class Perplexity(BaseObjective):
    """Perplexity of the candidate on the held-out windows."""

    name = "perplexity"
    swap_safe = True  # measures the candidate alone (reference results come from the cache)
    direction = Direction.MINIMIZE
    unit = "ppl"

    def __init__(self, *, batch_size: int = 4) -> None:
        self.batch_size = batch_size

    def measure(self, ctx: EvalContext) -> Measurement:
        with materialized(ctx.candidate):
            ppl, n = perplexity(ctx.candidate, ctx.eval_data.ids, batch_size=self.batch_size)
        return Measurement(self.name, ppl, self.unit, Provenance.COMPUTED, ctx.eval_data.source, {"tokens": n})
