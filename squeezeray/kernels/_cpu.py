"""CPU fast paths built on torch's own quantized matmuls.

=====================  ==========================================  ===================================
path                   serves                                      torch op
=====================  ==========================================  ===================================
cpu-int8-dynamic       W8A8: int8 symmetric, one group per row,    ``torch._int_mm`` (int8 x int8 ->
                       dynamic per-token int8 activations          int32), scales applied after
cpu-int8-weight        int8 symmetric weights, one group per row,  ``aten._weight_int8pack_mm``
                       float activations (bf16 compute)
cpu-int4pack           <= 4-bit integer weights, any group size    ``aten._weight_int4pack_mm_for_cpu``
                       that a kernel group of 32/64/128/256 tiles  (bf16 compute)
=====================  ==========================================  ===================================

Conversions from the stored format (exact in real arithmetic):

* 8-bit symmetric codes have implicit zero 128, so ``code XOR 0x80`` read as int8 is ``code - 128``.
* torch's int4 CPU kernel computes ``w = (q - 8) * s + z`` per (kernel group, row). A symmetric
  ``b``-bit code with implicit zero ``2**(b-1)`` becomes ``q = code + 8 - 2**(b-1)`` (still 0..15) with
  ``z = 0``; an asymmetric code with stored zero ``zp`` keeps ``q = code`` with ``z = (8 - zp) * s``.
  Stored groups that the kernel's group size does not divide are served by repeating each stored
  scale over the kernel groups it covers (576 inputs in groups of 128 -> 9 kernel groups of 64).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import ClassVar

import torch

from squeezeray.kernels._base import BaseLinearKernel
from squeezeray.kernels._base import PreparedLinear
from squeezeray.kernels._base import common_int_format
from squeezeray.kernels._names import KernelPath
from squeezeray.kernels._reference import quantize_per_token_int8
from squeezeray.techniques._packing import unpack_bits

if TYPE_CHECKING:
    from squeezeray.compress import CompressedLinear
    from squeezeray.compress import LayerFormat

INT4_KERNEL_GROUPS = (256, 128, 64, 32)  # group sizes aten._weight_int4pack_mm_for_cpu accepts
INT4_N_MULTIPLE = 16  # _convert_weight_to_int4pack_for_cpu needs out_features % 16 == 0


def _one_group(fmt: LayerFormat) -> str | None:
    if fmt.group_size < fmt.in_features:
        return f"needs one scale per row, layer has groups of {fmt.group_size}"
    return None


def _int8_symmetric(fmt: LayerFormat) -> str | None:
    """Shared conditions of the int8 paths: dense 8-bit symmetric integer codes."""
    why = common_int_format(fmt)
    if why:
        return why
    if fmt.bits != 8 or not fmt.symmetric:
        return f"needs 8-bit symmetric codes, layer has {fmt.bits}-bit {'symmetric' if fmt.symmetric else 'asymmetric'}"
    return None


def int8_weight_from_codes(codes: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """(n, k) int8 ``code - 128`` of 8-bit symmetric codes (uint8 stream)."""
    return codes.view(n, k).bitwise_xor(0x80).view(torch.int8).contiguous()


# ----------------------------------------------------------------- int8 dynamic (W8A8)
class _Int8Rows(PreparedLinear):
    """Int8 weights (N, K) repacked from the codes, with one scale per row (N,)."""

    def __init__(self, wq: torch.Tensor, sw: torch.Tensor) -> None:
        self.wq = wq  # (N, K) int8
        self.sw = sw  # (N,) float32 or bfloat16

    @property
    def runtime_nbytes(self) -> int:
        return self.wq.numel() * self.wq.element_size() + self.sw.numel() * self.sw.element_size()


class _Int8Dynamic(_Int8Rows):
    path = KernelPath.CPU_INT8_DYNAMIC

    def __call__(self, xs: torch.Tensor) -> torch.Tensor:
        q, sx = quantize_per_token_int8(xs)  # (M, K) int8, (M, 1) float32
        acc = torch._int_mm(q, self.wq.t())  # (M, N) int32, exact
        return acc.float() * sx * self.sw


class CpuInt8Dynamic(BaseLinearKernel):
    """W8A8 on torch._int_mm: the activation quantization is the reference's, the product is exact int32."""

    path = KernelPath.CPU_INT8_DYNAMIC
    device_type: ClassVar[str] = "cpu"
    compute_dtype: ClassVar[torch.dtype] = torch.float32

    def missing_runtime(self) -> str | None:
        return None if hasattr(torch, "_int_mm") else "this torch has no torch._int_mm"

    def unsupported_format(self, fmt: LayerFormat) -> str | None:
        why = _int8_symmetric(fmt)
        if why:
            return why
        if fmt.act_bits != 8:
            return "needs int8 activations (act_bits=8); weight-only layers use cpu-int8-weight"
        return _one_group(fmt)

    def prepare(self, layer: CompressedLinear) -> PreparedLinear:
        n, k = layer.out_features, layer.in_features
        return _Int8Dynamic(int8_weight_from_codes(layer.codes, n, k), layer.scales.float().view(n))


# ----------------------------------------------------------------- int8 weight-only
class _Int8Weight(_Int8Rows):
    path = KernelPath.CPU_INT8_WEIGHT

    def __call__(self, xs: torch.Tensor) -> torch.Tensor:  # sw: (N,) bfloat16
        return torch.ops.aten._weight_int8pack_mm(xs.to(torch.bfloat16), self.wq, self.sw).float()


class CpuInt8Weight(BaseLinearKernel):
    """Int8 weights with bf16 activations on aten._weight_int8pack_mm."""

    path = KernelPath.CPU_INT8_WEIGHT
    device_type: ClassVar[str] = "cpu"
    compute_dtype: ClassVar[torch.dtype] = torch.bfloat16

    def missing_runtime(self) -> str | None:
        return None if hasattr(torch.ops.aten, "_weight_int8pack_mm") else "this torch has no aten._weight_int8pack_mm"

    def unsupported_format(self, fmt: LayerFormat) -> str | None:
        why = _int8_symmetric(fmt)
        if why:
            return why
        if fmt.act_bits == 8:
            return "layer quantizes activations (W8A8); use cpu-int8-dynamic"
        return _one_group(fmt)

    def prepare(self, layer: CompressedLinear) -> PreparedLinear:
        n, k = layer.out_features, layer.in_features
        return _Int8Weight(int8_weight_from_codes(layer.codes, n, k), layer.scales.view(n).to(torch.bfloat16))


# ----------------------------------------------------------------- int4 pack
def int4_kernel_group(group_size: int, in_features: int) -> int | None:
    """Largest group size of the CPU int4 kernel that tiles both the stored groups and the input width."""
    for g in INT4_KERNEL_GROUPS:
        if group_size % g == 0 and in_features % g == 0:
            return g
    return None


def int4pack_operands(
    codes: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor | None,
    *,
    n: int,
    k: int,
    bits: int,
    group_size: int,
    symmetric: bool,
    kernel_group: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Convert stored group-wise codes to the operands of ``aten._weight_int4pack_mm_for_cpu`` (pure).

    Args:
        codes: uint8 bit stream of ``n * k`` codes of ``bits`` (<= 4) bits.
        scales: (n, n_groups) float16.
        zeros: Packed zero points (asymmetric) or None.
        n, k, bits, group_size, symmetric: The stored format.
        kernel_group: Kernel group size dividing ``group_size`` and ``k``.

    Returns:
        q (n, k) int32 in 0..15 and scale_and_zero (k / kernel_group, n, 2) float32 with
        ``(q - 8) * scale + zero`` equal to the stored weight.
    """
    n_groups = scales.shape[1]
    q = unpack_bits(codes, bits, n * k).view(n, k).to(torch.int32)  # (n, k)
    s = scales.float()  # (n, n_groups)
    if symmetric:
        q = q + (8 - (1 << (bits - 1)))
        z = torch.zeros_like(s)
    else:
        assert zeros is not None
        zp = unpack_bits(zeros, bits, n * n_groups).view(n, n_groups).float()
        z = (8.0 - zp) * s  # (n, n_groups)
    kg = torch.arange(k // kernel_group) * kernel_group // group_size  # stored group of each kernel group
    sz = torch.stack([s[:, kg], z[:, kg]], dim=-1)  # (n, k / kernel_group, 2)
    return q, sz.transpose(0, 1).contiguous()


class _Int4Pack(PreparedLinear):
    path = KernelPath.CPU_INT4

    def __init__(self, packed: torch.Tensor, sz: torch.Tensor, kernel_group: int) -> None:
        self.packed = packed  # (N, K / 2) uint8, torch's CPU int4 layout
        self.sz = sz  # (K / kernel_group, N, 2) bfloat16
        self.kernel_group = kernel_group

    def __call__(self, xs: torch.Tensor) -> torch.Tensor:
        x = xs.to(torch.bfloat16)
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x, self.packed, self.kernel_group, self.sz).float()

    @property
    def runtime_nbytes(self) -> int:
        return self.packed.numel() + self.sz.numel() * 2


class CpuInt4Pack(BaseLinearKernel):
    """2/3/4-bit integer weights on torch's int4 CPU kernel (bf16 activations and scales)."""

    path = KernelPath.CPU_INT4
    device_type: ClassVar[str] = "cpu"
    compute_dtype: ClassVar[torch.dtype] = torch.bfloat16

    def missing_runtime(self) -> str | None:
        ops = ("_weight_int4pack_mm_for_cpu", "_convert_weight_to_int4pack_for_cpu")
        missing = [o for o in ops if not hasattr(torch.ops.aten, o)]
        return f"this torch has no aten.{missing[0]}" if missing else None

    def unsupported_format(self, fmt: LayerFormat) -> str | None:
        why = common_int_format(fmt)
        if why:
            return why
        if fmt.bits > 4:
            return f"needs <= 4-bit codes, layer has {fmt.bits}"
        if fmt.act_bits == 8:
            return "layer quantizes activations (W8A8)"
        if fmt.out_features % INT4_N_MULTIPLE:
            return f"needs out_features % {INT4_N_MULTIPLE} == 0, layer has {fmt.out_features}"
        if int4_kernel_group(fmt.group_size, fmt.in_features) is None:
            return (
                f"no kernel group in {INT4_KERNEL_GROUPS} divides group_size={fmt.group_size} "
                f"and in_features={fmt.in_features}"
            )
        return None

    def prepare(self, layer: CompressedLinear) -> PreparedLinear:
        f = layer.fmt
        kgroup = int4_kernel_group(f.group_size, f.in_features)
        assert kgroup is not None
        q, sz = int4pack_operands(
            layer.codes, layer.scales, getattr(layer, "zeros", None), n=f.out_features, k=f.in_features,
            bits=f.bits, group_size=f.group_size, symmetric=f.symmetric, kernel_group=kgroup,
        )
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
        return _Int4Pack(packed, sz.to(torch.bfloat16), kgroup)
