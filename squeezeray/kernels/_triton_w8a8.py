"""INT8 W8A8: dynamic per-token activation quantization and an int8 x int8 -> int32 GEMM (Triton).

:func:`w8a8_matmul` computes what
:func:`squeezeray.kernels._reference.w8a8_matmul_reference` computes:
``q_x = clamp(round(x / s_x), -127, 127)`` with ``s_x = max|x| / 127`` per row (round half to
even, IEEE division, so the codes equal torch's), then ``(q_x @ (code - 128)^T) * s_x * s_w``
with exact int32 accumulation. The weight is read straight from the stored uint8 codes: for
symmetric 8-bit codes (implicit zero 128), ``code XOR 0x80`` reinterpreted as int8 is ``code - 128``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


def get_autotune_configs() -> list[triton.Config]:
    """GEMM tile shapes tried on a GPU (keyed on M, N, K)."""
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
        for bm, bn, bk, w, s in (
            (16, 64, 128, 4, 3), (16, 128, 128, 4, 4), (32, 128, 128, 4, 4),
            (64, 64, 128, 4, 4), (64, 128, 64, 8, 3), (128, 128, 64, 8, 3), (128, 256, 64, 8, 3),
        )
    ]


@triton.jit
def _round_half_even(v):
    """torch.round semantics for float32 (exact: ``v - floor(v)`` has no rounding error)."""
    f = tl.floor(v)
    frac = v - f
    odd = (f - 2.0 * tl.floor(f * 0.5)) == 1.0
    up = (frac > 0.5) | ((frac == 0.5) & odd)
    return tl.where(up, f + 1.0, f)


@triton.jit
def _quant_rows_kernel(
    x_ptr, q_ptr, s_ptr,  # x (M, K) float, q (M, K) int8, s (M,) float32
    K, stride_xm, stride_xk, stride_qm,
    BLOCK_K: tl.constexpr,
):
    m = tl.program_id(0)
    amax = tl.zeros((BLOCK_K,), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + m * stride_xm + rk * stride_xk, mask=rk < K, other=0.0).to(tl.float32)
        amax = tl.maximum(amax, tl.abs(x))
    absmax = tl.max(amax, axis=0)
    scale = tl.where(absmax > 0, tl.math.div_rn(absmax, 127.0), 1.0)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + m * stride_xm + rk * stride_xk, mask=rk < K, other=0.0).to(tl.float32)
        r = _round_half_even(tl.math.div_rn(x, scale))
        r = tl.minimum(tl.maximum(r, -127.0), 127.0)
        tl.store(q_ptr + m * stride_qm + rk, r.to(tl.int8), mask=rk < K)
    tl.store(s_ptr + m, scale)


@triton.jit
def _int8_gemm_kernel(
    # pointers: q (M, K) int8, codes (N, K) uint8 (implicit zero 128), sx (M,), sw (N,) float16, y (M, N)
    q_ptr, codes_ptr, sx_ptr, sw_ptr, y_ptr,
    M, N, K,
    stride_qm, stride_ym, stride_yn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(q_ptr + rm[:, None] * stride_qm + rk[None, :], mask=(rm[:, None] < M) & (rk[None, :] < K), other=0)
        c = tl.load(
            codes_ptr + rn[None, :].to(tl.int64) * K + rk[:, None],
            mask=(rk[:, None] < K) & (rn[None, :] < N), other=128,
        )  # (BK, BN) uint8
        w = (c ^ 0x80).to(tl.int8, bitcast=True)  # code - 128
        acc += tl.dot(a, w)
    sx = tl.load(sx_ptr + rm, mask=rm < M, other=0.0)
    sw = tl.load(sw_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)
    y = acc.to(tl.float32) * sx[:, None] * sw[None, :]
    tl.store(
        y_ptr + rm[:, None] * stride_ym + rn[None, :] * stride_yn,
        y.to(y_ptr.dtype.element_ty),
        mask=(rm[:, None] < M) & (rn[None, :] < N),
    )


_gemm_autotuned = triton.autotune(configs=get_autotune_configs(), key=["M", "N", "K"])(_int8_gemm_kernel)


def quantize_rows(x: torch.Tensor, *, block_k: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row symmetric int8 quantization: x (M, K) -> q (M, K) int8, scale (M,) float32."""
    if x.dim() != 2:
        raise ValueError(f"x must be (M, K), got {tuple(x.shape)}")
    m, k = x.shape
    q = torch.empty((m, k), dtype=torch.int8, device=x.device)
    s = torch.empty((m,), dtype=torch.float32, device=x.device)
    _quant_rows_kernel[(m,)](x, q, s, k, x.stride(0), x.stride(1), q.stride(0), BLOCK_K=min(block_k, triton.next_power_of_2(k)))
    return q, s


def w8a8_matmul(
    x: torch.Tensor,
    codes: torch.Tensor,
    scales: torch.Tensor,
    *,
    out: torch.Tensor | None = None,
    config: dict[str, int] | None = None,
) -> torch.Tensor:
    """W8A8 product of float activations and stored symmetric 8-bit weights.

    Args:
        x: (M, K) float activations (already divided by the smoothing vector).
        codes: (N * K,) uint8 symmetric codes (implicit zero 128), row-major.
        scales: (N, 1) float16 per-row scales.
        out: Optional (M, N) float32 output.
        config: Explicit ``BLOCK_M/BLOCK_N/BLOCK_K`` (each >= 16) instead of autotuning.

    Returns:
        (M, N) float32.
    """
    if x.dim() != 2:
        raise ValueError(f"x must be (M, K), got {tuple(x.shape)}")
    m, k = x.shape
    if scales.dim() != 2 or scales.shape[1] != 1:
        raise ValueError(f"scales must be (N, 1) (one scale per row), got {tuple(scales.shape)}")
    n = scales.shape[0]
    if codes.dtype != torch.uint8 or codes.numel() != n * k:
        raise ValueError(f"codes must be {n * k} uint8 codes")
    for name, t in (("codes", codes), ("scales", scales)):
        if t.device != x.device or not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous on {x.device}")
    q, sx = quantize_rows(x)
    y = torch.empty((m, n), dtype=torch.float32, device=x.device) if out is None else out
    if y.shape != (m, n) or y.dtype != torch.float32:
        raise ValueError(f"out must be ({m}, {n}) float32")

    def grid(meta: dict[str, int]) -> tuple[int, int]:
        return (triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(n, meta["BLOCK_N"]))

    args = (q, codes, sx, scales, y, m, n, k, q.stride(0), y.stride(0), y.stride(1))
    if config is None:
        _gemm_autotuned[grid](*args)
    else:
        _int8_gemm_kernel[grid](*args, **config)
    return y
