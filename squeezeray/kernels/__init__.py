"""Kernels that make compressed layers fast, their torch references, and the per-layer path choice.

* :class:`KernelPath` names every path; :data:`KERNELS` is the registry of fast paths.
* CPU paths wrap torch's int8/int4 matmuls (``_cpu.py``); GPU paths are Triton kernels
  (``_triton_dequant.py``, ``_triton_sparse24.py``, ``_triton_w8a8.py``, each with its launcher,
  autotune configs and a torch reference in ``_reference.py``), imported on first use so that
  ``TRITON_INTERPRET`` can be set first and a CPU-only install never imports Triton.
* :class:`KernelSelector` picks, per layer and device, the fastest path that matches the torch
  reference within its dtype's bound, and attaches it; ``layer.kernel_choice`` and
  ``layer.last_path`` show what was chosen and what ran.
"""

from squeezeray.kernels._base import KERNELS
from squeezeray.kernels._base import BaseLinearKernel
from squeezeray.kernels._base import PreparedLinear
from squeezeray.kernels._base import error_bound
from squeezeray.kernels._base import get_kernel
from squeezeray.kernels._names import KernelPath
from squeezeray.kernels._select import KernelDispatch
from squeezeray.kernels._select import KernelSelector
from squeezeray.kernels._select import PathChoice
from squeezeray.kernels._select import path_summary
from squeezeray.kernels._select import relative_error
from squeezeray.kernels._select import use_reference
from squeezeray.kernels._timing import TimingStats
from squeezeray.kernels._timing import time_callable
from squeezeray.kernels._timing import time_interleaved

__all__ = [
    "KERNELS",
    "BaseLinearKernel",
    "KernelDispatch",
    "KernelPath",
    "KernelSelector",
    "PathChoice",
    "PreparedLinear",
    "TimingStats",
    "error_bound",
    "get_kernel",
    "path_summary",
    "relative_error",
    "time_callable",
    "time_interleaved",
    "use_reference",
]
