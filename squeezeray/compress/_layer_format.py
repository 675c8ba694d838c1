"""How to read a compressed linear layer's buffers: everything but the tensors (one frozen, versioned record)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from squeezeray.techniques._formats import QuantFormat
from squeezeray.techniques._formats import SparsityPattern

FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class LayerFormat:
    """Everything but the tensors: how to read a compressed layer's buffers.

    Attributes:
        out_features, in_features: Shape of the original weight.
        quant_format: Code format, or None for float16 values.
        bits, group_size, symmetric: Grid settings (quantized layers).
        float_min: An asymmetric grid stored as float16 minimums (``mins``), not integer zero points.
        superblock, scale_bits: Two-level scales (K-quants): inputs per super-block and bits per multiplier;
            0 when the scales are stored as float16.
        pattern: Sparsity pattern, or None when dense.
        n, m: For n:m sparsity.
        n_kept: Number of stored main-path weights.
        rank: Low-rank rank (0 if none); ``lowrank_only`` when it is the whole weight.
        act_bits: 8 = dynamic per-token INT8 activations after ``smooth``;
            16 = only the per-channel ``smooth`` scale (AWQ); 0 = no smoothing.
        steps: Labels of the technique steps that produced this layer.
        notes: What a step did other than asked (e.g. ``gptq: Hessian damping raised from 0.01 to 0.1``);
            written to JSON only when there are any.
    """

    out_features: int
    in_features: int
    quant_format: QuantFormat | None
    bits: int
    group_size: int
    symmetric: bool
    pattern: SparsityPattern | None
    n: int
    m: int
    n_kept: int
    rank: int
    lowrank_only: bool
    act_bits: int
    has_bias: bool
    steps: tuple[str, ...]
    version: int = FORMAT_VERSION
    notes: tuple[str, ...] = ()
    float_min: bool = False
    superblock: int = 0
    scale_bits: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for key in ("float_min", "superblock", "scale_bits"):
            if not d[key]:
                d.pop(key)  # layers of every other grid read (and are keyed) as before the field existed
        d["quant_format"] = None if self.quant_format is None else self.quant_format.value
        d["pattern"] = None if self.pattern is None else self.pattern.value
        d["steps"] = list(self.steps)
        if self.notes:
            d["notes"] = list(self.notes)
        else:
            d.pop("notes")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayerFormat:
        if d.get("version") != FORMAT_VERSION:
            raise ValueError(f"layer format version {d.get('version')!r} is not {FORMAT_VERSION}")
        d = dict(d)
        d["quant_format"] = None if d["quant_format"] is None else QuantFormat(d["quant_format"])
        d["pattern"] = None if d["pattern"] is None else SparsityPattern(d["pattern"])
        d["steps"] = tuple(d["steps"])
        d["notes"] = tuple(d.get("notes", ()))
        return cls(**d)

    @property
    def nm_bits(self) -> int:
        return max(1, math.ceil(math.log2(self.m))) if self.m else 0
