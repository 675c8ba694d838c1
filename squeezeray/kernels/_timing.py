"""Timing of one callable: warm-up, repeats, median; CUDA events and an L2 flush on GPU.

On a GPU each repetition is bracketed by CUDA events after writing a buffer
larger than the L2 cache, so weights are read from HBM as in a real forward
pass (the Triton ``do_bench`` recipe). On a CPU the clock is
``time.perf_counter``; ``flush=True`` writes a buffer larger than the last-level
cache before each repetition for the same reason.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

_FALLBACK_LLC_BYTES = 64 * 2**20  # used when sysfs does not report an L3 size (flushing more is harmless)


@dataclasses.dataclass(frozen=True)
class TimingStats:
    """Seconds per call.

    Attributes:
        median_s, min_s, max_s: Over ``repeats`` timed calls.
        repeats: Timed calls (after warm-up).
        method: ``perf_counter`` or ``cuda-events``, with ``+flush`` when caches were flushed.
    """

    median_s: float
    min_s: float
    max_s: float
    repeats: int
    method: str

    @property
    def median_ms(self) -> float:
        return 1000 * self.median_s

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def last_level_cache_bytes() -> int:
    """Size of the largest CPU cache sysfs reports (bytes), or a 64 MiB default."""
    best = 0
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip()
        except OSError:
            continue
        mult = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        digits = text[:-1] if text[-1:] in "KMG" else text
        if digits.isdigit():
            best = max(best, int(digits) * mult)
    return best or _FALLBACK_LLC_BYTES


def time_callable(
    fn: Callable[[], object],
    *,
    device: torch.device | str = "cpu",
    warmup: int = 2,
    repeats: int = 7,
    flush: bool = False,
) -> TimingStats:
    """Time ``fn()``.

    Args:
        fn: The work; its result is discarded.
        device: Where ``fn`` runs (``cuda`` uses CUDA events).
        warmup: Untimed calls first (autotuning, allocator, caches).
        repeats: Timed calls; the median is the figure to report.
        flush: Evict caches before each timed call (L2 on GPU, last-level cache on CPU).

    Returns:
        The timing statistics.
    """
    if repeats < 1:
        raise ValueError(f"repeats={repeats}: must be at least 1")
    dev = torch.device(device)
    for _ in range(warmup):
        fn()
    if dev.type == "cuda":
        return _time_cuda(fn, dev, repeats, flush)
    scratch = torch.empty(2 * last_level_cache_bytes() // 4, dtype=torch.float32) if flush else None
    times = []
    for _ in range(repeats):
        if scratch is not None:
            scratch.fill_(1.0)
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return TimingStats(statistics.median(times), min(times), max(times), repeats, "perf_counter" + ("+flush" if flush else ""))


def _time_cuda(fn: Callable[[], object], dev: torch.device, repeats: int, flush: bool) -> TimingStats:
    l2 = int(getattr(torch.cuda.get_device_properties(dev), "L2_cache_size", 50 * 2**20))
    scratch = torch.empty(2 * l2 // 4, dtype=torch.float32, device=dev) if flush else None
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
    torch.cuda.synchronize(dev)
    for i in range(repeats):
        if scratch is not None:
            scratch.zero_()
        starts[i].record()
        fn()
        ends[i].record()
    torch.cuda.synchronize(dev)
    times = [s.elapsed_time(e) / 1000 for s, e in zip(starts, ends)]
    return TimingStats(statistics.median(times), min(times), max(times), repeats, "cuda-events" + ("+flush" if flush else ""))


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    *,
    device: torch.device | str = "cpu",
    warmup: int = 1,
    repeats: int = 7,
    flush: bool = False,
) -> dict[str, TimingStats]:
    """Time several callables round-robin: repetition ``r`` of every callable runs before repetition ``r + 1``.

    On a machine shared with other work, load drifts over seconds; interleaving exposes every
    callable to the same drift, so their *ratios* stay meaningful even when absolute times move.

    Args:
        fns: Label -> callable.
        device, warmup, repeats, flush: As in :func:`time_callable` (each timed call is timed alone).

    Returns:
        Label -> timing statistics.
    """
    if repeats < 1:
        raise ValueError(f"repeats={repeats}: must be at least 1")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for label, fn in fns.items():
            samples[label].append(time_callable(fn, device=device, warmup=0, repeats=1, flush=flush).median_s)
    method = ("cuda-events" if torch.device(device).type == "cuda" else "perf_counter") + ("+flush" if flush else "")
    return {
        k: TimingStats(statistics.median(v), min(v), max(v), repeats, method + "+interleaved") for k, v in samples.items()
    }
