"""2:4 semi-structured sparse weights times dense activations (Triton).

The weight is stored as :class:`~squeezeray.compress.CompressedLinear` stores an n:m layer:
``values`` (N * K/2 float16, the two kept weights of every group of four inputs, in ascending
position) and ``nm_index`` (a 2-bit stream of their positions 0..3, same order). Kept weight
``j`` of group ``g`` of row ``n`` is entry ``n * K/2 + 2g + j`` of both.

Each program decompresses its (BLOCK_K, BLOCK_N) tile of W^T in registers (a ``tl.where`` on
the two positions) and feeds ``tl.dot``, so memory traffic is the compressed form
(2 bytes + 2 bits per kept weight = 1.125 bytes per dense weight instead of 2) while the math
is dense; the sparse tensor-core instructions are not used. Reference:
:func:`squeezeray.kernels._reference.sparse24_matmul_reference`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from squeezeray.kernels._triton_common import dot_accumulate
from squeezeray.kernels._triton_common import store_tile
from squeezeray.kernels._triton_common import unpack_codes
from squeezeray.techniques._packing import packed_nbytes


def get_autotune_configs() -> list[triton.Config]:
    """Tile shapes tried on a GPU (keyed on M, N, K)."""
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
        for bm, bn, bk, w, s in (
            (16, 64, 64, 4, 3), (16, 128, 64, 4, 4), (32, 128, 64, 4, 4),
            (64, 64, 64, 4, 4), (64, 128, 64, 8, 3), (128, 128, 32, 8, 3),
        )
    ]


@triton.jit
def _sparse24_gemm_kernel(
    # pointers
    x_ptr, values_ptr, index_ptr, y_ptr,
    # dimensions: x (M, K), W (N, K) with N*K/2 kept values, y (M, N)
    M, N, K, index_nbytes,
    # strides
    stride_xm, stride_xk, stride_ym, stride_yn,
    DOT_IEEE: tl.constexpr,
    # tiles (BLOCK_K a multiple of 4)
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BM,)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BN,)
    half_k = K // 2
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)  # (BK,) dense input positions
        x = tl.load(
            x_ptr + rm[:, None] * stride_xm + rk[None, :] * stride_xk,
            mask=(rm[:, None] < M) & (rk[None, :] < K), other=0.0,
        )  # (BM, BK)
        mask = (rk[:, None] < K) & (rn[None, :] < N)  # (BK, BN)
        slot0 = rn[None, :].to(tl.int64) * half_k + (rk // 4)[:, None] * 2  # (BK, BN) first kept weight of the group
        i0 = unpack_codes(index_ptr, slot0, index_nbytes, mask, 2)
        i1 = unpack_codes(index_ptr, slot0 + 1, index_nbytes, mask, 2)
        v0 = tl.load(values_ptr + slot0, mask=mask, other=0.0).to(tl.float32)
        v1 = tl.load(values_ptr + slot0 + 1, mask=mask, other=0.0).to(tl.float32)
        pos = (rk % 4)[:, None]  # (BK, 1)
        w = tl.where(i0 == pos, v0, tl.where(i1 == pos, v1, 0.0))  # (BK, BN)
        acc = dot_accumulate(acc, x, w, DOT_IEEE)
    store_tile(y_ptr, acc, rm, rn, M, N, stride_ym, stride_yn)


_autotuned = triton.autotune(configs=get_autotune_configs(), key=["M", "N", "K"])(_sparse24_gemm_kernel)


def sparse24_matmul(
    x: torch.Tensor,
    values: torch.Tensor,
    nm_index: torch.Tensor,
    *,
    n: int,
    out: torch.Tensor | None = None,
    config: dict[str, int] | None = None,
) -> torch.Tensor:
    """``x @ W^T`` for a 2:4-sparse weight in squeezeray's n:m storage.

    Args:
        x: (M, K) float16 / bfloat16 / float32, K a multiple of 4.
        values: (n * K / 2,) float16 kept weights.
        nm_index: 2-bit position stream, ``packed_nbytes(n * K / 2, 2)`` bytes.
        n: Output features.
        out: Optional (M, n) output in x's dtype.
        config: Explicit ``BLOCK_M/BLOCK_N/BLOCK_K`` (BLOCK_K a multiple of 4) instead of autotuning.

    Returns:
        (M, n) in x's dtype.
    """
    if x.dim() != 2 or x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"x must be (M, K) float16/bfloat16/float32, got {tuple(x.shape)} {x.dtype}")
    m, k = x.shape
    if k % 4:
        raise ValueError(f"K={k}: 2:4 sparsity needs a multiple of 4")
    if values.numel() != n * k // 2 or values.dtype != torch.float16:
        raise ValueError(f"values must hold {n * k // 2} float16 kept weights")
    if nm_index.dtype != torch.uint8 or nm_index.numel() != packed_nbytes(n * k // 2, 2):
        raise ValueError(f"nm_index must be {packed_nbytes(n * k // 2, 2)} uint8 bytes")
    for name, t in (("values", values), ("nm_index", nm_index)):
        if t.device != x.device or not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous on {x.device}")
    if config is not None and config["BLOCK_K"] % 4:
        raise ValueError(f"BLOCK_K={config['BLOCK_K']}: must be a multiple of 4")
    y = torch.empty((m, n), dtype=x.dtype, device=x.device) if out is None else out
    if y.shape != (m, n) or y.dtype != x.dtype:
        raise ValueError(f"out must be ({m}, {n}) {x.dtype}")

    def grid(meta: dict[str, int]) -> tuple[int, int]:
        return (triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(n, meta["BLOCK_N"]))

    args = (x, values, nm_index, y, m, n, k, nm_index.numel(), x.stride(0), x.stride(1), y.stride(0), y.stride(1))
    ieee = x.dtype == torch.float32
    if config is None:
        _autotuned[grid](*args, DOT_IEEE=ieee)
    else:
        _sparse24_gemm_kernel[grid](*args, DOT_IEEE=ieee, **config)
    return y
