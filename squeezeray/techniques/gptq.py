"""GPTQ (Frantar et al. 2022, arXiv:2210.17323): column-by-column quantization with
second-order error compensation.

For a layer ``y = x @ W.T`` and calibration Hessian ``H = X^T X / n``, columns of
``W`` are quantized one at a time; the error of each column is spread over the
not-yet-quantized columns so that the mean squared output error ``tr(dW H dW^T)``
stays small. The paper spreads it through the upper Cholesky factor of ``H^-1``; this
solver uses the Hessian's own factor, ``H = C D C^T`` with ``C`` upper unit-triangular
(GPTQ is Babai's nearest-plane algorithm on that basis: Chen et al. 2025,
arXiv:2507.18553): column j's code is the one nearest ``w_j + sum_{k<j} e_k C_kj`` for
the earlier columns' errors ``e = w - q``. Same codes in exact arithmetic (identical in
float64 on the embedded model's layers), one Cholesky factorisation and no inverse: three
decoder blocks of a 3.2B model through the layer cache 42.7 -> 29.2 s on a 2-vCPU EPYC VM
(with two changes made beside it: the Hessian's permutation gives the reversed order the
factorisation wants, and the technique does not ask for a float32 quantized weight). Updates are applied
lazily per block of ``block_size`` columns, and inside a block per sub-block of
:data:`SUB` columns (one matrix product per sub-block instead of a rank-one update of
the whole block per column: the same arithmetic regrouped, 2.2x faster on an
8192 x 3072 layer on a 2-vCPU EPYC VM, the same codes); a column adds its own
sub-block's earlier errors when it is reached (one matrix-vector product instead of a
rank-one update of the sub-block's later columns per column; inputs x outputs, 3072 x 3072
0.46 -> 0.35 s, 1536 x 576 0.074 -> 0.046 s, 8192 x 3072 2.05 -> 1.86 s, the same codes
on random weights). The solver works on the
transposed weight, so each column it visits is a contiguous row (8192 x 3072: 3.5 ->
2.6 s; 3072 x 8192: 12.8 -> 10.0 s with the inverse factor's own speed-up in both).

The factorisation and the solve run in float32, as the reference implementations do, or in float64
(``GPTQConfig.float64_solve``). On the embedded model's layers the two give the same output error to 1e-5
relative (w4g128, w3g128, w2g64 without act-order, w4g128 with the clip search; 0.007-0.02% of codes differ);
float32 takes a 3.2B model's decoder block (seven layers) 20.4 -> 13.6 s on a 2-vCPU EPYC VM.

Group parameters:
    * one group per row, or ``act_order``: the grid is computed up front with
      :func:`minmax_grid` on the (original-order) weight ("static groups"), so the
      stored codes and scales keep the original column order and need no
      permutation index;
    * groups without ``act_order``: classic GPTQ, each group's grid is computed from
      the group's weights given every earlier column's error (the paper's updated
      weights, ``w_G + C_GG^-T (t_G - w_G)`` from the group's targets ``t_G``) when the
      solver reaches its first column.

Either way the result is exactly one :class:`QuantGrid` plus uint8 codes:
``grid.dequantize(codes)`` equals the solver's quantized weight bit for bit.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from squeezeray._errors import InfeasibleStepError
from squeezeray.techniques._base import BaseTechnique
from squeezeray.techniques._clip import clip_search
from squeezeray.techniques._configs import GPTQConfig
from squeezeray.techniques._hessian import damped_unit_cholesky
from squeezeray.techniques._hessian import SUB
from squeezeray.techniques._hessian import given_errors
from squeezeray.techniques._hessian import note_damping
from squeezeray.techniques._formats import QuantFormat
from squeezeray.techniques._formats import QuantGrid
from squeezeray.techniques._formats import minmax_grid
from squeezeray.techniques._gguf import gguf_grid
from squeezeray.techniques._state import LayerState
from squeezeray.techniques._state import LayerStats
from squeezeray.techniques._steps import require_unquantized

_MAX_DAMP_RETRIES = 6


@dataclasses.dataclass(frozen=True)
class GPTQSolution:
    """What the GPTQ solver produced.

    Attributes:
        codes: (out, in) uint8 codes in original column order.
        grid: Integer grid; scales/zeros per (row, group) in original column order.
        qweight: (out, in) float32 quantized weight the solver settled on (zero where
            masked); equals ``grid.dequantize(codes)`` (times the mask) exactly. None when not asked for
            (``with_qweight=False``: the technique keeps codes and grid, and its weight is their dequantization).
        damp: The Hessian damping it solved with (the asked one unless it had to be raised).
    """

    codes: torch.Tensor
    grid: QuantGrid
    qweight: torch.Tensor | None
    damp: float


def _aligned_block_size(block_size: int, group_size: int) -> int:
    """A block size whose blocks never split a group: a multiple of ``group_size``.

    With dynamic groups the grid of a group is read from the group's weights given every earlier column's error
    when its first column is reached, from the block's accumulators: the group must lie inside the block.
    """
    if block_size % group_size == 0:
        return block_size
    return group_size * max(1, block_size // group_size)


@dataclasses.dataclass(frozen=True)
class GPTQFactor:
    """What GPTQ derives from a layer's Hessian alone, the same for every row of the layer.

    Attributes:
        act_order: Whether ``order`` is the act-order one.
        asked_damp: The damping it was asked for.
        damp: The damping the factorisation succeeded with (``asked_damp`` unless it had to be raised).
        dead: (in,) bool, the inputs whose Hessian diagonal is zero (their weights solve to 0).
        order: (in,) int64, the columns in the order the solver visits them.
        unit: (in, in) upper unit-triangular ``C`` with ``C D C^T`` the damped Hessian for a positive diagonal
            ``D``, rows and columns in ``order``, in the dtype the solve runs in (``C = B diag(B)^-1`` for the
            upper ``B`` with ``B B^T`` the Hessian; ``B^-1`` is the inverse factor GPTQ's paper writes its
            updates with).
    """

    act_order: bool
    asked_damp: float
    damp: float
    dead: torch.Tensor
    order: torch.Tensor
    unit: torch.Tensor


def gptq_factor(
    hessian: torch.Tensor, *, act_order: bool, damp: float, device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> GPTQFactor:
    """The Hessian side of a GPTQ solve (:class:`GPTQFactor`): dead inputs get ``H[d, d] = 1``, the columns are
    ordered (by decreasing diagonal with ``act_order``, ties in input order) and the permuted damped Hessian's
    unit factor ``C`` (``H = C D C^T``) is computed in ``dtype`` (the solve's: float32, or float64) on ``device``
    (the Hessian's own by default), two (in, in) matrices alive at a time.
    """
    src = hessian.detach()  # (in, in)
    dev = src.device if device is None else device
    diag = torch.diagonal(src).to(dev, dtype)  # (in,)
    dead = diag == 0  # (in,)
    if act_order:
        order = torch.argsort(diag.masked_fill(dead, 1.0), descending=True, stable=True)  # (in,)
    else:
        order = torch.arange(src.shape[0], device=dev)  # (in,)
    # The factorisation wants the ordered Hessian with its order reversed (J P H P^T J): gathering rows and
    # columns in the reversed order gives it at no extra cost, two (in, in) copies alive at a time (8192
    # inputs: 0.25 GiB each in float32).
    rev = order.flip(0)  # (in,)
    h = torch.index_select(src, 0, rev.to(src.device)).to(dev, dtype)  # (in, in) rows
    h = torch.index_select(h, 1, rev)  # (in, in) and columns
    gone = dead[rev]  # (in,) reversed-order dead inputs
    h[gone, gone] = 1.0
    unit, _, used = damped_unit_cholesky(h, damp, retries=_MAX_DAMP_RETRIES, technique="GPTQ")  # (in, in) C
    del h
    return GPTQFactor(act_order=act_order, asked_damp=damp, damp=used, dead=dead, order=order, unit=unit)


def gptq_solve(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    *,
    bits: int,
    group_size: int | None,
    symmetric: bool,
    act_order: bool = True,
    damp: float = 0.01,
    block_size: int = 128,
    mask: torch.Tensor | None = None,
    grid: QuantGrid | None = None,
    clip: bool = False,
    factor: GPTQFactor | None = None,
    solve_dtype: torch.dtype = torch.float32,
    with_qweight: bool = True,
) -> GPTQSolution:
    """Quantize ``weight`` with GPTQ on an integer min/max grid.

    Columns whose Hessian diagonal is zero (inputs that were always zero) get
    ``H[d, d] = 1`` and weight 0. Where ``mask`` is False the quantized weight is
    exactly zero (its code is the grid's zero point) and the error this causes is
    compensated like any other quantization error.

    Args:
        weight: (out, in) float weight.
        hessian: (in, in) ``X^T X / n`` of the layer's calibration inputs.
        bits: Bits per code.
        group_size: Inputs per group, or None for one group per row.
        symmetric: Symmetric grid (no stored zero points).
        act_order: Process columns by decreasing Hessian diagonal (static groups).
        damp: Diagonal dampening as a fraction of the mean diagonal.
        block_size: Columns per lazy-update block.
        mask: (out, in) bool, True where the weight is kept; None for dense.
        grid: A fixed integer grid to solve on (static groups; e.g. a GGUF block grid) instead of the
            min/max grid; its bits, group size and symmetry must be the ones given. A grid with float
            minimums (GGUF's "_1" types) has no code that decodes to 0, so it takes no ``mask``.
        clip: Static groups: each (row, group)'s range from :func:`~squeezeray.techniques._clip.clip_search`
            on the layer's output error instead of the min/max range (not with ``grid``).
        factor: :func:`gptq_factor` of ``hessian`` with this ``act_order`` and ``damp``, computed once for all
            the row blocks of a tall layer; None computes it here, in ``solve_dtype``.
        solve_dtype: float32 (what the reference implementations solve in), or float64; a given ``factor``'s
            dtype is the solve's.
        with_qweight: Return the solver's quantized weight too (one (in, out) float32 matrix more while
            solving); the technique stores codes and grid and does not ask for it.

    Returns:
        The codes, the grid and the solver's quantized weight.
    """
    out_f, in_f = weight.shape
    gs = in_f if group_size is None else group_size
    if gs > in_f:
        raise InfeasibleStepError(f"group_size={gs} exceeds in_features={in_f}")
    if hessian.shape != (in_f, in_f):
        raise ValueError(f"hessian shape {tuple(hessian.shape)} does not match in_features={in_f}")
    maxq = (1 << bits) - 1
    n_groups = -(-in_f // gs)  # a ragged last group when gs does not divide in

    dev = weight.device
    if factor is None:
        factor = gptq_factor(hessian, act_order=act_order, damp=damp, device=dev, dtype=solve_dtype)
    elif (factor.act_order, factor.asked_damp, factor.unit.shape[0]) != (act_order, damp, in_f):
        raise ValueError(f"factor (act_order={factor.act_order}, damp={factor.asked_damp}, "
                         f"{factor.unit.shape[0]} inputs) does not match act_order={act_order}, damp={damp}, "
                         f"in_features={in_f}")
    dead, perm, unit = factor.dead, factor.order, factor.unit
    dt = unit.dtype  # the solve's dtype: float32, or float64
    w = weight.detach().to(dt)  # (out, in) read, never written: a copy only where it changes
    keep = None if mask is None else mask.to(torch.bool)  # (out, in)
    if keep is not None:
        w = w * keep
    if bool(dead.any()):
        w = w.clone() if keep is None else w
        w[:, dead] = 0.0

    if grid is not None and (grid.fmt, grid.bits, grid.group_size, grid.symmetric) != (QuantFormat.INT, bits, gs, symmetric):
        raise ValueError(f"grid ({grid.fmt.value}, {grid.bits} bits, groups of {grid.group_size}) does not match "
                         f"bits={bits}, group_size={gs}, symmetric={symmetric}")
    mins = None if grid is None else grid.mins  # (out, n_groups) float32, or None
    if mins is not None and keep is not None:
        raise InfeasibleStepError("a grid with float block minimums (GGUF Q4_1/Q5_1) has no code for a pruned "
                                  "weight's exact zero")
    static = group_size is None or act_order or grid is not None
    if clip and (grid is not None or not static):
        raise ValueError("clip needs static groups (act_order or one group per row) and no fixed grid")
    if static:
        if clip:
            ones = torch.ones(in_f, dtype=torch.float32, device=dev)  # (in,) no AWQ scaling
            h = hessian.detach().to(dev, torch.float32, copy=True)  # (in, in)
            h[dead, dead] = 1.0
            grid0 = clip_search(w.float(), ones, h, bits=bits, group_size=gs, symmetric=symmetric, mask=keep)
            del h
        else:
            grid0 = grid if grid is not None else minmax_grid(w.float(), bits=bits, group_size=gs, symmetric=symmetric)
        scales = grid0.scales.clone()  # (out, n_groups) float32
        zeros = grid0.zero_points().clone() if mins is None else None  # (out, n_groups) float32
        bs = block_size
    else:
        scales = torch.zeros(out_f, n_groups, dtype=torch.float32, device=dev)  # (out, n_groups)
        zeros = torch.zeros(out_f, n_groups, dtype=torch.float32, device=dev)  # (out, n_groups)
        bs = _aligned_block_size(block_size, gs)

    # Transposed (input-major): each column GPTQ visits is a contiguous row, every per-column operation reads
    # and writes contiguous memory (1.5-2x faster than column-strided on an 8192 x 3072 layer).
    # (in, out), always a copy (``w`` may be the caller's weight, and a one-row layer's transpose is contiguous):
    # transposing first, then gathering whole rows, takes 0.13 s on an 8192 x 3072 layer where gathering the
    # transposed view's strided rows took 0.22 (2-vCPU EPYC VM).
    wt = w.T.clone(memory_format=torch.contiguous_format)
    del w
    permuted = factor.act_order  # without act-order the columns are visited in their own order: no gathers
    if permuted:
        wt = torch.index_select(wt, 0, perm)  # (in, out) permuted, contiguous: the targets
    orig_t = wt.clone()  # (in, out) the weights themselves, which every error is measured from
    keep_t = None if keep is None else (torch.index_select(keep.T, 0, perm) if permuted else keep.T.contiguous())
    group_of = (perm // gs).tolist()  # permuted column -> group of its original column

    codes_t = torch.empty(in_f, out_f, dtype=torch.uint8, device=dev)  # (in, out) permuted
    # float32: each column's q is float32's own dequantization of its codes (see below), stored without loss.
    q_t = torch.empty(in_f, out_f, dtype=torch.float32, device=dev) if with_qweight else None  # (in, out) permuted

    # The grid transposed, in the solve's dtype (its float32 values exact in either), read by every column (a
    # dynamic group's row is written when the loop reaches it), and each column's target, codes and quantized
    # values computed into three reused buffers: a column's work is a few small operations, and their dispatch
    # and allocations are most of the loop's time on narrow layers.
    s_dt = scales.T.to(dt).contiguous()  # (n_groups, out)
    z_dt = None if zeros is None else zeros.T.to(dt).contiguous()  # (n_groups, out)
    m_dt = None if mins is None else mins.T.to(dt).contiguous()  # (n_groups, out)
    s_rows = s_dt.unbind(0)  # every row a view made once (indexing a tensor per column costs a dispatch)
    z_rows = None if z_dt is None else z_dt.unbind(0)
    m_rows = None if m_dt is None else m_dt.unbind(0)
    code_rows = codes_t.unbind(0)
    xbuf = torch.empty(out_f, dtype=dt, device=dev)  # (out,)
    cbuf = torch.empty(out_f, dtype=dt, device=dev)  # (out,)
    qbuf = torch.empty(out_f, dtype=dt, device=dev)  # (out,)
    sub = SUB if static else math.gcd(SUB, bs, gs)
    # With the damped Hessian ``H = C D C^T`` (C upper unit-triangular, D diagonal) a row's output error is
    # ``e C D C^T e^T`` for its errors ``e = w - q``, and column j's code is the one nearest the target
    # ``t_j = w_j + sum_{k<j} e_k C_kj`` (Babai's nearest plane; GPTQ's updates through the inverse Hessian's
    # factor reach the same targets, ``B^-1`` for ``B = C D^1/2``, and this needs no inverse). Each error reaches
    # the later targets lazily: the rest of its block per sub-block, the rest of the layer per block (one matrix
    # product each); a column adds its own sub-block's earlier errors when it is reached (one matrix-vector
    # product: the loop's per-column work is a few small operations, and their dispatch is most of its time).
    for i1 in range(0, in_f, bs):
        i2 = min(i1 + bs, in_f)
        w1 = wt[i1:i2]  # (b, out) view: the targets, every error before the row's sub-block in
        w0 = orig_t[i1:i2]  # (b, out) the block's weights
        err1 = torch.empty_like(w1)  # (b, out) the block's errors w - q
        unit1 = unit[i1:i2, i1:i2]  # (b, b)
        w1_rows, w0_rows, e_rows = w1.unbind(0), w0.unbind(0), err1.unbind(0)
        for i in range(i2 - i1):
            col = i1 + i
            g = group_of[col]
            j0 = i - i % sub  # the column's sub-block starts here
            if not static and col % gs == 0:
                assert z_dt is not None
                # The group starts a sub-block inside this block (alignment) and every earlier column's error has
                # reached its targets: its weights given those errors (GPTQ's updated weights) are
                # w_G + C_GG^-T (t_G - w_G) for the group's diagonal block C_GG.
                ge = min(i + gs, i2 - i1)
                gw = given_errors(w0[i:ge], w1[i:ge], unit1[i:ge, i:ge])  # (gs, out)
                if keep_t is not None:
                    gw = gw * keep_t[col : col + gs]
                gg = minmax_grid(gw.T.float(), bits=bits, group_size=None, symmetric=symmetric)
                s_dt[g] = gg.scales[:, 0]
                z_dt[g] = gg.zero_points()[:, 0]
            s = s_rows[g]  # (out,)
            if i > j0:  # the target: the sub-block's earlier errors added now
                x = torch.addmv(w1_rows[i], err1[j0:i].T, unit1[j0:i, i], out=xbuf)  # (out,)
            else:
                x = w1_rows[i]  # (out,)
            if z_rows is not None:
                z = z_rows[g]  # (out,)
                c = torch.div(x, s, out=cbuf).round_().add_(z).clamp_(0, maxq)  # (out,) integer codes
                if keep_t is not None:
                    c = torch.where(keep_t[col], c, z)  # the zero point decodes to exactly 0
                # float32 scale times a small integer: in float32, the grid's own dequantization (the same
                # operations); in float64 exact, so q.float() equals it bit for bit.
                q = torch.sub(c, z, out=qbuf).mul_(s)  # (out,) s * (c - z)
            else:
                assert m_rows is not None
                m = m_rows[g]  # (out,) float minimums
                c = torch.sub(x, m, out=cbuf).div_(s).round_().clamp_(0, maxq)  # (out,)
                # The scale (fp16, or fp16 x a K-quant multiplier: at most 17 significant bits) times a small
                # integer is exact in float32; adding the minimum rounds as the grid's dequantization does in
                # float32, and is exact in float64, where q.float() rounds to the same value.
                q = torch.mul(c, s, out=qbuf).add_(m)  # (out,) s * c + m
            code_rows[col].copy_(c)
            if q_t is not None:
                q_t[col] = q
            torch.sub(w0_rows[i], q, out=e_rows[i])  # (out,) the column's error
            if i % sub == sub - 1 and i + 1 < i2 - i1:  # a sub-block's end: its errors reach the block's later rows
                w1[i + 1 :].addmm_(unit1[j0 : i + 1, i + 1 :].T, err1[j0 : i + 1])
        wt[i2:].addmm_(unit[i1:i2, i2:].T, err1)  # (in - i2, out)
    # Views included: their memory goes back before the results are permuted.
    del w1, w0, err1, w1_rows, w0_rows, e_rows, code_rows, x, wt, orig_t

    if not static:  # the loop filled in each group's grid, in the transposed copies (float32 values: exact)
        assert z_dt is not None
        scales, zeros = s_dt.T.float().contiguous(), z_dt.T.float().contiguous()
    inv = torch.argsort(perm) if permuted else perm  # (in,)
    if grid is not None:  # a fixed grid (its scales never change): returned as given, two-level scales and all
        solved = grid
    else:
        solved = QuantGrid(QuantFormat.INT, bits, gs, symmetric, scales, None if symmetric else zeros)
    # Back to (out, in) in the original order, two copies of each alive at a time.
    codes = torch.index_select(codes_t, 0, inv) if permuted else codes_t  # (in, out)
    del codes_t
    codes = codes.T.contiguous()  # (out, in)
    qweight = None
    if q_t is not None:
        qweight = torch.index_select(q_t, 0, inv) if permuted else q_t  # (in, out)
        del q_t
        qweight = qweight.T.contiguous()  # (out, in)
    return GPTQSolution(codes=codes, grid=solved, qweight=qweight, damp=factor.damp)


class GPTQ(BaseTechnique[GPTQConfig]):
    """GPTQ integer weight quantization (needs the calibration Hessian)."""

    name = "gptq"
    config_cls = GPTQConfig
    needs_hessian = True
    rows_independent = True  # every code from its own row (GPTQ: the Hessian is shared, the solve is per row)
    code_version = 12  # 8: inverse factor by one Cholesky + a triangular inversion; 9: input-major loop (rounding);
    # 10: float32 solves unless float64_solve; 11: the Hessian's own factor, no inverse (rounding); 12: a column's
    # own sub-block's errors added to its target when it is reached (rounding)

    def apply(self, state: LayerState, config: GPTQConfig, stats: LayerStats) -> None:
        require_unquantized(state, self.name)
        hessian = stats.require_hessian(self.name)
        damp, dev = float(config.damp), state.weight.device
        dtype = torch.float64 if config.float64_solve else torch.float32
        factor = state.memo.get(  # a tall layer's row blocks and the layers reading one input share it
            (self.name, config.act_order, damp, str(dev), str(dtype)), hessian,
            lambda: gptq_factor(hessian, act_order=config.act_order, damp=damp, device=dev, dtype=dtype),
        )
        sol = gptq_solve(
            state.weight,
            hessian,
            bits=config.bits,
            group_size=config.group_size,
            symmetric=config.symmetric,
            act_order=config.act_order,
            damp=damp,
            block_size=config.block_size,
            mask=state.mask,
            grid=None if config.gguf is None else gguf_grid(state.weight, config.gguf),
            clip=config.clip_search,
            factor=factor,
            with_qweight=False,
        )
        note_damping(state, self.name, damp, sol.damp)
        state.set_quantized(sol.grid, sol.codes)
