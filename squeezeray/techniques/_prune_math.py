"""Mask selection for pruning (pure functions on tensors).

Every pruner turns its per-weight saliency scores into a keep-mask with
:func:`mask_from_scores`; they differ only in the scores (magnitude: ``|W|``,
Wanda: ``|W| * ||X_j||``). SparseGPT scores inside its own solver and ranks with :func:`lowest_mask` too.

Comparison groups, by pattern (the lowest scores of each group are removed):

* ``unstructured``: each output row on its own, ``round(sparsity * in)`` weights per
  row. This is Wanda's per-output comparison group; magnitude uses it too, so every
  row keeps the same number of weights (no row is emptied by a global threshold).
* ``nm``: each run of ``m`` consecutive inputs of each row keeps its ``n`` highest.
* ``rows``: whole output rows, ranked by their summed score;
  ``round(sparsity * out)`` rows are removed.
* ``heads``: groups of ``head_dim`` consecutive output rows (attention heads), ranked
  by their summed score; ``round(sparsity * n_heads)`` heads are removed.

Ties are broken by position (the earlier index is removed first), so masks are
deterministic.
"""

from __future__ import annotations

import torch

from squeezeray._errors import InfeasibleStepError
from squeezeray.techniques._configs import PruneConfig
from squeezeray.techniques._formats import SparsityPattern


def removed_count(sparsity: float, total: int) -> int:
    """How many of ``total`` items a ``sparsity`` fraction removes (rounded, half to even).

    Args:
        sparsity: Fraction in [0, 1).
        total: Size of the comparison group.
    """
    return min(total, max(0, int(round(float(sparsity) * total))))


SORT_WIDTH = 64
"""Groups at most this wide are ranked by a stable sort; wider ones by their ``k``-th value (:func:`lowest_mask`)."""


def lowest_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Keep-mask removing the ``k`` lowest entries along the last dim, ties to the earlier index: the first ``k``
    of a stable ascending sort.

    Groups wider than :data:`SORT_WIDTH` are not sorted: the ``k``-th lowest value is selected, every entry below it
    removed, and of the entries equal to it the earliest that make up ``k`` (the same mask; an 8192 x 3072 layer's
    rows 0.91 -> 0.52 s, one 1M-entry group 0.13 -> 0.03 s on a 2-vCPU EPYC VM). Narrow groups (n:m) sort, which
    is faster there.

    Args:
        scores: (..., g) float, no NaN.
        k: Entries removed per group, 0..g.

    Returns:
        (..., g) bool, True where kept.
    """
    g = scores.shape[-1]
    if k <= 0:
        return torch.ones_like(scores, dtype=torch.bool)
    if k >= g:
        return torch.zeros_like(scores, dtype=torch.bool)
    if g <= SORT_WIDTH:
        mask = torch.ones_like(scores, dtype=torch.bool)  # (..., g)
        order = torch.argsort(scores, dim=-1, stable=True)  # (..., g), ascending
        return mask.scatter_(-1, order[..., :k], False)
    kth = torch.kthvalue(scores, k, dim=-1, keepdim=True).values  # (..., 1) the k-th lowest
    below = scores < kth  # (..., g) fewer than k of them
    ties = scores == kth  # (..., g)
    short = k - below.sum(dim=-1, keepdim=True)  # (..., 1) ties still to remove, at least 1
    return ~(below | (ties & (torch.cumsum(ties, dim=-1) <= short)))


def _check_scores(scores: torch.Tensor) -> None:
    if scores.dim() != 2:
        raise ValueError(f"scores must be a 2-D (out, in) tensor, got shape {tuple(scores.shape)}")
    if not torch.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")


def unstructured_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Per-row mask removing ``round(sparsity * in)`` lowest scores from every row.

    Args:
        scores: (out, in) saliency, higher = more important.
        sparsity: Fraction of each row removed.

    Returns:
        (out, in) bool keep-mask.
    """
    _check_scores(scores)
    return lowest_mask(scores.float(), removed_count(sparsity, scores.shape[1]))


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` highest of every ``m`` consecutive inputs in each row.

    Args:
        scores: (out, in) saliency; ``in`` must be a multiple of ``m``.
        n: Kept per group, 0 < n < m.
        m: Group width.

    Returns:
        (out, in) bool keep-mask with exactly ``n`` True per group.
    """
    _check_scores(scores)
    out_f, in_f = scores.shape
    if not 0 < n < m:
        raise InfeasibleStepError(f"n:m = {n}:{m}: needs 0 < n < m")
    if in_f % m:
        raise InfeasibleStepError(f"m={m} does not divide the input width {in_f}")
    groups = scores.float().reshape(out_f, in_f // m, m)  # (out, in/m, m)
    return lowest_mask(groups, m - n).reshape(out_f, in_f)


def rows_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Remove the ``round(sparsity * out)`` output rows of lowest summed score.

    Args:
        scores: (out, in) saliency.
        sparsity: Fraction of rows removed.

    Returns:
        (out, in) bool keep-mask; every row is all True or all False.
    """
    _check_scores(scores)
    out_f, in_f = scores.shape
    row_score = scores.double().sum(dim=1)  # (out,)
    keep = lowest_mask(row_score, removed_count(sparsity, out_f))  # (out,)
    return keep.unsqueeze(1).expand(out_f, in_f).clone()


def heads_mask(scores: torch.Tensor, sparsity: float, head_dim: int) -> torch.Tensor:
    """Remove the ``round(sparsity * n_heads)`` heads of lowest summed score.

    Args:
        scores: (out, in) saliency; ``out`` must be a multiple of ``head_dim``.
        sparsity: Fraction of heads removed.
        head_dim: Consecutive output rows per head.

    Returns:
        (out, in) bool keep-mask; every head's rows are all True or all False.
    """
    _check_scores(scores)
    out_f, in_f = scores.shape
    if head_dim < 1 or out_f % head_dim:
        raise InfeasibleStepError(f"head_dim={head_dim} does not divide the output width {out_f}")
    n_heads = out_f // head_dim
    head_score = scores.double().reshape(n_heads, head_dim * in_f).sum(dim=1)  # (n_heads,)
    keep = lowest_mask(head_score, removed_count(sparsity, n_heads))  # (n_heads,)
    return keep.repeat_interleave(head_dim).unsqueeze(1).expand(out_f, in_f).clone()


def mask_from_scores(scores: torch.Tensor, config: PruneConfig) -> torch.Tensor:
    """The keep-mask a pruning config selects from saliency scores.

    Args:
        scores: (out, in) saliency, higher = more important (non-negative in practice).
        config: Pattern, sparsity, n/m and head_dim.

    Returns:
        (out, in) bool, True where the weight is kept.

    Raises:
        ValueError: If the shape does not fit the pattern (m or head_dim not dividing).
    """
    pattern = SparsityPattern(config.pattern)
    sparsity = float(config.sparsity or 0.0)
    if pattern is SparsityPattern.UNSTRUCTURED:
        return unstructured_mask(scores, sparsity)
    if pattern is SparsityPattern.NM:
        return nm_mask(scores, config.n, config.m)
    if pattern is SparsityPattern.ROWS:
        return rows_mask(scores, sparsity)
    return heads_mask(scores, sparsity, config.head_dim)


def nm_metadata_ok(mask: torch.Tensor, n: int, m: int, *, exact: bool = False) -> bool:
    """Whether a keep-mask can be stored in n:m form.

    Args:
        mask: (out, in) bool keep-mask.
        n: Kept per group.
        m: Group width.
        exact: Require exactly ``n`` kept per group (what the pruners produce);
            by default at most ``n`` (a group with fewer is stored with padding).

    Returns:
        True when ``in`` is a multiple of ``m`` and every group of ``m`` consecutive
        inputs in each row keeps ``n`` (or at most ``n``) weights.
    """
    if mask.dim() != 2 or m < 1 or mask.shape[1] % m:
        return False
    kept = mask.reshape(mask.shape[0], -1, m).sum(dim=-1)  # (out, in/m)
    return bool((kept == n).all()) if exact else bool((kept <= n).all())


def sparsity_state_args(config: PruneConfig) -> dict[str, int]:
    """The n / m / head_dim fields a :class:`SparsityState` records for ``config``'s pattern."""
    pattern = SparsityPattern(config.pattern)
    return {
        "n": config.n if pattern is SparsityPattern.NM else 0,
        "m": config.m if pattern is SparsityPattern.NM else 0,
        "head_dim": config.head_dim if pattern is SparsityPattern.HEADS else 0,
    }
