"""Names of the execution paths a compressed linear layer can run on (no heavy imports).

Hardware profiles list the paths a device supports, so this vocabulary sits
below both :mod:`squeezeray.hwprofiles` and the kernels themselves.
"""

from __future__ import annotations

import enum


class KernelPath(str, enum.Enum):
    """One way of computing ``y = x W^T`` from a :class:`~squeezeray.compress.CompressedLinear`'s buffers."""

    REFERENCE = "torch-reference"  # unpack, dequantize to float32, matmul (any device, any format)
    CPU_INT8_DYNAMIC = "cpu-int8-dynamic"  # W8A8: per-token int8 activations, torch._int_mm (int32 accumulate)
    CPU_INT8_WEIGHT = "cpu-int8-weight"  # int8 weights, bf16 activations: aten._weight_int8pack_mm
    CPU_INT4 = "cpu-int4pack"  # <=4-bit weights, bf16 activations: aten._weight_int4pack_mm_for_cpu
    TRITON_DEQUANT = "triton-dequant-gemm"  # W{2,3,4,8}A16 group-wise dequantize-GEMM/GEMV (GPU)
    TRITON_SPARSE24 = "triton-sparse24"  # 2:4 semi-structured fp16 weights times dense (GPU)
    TRITON_W8A8 = "triton-w8a8"  # int8 x int8 -> int32 GEMM with per-token / per-row scales (GPU)
