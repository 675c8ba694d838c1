"""Wanda (Sun et al. 2023, arXiv:2306.11695): prune by ``|W_ij| * ||X_j||``.

The score of weight (i, j) is ``|W_ij| * sqrt(mean x_j^2)`` (``||X_j||`` up to the
constant ``sqrt(n_tokens)``, which does not change any ranking). For ``unstructured``
the comparison group is each output row, as in the paper. No Hessian and no weight
update are needed.

Applied after quantization, the scores use the dequantized weights (``state.weight``,
which already includes any SmoothQuant division, so they pair with the statistics of
the original input) and the codes are kept unchanged.
"""

from __future__ import annotations

import torch

from squeezeray.techniques._base import BaseTechnique
from squeezeray.techniques._configs import WandaConfig
from squeezeray.techniques._prune_math import mask_from_scores
from squeezeray.techniques._state import LayerState
from squeezeray.techniques._state import LayerStats
from squeezeray.techniques._steps import require_unpruned
from squeezeray.techniques.magnitude import commit_mask


def wanda_scores(weight: torch.Tensor, sq_mean: torch.Tensor) -> torch.Tensor:
    """Wanda saliency.

    Args:
        weight: (out, in) effective weight.
        sq_mean: (in,) mean of x_j**2 over the calibration tokens.

    Returns:
        (out, in) ``|W_ij| * sqrt(sq_mean_j)``.
    """
    if sq_mean.shape != (weight.shape[1],):
        raise ValueError(f"sq_mean has shape {tuple(sq_mean.shape)}, expected ({weight.shape[1]},)")
    norm = sq_mean.float().clamp(min=0).sqrt()  # (in,)
    return weight.abs() * norm.unsqueeze(0)  # (out, in)


class Wanda(BaseTechnique[WandaConfig]):
    """Prune by weight magnitude times input-channel norm."""

    name = "wanda"
    code_version = 4  # 4: the base class gained rows_independent (tall layers in row blocks); this layer math did not change
    config_cls = WandaConfig

    def apply(self, state: LayerState, config: WandaConfig, stats: LayerStats) -> None:
        require_unpruned(state, self.name)
        scores = wanda_scores(state.weight, stats.sq_mean)  # (out, in)
        commit_mask(state, config, mask_from_scores(scores, config))
