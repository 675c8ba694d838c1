"""Group-wise W{2,3,4,8}A16 dequantize-GEMM and GEMV on squeezeray's packed weights (Triton).

Computes ``y = x @ W^T`` with ``W[n, k] = (code[n*K + k] - zero[n, g]) * scale[n, g]`` and
``g = k // GROUP_SIZE``, reading the codes straight from the bit stream
:class:`~squeezeray.compress.CompressedLinear` stores (no repacking, so the bytes moved are the
stored bytes). Symmetric grids use the implicit zero ``2**(BITS-1)``; asymmetric grids read
their zero points from a second bit stream. A ragged last group (``K`` not a multiple of
``GROUP_SIZE``) needs nothing special: its scales sit in the last column.

Two kernels: a tiled GEMM (``tl.dot``, fp32 accumulation) for prefill-sized ``M`` and a
GEMV-style kernel (one program per input row and ``BLOCK_N`` outputs, ``tl.sum`` reduction)
for ``M <= GEMV_MAX_M`` (decode). The launcher :func:`dequant_matmul` checks shapes and picks
between them by ``M``; reference: :func:`squeezeray.kernels._reference.dequant_matmul_reference`.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from squeezeray.kernels._triton_common import dot_accumulate
from squeezeray.kernels._triton_common import store_tile
from squeezeray.kernels._triton_common import unpack_codes
from squeezeray.techniques._packing import packed_nbytes

GEMV_MAX_M = 4  # rows up to which the GEMV kernel is used
SUPPORTED_BITS = (2, 3, 4, 8)


def get_autotune_configs() -> list[triton.Config]:
    """GEMM tile shapes tried on a GPU (keyed on M, N, K)."""
    out = []
    for bm, bn, bk, warps, stages in (
        (16, 64, 64, 4, 3), (16, 128, 64, 4, 4), (32, 64, 64, 4, 4), (32, 128, 64, 4, 4),
        (64, 64, 64, 4, 4), (64, 128, 32, 4, 4), (64, 128, 64, 8, 3), (128, 128, 32, 8, 3),
    ):
        out.append(triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=warps, num_stages=stages))
    return out


def get_gemv_autotune_configs() -> list[triton.Config]:
    """GEMV tile shapes tried on a GPU (keyed on N, K)."""
    return [
        triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=warps)
        for bn, bk, warps in ((32, 128, 4), (64, 64, 4), (64, 128, 4), (128, 64, 4), (128, 128, 8), (256, 64, 8))
    ]


@triton.jit
def _dequant_tile(
    codes_ptr, scales_ptr, zeros_ptr, rk, rn, N, K, n_groups, codes_nbytes, zeros_nbytes,
    GROUP_SIZE: tl.constexpr, BITS: tl.constexpr, SYMMETRIC: tl.constexpr,
):
    """(BLOCK_K, BLOCK_N) float32 tile of W^T for inputs ``rk`` and outputs ``rn``."""
    mask = (rk[:, None] < K) & (rn[None, :] < N)  # (BK, BN)
    idx = rn[None, :].to(tl.int64) * K + rk[:, None]  # (BK, BN) code index n*K + k
    q = unpack_codes(codes_ptr, idx, codes_nbytes, mask, BITS)  # (BK, BN) int32
    gidx = rn[None, :].to(tl.int64) * n_groups + (rk // GROUP_SIZE)[:, None]  # (BK, BN) (row, group)
    s = tl.load(scales_ptr + gidx, mask=mask, other=0.0).to(tl.float32)
    if SYMMETRIC:
        z = 1 << (BITS - 1)
    else:
        z = unpack_codes(zeros_ptr, gidx, zeros_nbytes, mask, BITS)
    return (q - z).to(tl.float32) * s


@triton.jit
def _dequant_gemm_kernel(
    # pointers
    x_ptr, codes_ptr, scales_ptr, zeros_ptr, y_ptr,
    # dimensions: x (M, K), W (N, K) in n_groups groups, y (M, N)
    M, N, K, n_groups, codes_nbytes, zeros_nbytes,
    # strides
    stride_xm, stride_xk, stride_ym, stride_yn,
    # format
    GROUP_SIZE: tl.constexpr, BITS: tl.constexpr, SYMMETRIC: tl.constexpr, DOT_IEEE: tl.constexpr,
    # tiles
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BM,)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BN,)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)  # (BK,)
        x = tl.load(
            x_ptr + rm[:, None] * stride_xm + rk[None, :] * stride_xk,
            mask=(rm[:, None] < M) & (rk[None, :] < K), other=0.0,
        )  # (BM, BK)
        w = _dequant_tile(
            codes_ptr, scales_ptr, zeros_ptr, rk, rn, N, K, n_groups, codes_nbytes, zeros_nbytes,
            GROUP_SIZE, BITS, SYMMETRIC,
        )  # (BK, BN) float32
        acc = dot_accumulate(acc, x, w, DOT_IEEE)
    store_tile(y_ptr, acc, rm, rn, M, N, stride_ym, stride_yn)


@triton.jit
def _dequant_gemv_kernel(
    # pointers
    x_ptr, codes_ptr, scales_ptr, zeros_ptr, y_ptr,
    # dimensions
    M, N, K, n_groups, codes_nbytes, zeros_nbytes,
    # strides
    stride_xm, stride_xk, stride_ym, stride_yn,
    # format
    GROUP_SIZE: tl.constexpr, BITS: tl.constexpr, SYMMETRIC: tl.constexpr,
    # tiles
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BN,)
    acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)  # (BK,)
        x = tl.load(x_ptr + m * stride_xm + rk * stride_xk, mask=rk < K, other=0.0).to(tl.float32)  # (BK,)
        w = _dequant_tile(
            codes_ptr, scales_ptr, zeros_ptr, rk, rn, N, K, n_groups, codes_nbytes, zeros_nbytes,
            GROUP_SIZE, BITS, SYMMETRIC,
        )  # (BK, BN)
        acc += tl.sum(x[:, None] * w, axis=0)
    tl.store(y_ptr + m * stride_ym + rn * stride_yn, acc.to(y_ptr.dtype.element_ty), mask=rn < N)


_gemm_autotuned = triton.autotune(configs=get_autotune_configs(), key=["M", "N", "K"])(_dequant_gemm_kernel)
_gemv_autotuned = triton.autotune(configs=get_gemv_autotune_configs(), key=["N", "K"])(_dequant_gemv_kernel)


def dequant_matmul(
    x: torch.Tensor,
    codes: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor | None = None,
    *,
    bits: int,
    group_size: int,
    symmetric: bool,
    out: torch.Tensor | None = None,
    config: dict[str, int] | None = None,
) -> torch.Tensor:
    """``x @ W^T`` for packed group-wise integer weights.

    Args:
        x: (M, K) float16 / bfloat16 / float32 activations.
        codes: uint8 bit stream of N*K codes of ``bits`` bits, row-major.
        scales: (N, ceil(K / group_size)) float16 scales.
        zeros: uint8 bit stream of N * n_groups zero points (asymmetric), else None.
        bits: 2, 3, 4 or 8.
        group_size: Inputs per group.
        symmetric: Implicit zero point ``2**(bits-1)``.
        out: Optional (M, N) output in x's dtype (written completely).
        config: Explicit tile sizes (``BLOCK_M/BLOCK_N/BLOCK_K`` for the GEMM or ``BLOCK_N/BLOCK_K``
            for the GEMV) instead of autotuning; tests under the interpreter pass one.

    Returns:
        (M, N) in x's dtype.
    """
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits={bits}: supported {SUPPORTED_BITS}")
    if x.dim() != 2 or x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"x must be (M, K) float16/bfloat16/float32, got {tuple(x.shape)} {x.dtype}")
    m, k = x.shape
    n, n_groups = scales.shape
    if n_groups != math.ceil(k / group_size):
        raise ValueError(f"scales have {n_groups} groups; K={k} in groups of {group_size} needs {math.ceil(k / group_size)}")
    if codes.dtype != torch.uint8 or codes.numel() != packed_nbytes(n * k, bits):
        raise ValueError(f"codes must be {packed_nbytes(n * k, bits)} uint8 bytes for {n}x{k} {bits}-bit codes")
    if not symmetric and (zeros is None or zeros.numel() != packed_nbytes(n * n_groups, bits)):
        raise ValueError(f"asymmetric weights need {packed_nbytes(n * n_groups, bits)} bytes of packed zeros")
    for name, t in (("codes", codes), ("scales", scales)):
        if t.device != x.device or not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous on {x.device}")
    y = torch.empty((m, n), dtype=x.dtype, device=x.device) if out is None else out
    if y.shape != (m, n) or y.dtype != x.dtype:
        raise ValueError(f"out must be ({m}, {n}) {x.dtype}")
    zeros_arg = codes if zeros is None else zeros  # never read when symmetric
    args = (
        x, codes, scales, zeros_arg, y, m, n, k, n_groups, codes.numel(), zeros_arg.numel(),
        x.stride(0), x.stride(1), y.stride(0), y.stride(1),
    )
    fmt = {"GROUP_SIZE": group_size, "BITS": bits, "SYMMETRIC": symmetric}
    if m <= GEMV_MAX_M:
        def grid(meta: dict[str, int]) -> tuple[int, int]:
            return (m, triton.cdiv(n, meta["BLOCK_N"]))

        if config is None:
            _gemv_autotuned[grid](*args, **fmt)
        else:
            _dequant_gemv_kernel[grid](*args, **fmt, BLOCK_N=config["BLOCK_N"], BLOCK_K=config["BLOCK_K"])
        return y

    def grid2(meta: dict[str, int]) -> tuple[int, int]:
        return (triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(n, meta["BLOCK_N"]))

    fmt["DOT_IEEE"] = x.dtype == torch.float32
    if config is None:
        _gemm_autotuned[grid2](*args, **fmt)
    else:
        _dequant_gemm_kernel[grid2](*args, **fmt, **config)
    return y
