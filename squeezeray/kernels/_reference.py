"""Torch references of every kernel, on the buffers :class:`~squeezeray.compress.CompressedLinear` stores.

They reuse the storage math (:func:`~squeezeray.techniques._packing.unpack_bits`,
:class:`~squeezeray.techniques._formats.QuantGrid`), so a kernel that matches its
reference computes what the stored layer means. References run on CPU tensors.
"""

from __future__ import annotations

import math

import torch

from squeezeray.techniques._actquant import fake_quant_per_token
from squeezeray.techniques._actquant import quantize_per_token
from squeezeray.techniques._formats import QuantFormat
from squeezeray.techniques._formats import QuantGrid
from squeezeray.techniques._packing import unpack_bits


def dequantize_packed(
    codes: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor | None,
    *,
    n: int,
    k: int,
    bits: int,
    group_size: int,
    symmetric: bool,
) -> torch.Tensor:
    """Dense float32 weight of group-wise integer codes.

    Args:
        codes: uint8 bit stream of ``n * k`` codes, row-major (row ``i``, input ``j`` is code ``i * k + j``).
        scales: (n, ceil(k / group_size)) float16.
        zeros: uint8 bit stream of ``n * n_groups`` zero points, or None when symmetric.
        n, k: Output rows and inputs.
        bits: Code width.
        group_size: Inputs per group (the last may be shorter).
        symmetric: Implicit zero point ``2**(bits-1)`` when True.

    Returns:
        (n, k) float32.
    """
    n_groups = math.ceil(k / group_size)
    if scales.shape != (n, n_groups):
        raise ValueError(f"scales have shape {tuple(scales.shape)}, expected {(n, n_groups)}")
    z = None
    if not symmetric:
        if zeros is None:
            raise ValueError("an asymmetric grid needs zeros")
        z = unpack_bits(zeros, bits, n * n_groups).view(n, n_groups).float()
    grid = QuantGrid(QuantFormat.INT, bits, group_size, symmetric, scales.float(), z)
    return grid.dequantize(unpack_bits(codes, bits, n * k).view(n, k))


def dequant_matmul_reference(
    x: torch.Tensor,
    codes: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor | None,
    *,
    n: int,
    bits: int,
    group_size: int,
    symmetric: bool,
) -> torch.Tensor:
    """``x @ W^T`` for group-wise packed integer weights; x (M, K) -> (M, n) float32."""
    w = dequantize_packed(codes, scales, zeros, n=n, k=x.shape[1], bits=bits, group_size=group_size, symmetric=symmetric)
    return x.float() @ w.t()


def sparse24_dense_weight(values: torch.Tensor, nm_index: torch.Tensor, *, n: int, k: int) -> torch.Tensor:
    """Dense (n, k) float32 weight of a 2:4 layer.

    Args:
        values: (n * k / 2,) float16 kept weights, row-major, ascending position within each group of 4.
        nm_index: 2-bit stream of the kept positions (0..3), one per kept weight, same order.
        n, k: Output rows and inputs (k divisible by 4).
    """
    if k % 4:
        raise ValueError(f"k={k}: 2:4 sparsity needs a multiple of 4")
    idx = unpack_bits(nm_index, 2, n * k // 2).view(n, k // 4, 2).long()
    w = torch.zeros(n, k // 4, 4)
    w.scatter_(2, idx, values.float().view(n, k // 4, 2))
    return w.view(n, k)


def sparse24_matmul_reference(x: torch.Tensor, values: torch.Tensor, nm_index: torch.Tensor, *, n: int) -> torch.Tensor:
    """``x @ W^T`` for a 2:4 layer; x (M, K) -> (M, n) float32."""
    return x.float() @ sparse24_dense_weight(values, nm_index, n=n, k=x.shape[1]).t()


def w8a8_matmul_reference(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Dynamic per-token INT8 activations times per-row INT8 weights.

    Args:
        x: (M, K) activations (already divided by the smoothing vector).
        codes: (n * K,) uint8 symmetric codes, implicit zero 128.
        scales: (n, 1) float16 per-row scales.

    Returns:
        (M, n) float32 ``fake_quant_per_token(x, 8) @ ((codes - 128) * scale)^T``.
    """
    n = scales.shape[0]
    w = (codes.view(n, -1).float() - 128.0) * scales.float()  # (n, K)
    return fake_quant_per_token(x.float(), 8) @ w.t()


def quantize_per_token_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The integer form of :func:`fake_quant_per_token` at 8 bits (same arithmetic, so the same codes).

    Args:
        x: (M, K) float activations.

    Returns:
        q (M, K) int8 in [-127, 127] and scale (M, 1) float32 with ``q * scale`` equal to
        ``fake_quant_per_token(x, 8)``.
    """
    q, scale = quantize_per_token(x, 8)  # (M, K) integer-valued float32, (M, 1)
    return q.to(torch.int8), scale
