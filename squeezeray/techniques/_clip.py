"""Output error of a weight change and the per-(row, group) clipping search that lowers it.

``tr(dW H dW^T)`` with ``H = X^T X / n`` is the mean squared output error of a linear layer whose
weight moves by ``dW``. The clipping search shrinks each (row, group) range of an integer grid to
the ratio that minimises that group's own error: a min/max range spends levels on the few largest
weights, a narrower one rounds the many small ones better. AWQ searches it on its scaled weight,
GPTQ (``clip_search``) on the weight before solving.
"""

from __future__ import annotations

import dataclasses

import torch

from squeezeray.techniques._formats import QuantGrid
from squeezeray.techniques._formats import minmax_grid

CLIP_RATIOS = tuple(1.0 - 0.05 * k for k in range(11))  # 1.0, 0.95, ..., 0.5


def output_error(dw: torch.Tensor, hessian: torch.Tensor) -> torch.Tensor:
    """Mean squared output error ``tr(dW H dW^T)`` per output row.

    Args:
        dw: (out, in) weight change.
        hessian: (in, in) ``X^T X / n``.

    Returns:
        (out,) error of each row; their sum is the layer's error.
    """
    return ((dw @ hessian) * dw).sum(dim=1)


def group_output_error(dw: torch.Tensor, hessian: torch.Tensor, group_size: int) -> torch.Tensor:
    """Output error of each (row, group) partial sum, ``dw_g H_gg dw_g^T``.

    Cross-group terms of ``H`` are ignored (AWQ's per-group clipping objective).

    Args:
        dw: (out, in) weight change.
        hessian: (in, in).
        group_size: Inputs per group (a shorter last group is allowed).

    Returns:
        (out, n_groups) error per (row, group).
    """
    out_f, in_f = dw.shape
    pad = (-in_f) % group_size  # ragged last group: zero padding adds no error
    if pad:
        dw = torch.nn.functional.pad(dw, (0, pad))
    return _group_errors(dw.reshape(out_f, -1, group_size), diagonal_blocks(hessian, group_size))


def diagonal_blocks(hessian: torch.Tensor, group_size: int) -> torch.Tensor:
    """(n_groups, group_size, group_size) the Hessian's diagonal blocks ``H_gg``, a ragged last one zero-padded."""
    pad = (-hessian.shape[0]) % group_size
    if pad:
        hessian = torch.nn.functional.pad(hessian, (0, pad, 0, pad))
    n_groups = hessian.shape[0] // group_size
    blocks = hessian.reshape(n_groups, group_size, n_groups, group_size)  # (G, gs, G, gs)
    return blocks.diagonal(dim1=0, dim2=2).permute(2, 0, 1)  # (G, gs, gs)


def _group_errors(d: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """(out, G) ``d_g H_gg d_g^T`` of a weight change in groups, d (out, G, gs), blocks (G, gs, gs)."""
    hd = torch.einsum("rgi,gij->rgj", d, blocks)  # (out, G, gs)
    return (hd * d).sum(dim=2)  # (out, G)


def effective_weight(grid: QuantGrid, ws: torch.Tensor, smooth: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """(out, in) effective weight ``Q(W * s) / s`` (times the mask)."""
    w_eff = grid.fake_quantize(ws) / smooth  # (out, in)
    return w_eff if keep is None else w_eff * keep


def clip_search(
    weight: torch.Tensor,
    smooth: torch.Tensor,
    hessian: torch.Tensor,
    *,
    bits: int,
    group_size: int | None,
    symmetric: bool,
    ratios: tuple[float, ...] = CLIP_RATIOS,
    mask: torch.Tensor | None = None,
) -> QuantGrid:
    """Per-(row, group) clipping ratio of the scaled weight's grid.

    Each (row, group) takes the ratio minimising its own output error
    ``dw_g H_gg dw_g^T``; since that ignores cross-group terms, a row keeps the
    unclipped grid if that gives it a lower full output error.

    Args:
        weight: (out, in) weight to approximate.
        smooth: (in,) AWQ scale; the grid is of ``weight * smooth``.
        hessian: (in, in).
        bits, group_size, symmetric: The integer grid.
        ratios: Clipping ratios tried; 1.0 should be among them.
        mask: (out, in) bool kept weights, or None.

    Returns:
        Grid of ``weight * smooth`` with the chosen clipped scales / zero points.
    """
    out_f, in_f = weight.shape
    gs = in_f if group_size is None else group_size
    ws = weight * smooth  # (out, in)
    grids = [minmax_grid(ws, bits=bits, group_size=gs, symmetric=symmetric, clip=r) for r in ratios]
    # Every ratio's (row, group) errors on the weights in groups, padded once (a ragged last group's padding
    # rounds to 0 and adds no error): the same values as group_output_error of effective_weight, without
    # padding and regrouping the weight, the codes and the Hessian again for each ratio (the same grids bit for
    # bit; 14 of the embedded model's layers at three grids, median 2.1 -> 1.7 s on a 2-vCPU EPYC VM).
    layout = grids[0]
    ws_g, w_g = layout.grouped(ws.float()), layout.grouped(weight.float())  # (out, G, gs)
    smooth_g = layout.grouped(smooth.unsqueeze(0), fill=1.0)  # (1, G, gs)
    keep_g = None if mask is None else layout.grouped(mask)  # (out, G, gs)
    blocks = diagonal_blocks(hessian, gs)  # (G, gs, gs)
    errs = []
    for g in grids:
        eff = g.fake_quantize_grouped(ws_g) / smooth_g  # (out, G, gs)
        errs.append(_group_errors((eff if keep_g is None else eff * keep_g) - w_g, blocks))
    errs = torch.stack(errs)  # (R, out, G)
    best = errs.argmin(dim=0)  # (out, G)
    scales = torch.stack([g.scales for g in grids])  # (R, out, G)
    zeros = torch.stack([g.zero_points() for g in grids])  # (R, out, G)
    pick_s = scales.gather(0, best.unsqueeze(0)).squeeze(0)  # (out, G)
    pick_z = zeros.gather(0, best.unsqueeze(0)).squeeze(0)  # (out, G)
    clipped = dataclasses.replace(grids[0], scales=pick_s, zeros=None if symmetric else pick_z)

    base = minmax_grid(ws, bits=bits, group_size=gs, symmetric=symmetric)
    err_base = output_error(effective_weight(base, ws, smooth, mask) - weight, hessian)  # (out,)
    err_clip = output_error(effective_weight(clipped, ws, smooth, mask) - weight, hessian)  # (out,)
    use_clip = (err_clip < err_base).unsqueeze(1)  # (out, 1)
    final_s = torch.where(use_clip, clipped.scales, base.scales)  # (out, G)
    final_z = None if symmetric else torch.where(use_clip, clipped.zero_points(), base.zero_points())
    return dataclasses.replace(base, scales=final_s, zeros=final_z)
