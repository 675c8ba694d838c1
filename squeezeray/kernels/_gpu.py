"""GPU kernel paths: the Triton kernels bound to :class:`~squeezeray.compress.CompressedLinear` buffers.

The Triton modules are imported in :meth:`prepare`, never at import time, so that
``TRITON_INTERPRET`` may be set before Triton loads and a CPU-only install never imports it.
All three read the stored buffers in place (no repacked copy).
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING
from typing import ClassVar

import torch

from squeezeray.kernels._base import BaseLinearKernel
from squeezeray.kernels._base import PreparedLinear
from squeezeray.kernels._base import common_int_format
from squeezeray.kernels._names import KernelPath
from squeezeray.techniques._formats import SparsityPattern

if TYPE_CHECKING:
    from squeezeray.compress import CompressedLinear
    from squeezeray.compress import LayerFormat


def _triton_missing() -> str | None:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install 'squeezeray[kernels]')"
    if not torch.cuda.is_available():
        return "no CUDA device"
    return None


class _OnLayerBuffers(PreparedLinear):
    """A prepared Triton path that reads the layer's own buffers (nothing repacked)."""

    @property
    def runtime_nbytes(self) -> int:
        return 0


class _TritonKernel(BaseLinearKernel):
    """A Triton path on CUDA (or the Triton interpreter)."""

    device_type: ClassVar[str] = "cuda"

    def missing_runtime(self) -> str | None:
        return _triton_missing()


class _Dequant(_OnLayerBuffers):
    path = KernelPath.TRITON_DEQUANT

    def __init__(self, layer: CompressedLinear) -> None:
        from squeezeray.kernels._triton_dequant import dequant_matmul

        f = layer.fmt
        self._fn = dequant_matmul
        self.codes, self.scales = layer.codes, layer.scales
        self.zeros = None if f.symmetric else layer.zeros
        self.bits, self.group_size, self.symmetric = f.bits, f.group_size, f.symmetric

    def __call__(self, xs: torch.Tensor) -> torch.Tensor:
        y = self._fn(
            xs.to(torch.float16), self.codes, self.scales, self.zeros,
            bits=self.bits, group_size=self.group_size, symmetric=self.symmetric,
        )
        return y.float()


class TritonDequant(_TritonKernel):
    """W{2,3,4,8}A16 group-wise dequantize-GEMM/GEMV (fp16 activations, fp32 accumulation)."""

    path = KernelPath.TRITON_DEQUANT
    compute_dtype: ClassVar[torch.dtype] = torch.float16

    def unsupported_format(self, fmt: LayerFormat) -> str | None:
        why = common_int_format(fmt)
        if why:
            return why
        if fmt.bits not in (2, 3, 4, 8):
            return f"supports 2, 3, 4 and 8-bit codes, layer has {fmt.bits}"
        if fmt.act_bits == 8:
            return "layer quantizes activations (W8A8); use triton-w8a8"
        return None

    def prepare(self, layer: CompressedLinear) -> PreparedLinear:
        return _Dequant(layer)


class _Sparse24(_OnLayerBuffers):
    path = KernelPath.TRITON_SPARSE24

    def __init__(self, layer: CompressedLinear) -> None:
        from squeezeray.kernels._triton_sparse24 import sparse24_matmul

        self._fn = sparse24_matmul
        self.values, self.nm_index, self.n = layer.values, layer.nm_index, layer.out_features

    def __call__(self, xs: torch.Tensor) -> torch.Tensor:
        return self._fn(xs.to(torch.float16), self.values, self.nm_index, n=self.n).float()


class TritonSparse24(_TritonKernel):
    """2:4 float16 weights times dense activations (fp16, fp32 accumulation)."""

    path = KernelPath.TRITON_SPARSE24
    compute_dtype: ClassVar[torch.dtype] = torch.float16

    def unsupported_format(self, fmt: LayerFormat) -> str | None:
        if fmt.pattern is not SparsityPattern.NM or (fmt.n, fmt.m) != (2, 4):
            return "needs 2:4 sparsity"
        if fmt.quant_format is not None:
            return "needs float16 kept values (quantized 2:4 layers run the reference)"
        if fmt.act_bits == 8:
            return "layer quantizes activations"
        return None

    def prepare(self, layer: CompressedLinear) -> PreparedLinear:
        return _Sparse24(layer)


class _W8A8(_OnLayerBuffers):
    path = KernelPath.TRITON_W8A8

    def __init__(self, layer: CompressedLinear) -> None:
        from squeezeray.kernels._triton_w8a8 import w8a8_matmul

        self._fn = w8a8_matmul
        self.codes, self.scales = layer.codes, layer.scales

    def __call__(self, xs: torch.Tensor) -> torch.Tensor:
        return self._fn(xs.contiguous(), self.codes, self.scales)


class TritonW8A8(_TritonKernel):
    """Per-token int8 activations times per-row int8 weights, exact int32 accumulation."""

    path = KernelPath.TRITON_W8A8
    compute_dtype: ClassVar[torch.dtype] = torch.float32

    def unsupported_format(self, fmt: LayerFormat) -> str | None:
        why = common_int_format(fmt)
        if why:
            return why
        if fmt.bits != 8 or not fmt.symmetric or fmt.act_bits != 8:
            return "needs 8-bit symmetric weights with int8 activations (W8A8)"
        if fmt.group_size < fmt.in_features:
            return f"needs one scale per row, layer has groups of {fmt.group_size}"
        return None

    def prepare(self, layer: CompressedLinear) -> PreparedLinear:
        return _W8A8(layer)
