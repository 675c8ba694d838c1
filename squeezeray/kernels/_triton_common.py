"""Triton helpers shared by the kernels: reading codes from squeezeray's packed bit streams, and the
GEMM kernels' accumulation and output store."""

from __future__ import annotations

import os

import triton
import triton.language as tl


def interpreting() -> bool:
    """True when Triton runs in its CPU interpreter (``TRITON_INTERPRET=1``, set before import)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@triton.jit
def unpack_codes(ptr, idx, nbytes, mask, BITS: tl.constexpr):
    """Codes number ``idx`` of a ``BITS``-bit little-endian bit stream (as written by ``pack_bits``).

    Code ``i`` occupies bits ``[i * BITS, (i + 1) * BITS)`` of the stream, low bits first, so
    it starts in byte ``i * BITS // 8`` at bit ``i * BITS % 8``; a 3-bit code may spill into
    the next byte (read only when ``8 % BITS != 0``).

    Args:
        ptr: uint8 stream.
        idx: int64 code indices, any shape.
        nbytes: Bytes in the stream (the spill byte past the end is not read).
        mask: Which indices to read (others give 0).

    Returns:
        int32 codes, shape of ``idx``.
    """
    bit = idx * BITS
    byte = bit // 8
    lo = tl.load(ptr + byte, mask=mask, other=0).to(tl.int32)
    if BITS == 8:
        v = lo
    elif 8 % BITS == 0:
        v = (lo >> (bit % 8).to(tl.int32)) & ((1 << BITS) - 1)
    else:
        hi = tl.load(ptr + byte + 1, mask=mask & (byte + 1 < nbytes), other=0).to(tl.int32)
        v = ((lo | (hi << 8)) >> (bit % 8).to(tl.int32)) & ((1 << BITS) - 1)
    return v


@triton.jit
def dot_accumulate(acc, x, w, DOT_IEEE: tl.constexpr):
    """``acc + x @ w`` in float32: IEEE float32 products when ``DOT_IEEE`` (float32 input), else ``w`` is
    cast to ``x``'s 16-bit dtype first.

    Args:
        acc: (BM, BN) float32 accumulator.
        x: (BM, BK) activation tile.
        w: (BK, BN) float32 weight tile.
    """
    if DOT_IEEE:
        acc += tl.dot(x, w, input_precision="ieee")
    else:
        acc += tl.dot(x, w.to(x.dtype))
    return acc


@triton.jit
def store_tile(y_ptr, acc, rm, rn, M, N, stride_ym, stride_yn):
    """Write the (BM, BN) tile ``acc`` of y (M, N) at rows ``rm`` and columns ``rn``, in y's dtype."""
    tl.store(
        y_ptr + rm[:, None] * stride_ym + rn[None, :] * stride_yn,
        acc.to(y_ptr.dtype.element_ty),
        mask=(rm[:, None] < M) & (rn[None, :] < N),
    )
