"""Wall-clock latency measured on this host: end to end (prefill, decode) and per linear layer.

Compressed layers run their stored form. By default (:attr:`KernelPolicy.FASTEST`)
:class:`Latency` first lets a :class:`~squeezeray.kernels.KernelSelector` attach, per
layer, the fastest kernel path that matches the torch reference (int8 / int4 matmuls
on a CPU, Triton kernels on a GPU), so the figure reflects the compression; the
paths that ran are listed in the measurement's details.
"""

from __future__ import annotations

import enum
import statistics
import time
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from squeezeray._device import device_description  # noqa: F401 - re-exported: where a latency ran
from squeezeray._device import model_device
from squeezeray._offload import refuse_offloaded
from squeezeray.kernels import KernelSelector
from squeezeray.kernels import TimingStats
from squeezeray.kernels import path_summary
from squeezeray.kernels import time_callable
from squeezeray.kernels import use_reference

from squeezeray.objectives._base import BaseObjective
from squeezeray.objectives._base import Direction
from squeezeray.objectives._base import EvalContext
from squeezeray.objectives._base import Measurement
from squeezeray.objectives._base import Provenance


def _sync(device: torch.device) -> None:
    if device.type == "cuda":  # kernels run asynchronously: the clock is read after they finish
        torch.cuda.synchronize(device)


@torch.no_grad()
def time_forward(
    model: nn.Module, ids: torch.Tensor, *, warmup: int = 1, repeats: int = 5, device: torch.device | None = None
) -> list[float]:
    """Seconds per forward pass of ``ids`` (B, T), after ``warmup`` untimed passes (CUDA synchronised)."""
    refuse_offloaded(model, "latency")
    device = device or model_device(model)
    for _ in range(warmup):
        model(input_ids=ids, use_cache=False)
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        model(input_ids=ids, use_cache=False)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def prefill(model: nn.Module, ids: torch.Tensor) -> Any:
    """Run ``ids`` (B, T) with the KV cache on; returns the cache (transformers 5's ``cache`` argument)."""
    return model(input_ids=ids, use_cache=True).cache


def decode_step(model: nn.Module, tok: torch.Tensor, cache: Any) -> Any:
    """One token per sequence (B, 1) on ``cache``; returns the updated cache."""
    return model(input_ids=tok, cache=cache, use_cache=True).cache


@torch.no_grad()
def time_decode(
    model: nn.Module, ids: torch.Tensor, *, new_tokens: int = 16, warmup: int = 1, repeats: int = 3,
    device: torch.device | None = None,
) -> list[float]:
    """Seconds per decode step (one new token per sequence, KV cache on) after prefilling ``ids``.

    Each repetition prefills ``ids`` (B, T) untimed and then times ``new_tokens`` single-token
    steps; the first ``warmup`` repetitions are discarded.
    """
    refuse_offloaded(model, "latency")
    device = device or model_device(model)
    steps: list[float] = []
    for r in range(warmup + repeats):
        cache = prefill(model, ids)
        tok = ids[:, -1:]  # (B, 1)
        for _ in range(new_tokens):
            _sync(device)
            t0 = time.perf_counter()
            cache = decode_step(model, tok, cache)
            _sync(device)
            dt = time.perf_counter() - t0
            if r >= warmup:
                steps.append(dt)
    return steps


def linear_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every ``nn.Linear`` and :class:`~squeezeray.compress.CompressedLinear` of ``model`` by name."""
    from squeezeray.compress import CompressedLinear

    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Linear, CompressedLinear))}


@torch.no_grad()
def time_layers(
    model: nn.Module,
    *,
    tokens: int,
    names: Iterable[str] | None = None,
    warmup: int = 2,
    repeats: int = 7,
    flush: bool = False,
    seed: int = 0,
) -> dict[str, TimingStats]:
    """Time each linear layer alone on a random (tokens, in) input in the layer's dtype.

    Args:
        model: Model whose linear layers (plain or compressed) are timed as they are set up.
        tokens: Rows of the input (1 for decode, batch x seq_len for prefill).
        names: Layers to time (default: all).
        warmup, repeats: Per layer.
        flush: Evict the last-level cache (L2 on GPU) before each timed call, so weights come from DRAM.
        seed: Seed of the inputs.
    """
    layers = linear_layers(model)
    wanted = list(layers) if names is None else list(names)
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, TimingStats] = {}
    for name in wanted:
        mod = layers[name]
        w = next(iter(mod.parameters()), None) if isinstance(mod, nn.Linear) else None
        dtype = w.dtype if w is not None else torch.float32
        device = w.device if w is not None else next(iter(mod.buffers())).device
        x = torch.randn(tokens, mod.in_features, generator=gen).to(device=device, dtype=dtype)
        out[name] = time_callable(lambda mod=mod, x=x: mod(x), device=device, warmup=warmup, repeats=repeats, flush=flush)
    return out


class Phase(str, enum.Enum):
    """Which part of generation a latency figure is for."""

    PREFILL = "prefill"  # one forward pass over the whole prompt; ms per pass
    DECODE = "decode"  # one new token per sequence with the KV cache; ms per step


class KernelPolicy(str, enum.Enum):
    """Which paths compressed layers run while they are timed."""

    FASTEST = "fastest"  # select the fastest correct kernel per layer first (squeezeray.kernels)
    REFERENCE = "reference"  # the torch reference (unpack + dequantize + matmul every call)
    AS_IS = "as-is"  # whatever is attached already


class Latency(BaseObjective):
    """Median latency measured here: prefill (ms per pass) or decode (ms per token step).

    Args:
        seq_len: Prompt length.
        batch: Sequences.
        warmup, repeats: Untimed and timed repetitions.
        phase: Prefill or decode.
        new_tokens: Decode steps timed per repetition.
        kernels: Kernel policy; the default picks the fastest correct path per layer, reusing one
            :class:`~squeezeray.kernels.KernelSelector` (and its timing cache) across candidates.
    """

    name = "latency"
    swap_safe = True  # measures the candidate alone (reference results come from the cache)
    direction = Direction.MINIMIZE
    unit = "ms"

    def __init__(
        self,
        *,
        seq_len: int = 128,
        batch: int = 1,
        warmup: int = 1,
        repeats: int = 5,
        phase: Phase | str = Phase.PREFILL,
        new_tokens: int = 16,
        kernels: KernelPolicy | str = KernelPolicy.FASTEST,
    ) -> None:
        self.seq_len, self.batch, self.warmup, self.repeats = seq_len, batch, warmup, repeats
        self.phase = Phase(phase)
        self.new_tokens = new_tokens
        self.kernels = KernelPolicy(kernels)
        self._selector: KernelSelector | None = None

    def _prepare(self, model: nn.Module) -> None:
        if self.kernels is KernelPolicy.REFERENCE:
            use_reference(model)
        elif self.kernels is KernelPolicy.FASTEST:
            device = model_device(model)
            if self._selector is None:
                self._selector = KernelSelector(device=device, token_counts=(self.batch, self.batch * self.seq_len))
            self._selector.select_model(model)

    def measure(self, ctx: EvalContext) -> Measurement:
        device = model_device(ctx.candidate)
        ids = ctx.eval_data.ids.reshape(-1)[: self.batch * self.seq_len].view(self.batch, self.seq_len).to(device)
        self._prepare(ctx.candidate)
        if self.phase is Phase.PREFILL:
            times = time_forward(ctx.candidate, ids, warmup=self.warmup, repeats=self.repeats, device=device)
        else:
            times = time_decode(ctx.candidate, ids, new_tokens=self.new_tokens, warmup=self.warmup, repeats=self.repeats,
                                device=device)
        ms = [1000 * t for t in times]
        return Measurement(
            self.name, statistics.median(ms), self.unit, Provenance.MEASURED, device_description(device),
            {
                "phase": self.phase.value, "shape": [self.batch, self.seq_len], "repeats": self.repeats,
                "min_ms": min(ms), "max_ms": max(ms), "kernels": self.kernels.value,
                "paths": path_summary(ctx.candidate),
            },
        )
