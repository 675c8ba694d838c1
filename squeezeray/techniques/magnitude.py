"""Magnitude pruning: remove the weights of smallest absolute value.

For the ``unstructured`` pattern the comparison group is each output row (the same
per-output grouping as Wanda), so every row keeps ``in - round(sparsity * in)``
weights; ``nm``, ``rows`` and ``heads`` follow :mod:`squeezeray.techniques._prune_math`.

Applied after quantization, the scores are the dequantized weights (``state.weight``)
and the codes are kept unchanged; only the mask is added.
"""

from __future__ import annotations

import torch

from squeezeray.techniques._base import BaseTechnique
from squeezeray.techniques._configs import MagnitudeConfig
from squeezeray.techniques._configs import PruneConfig
from squeezeray.techniques._formats import SparsityPattern
from squeezeray.techniques._prune_math import mask_from_scores
from squeezeray.techniques._prune_math import sparsity_state_args
from squeezeray.techniques._state import LayerState
from squeezeray.techniques._state import LayerStats
from squeezeray.techniques._state import SparsityState
from squeezeray.techniques._steps import require_unpruned


def commit_mask(state: LayerState, config: PruneConfig, mask: torch.Tensor) -> None:
    """Record a keep-mask on ``state`` and refresh its effective weight.

    Without quantization the weight is multiplied by the mask; with quantization the
    weight is re-derived from the codes (which :meth:`LayerState.refresh_weight` masks).

    Args:
        state: The layer; must not be pruned yet.
        config: The pruning step's settings (pattern, n, m, head_dim).
        mask: (out, in) bool, True where kept.
    """
    if tuple(mask.shape) != state.shape or mask.dtype != torch.bool:
        raise ValueError(f"{state.name}: mask must be a bool tensor of shape {state.shape}")
    state.sparsity = SparsityState(SparsityPattern(config.pattern), mask, **sparsity_state_args(config))
    if state.quant is None:
        state.weight = state.weight * mask
    else:
        state.refresh_weight()


class Magnitude(BaseTechnique[MagnitudeConfig]):
    """Prune by ``|W|``: scores are the absolute effective weights."""

    name = "magnitude"
    code_version = 4  # 4: the base class gained rows_independent (tall layers in row blocks); this layer math did not change
    config_cls = MagnitudeConfig

    def apply(self, state: LayerState, config: MagnitudeConfig, stats: LayerStats) -> None:
        require_unpruned(state, self.name)
        scores = state.weight.abs()  # (out, in)
        commit_mask(state, config, mask_from_scores(scores, config))
