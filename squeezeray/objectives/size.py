"""Exact stored size of a model."""

from __future__ import annotations

import torch
from torch import nn

from squeezeray.compress import DENSE_BYTES  # uncompressed tensors are counted as float16/bfloat16
from squeezeray.objectives._base import BaseObjective
from squeezeray.objectives._base import Direction
from squeezeray.objectives._base import EvalContext
from squeezeray.objectives._base import Measurement
from squeezeray.objectives._base import Provenance


def average_bits(compressed_bytes: float, compressed_weights: float) -> float:
    """Average bits per weight: 8 x the stored bytes of the compressed layers (codes, scales, zero points,
    masks, factors) over their weight count."""
    return 8.0 * compressed_bytes / compressed_weights if compressed_weights else float("nan")


def compressed_weights(model: nn.Module) -> int:
    """Weights (out x in) held by the model's compressed layers."""
    from squeezeray.compress import CompressedLinear

    return sum(m.fmt.out_features * m.fmt.in_features for m in model.modules() if isinstance(m, CompressedLinear))


def model_nbytes(model: nn.Module) -> tuple[int, int]:
    """(total bytes, bytes in compressed layers).

    Compressed layers count every stored tensor (codes, scales, zero points,
    masks, n:m indices, low-rank factors, smoothing vectors, bias) and their
    header; every other parameter and buffer counts at 2 bytes per element,
    shared (tied) tensors once. Non-persistent buffers (e.g. rotary tables,
    recomputed at load) are not counted.
    """
    from squeezeray.compress import CompressedLinear

    seen: set[int] = set()
    total = compressed = 0
    for module in model.modules():
        if isinstance(module, CompressedLinear):
            n = module.nbytes()
            total += n
            compressed += n
            continue
        tensors = list(module.named_parameters(recurse=False))
        persistent = [(k, b) for k, b in module.named_buffers(recurse=False) if k not in module._non_persistent_buffers_set]
        for _, t in tensors + persistent:
            if not isinstance(t, torch.Tensor) or id(t) in seen:
                continue
            seen.add(id(t))
            total += t.numel() * DENSE_BYTES
    return total, compressed


class Size(BaseObjective):
    """Model size in bytes as stored (exact count, not an estimate)."""

    name = "size"
    swap_safe = True  # measures the candidate alone (reference results come from the cache)
    direction = Direction.MINIMIZE
    unit = "bytes"

    def measure(self, ctx: EvalContext) -> Measurement:
        total, compressed = model_nbytes(ctx.candidate)
        return Measurement(
            self.name, float(total), self.unit, Provenance.COMPUTED,
            "stored tensors; uncompressed tensors at 2 bytes/element",
            {"compressed_layer_bytes": compressed, "compressed_weights": compressed_weights(ctx.candidate)},
        )
