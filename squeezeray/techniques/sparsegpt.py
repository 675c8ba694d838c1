"""SparseGPT (Frantar & Alistarh 2023, arXiv:2301.00774): OBS pruning with weight update.

The layer-wise objective is the output error ``tr(dW H dW^T)`` with ``H = X^T X / n``
the calibration Hessian. Columns are processed left to right in blocks of
``block_size``; each column's pruning (and, on a quantized layer, rounding) error is
spread over the columns not yet processed (the OBS update, which the paper writes with
the upper Cholesky factor of ``H^-1``; the solver uses the Hessian's own factor, as
:mod:`squeezeray.techniques.gptq` does, to the same targets), lazily across blocks.

Mask selection:

* ``unstructured``: adaptive per block, as in the paper: at the start of each column
  block the weights of the block with the lowest OBS score ``w^2 / d^2`` (``d`` the
  diagonal of the Cholesky factor of ``H^-1``, ``w`` the weights given every earlier
  error) are removed, over all rows of the block together; the counts per block are
  chosen so the whole layer loses exactly ``round(sparsity * out * in)`` weights. Rows
  therefore keep different counts.
* ``nm``: at the first column of every group of ``m``, each row removes the ``m - n``
  lowest scores of the group (the block size is rounded down to a multiple of ``m``,
  at least ``m``, so groups never straddle blocks).

Composition:

* After quantization (``state.quant`` set) the grid is fixed: after each column's
  update the kept values are rounded back onto that column's grid and the rounding
  error is propagated too (the joint sparsify + quantize of the paper, on the existing
  grid). The solve starts from the original float weight (``state.original``), so
  the quantization error is compensated together with the pruning error; the codes
  of every position are then re-derived from the result, and the mask hides the
  pruned ones.
* After SmoothQuant (``state.act`` set) the solve runs on the stored scale
  ``W_s = W * smooth`` with ``H_s = H / (smooth smooth^T)``, where the grid lives; the
  objective is unchanged (``W_s x_s = W x``).

Dead inputs (zero Hessian diagonal) get a unit diagonal and their weights are set to
zero, as in the reference implementation: they never contributed to the calibration
outputs.

Precision and speed: the Hessian is factorised in float32, as the reference implementation
does, or in float64 (``SparseGPTConfig.float64_solve``); the updates run in float32 either
way. On the embedded model's layers (every third of the 210, 16 x 256 calibration tokens) the
two give the same output error to 5e-4 relative per layer (mean ratio 1.000000 at s50 and at
2:4) and no damping had to be raised. With that, errors reaching a block's later columns per
sub-block as GPTQ's do, and the unstructured block mask selected by the k-th score instead of
a sort (:func:`~squeezeray.techniques._prune_math.lowest_mask`), a 3.2B model's decoder block
(seven layers through the layer cache, 2-vCPU EPYC VM) takes s50 22.7 -> 11.3 s and 2:4
16.5 -> 13.1 s; masks differ from the float64 factor's in rounding only (3e-6 to 6e-5 of
positions on 8192 x 3072 and 3072 x 8192 random layers, output error within 1e-5).
"""

from __future__ import annotations

import dataclasses

import torch

from squeezeray._errors import InfeasibleStepError
from squeezeray.techniques._base import BaseTechnique
from squeezeray.techniques._configs import SparseGPTConfig
from squeezeray.techniques._hessian import damped_unit_cholesky
from squeezeray.techniques._hessian import flip_both_
from squeezeray.techniques._hessian import SUB
from squeezeray.techniques._hessian import given_errors
from squeezeray.techniques._hessian import note_damping
from squeezeray.techniques._formats import QuantGrid
from squeezeray.techniques._formats import SparsityPattern
from squeezeray.techniques._prune_math import lowest_mask
from squeezeray.techniques._prune_math import removed_count
from squeezeray.techniques._state import LayerState
from squeezeray.techniques._state import LayerStats
from squeezeray.techniques._steps import require_unpruned
from squeezeray.techniques.magnitude import commit_mask

_DAMP_RETRIES = (1.0, 10.0, 100.0)  # damping factors tried, x10 apart


@dataclasses.dataclass(frozen=True)
class SparseGPTFactor:
    """What SparseGPT derives from a layer's Hessian alone, the same for every layer reading that input.

    Attributes:
        unit: (in, in) float32 upper unit-triangular ``C`` with ``H + damp = C diag(b)^2 C^T``.
        diag: (in,) float32 ``b``, the diagonal of ``B = C diag(b)`` (``H + damp = B B^T``).
        dead: (in,) bool, the inputs whose Hessian diagonal was zero.
        asked_damp: The damping fraction it was asked for.
        damp: The damping fraction the factorisation succeeded with (``asked_damp`` unless it had to be raised).
    """

    unit: torch.Tensor
    diag: torch.Tensor
    dead: torch.Tensor
    asked_damp: float
    damp: float


def hessian_unit_factor(hessian: torch.Tensor, damp: float, *, dtype: torch.dtype = torch.float32) -> SparseGPTFactor:
    """The damped Hessian's own factor, ``H + damp = C diag(b)^2 C^T`` (``C`` upper unit-triangular), the one
    the solver works with: ``diag(b)^-1 C^-1`` is the upper Cholesky factor of the damped inverse that the paper
    writes its updates with, and no inverse is computed. Factorised in ``dtype`` (float32, as the reference
    implementation does, or float64; the damping added as a fraction of the mean diagonal, retried x10 and x100 if
    the damped matrix is not positive definite), returned in float32.
    """
    h = hessian.to(dtype, copy=True)  # (in, in)
    dead = torch.diagonal(h) == 0  # (in,) given a unit diagonal
    h[dead, dead] = 1.0
    flip_both_(h)  # J H J: the factorisation's order
    unit, diag, used = damped_unit_cholesky(h, damp, retries=len(_DAMP_RETRIES), technique="SparseGPT")  # C, b
    del h
    return SparseGPTFactor(unit=unit.float(), diag=diag.float(), dead=dead, asked_damp=damp, damp=used)


def _column_grid(block_grid: QuantGrid, i: int) -> QuantGrid:
    """Column ``i`` of a per-column grid slice (group_size 1, scales (out, count)), as (out, 1)."""
    zeros = None if block_grid.zeros is None else block_grid.zeros[:, i : i + 1]
    return dataclasses.replace(block_grid, scales=block_grid.scales[:, i : i + 1], zeros=zeros)


def sparsegpt_solve(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    *,
    sparsity: float,
    n: int = 0,
    m: int = 0,
    block_size: int = 128,
    damp: float = 0.01,
    grid: QuantGrid | None = None,
    factor: SparseGPTFactor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune (and optionally keep on a quantization grid) one weight matrix with OBS updates.

    Args:
        weight: (out, in) float weight to approximate.
        hessian: (in, in) ``X^T X / n`` of the layer's input.
        sparsity: Unstructured fraction removed (ignored when ``m > 0``).
        n: Kept per group of ``m`` for n:m sparsity.
        m: Group width for n:m sparsity; 0 selects unstructured.
        block_size: Columns per block.
        damp: Hessian dampening, as a fraction of its mean diagonal.
        grid: A fixed (out, in) quantization grid the kept weights must lie on, or None.
        factor: :func:`hessian_unit_factor` of ``hessian`` with this ``damp`` (shared by the layers reading one
            input); None computes it here, in float32. Its ``damp`` is the damping the solve used.

    Returns:
        ``(new_weight, mask)``: (out, in) float32 weight, zero where pruned and (with a
        grid) on the grid where kept; (out, in) bool keep-mask.
    """
    out_f, in_f = weight.shape
    if hessian.shape != (in_f, in_f):
        raise ValueError(f"hessian has shape {tuple(hessian.shape)}, expected ({in_f}, {in_f})")
    if m:
        if not 0 < n < m or in_f % m:
            raise InfeasibleStepError(f"n:m = {n}:{m} does not fit the input width {in_f}")
        block_size = max(m, (block_size // m) * m)
    if factor is None:
        factor = hessian_unit_factor(hessian.to(weight.device), damp)
    elif (factor.asked_damp, factor.unit.shape[0]) != (damp, in_f):
        raise ValueError(f"factor (damp={factor.asked_damp}, {factor.unit.shape[0]} inputs) does not match "
                         f"damp={damp}, in_features={in_f}")
    unit, bdiag, dead = factor.unit, factor.diag, factor.dead  # (in, in), (in,), (in,)
    # Transposed (input-major): each column visited is a contiguous row. Always a copy (a one-row layer's
    # transpose is contiguous: it would alias the caller's weight).
    wt = weight.detach().T.to(torch.float32, memory_format=torch.contiguous_format, copy=True)  # (in, out) targets
    wt[dead] = 0.0
    orig_t = wt.clone()  # (in, out) the weights themselves, which every error is measured from
    keep_t = torch.ones(in_f, out_f, dtype=torch.bool, device=wt.device)  # (in, out)
    total_removed = removed_count(sparsity, out_f * in_f)

    # As GPTQ (:mod:`squeezeray.techniques.gptq`): column j's value is chosen for the target
    # ``t_j = w_j + sum_{k<j} e_k C_kj`` (``e = w - q``), and the paper's updated weights of columns G, given every
    # error before them, are ``w_G + C_GG^-T (t_G - w_G)``: what the OBS scores ``w^2 / d^2`` are computed on
    # (``d = 1 / b``, the inverse factor's diagonal). Errors reach the later targets lazily, as GPTQ's do: the
    # rest of the block per sub-block of :data:`SUB` columns, the rest of the layer per block (one matrix product
    # each); a column adds its own sub-block's earlier errors when it is reached (one matrix-vector product), and
    # an n:m group's scores add them to the group's targets (one product of m rows).
    xbuf = torch.empty(out_f, dtype=wt.dtype, device=wt.device)  # (out,)
    qbuf = torch.empty(out_f, dtype=wt.dtype, device=wt.device)  # (out,)
    for i1 in range(0, in_f, block_size):
        i2 = min(i1 + block_size, in_f)
        count = i2 - i1
        w1 = wt[i1:i2]  # (count, out) view: the targets, every error before the row's sub-block in; each row
        # becomes the column's result once it is solved
        w0 = orig_t[i1:i2]  # (count, out)
        err1 = torch.empty_like(w1)  # (count, out) the block's errors w - q
        unit1 = unit[i1:i2, i1:i2]  # (count, count)
        b2 = bdiag[i1:i2].pow(2)  # (count,) 1 / d^2
        keep1 = keep_t[i1:i2]  # (count, out) view
        if not m:
            # Adaptive block mask: remove the block's share of the layer's count (scores ranked in (out, count)
            # order, so ties break as they always did); every earlier block's errors are in the targets.
            k = round(total_removed * i2 / in_f) - round(total_removed * i1 / in_f)
            if k > 0:
                score = (given_errors(w0, w1, unit1).pow(2) * b2.unsqueeze(1)).T.reshape(-1)  # (out*count,)
                keep1.copy_(lowest_mask(score, k).view(out_f, count).T)
        # Per-column scales / zero points of this block: (out, count) each.
        block_grid = None if grid is None else grid.columns(i1, i2, in_f)
        w1_rows, w0_rows, e_rows, keep_rows = w1.unbind(0), w0.unbind(0), err1.unbind(0), keep1.unbind(0)

        for i in range(count):
            j0 = i - i % SUB  # the column's sub-block starts here
            if m and i % m == 0:
                g = slice(i, i + m)
                t = w1[g] if i == j0 else torch.addmm(w1[g], unit1[j0:i, g].T, err1[j0:i])  # (m, out) targets
                # (out, m), contiguous: sorting a strided view's rows took 1.1 ms where this takes 0.6 (8192 rows)
                score = (given_errors(w0[g], t, unit1[g, g]).pow(2) * b2[g].unsqueeze(1)).T.contiguous()
                keep1[i : i + m].copy_(lowest_mask(score, m - n).T)
            if i > j0:  # the target: the sub-block's earlier errors added now
                x = torch.addmv(w1_rows[i], err1[j0:i].T, unit1[j0:i, i], out=xbuf)  # (out,)
            else:
                x = w1_rows[i]  # (out,)
            q = torch.mul(x, keep_rows[i], out=qbuf)  # (out,)
            if block_grid is not None:
                # Back onto the fixed grid; the rounding error is propagated with the rest.
                q = _column_grid(block_grid, i).fake_quantize(q.unsqueeze(1)).squeeze(1).mul_(keep_rows[i])
            torch.sub(w0_rows[i], q, out=e_rows[i])  # (out,) the column's error
            w1_rows[i].copy_(q)  # the target is read no more: the row holds the result
            if i % SUB == SUB - 1 and i + 1 < count:  # a sub-block's end: its errors reach the block's later rows
                w1[i + 1 :].addmm_(unit1[j0 : i + 1, i + 1 :].T, err1[j0 : i + 1])
        wt[i2:].addmm_(unit[i1:i2, i2:].T, err1)  # (in - i2, out)
    del w1, w0, err1, w1_rows, w0_rows, e_rows, keep_rows, orig_t
    wt.mul_(keep_t)
    out = wt.T.contiguous()  # (out, in)
    del wt
    return out, keep_t.T.contiguous()


class SparseGPT(BaseTechnique[SparseGPTConfig]):
    """OBS pruning with weight reconstruction; keeps a quantized layer on its grid."""

    name = "sparsegpt"
    code_version = 9  # 6: inverse factor by one Cholesky + a triangular inversion; 7: input-major loop (rounding);
    # 8: the Hessian's own factor, no inverse (rounding); 9: float32 factor unless float64_solve, a column adds its
    # sub-block's errors when reached (rounding)
    config_cls = SparseGPTConfig
    needs_hessian = True

    def apply(self, state: LayerState, config: SparseGPTConfig, stats: LayerStats) -> None:
        require_unpruned(state, self.name)
        pattern = SparsityPattern(config.pattern)
        if pattern not in (SparsityPattern.UNSTRUCTURED, SparsityPattern.NM):
            raise InfeasibleStepError(f"{state.name}: sparsegpt supports unstructured and nm only, got {pattern.value}")
        hessian = stats.require_hessian(self.name)  # (in, in)
        # The target is the original layer; with a fixed grid the quantization error is
        # compensated jointly with the pruning error.
        target = state.original if state.quant is not None else state.weight  # (out, in)
        if state.act is not None:
            smooth = state.act.smooth.float()  # (in,)
            target = target * smooth.unsqueeze(0)  # stored scale
            hessian = hessian / (smooth.unsqueeze(1) * smooth.unsqueeze(0))
        nm = pattern is SparsityPattern.NM
        damp, dev = float(config.damp), target.device
        dtype = torch.float64 if config.float64_solve else torch.float32
        factor = state.memo.get(  # layers reading one input share it (a smoothed Hessian is a new tensor each time)
            (self.name, damp, str(dev), dtype), hessian,
            lambda: hessian_unit_factor(hessian.to(dev), damp, dtype=dtype))
        new_w, mask = sparsegpt_solve(
            target,
            hessian,
            sparsity=float(config.sparsity or 0.0),
            n=config.n if nm else 0,
            m=config.m if nm else 0,
            block_size=config.block_size,
            damp=damp,
            grid=None if state.quant is None else state.quant.grid,
            factor=factor,
        )
        note_damping(state, self.name, damp, factor.damp)
        if state.quant is not None:
            state.quant.codes = state.quant.grid.quantize(new_w)
        else:
            state.weight = new_w if state.act is None else new_w / state.act.smooth.float().unsqueeze(0)
        commit_mask(state, config, mask)
