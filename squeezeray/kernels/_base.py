"""The kernel plug-in interface and its registry.

A :class:`BaseLinearKernel` says whether it can serve a stored layer format on a
device (:meth:`~BaseLinearKernel.unsupported` returns the reason when it cannot)
and builds a :class:`PreparedLinear` from a layer's buffers. The prepared object
computes the layer's *main path*: ``x_s (M, in) float32 -> (M, out) float32``
where ``x_s`` is the input already divided by the smoothing vector; the layer
itself adds the low-rank path and the bias, exactly as its torch reference does.

Call order: ``unsupported(fmt, device)`` -> (if None) ``prepare(layer)`` ->
``prepared(x_s)`` any number of times.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING
from typing import Any
from typing import ClassVar
from typing import Protocol
from typing import runtime_checkable

import torch

from squeezeray._registry import Registry
from squeezeray.kernels._names import KernelPath

if TYPE_CHECKING:
    from squeezeray.compress import CompressedLinear
    from squeezeray.compress import LayerFormat


@runtime_checkable
class KernelLayer(Protocol):
    """What the kernel selector needs of a compressed layer; :class:`squeezeray.compress.CompressedLinear`
    is one (the kernels never import the layer class at run time, so compress may import kernels)."""

    last_path: str | None

    def attach_kernels(self, dispatch: Any) -> None: ...


def error_bound(dtype: torch.dtype) -> float:
    """Largest relative Frobenius error a kernel computing in ``dtype`` may show against the float32 reference.

    Four unit roundoffs for 16-bit formats (inputs and weights rounded once each, fp32 accumulation);
    2**-16 for float32 (summation order only).
    """
    if dtype is torch.float32:
        return 2.0**-16
    if dtype is torch.bfloat16:
        return 4 * 2.0**-8
    if dtype is torch.float16:
        return 4 * 2.0**-11
    raise ValueError(f"no error bound for compute dtype {dtype}")


class PreparedLinear(abc.ABC):
    """A layer's main path bound to one kernel (runtime tensors derived from the stored buffers)."""

    path: ClassVar[KernelPath]

    @abc.abstractmethod
    def __call__(self, xs: torch.Tensor) -> torch.Tensor:
        """(M, in) float32 smoothed input -> (M, out) float32 main-path output."""

    @property
    @abc.abstractmethod
    def runtime_nbytes(self) -> int:
        """Bytes of tensors this object holds beyond the layer's stored buffers (repacked weights)."""


class BaseLinearKernel(abc.ABC):
    """A fast path for some stored formats on some devices.

    Class attributes:
        path: Its name.
        device_type: ``cpu`` or ``cuda``.
        compute_dtype: Precision of its arithmetic, which sets its error bound (:func:`error_bound`).
    """

    path: ClassVar[KernelPath]
    device_type: ClassVar[str]
    compute_dtype: ClassVar[torch.dtype]

    def unsupported(self, fmt: LayerFormat, device: torch.device) -> str | None:
        """Why this kernel cannot serve ``fmt`` on ``device``, or None when it can."""
        if device.type != self.device_type:
            return f"runs on {self.device_type}, not {device.type}"
        missing = self.missing_runtime()
        if missing:
            return missing
        if fmt.lowrank_only:
            return "layer has no main weight (low-rank only)"
        return self.unsupported_format(fmt)

    @abc.abstractmethod
    def missing_runtime(self) -> str | None:
        """What this torch/triton installation lacks for this kernel, or None."""

    @abc.abstractmethod
    def unsupported_format(self, fmt: LayerFormat) -> str | None:
        """Why the stored format cannot be served, or None."""

    @abc.abstractmethod
    def prepare(self, layer: CompressedLinear) -> PreparedLinear:
        """Derive the runtime tensors from ``layer``'s buffers (only called when supported)."""


KERNELS: Registry[BaseLinearKernel] = Registry("kernel path", BaseLinearKernel)
for _path, _entry in (
    (KernelPath.CPU_INT8_DYNAMIC, "squeezeray.kernels._cpu:CpuInt8Dynamic"),
    (KernelPath.CPU_INT8_WEIGHT, "squeezeray.kernels._cpu:CpuInt8Weight"),
    (KernelPath.CPU_INT4, "squeezeray.kernels._cpu:CpuInt4Pack"),
    (KernelPath.TRITON_DEQUANT, "squeezeray.kernels._gpu:TritonDequant"),
    (KernelPath.TRITON_SPARSE24, "squeezeray.kernels._gpu:TritonSparse24"),
    (KernelPath.TRITON_W8A8, "squeezeray.kernels._gpu:TritonW8A8"),
):
    KERNELS.register(_path.value, _entry)


def get_kernel(path: KernelPath | str) -> BaseLinearKernel:
    """An instance of the kernel registered under ``path`` (not for :attr:`KernelPath.REFERENCE`)."""
    name = path.value if isinstance(path, KernelPath) else path
    return KERNELS.get(name)()


def common_int_format(fmt: LayerFormat) -> str | None:
    """Shared conditions of the integer dequantize kernels: dense (unpruned) integer codes."""
    from squeezeray.techniques._formats import QuantFormat

    if fmt.quant_format is not QuantFormat.INT:
        return f"needs integer codes, layer has {fmt.quant_format.value if fmt.quant_format else 'float16 values'}"
    if fmt.pattern is not None:
        return f"needs a dense weight, layer is pruned ({fmt.pattern.value})"
    if fmt.superblock:
        return "reads float16 scales; layer stores two-level scales (a GGUF K-quant)"
    if fmt.float_min:
        return "reads integer zero points; layer stores float block minimums (GGUF Q4_1/Q5_1)"
    return None
