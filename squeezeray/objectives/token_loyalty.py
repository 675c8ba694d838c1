"""Token loyalty: does the candidate predict the next token like the original does?

Both objectives compare next-token distributions at every position of the proxy
windows (``EvalContext.proxy_data``), with the original as the reference:

- token label loyalty: share of positions where the candidate's top-1 token is
  the original's (1.0 for the original itself);
- token probability loyalty: 1 − mean Jensen–Shannon divergence, in bits (so in
  [0, 1]), between the two distributions (1.0 for identical distributions).

The original's side is the KL objective's cache, ``ctx.reference["kl-logprobs:<digest>"]``
(a :class:`~squeezeray.objectives._reference.LogProbFile`, see :func:`squeezeray.objectives.kl.log_probs`),
computed once if absent and read a chunk of positions at a time; the candidate's logits come the same way
(:class:`~squeezeray.objectives._logits.LogitChunks`), so no (B, T, V) tensor is held.

These are the position-level counterparts of the task-level ``label_loyalty`` and
``probability_loyalty`` (multiple-choice items, :mod:`squeezeray.objectives.loyalty`);
hence the registry names ``token_label_loyalty`` and ``token_prob_loyalty``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from squeezeray._errors import SqueezerayError
from squeezeray.objectives._base import BaseObjective
from squeezeray.objectives._base import Direction
from squeezeray.objectives._base import EvalContext
from squeezeray.objectives._base import Measurement
from squeezeray.objectives._base import Provenance
from squeezeray.objectives._base import materialized
from squeezeray.objectives._logits import LogitChunks
from squeezeray.objectives._reference import LogProbFile
from squeezeray.objectives.kl import log_probs

LN2 = math.log(2.0)
Statistic = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (..., V) x (..., V) -> (...)


# ------------------------------------------------------------------ pure math
def top1_agreement(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """Whether the top-1 tokens agree at each position.

    Args:
        logp: (..., V) reference log-probs (or logits).
        logq: (..., V) candidate log-probs (or logits).

    Returns:
        (...) bool.
    """
    return logp.argmax(dim=-1) == logq.argmax(dim=-1)


def js_divergence_bits(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """Jensen–Shannon divergence in bits, per position, in [0, 1].

    JS(P, Q) = ½ KL(P‖M) + ½ KL(Q‖M) with M = ½(P + Q); terms where a probability is 0
    contribute 0; positions where the two log-prob vectors are identical are exactly 0.

    Args:
        logp: (..., V) log-probabilities of P.
        logq: (..., V) log-probabilities of Q.

    Returns:
        (...) float32.
    """
    logp, logq = logp.float(), logq.float()
    logm = torch.logaddexp(logp, logq) - LN2  # (..., V)
    p, q = logp.exp(), logq.exp()
    kl_pm = torch.where(p > 0, p * (logp - logm), torch.zeros_like(p)).sum(-1)
    kl_qm = torch.where(q > 0, q * (logq - logm), torch.zeros_like(q)).sum(-1)
    js = (0.5 * (kl_pm + kl_qm) / LN2).clamp(0.0, 1.0)
    return torch.where((logp == logq).all(dim=-1), torch.zeros_like(js), js)


@torch.no_grad()
def compare_next_tokens(
    reference: LogProbFile,
    model: nn.Module,
    windows: torch.Tensor,
    stat: Statistic,
    *,
    batch_size: int = 2,
) -> torch.Tensor:
    """``stat(reference_logp, model_logp)`` at every position, as one flat float64 tensor (window-major).

    Args:
        reference: (n, T, V) log-probs of the reference, read one chunk of positions at a time.
        model: The candidate (its logits a few positions at a time, :class:`LogitChunks`).
        windows: (n, T) token ids.
        stat: Per-position statistic, (..., V) x (..., V) -> (...).
        batch_size: Windows per decoder pass.
    """
    if reference.shape[:2] != tuple(windows.shape):
        raise SqueezerayError(f"the cached reference covers {reference.shape[:2]} (windows, tokens); the proxy is "
                              f"{tuple(windows.shape)}")
    stream = LogitChunks(model, windows)
    out = []
    for start in range(0, windows.shape[0], batch_size):
        for row, at, logits in stream(windows[start : start + batch_size]):
            logp = reference.read(start + row, at).to(logits.device)  # (n, V)
            if logp.shape != logits.shape:
                raise SqueezerayError(f"reference log-probs have shape {tuple(logp.shape)}, the candidate's "
                                      f"{tuple(logits.shape)}")
            out.append(stat(logp, F.log_softmax(logits, dim=-1)).reshape(-1).double())
    return torch.cat(out)


# ----------------------------------------------------------------- objectives
class _TokenLoyalty(BaseObjective):
    """Shared settings and the cached reference.

    Args:
        batch_size: Windows per forward pass.
    """

    unit = "fraction"
    direction = Direction.MAXIMIZE

    def __init__(self, *, batch_size: int = 2) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise SqueezerayError(f"batch_size={batch_size!r}: must be a positive integer")
        self.batch_size = batch_size

    def _per_position(self, ctx: EvalContext, stat: Statistic) -> torch.Tensor:
        key = f"kl-logprobs:{ctx.proxy_data.digest}"  # shared with objectives/kl.py
        if key not in ctx.reference:
            ctx.reference[key] = log_probs(ctx.original, ctx.proxy_data.ids, batch_size=self.batch_size)
        with materialized(ctx.candidate):
            return compare_next_tokens(
                ctx.reference[key], ctx.candidate, ctx.proxy_data.ids, stat, batch_size=self.batch_size
            )


class TokenLabelLoyalty(_TokenLoyalty):
    """Share of proxy-window positions where the candidate's top-1 next token is the original's."""

    name = "token_label_loyalty"

    def measure(self, ctx: EvalContext) -> Measurement:
        agree = self._per_position(ctx, top1_agreement)
        return Measurement(
            self.name, float(agree.mean()), self.unit, Provenance.COMPUTED, ctx.proxy_data.source,
            {"positions": int(agree.numel()), "agree": int(agree.sum())},
        )


class TokenProbabilityLoyalty(_TokenLoyalty):
    """1 − mean Jensen–Shannon divergence (bits) between next-token distributions on the proxy windows."""

    name = "token_prob_loyalty"

    def measure(self, ctx: EvalContext) -> Measurement:
        js = self._per_position(ctx, js_divergence_bits)
        return Measurement(
            self.name, 1.0 - float(js.mean()), self.unit, Provenance.COMPUTED, ctx.proxy_data.source,
            {"positions": int(js.numel()), "mean_js_bits": float(js.mean()), "max_js_bits": float(js.max())},
        )
