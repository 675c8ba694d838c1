"""Wall-clock latency of a forward pass, measured on this host."""

from __future__ import annotations

import platform
import statistics
import time

import torch
from torch import nn

from squeezeray.objectives._base import BaseObjective
from squeezeray.objectives._base import Direction
from squeezeray.objectives._base import EvalContext
from squeezeray.objectives._base import Measurement
from squeezeray.objectives._base import Provenance


def host_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"host CPU {cpu}, torch {torch.__version__}, {torch.get_num_threads()} threads"


@torch.no_grad()
def time_forward(model: nn.Module, ids: torch.Tensor, *, warmup: int = 1, repeats: int = 5) -> list[float]:
    """Seconds per forward pass of ``ids`` (B, T), after ``warmup`` untimed passes."""
    for _ in range(warmup):
        model(input_ids=ids, use_cache=False)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(input_ids=ids, use_cache=False)
        times.append(time.perf_counter() - t0)
    return times


class Latency(BaseObjective):
    """Median prefill latency of one sequence, measured here (compressed layers run their stored form)."""

    name = "latency"
    direction = Direction.MINIMIZE
    unit = "ms"

    def __init__(self, *, seq_len: int = 128, batch: int = 1, warmup: int = 1, repeats: int = 5) -> None:
        self.seq_len, self.batch, self.warmup, self.repeats = seq_len, batch, warmup, repeats

    def measure(self, ctx: EvalContext) -> Measurement:
        ids = ctx.eval_data.ids.reshape(-1)[: self.batch * self.seq_len].view(self.batch, self.seq_len)
        times = time_forward(ctx.candidate, ids, warmup=self.warmup, repeats=self.repeats)
        ms = [1000 * t for t in times]
        return Measurement(
            self.name, statistics.median(ms), self.unit, Provenance.MEASURED, host_description(),
            {"shape": [self.batch, self.seq_len], "repeats": self.repeats, "min_ms": min(ms), "max_ms": max(ms)},
        )
