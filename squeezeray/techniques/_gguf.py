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

BLOCK = 32  # inputs per block of every "_0" type
FP16_MIN_NORMAL = 2.0**-14


class GGUFType(str, enum.Enum):
    """GGUF block types a quantize step can produce exactly."""

    Q8_0 = "q8_0"
    Q5_1 = "q5_1"
    Q5_0 = "q5_0"
    Q4_1 = "q4_1"
    Q4_0 = "q4_0"

    @property
    def bits(self) -> int:
        return _SPECS[self].bits

    @property
    def has_min(self) -> bool:
        """The "_1" types: an fp16 minimum per block (an asymmetric grid); the "_0" types are symmetric."""
        return _SPECS[self].has_min

    @property
    def block_bytes(self) -> int:
        """Bytes of one block of 32 weights in the file (fp16 scale, fp16 minimum for "_1", codes)."""
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


_SPECS = {
    GGUFType.Q8_0: _Spec(8, 127.0, False),
    GGUFType.Q5_1: _Spec(5, 31.0, False, True),
    GGUFType.Q5_0: _Spec(5, -16.0, True),
    GGUFType.Q4_1: _Spec(4, 15.0, False, True),
    GGUFType.Q4_0: _Spec(4, -8.0, True),
}


def gguf_grid(w: torch.Tensor, qtype: GGUFType) -> QuantGrid:
    """The block grid llama.cpp would use for ``w`` (out, in), scales rounded to fp16.

    A block whose scale rounds to zero (all its weights below fp16's range) gets fp16's smallest normal
    number instead: its codes decode to (nearly) 0, and the file holds that scale exactly.

    Raises:
        InfeasibleStepError: ``in`` is not a multiple of 32 (a GGUF row is whole blocks).
    """
    out_f, in_f = w.shape
    if in_f % BLOCK:
        raise InfeasibleStepError(f"{qtype.value}: rows of {in_f} inputs are not whole blocks of {BLOCK}")
    spec = _SPECS[qtype]
    g = w.detach().float().reshape(out_f, in_f // BLOCK, BLOCK)
    if spec.has_min:
        m = g.amin(dim=2).to(torch.float16).float()
        d = ((g.amax(dim=2) - m) / spec.divisor).to(torch.float16).float()
        d = torch.where(d == 0, torch.full_like(d, FP16_MIN_NORMAL), d)
        return QuantGrid(QuantFormat.INT, spec.bits, BLOCK, False, d, None, mins=m)
    if spec.signed_max:
        at = g.abs().argmax(dim=2, keepdim=True)
        peak = torch.gather(g, 2, at).squeeze(2)
    else:
        peak = g.abs().amax(dim=2)
    d = (peak / spec.divisor).to(torch.float16).float()
    d = torch.where(d == 0, torch.full_like(d, FP16_MIN_NORMAL), d)
    return QuantGrid(QuantFormat.INT, spec.bits, BLOCK, True, d, None)


def pack_blocks(
    codes: torch.Tensor, scales: torch.Tensor, qtype: GGUFType, mins: torch.Tensor | None = None
) -> np.ndarray:
    """The GGUF bytes of a (out, in) code matrix on a :func:`gguf_grid` (``scales``, and ``mins`` for the
    "_1" types: (out, in // 32)).

    Returns:
        uint8 array (out, in // 32 * block_bytes): each row's blocks in order, as ``gguf.quants``
        lays them out (and so as llama.cpp reads them).
    """
    out_f, in_f = codes.shape
    n = out_f * (in_f // BLOCK)
    q = codes.to(torch.int16).reshape(n, BLOCK).numpy()
    d = scales.reshape(n, 1).numpy().astype(np.float16).view(np.uint8)  # (n, 2)
    if qtype.has_min != (mins is not None):
        raise ValueError(f"{qtype.value}: block minimums {'missing' if qtype.has_min else 'given'}")
    if mins is not None:
        d = np.concatenate([d, mins.reshape(n, 1).numpy().astype(np.float16).view(np.uint8)], axis=1)  # (n, 4)
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
