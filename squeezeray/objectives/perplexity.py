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
from squeezeray.objectives._logits import LogitChunks


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
    stream = LogitChunks(model, windows)
    last = windows.shape[1] - 1  # the last position predicts nothing inside its window
    for start in range(0, windows.shape[0], batch_size):
        ids = windows[start : start + batch_size]  # (B, T)
        for row, at, logits in stream(ids):  # (n, V) float32: a few positions of one window at a time
            stop = min(at.stop, last)
            if stop > at.start:
                nll += float(F.cross_entropy(logits[: stop - at.start], ids[row, at.start + 1 : stop + 1].to(logits.device),
                                             reduction="sum"))
        count += ids[:, 1:].numel()
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
