"""The ``host`` profile: detected at run time and measured by small microbenchmarks.

Identity (CPU model, cores, ISA flags, memory size) comes from ``/proc/cpuinfo``
and ``/proc/meminfo`` (or ``torch.cuda`` for a GPU). Throughput and bandwidth
are *measured* here: matmul rates per dtype and a large copy, timed with the
current ``torch.get_num_threads()``; the figures say so. Power cannot be read
from the OS, so TDP and idle power are unavailable unless the user supplies them.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from squeezeray._errors import SqueezerayError
from squeezeray.hwprofiles._profile import Basis
from squeezeray.hwprofiles._profile import ComputeDtype
from squeezeray.hwprofiles._profile import DeviceKind
from squeezeray.hwprofiles._profile import Figure
from squeezeray.hwprofiles._profile import HardwareProfile
from squeezeray.kernels._names import KernelPath

# cpuinfo flags that decide which CPU kernels are fast
RELEVANT_FLAGS = (
    "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
    "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16",
)


@dataclasses.dataclass(frozen=True)
class CpuInfo:
    """What ``/proc/cpuinfo`` says.

    Attributes:
        model: ``model name`` of the first processor.
        logical_cpus: Processors listed.
        flags: Flags of the first processor.
    """

    model: str
    logical_cpus: int
    flags: frozenset[str]


def parse_cpuinfo(text: str) -> CpuInfo:
    """Parse the text of ``/proc/cpuinfo`` (pure)."""
    model, flags, count = "", frozenset[str](), 0
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "processor":
            count += 1
        elif key == "model name" and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = frozenset(value.split())
    return CpuInfo(model or platform.processor() or platform.machine(), count, flags)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def mem_total_gb(meminfo: str) -> float | None:
    """``MemTotal`` of ``/proc/meminfo`` text in GB (10^9 bytes), or None."""
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024 / 1e9
    return None


# ------------------------------------------------------------------ microbenchmarks
def _best_seconds(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> float:
    """Fastest of ``repeats`` timed calls after one warm-up: a peak figure, least disturbed by other load."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def _sync_for(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def measure_copy_bandwidth(device: torch.device, *, nbytes: int, repeats: int = 5) -> float:
    """Bytes per second of ``dst.copy_(src)`` for an ``nbytes`` buffer (read + write counted; best of ``repeats``)."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    t = _best_seconds(lambda: dst.copy_(src), repeats, _sync_for(device))
    return 2 * src.numel() * 4 / t


def measure_matmul_rate(dtype: ComputeDtype, device: torch.device, *, size: int, repeats: int = 3) -> float:
    """Operations per second of a ``size``-cube matmul in ``dtype`` (2 ops per multiply-add; best of ``repeats``).

    fp32/fp16/bf16 use ``torch.mm``; int8 uses ``torch._int_mm`` (int32 accumulate); int4 on a CPU
    uses ``aten._weight_int4pack_mm_for_cpu`` (int4 weights, bf16 activations).

    Raises:
        SqueezerayError: When this torch build has no kernel for ``dtype`` on ``device``.
    """
    sync = _sync_for(device)
    n = size
    if dtype in (ComputeDtype.FP32, ComputeDtype.FP16, ComputeDtype.BF16):
        tdt = {ComputeDtype.FP32: torch.float32, ComputeDtype.FP16: torch.float16, ComputeDtype.BF16: torch.bfloat16}[dtype]
        a = torch.randn(n, n, device=device).to(tdt)
        b = torch.randn(n, n, device=device).to(tdt)
        fn: Callable[[], object] = lambda: torch.mm(a, b)  # noqa: E731
    elif dtype is ComputeDtype.INT8:
        a8 = torch.randint(-127, 128, (n, n), dtype=torch.int8, device=device)
        b8 = torch.randint(-127, 128, (n, n), dtype=torch.int8, device=device)
        fn = lambda: torch._int_mm(a8, b8)  # noqa: E731
    elif dtype is ComputeDtype.INT4 and device.type == "cpu":
        codes = torch.randint(0, 16, (n, n), dtype=torch.int32)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
        sz = torch.rand(n // 64, n, 2).to(torch.bfloat16)
        x = torch.randn(n, n).to(torch.bfloat16)
        fn = lambda: torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, 64, sz)  # noqa: E731
    else:
        raise SqueezerayError(f"no {dtype.value} matmul to measure on {device.type}")
    try:
        t = _best_seconds(fn, repeats, sync)
    except (RuntimeError, NotImplementedError) as err:
        raise SqueezerayError(f"{dtype.value} matmul is not available on {device.type}: {str(err).splitlines()[0]}") from None
    return 2 * n**3 / t


@dataclasses.dataclass(frozen=True)
class MicrobenchConfig:
    """Sizes of the host microbenchmarks.

    Attributes:
        copy_mb: Buffer copied for bandwidth (MB); should exceed the last-level cache several times.
        matmul_size: Side of the square matmuls timed per dtype.
        repeats: Timed repetitions (the fastest is kept: a peak figure, least disturbed by other load).
    """

    copy_mb: int = 256
    matmul_size: int = 1024
    repeats: int = 5

    @classmethod
    def quick(cls) -> MicrobenchConfig:
        """Tiny sizes for tests (numbers are then only indicative)."""
        return cls(copy_mb=16, matmul_size=256, repeats=2)


def _cpu_kernels() -> tuple[KernelPath, ...]:
    out = [KernelPath.REFERENCE]
    if hasattr(torch, "_int_mm"):
        out.append(KernelPath.CPU_INT8_DYNAMIC)
    if hasattr(torch.ops.aten, "_weight_int8pack_mm"):
        out.append(KernelPath.CPU_INT8_WEIGHT)
    if hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
        out.append(KernelPath.CPU_INT4)
    return tuple(out)


def _native_cpu_formats(flags: frozenset[str]) -> frozenset[ComputeDtype]:
    fmts = {ComputeDtype.FP32}
    if flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
        fmts.add(ComputeDtype.INT8)
    if flags & {"avx512_bf16", "amx_bf16"}:
        fmts.add(ComputeDtype.BF16)
    if flags & {"avx512_fp16", "amx_fp16"}:
        fmts.add(ComputeDtype.FP16)
    return frozenset(fmts)


def detect_host(*, device: str | torch.device = "cpu", bench: MicrobenchConfig | None = None) -> HardwareProfile:
    """Detect this machine's ``device`` and measure its throughput and bandwidth.

    Args:
        device: ``cpu`` (default) or ``cuda``.
        bench: Microbenchmark sizes (default: :class:`MicrobenchConfig`).

    Returns:
        A profile named ``host`` whose throughput and bandwidth figures have basis ``measured``.
    """
    dev = torch.device(device)
    cfg = bench or MicrobenchConfig()
    threads = torch.get_num_threads()
    how = f"squeezeray.hwprofiles.detect_host on this machine, {threads} torch thread(s), torch {torch.__version__}"
    if dev.type == "cuda":
        return _detect_cuda(dev, cfg, how)
    if dev.type != "cpu":
        raise SqueezerayError(f"device={str(dev)!r}: host detection supports cpu and cuda")
    info = parse_cpuinfo(_read("/proc/cpuinfo"))
    tops: dict[ComputeDtype, Figure] = {}
    native = _native_cpu_formats(info.flags)
    measured = [ComputeDtype.FP32, ComputeDtype.BF16, ComputeDtype.INT8, ComputeDtype.INT4]
    if ComputeDtype.FP16 in native:  # avx512_fp16 / amx_fp16 CPUs (Sapphire Rapids and later) compute fp16 natively
        measured.insert(1, ComputeDtype.FP16)
    for dtype in measured:
        try:
            rate = measure_matmul_rate(dtype, dev, size=cfg.matmul_size, repeats=cfg.repeats)
        except SqueezerayError as err:
            tops[dtype] = Figure(None, f"{how}: {err}", Basis.UNAVAILABLE)
            continue
        note = {
            ComputeDtype.FP32: "torch.mm float32",
            ComputeDtype.FP16: "torch.mm float16 (the CPU has avx512_fp16/amx_fp16)",
            ComputeDtype.BF16: "torch.mm bfloat16 (emulated unless the CPU has avx512_bf16/amx_bf16)",
            ComputeDtype.INT8: "torch._int_mm int8 x int8 -> int32",
            ComputeDtype.INT4: "aten._weight_int4pack_mm_for_cpu: int4 weights, bf16 activations",
        }[dtype]
        tops[dtype] = Figure(rate / 1e12, how, Basis.MEASURED, f"{note}, {cfg.matmul_size}^3, best of {cfg.repeats}")
    bw = measure_copy_bandwidth(dev, nbytes=cfg.copy_mb * 2**20, repeats=cfg.repeats)
    mem = mem_total_gb(_read("/proc/meminfo"))
    features = tuple(f for f in RELEVANT_FLAGS if f in info.flags)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return HardwareProfile(
        name="host",
        device=f"{info.model} ({cores} logical CPUs available, {threads} torch threads)",
        kind=DeviceKind.CPU,
        vendor=platform.system().lower() + "-host",
        dense_tops=tops,
        sparse24_speedup=Figure(1.0, "x86 CPUs have no 2:4 structured-sparsity instructions", Basis.DERIVED),
        memory_bandwidth_gbs=Figure(
            bw / 1e9, how, Basis.MEASURED, f"tensor copy of {cfg.copy_mb} MB, read + write bytes, best of {cfg.repeats}"
        ),
        memory_capacity_gb=(
            Figure(mem, "/proc/meminfo MemTotal", Basis.MEASURED)
            if mem is not None
            else Figure(None, "/proc/meminfo unreadable", Basis.UNAVAILABLE)
        ),
        tdp_w=Figure(None, "CPU power is not readable from the OS here; pass a power figure explicitly", Basis.UNAVAILABLE),
        idle_w=Figure(None, "not readable from the OS", Basis.UNAVAILABLE),
        formats=native,
        kernels=_cpu_kernels(),
        features=features,
    )


def _detect_cuda(dev: torch.device, cfg: MicrobenchConfig, how: str) -> HardwareProfile:
    if not torch.cuda.is_available():
        raise SqueezerayError("device='cuda': no CUDA device is available")
    props = torch.cuda.get_device_properties(dev)
    tops: dict[ComputeDtype, Figure] = {}
    for dtype in (ComputeDtype.FP32, ComputeDtype.FP16, ComputeDtype.BF16, ComputeDtype.INT8):
        try:
            rate = measure_matmul_rate(dtype, dev, size=max(cfg.matmul_size, 4096), repeats=cfg.repeats)
        except SqueezerayError as err:
            tops[dtype] = Figure(None, f"{how}: {err}", Basis.UNAVAILABLE)
            continue
        tops[dtype] = Figure(rate / 1e12, how, Basis.MEASURED, "square matmul, best of repeats")
    bw = measure_copy_bandwidth(dev, nbytes=max(cfg.copy_mb, 1024) * 2**20, repeats=cfg.repeats)
    cc = f"sm_{props.major}{props.minor}"
    kernels = [KernelPath.REFERENCE]
    try:
        import triton  # noqa: F401

        kernels += [KernelPath.TRITON_DEQUANT, KernelPath.TRITON_SPARSE24, KernelPath.TRITON_W8A8]
    except ImportError:
        pass
    return HardwareProfile(
        name="host",
        device=f"{props.name} ({cc})",
        kind=DeviceKind.GPU,
        vendor="nvidia" if torch.version.cuda else "unknown",
        dense_tops=tops,
        sparse24_speedup=Figure(None, "not measured by detect_host; use the datasheet profile", Basis.UNAVAILABLE),
        memory_bandwidth_gbs=Figure(bw / 1e9, how, Basis.MEASURED, "device-to-device copy, read + write bytes"),
        memory_capacity_gb=Figure(props.total_memory / 1e9, "torch.cuda.get_device_properties", Basis.MEASURED),
        tdp_w=Figure(None, "not queried (use NVML or the datasheet profile)", Basis.UNAVAILABLE),
        idle_w=Figure(None, "not queried", Basis.UNAVAILABLE),
        formats=frozenset({ComputeDtype.FP32, ComputeDtype.FP16, ComputeDtype.BF16, ComputeDtype.INT8}),
        kernels=tuple(kernels),
        features=(cc,),
    )
