"""GGUF's K-quant grids and block layouts (pure math on tensors; the types are in :mod:`._gguf`).

A K-quant row is split into super-blocks of 256 inputs, each into groups of 16 or 32 with a scale of their own
that is itself quantized: an integer multiplier ``sc`` of 8, 6 or 4 bits times the super-block's fp16 ``d``
(:class:`~squeezeray.techniques._formats.SuperScales`). Symmetric types (Q6_K, Q3_K) decode
``w = d * sc * (q - 2**(bits-1))`` with signed multipliers; the others (Q5_K, Q4_K, Q2_K) add a group minimum
``-(dmin * mq)``, ``w = d * sc * q - dmin * mq``, with unsigned multipliers.

Grids follow the idea of llama.cpp's reference quantizers (``ggml-quants.c``), not their search: each group's
ideal scale (and minimum, never above 0) from its range, then the super-block's ``d`` (``dmin``) maps the
largest of them onto the multiplier range, rounded to fp16 first, and the multipliers round to that. A
multiplier that rounds to 0 becomes 1, so every group has a non-zero scale (its weights are small enough to
fit). Minimums are fixed before scales, so each scale spans from the stored minimum to the group's maximum.
"""

from __future__ import annotations

import numpy as np
import torch

from squeezeray.techniques._formats import QuantFormat
from squeezeray.techniques._formats import QuantGrid
from squeezeray.techniques._formats import SuperScales

SUPER = 256  # inputs per K-quant super-block (QK_K)
FP16_MIN_NORMAL = 2.0**-14


def fp16_scale(t: torch.Tensor) -> torch.Tensor:
    """Scales rounded to fp16 (float32 holding them); one that rounds to 0 becomes fp16's smallest normal, so
    every block's codes decode to (nearly) 0 and the file holds that scale exactly."""
    t = t.to(torch.float16).float()
    return torch.where(t == 0, torch.full_like(t, FP16_MIN_NORMAL), t)


def signed_peak(t: torch.Tensor, dim: int) -> torch.Tensor:
    """The value of largest magnitude along ``dim``, with its sign."""
    at = t.abs().argmax(dim=dim, keepdim=True)
    return torch.gather(t, dim, at).squeeze(dim)


def k_grid(w: torch.Tensor, *, bits: int, group: int, scale_bits: int, has_min: bool) -> QuantGrid:
    """The K-quant grid of a (out, in) weight, ``in`` a multiple of 256."""
    out_f, in_f = w.shape
    n_sup, per = in_f // SUPER, SUPER // group
    g = w.detach().float().reshape(out_f, n_sup, per, group)
    maxq = (1 << bits) - 1
    if not has_min:
        half = 1 << (bits - 1)
        lim = 1 << (scale_bits - 1)
        ideal = signed_peak(g, 3) / -half  # (out, n_sup, per): the peak maps to code 0 (q = -half)
        d = fp16_scale(signed_peak(ideal, 2) / -lim)  # (out, n_sup)
        sc = torch.clamp(torch.round(ideal / d.unsqueeze(-1)), -lim, lim - 1)
        sc = torch.where(sc == 0, torch.ones_like(sc), sc)
        sb = SuperScales(SUPER, scale_bits, d, sc.reshape(out_f, -1).long())
        return QuantGrid(QuantFormat.INT, bits, group, True, sb.scales(), None, superblock=sb)
    mlim = (1 << scale_bits) - 1
    neg = -g.amin(dim=3).clamp(max=0)  # (out, n_sup, per) >= 0
    dmin = fp16_scale(neg.amax(dim=2) / mlim)  # (out, n_sup)
    mq = torch.clamp(torch.round(neg / dmin.unsqueeze(-1)), 0, mlim)
    lo = -(dmin.unsqueeze(-1) * mq)  # the stored minimum
    span = (g.amax(dim=3) - lo).clamp(min=0) / maxq
    d = fp16_scale(span.amax(dim=2) / mlim)
    sc = torch.clamp(torch.round(span / d.unsqueeze(-1)), 0, mlim)
    sc = torch.where(sc == 0, torch.ones_like(sc), sc)
    sb = SuperScales(SUPER, scale_bits, d, sc.reshape(out_f, -1).long(), dmin, mq.reshape(out_f, -1).long())
    return QuantGrid(QuantFormat.INT, bits, group, False, sb.scales(), None, mins=sb.mins(), superblock=sb)


# ------------------------------------------------------------------ block layouts (gguf.quants reads them)
def _f16_bytes(t: torch.Tensor, n: int) -> np.ndarray:
    return t.reshape(n, 1).numpy().astype(np.float16).view(np.uint8)  # (n, 2)


def _nibbles(q: np.ndarray) -> np.ndarray:
    """(n, 256) codes -> (n, 128): element ``c*64 + k*32 + l`` in byte ``c*32 + l``, low nibble for k = 0."""
    lo = (q & 0x0F).reshape(-1, 4, 2, 32)
    return (lo[:, :, 0] | (lo[:, :, 1] << 4)).reshape(-1, 128)


def _bit_planes(bits: np.ndarray, planes: int) -> np.ndarray:
    """(n, 256) values of 2 / 1 bits -> bytes: element ``h*128 + s*32 + l`` (2 bits) or ``b*32 + l`` (1 bit)
    at bit ``2s`` / ``b`` of byte ``h*32 + l`` / ``l``."""
    width = 8 // planes
    v = bits.reshape(-1, 256 // (32 * planes), planes, 32).astype(np.uint8)
    out = np.zeros(v.shape[:2] + (32,), dtype=np.uint8)
    for s in range(planes):
        out |= v[:, :, s] << (width * s)
    return out.reshape(bits.shape[0], -1)


def _scales12(sc: np.ndarray, mn: np.ndarray) -> np.ndarray:
    """Q4_K/Q5_K's 12 bytes of eight 6-bit scales and eight 6-bit minimums."""
    sc, mn = sc.astype(np.uint8), mn.astype(np.uint8)
    a = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)
    b = mn[:, :4] | ((mn[:, 4:] >> 4) << 6)
    c = (sc[:, 4:] & 0x0F) | ((mn[:, 4:] & 0x0F) << 4)
    return np.concatenate([a, b, c], axis=1)


def _q3_scales(u: np.ndarray) -> np.ndarray:
    """Q3_K's 12 bytes of sixteen 6-bit scales (stored as ``sc + 32``)."""
    u = u.astype(np.uint8)
    low = (u[:, :8] & 0x0F) | ((u[:, 8:] & 0x0F) << 4)
    high = np.zeros((u.shape[0], 4), dtype=np.uint8)
    for t in range(4):
        high |= ((u[:, 4 * t: 4 * t + 4] >> 4) & 0x03) << (2 * t)
    return np.concatenate([low, high], axis=1)


def pack_k_blocks(codes: torch.Tensor, sb: SuperScales, *, bits: int, has_min: bool) -> np.ndarray:
    """The GGUF bytes of a (out, in) code matrix on a :func:`k_grid` with multipliers ``sb``: (out, in / 256 x
    block bytes), each super-block as ``gguf.quants`` lays it out."""
    out_f, in_f = codes.shape
    n = out_f * in_f // SUPER
    q = codes.to(torch.int16).reshape(n, SUPER).numpy().astype(np.uint8)
    d = _f16_bytes(sb.d, n)
    sc = sb.sc.reshape(n, -1).numpy()
    if has_min:
        assert sb.dmin is not None and sb.mq is not None
        dmin, mq = _f16_bytes(sb.dmin, n), sb.mq.reshape(n, -1).numpy()
        if bits == 2:  # Q2_K: scales[16] (scale | min << 4), qs[64], d, dmin
            parts = [(sc | (mq << 4)).astype(np.uint8), _bit_planes(q & 3, 4), d, dmin]
        elif bits == 4:  # Q4_K: d, dmin, scales[12], qs[128]
            parts = [d, dmin, _scales12(sc, mq), _nibbles(q)]
        else:  # Q5_K: d, dmin, scales[12], qh[32], qs[128]
            parts = [d, dmin, _scales12(sc, mq), _bit_planes((q >> 4) & 1, 8), _nibbles(q)]
    elif bits == 6:  # Q6_K: ql[128], qh[64], scales[16] (int8), d
        lo = (q & 0x0F).reshape(n, 2, 2, 64)
        ql = (lo[:, :, 0] | (lo[:, :, 1] << 4)).reshape(n, 128)
        parts = [ql, _bit_planes(q >> 4, 4), sc.astype(np.int8).view(np.uint8), d]
    else:  # Q3_K: hmask[32], qs[64], scales[12], d
        parts = [_bit_planes((q >> 2) & 1, 8), _bit_planes(q & 3, 4), _q3_scales(sc + 32), d]
    return np.concatenate(parts, axis=1).astype(np.uint8).reshape(out_f, -1)
