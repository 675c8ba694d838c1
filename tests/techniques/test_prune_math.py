"""Mask selection for every sparsity pattern (squeezeray.techniques._prune_math)."""

from __future__ import annotations

import pytest
import torch

from squeezeray.techniques import MagnitudeConfig
from squeezeray.techniques import SparsityPattern
from squeezeray.techniques._prune_math import SORT_WIDTH
from squeezeray.techniques._prune_math import heads_mask
from squeezeray.techniques._prune_math import lowest_mask
from squeezeray.techniques._prune_math import mask_from_scores
from squeezeray.techniques._prune_math import nm_mask
from squeezeray.techniques._prune_math import nm_metadata_ok
from squeezeray.techniques._prune_math import removed_count
from squeezeray.techniques._prune_math import rows_mask
from squeezeray.techniques._prune_math import sparsity_state_args


def _scores(out_f: int, in_f: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(out_f, in_f, generator=g)  # (out, in), distinct values


@pytest.mark.parametrize(("sparsity", "in_f"), [(0.5, 16), (0.3, 10), (0.25, 12), (0.0, 8), (0.9, 20)])
def test_unstructured_removes_exact_count_per_row(sparsity: float, in_f: int) -> None:
    scores = _scores(6, in_f)
    mask = mask_from_scores(scores, MagnitudeConfig(sparsity=sparsity))
    assert mask.dtype == torch.bool and mask.shape == scores.shape
    k = round(sparsity * in_f)
    assert (mask.sum(dim=1) == in_f - k).all()
    # The removed ones are the row's k lowest scores.
    for row in range(scores.shape[0]):
        removed = scores[row][~mask[row]]
        kept = scores[row][mask[row]]
        if k and kept.numel():
            assert removed.max() < kept.min()


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8), (1, 4), (3, 4)])
def test_nm_keeps_n_highest_of_every_m(n: int, m: int) -> None:
    scores = _scores(5, 4 * m, seed=n + m)
    mask = mask_from_scores(scores, MagnitudeConfig(sparsity=None, pattern=SparsityPattern.NM, n=n, m=m))
    groups = mask.reshape(5, -1, m)  # (out, in/m, m)
    assert (groups.sum(dim=-1) == n).all()
    assert nm_metadata_ok(mask, n, m, exact=True)
    s = scores.reshape(5, -1, m)
    kept_min = torch.where(groups, s, torch.inf).amin(dim=-1)
    removed_max = torch.where(~groups, s, -torch.inf).amax(dim=-1)
    assert (removed_max < kept_min).all()


def test_nm_rejects_width_not_divisible() -> None:
    with pytest.raises(ValueError, match="does not divide"):
        nm_mask(_scores(2, 6), 2, 4)
    with pytest.raises(ValueError, match="0 < n < m"):
        nm_mask(_scores(2, 8), 4, 4)


def test_nm_metadata_ok() -> None:
    mask = torch.tensor([[1, 1, 0, 0, 0, 1, 0, 1], [1, 0, 0, 0, 0, 0, 1, 1]], dtype=torch.bool)
    assert nm_metadata_ok(mask, 2, 4)  # at most 2 of every 4
    assert not nm_metadata_ok(mask, 2, 4, exact=True)  # one group keeps only 1
    assert not nm_metadata_ok(mask, 1, 4)
    assert not nm_metadata_ok(mask, 2, 3)  # 8 is not a multiple of 3
    assert not nm_metadata_ok(torch.ones(8, dtype=torch.bool), 2, 4)  # not 2-D


@pytest.mark.parametrize(("sparsity", "out_f"), [(0.25, 8), (0.5, 6), (0.0, 4)])
def test_rows_removes_whole_lowest_rows(sparsity: float, out_f: int) -> None:
    scores = _scores(out_f, 5, seed=3)
    scores[1] *= 0.01  # clearly the weakest row
    mask = mask_from_scores(scores, MagnitudeConfig(sparsity=sparsity, pattern=SparsityPattern.ROWS))
    row_kept = mask.any(dim=1)
    assert (mask.all(dim=1) == row_kept).all()  # whole rows only
    k = round(sparsity * out_f)
    assert int((~row_kept).sum()) == k
    if k:
        assert not row_kept[1]
        sums = scores.sum(dim=1)
        assert sums[~row_kept].max() < sums[row_kept].min()


@pytest.mark.parametrize(("sparsity", "n_heads"), [(0.5, 4), (0.25, 4), (0.34, 3)])
def test_heads_removes_whole_lowest_heads(sparsity: float, n_heads: int) -> None:
    head_dim = 3
    scores = _scores(n_heads * head_dim, 4, seed=5)
    scores[head_dim : 2 * head_dim] *= 0.01  # head 1 is the weakest
    cfg = MagnitudeConfig(sparsity=sparsity, pattern=SparsityPattern.HEADS, head_dim=head_dim)
    mask = mask_from_scores(scores, cfg)
    per_head = mask.reshape(n_heads, head_dim * 4)
    head_kept = per_head.any(dim=1)
    assert (per_head.all(dim=1) == head_kept).all()  # whole heads only
    k = round(sparsity * n_heads)
    assert int((~head_kept).sum()) == k
    assert not head_kept[1]
    sums = scores.reshape(n_heads, -1).sum(dim=1)
    assert sums[~head_kept].max() < sums[head_kept].min()


def test_heads_rejects_non_dividing_head_dim() -> None:
    with pytest.raises(ValueError, match="head_dim"):
        heads_mask(_scores(10, 4), 0.5, 4)


def test_ties_are_deterministic_and_positional() -> None:
    scores = torch.ones(2, 8)
    mask = mask_from_scores(scores, MagnitudeConfig(sparsity=0.5))
    assert mask[:, :4].logical_not().all() and mask[:, 4:].all()
    assert torch.equal(rows_mask(torch.ones(4, 2), 0.5)[:, 0], torch.tensor([False, False, True, True]))


def test_bad_scores_raise() -> None:
    with pytest.raises(ValueError, match="2-D"):
        mask_from_scores(torch.ones(8), MagnitudeConfig())
    bad = torch.ones(2, 4)
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        mask_from_scores(bad, MagnitudeConfig())


def test_removed_count_and_state_args() -> None:
    assert removed_count(0.5, 7) == 4  # round(3.5): half to even
    assert removed_count(0.5, 5) == 2  # round(2.5): half to even
    assert removed_count(0.3, 10) == 3
    assert removed_count(0.0, 10) == 0
    nm = MagnitudeConfig(sparsity=None, pattern=SparsityPattern.NM, n=1, m=4)
    assert sparsity_state_args(nm) == {"n": 1, "m": 4, "head_dim": 0}
    heads = MagnitudeConfig(pattern=SparsityPattern.HEADS, head_dim=8)
    assert sparsity_state_args(heads) == {"n": 0, "m": 0, "head_dim": 8}


def _sorted_lowest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The reference: the first ``k`` of a stable ascending sort removed."""
    mask = torch.ones_like(scores, dtype=torch.bool)
    return mask.scatter_(-1, torch.argsort(scores, dim=-1, stable=True)[..., :k], False)


@pytest.mark.parametrize("width", [4, SORT_WIDTH, SORT_WIDTH + 1, 300])
@pytest.mark.parametrize("levels", [0, 3, 40])  # 0: distinct values; otherwise that many values, tied
def test_lowest_mask_is_a_stable_sorts_first_k(width: int, levels: int) -> None:
    """Wide groups select by the k-th value, narrow ones sort: the same entries either way, ties included."""
    g = torch.Generator().manual_seed(width + levels)
    scores = torch.rand(5, width, generator=g)  # (rows, width)
    if levels:
        scores = (scores * levels).floor()
    for k in (0, 1, width // 3, width // 2, width - 1, width):
        mask = lowest_mask(scores, k)
        assert torch.equal(mask, _sorted_lowest(scores, k)), (width, levels, k)
        assert (mask.sum(dim=-1) == width - k).all()
    flat = scores.reshape(-1)  # one group of every entry, as SparseGPT's block mask ranks them
    assert torch.equal(lowest_mask(flat, 7), _sorted_lowest(flat, 7))
