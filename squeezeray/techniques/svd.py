"""Truncated SVD: a layer as (or corrected by) a rank-``r`` product ``u @ v``.

* ``residual=False``: the whole weight becomes ``u @ v``, the best rank-``r``
  approximation in Frobenius norm (Eckart-Young). It must be the layer's first and
  only step; afterwards there is no main weight (``state.weight`` is zeros and
  ``state.lowrank.replaces_main`` is True).
* ``residual=True``: after a quantization and/or pruning step, the error those steps
  left, ``E = W_original - W_now``, is factorised at rank ``r`` and added back as a
  parallel low-rank path (``effective_weight = W_now + u @ v``). It must come after a
  quantize or prune step and be the layer's only low-rank step.

The factorisation is plain (weight-space) SVD; it is not activation-aware.
"""

from __future__ import annotations

import torch

from squeezeray._errors import InfeasibleStepError
from squeezeray.techniques._base import BaseTechnique
from squeezeray.techniques._configs import SVDConfig
from squeezeray.techniques._state import LayerState
from squeezeray.techniques._state import LayerStats
from squeezeray.techniques._state import LowRankState


def truncated_svd(w: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Best rank-``rank`` factorisation of a matrix.

    Args:
        w: (out, in) float matrix.
        rank: Rank kept, 1 <= rank <= min(out, in).

    Returns:
        ``(u, v)``: ``u`` (out, rank) = ``U_r * S_r`` and ``v`` (rank, in) = ``Vh_r``,
        float32, with ``||w - u @ v||_F^2`` equal to the sum of the discarded squared
        singular values.
    """
    if w.dim() != 2:
        raise ValueError(f"expected a 2-D (out, in) matrix, got shape {tuple(w.shape)}")
    if not 1 <= rank <= min(w.shape):
        raise InfeasibleStepError(f"rank={rank} must be in [1, {min(w.shape)}] for a matrix of shape {tuple(w.shape)}")
    u_full, s, vh = torch.linalg.svd(w.float(), full_matrices=False)  # (out, k), (k,), (k, in)
    u = (u_full[:, :rank] * s[:rank].unsqueeze(0)).contiguous()  # (out, rank)
    v = vh[:rank].contiguous()  # (rank, in)
    return u, v


class SVD(BaseTechnique[SVDConfig]):
    """Plain or residual truncated SVD."""

    name = "svd"
    code_version = 4  # 4: the base class gained rows_independent (tall layers in row blocks); this layer math did not change
    config_cls = SVDConfig

    def apply(self, state: LayerState, config: SVDConfig, stats: LayerStats) -> None:
        if state.lowrank is not None:
            raise InfeasibleStepError(f"{state.name}: svd cannot follow another low-rank step")
        if config.residual:
            if state.quant is None and state.sparsity is None:
                raise InfeasibleStepError(
                    f"{state.name}: residual svd needs an earlier quantize or prune step whose error it corrects"
                )
            error = state.original - state.weight  # (out, in)
            u, v = truncated_svd(error, config.rank)
            state.lowrank = LowRankState(u, v, replaces_main=False)
            return
        if state.quant is not None or state.sparsity is not None or state.act is not None:
            raise InfeasibleStepError(
                f"{state.name}: plain svd replaces the whole weight and must be the layer's first and only "
                "step (use residual=true to correct an earlier quantize/prune step)"
            )
        u, v = truncated_svd(state.weight, config.rank)
        state.lowrank = LowRankState(u, v, replaces_main=True)
        state.weight = torch.zeros_like(state.weight)
