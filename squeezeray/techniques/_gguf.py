"""GGUF block formats whose codes squeezeray stores exactly (pure math on tensors).

The "_0" block types of llama.cpp (GGML) are symmetric integer grids on blocks of 32 inputs with one
fp16 scale ``d`` per block: ``w = d * (q - z)`` with the implicit zero point ``z`` of a symmetric grid
(``2**(bits-1)``). That is :class:`~squeezeray.techniques.QuantGrid`'s symmetric integer format at
``group_size=32`` with fp16 scales. The "_1" types (Q5_1, Q4_1) add an fp16 minimum ``m`` per block:
``w = d * q + m``, the grid's float-minimum form (``QuantGrid.mins``). So a layer quantized on
:func:`gguf_grid` holds, code for code and scale for scale, what a GGUF file of that type holds, and
:func:`pack_blocks` writes it in the file's block layout.

Scales follow llama.cpp's reference quantizers (``ggml-quants.c``; ``gguf.quants`` in Python):
Q8_0 ``d = absmax / 127``; Q5_0 ``d = m / -16`` and Q4_0 ``d = m / -8`` with ``m`` the block's value of
largest magnitude (so it maps to the most negative code); Q5_1/Q4_1 ``m = min``, ``d = (max - min) / maxq``.
Unlike the reference, ``m`` and then ``d`` are rounded to fp16 *before* the codes are chosen (``d`` spans
from the rounded minimum to the block's maximum), so the codes are the nearest ones for what the file stores.
"""

from __future__ import annotations

import dataclasses
import enum

import numpy as np
import torch

from squeezeray._errors import InfeasibleStepError
from squeezeray.techniques._formats import QuantFormat
from squeezeray.techniques._formats import QuantGrid
from squeezeray.techniques._gguf_k import SUPER
from squeezeray.techniques._gguf_k import fp16_scale
from squeezeray.techniques._gguf_k import k_grid
from squeezeray.techniques._gguf_k import pack_k_blocks
from squeezeray.techniques._gguf_k import signed_peak

BLOCK = 32  # inputs per block of every "_0"/"_1" type


class GGUFType(str, enum.Enum):
    """GGUF block types a quantize step can produce exactly."""

    Q8_0 = "q8_0"
    Q5_1 = "q5_1"
    Q5_0 = "q5_0"
    Q4_1 = "q4_1"
    Q4_0 = "q4_0"
    Q6_K = "q6_k"
    Q5_K = "q5_k"
    Q4_K = "q4_k"
    Q3_K = "q3_k"
    Q2_K = "q2_k"

    @property
    def bits(self) -> int:
        return _SPECS[self].bits

    @property
    def has_min(self) -> bool:
        """An asymmetric grid with a float minimum per group: "_1" types, Q5_K, Q4_K, Q2_K."""
        return _SPECS[self].has_min

    @property
    def is_k(self) -> bool:
        """A K-quant: groups' scales are integer multipliers of a super-block's fp16 scale."""
        return _SPECS[self].scale_bits > 0

    @property
    def group(self) -> int:
        """Inputs that share one scale (the grid's group size)."""
        return _SPECS[self].group

    @property
    def block(self) -> int:
        """Inputs per block of the file: 32, or 256 for a K-quant (so a row's length is a multiple of it)."""
        return SUPER if self.is_k else BLOCK

    @property
    def scale_bits(self) -> int:
        """Bits of a K-quant's scale multipliers (0 for the block-32 types)."""
        return _SPECS[self].scale_bits

    @property
    def block_bytes(self) -> int:
        """Bytes of one block of :attr:`block` weights in the file."""
        groups = self.block // self.group
        if self.is_k:
            return self.block * self.bits // 8 + groups * self.scale_bits * (1 + self.has_min) // 8 \
                + 2 * (1 + self.has_min)
        return 2 + 2 * self.has_min + BLOCK * self.bits // 8

    @property
    def ggml_type(self) -> int:
        """The ``GGMLQuantizationType`` value of the gguf package."""
        import gguf

        return int(getattr(gguf.GGMLQuantizationType, self.name))


@dataclasses.dataclass(frozen=True)
class _Spec:
    bits: int
    divisor: float  # d = (signed max-magnitude value, or absmax for Q8_0) / divisor; unused with a minimum
    signed_max: bool
    has_min: bool = False
    group: int = BLOCK
    scale_bits: int = 0  # K-quants: bits of each group's scale multiplier


_SPECS = {
    GGUFType.Q8_0: _Spec(8, 127.0, False),
    GGUFType.Q5_1: _Spec(5, 31.0, False, True),
    GGUFType.Q5_0: _Spec(5, -16.0, True),
    GGUFType.Q4_1: _Spec(4, 15.0, False, True),
    GGUFType.Q4_0: _Spec(4, -8.0, True),
    GGUFType.Q6_K: _Spec(6, 0.0, False, False, 16, 8),
    GGUFType.Q5_K: _Spec(5, 0.0, False, True, 32, 6),
    GGUFType.Q4_K: _Spec(4, 0.0, False, True, 32, 6),
    GGUFType.Q3_K: _Spec(3, 0.0, False, False, 16, 6),
    GGUFType.Q2_K: _Spec(2, 0.0, False, True, 16, 4),
}


def gguf_grid(w: torch.Tensor, qtype: GGUFType) -> QuantGrid:
    """The block grid llama.cpp would use for ``w`` (out, in), scales rounded to fp16.

    A block whose scale rounds to zero (all its weights below fp16's range) gets fp16's smallest normal
    number instead: its codes decode to (nearly) 0, and the file holds that scale exactly. K-quants: see
    :mod:`squeezeray.techniques._gguf_k`.

    Raises:
        InfeasibleStepError: ``in`` is not a multiple of the type's block (32; 256 for a K-quant).
    """
    out_f, in_f = w.shape
    if in_f % qtype.block:
        raise InfeasibleStepError(f"{qtype.value}: rows of {in_f} inputs are not whole blocks of {qtype.block}")
    spec = _SPECS[qtype]
    if qtype.is_k:
        return k_grid(w, bits=spec.bits, group=spec.group, scale_bits=spec.scale_bits, has_min=spec.has_min)
    g = w.detach().float().reshape(out_f, in_f // BLOCK, BLOCK)
    if spec.has_min:
        m = g.amin(dim=2).to(torch.float16).float()  # a minimum of 0 is stored as 0
        d = fp16_scale((g.amax(dim=2) - m) / spec.divisor)
        return QuantGrid(QuantFormat.INT, spec.bits, BLOCK, False, d, None, mins=m)
    peak = signed_peak(g, 2) if spec.signed_max else g.abs().amax(dim=2)
    return QuantGrid(QuantFormat.INT, spec.bits, BLOCK, True, fp16_scale(peak / spec.divisor), None)


def pack_blocks(codes: torch.Tensor, grid: QuantGrid, qtype: GGUFType) -> np.ndarray:
    """The GGUF bytes of a (out, in) code matrix on ``qtype``'s grid (:func:`gguf_grid`, or a layer's stored one).

    Returns:
        uint8 array (out, in // block * block_bytes): each row's blocks in order, as ``gguf.quants``
        lays them out (and so as llama.cpp reads them).

    Raises:
        ValueError: ``grid`` is not of ``qtype``'s form.
    """
    form = (grid.bits, grid.group_size, grid.float_min, grid.superblock is not None)
    if form != (qtype.bits, qtype.group, qtype.has_min, qtype.is_k):
        raise ValueError(f"{qtype.value}: the grid ({grid.bits} bits, groups of {grid.group_size}, float minimums "
                         f"{grid.float_min}, two-level scales {grid.superblock is not None}) is not this type's")
    if grid.superblock is not None:
        return pack_k_blocks(codes, grid.superblock, bits=qtype.bits, has_min=qtype.has_min)
    out_f, in_f = codes.shape
    n = out_f * (in_f // BLOCK)
    q = codes.to(torch.int16).reshape(n, BLOCK).numpy()
    d = grid.scales.reshape(n, 1).numpy().astype(np.float16).view(np.uint8)  # (n, 2)
    if grid.mins is not None:
        d = np.concatenate([d, grid.mins.reshape(n, 1).numpy().astype(np.float16).view(np.uint8)], axis=1)  # (n, 4)
    if qtype is GGUFType.Q8_0:
        body = (q - 128).astype(np.int8).view(np.uint8)
        parts = [d, body]
    else:
        qu = q.astype(np.uint8)
        lo = (qu[:, : BLOCK // 2] & 0x0F) | ((qu[:, BLOCK // 2:] & 0x0F) << 4)
        if qtype.bits == 4:
            parts = [d, lo]
        else:  # Q5_0 / Q5_1: the fifth bits of the 32 codes as a little-endian bit field
            qh = np.packbits((qu >> 4).reshape(n, 1, BLOCK), axis=-1, bitorder="little").reshape(n, 4)
            parts = [d, qh, lo]
    return np.concatenate(parts, axis=1).astype(np.uint8).reshape(out_f, -1)
