"""Storage formats of compressed weights (pure math on tensors).

A :class:`QuantGrid` holds, per output row and input group, the scale (and zero
point) that maps a float weight to an integer code and back. The same grid type
serves integer (RTN/GPTQ/AWQ/W8A8), NF4 and FP8-E4M3 codes.

Integer codes, ``maxq = 2**bits - 1``:
    symmetric:  zero = (maxq + 1) / 2 (implicit, not stored), scale = 2 * absmax / maxq
    asymmetric: zero = round(-min / scale) stored in ``bits`` bits, scale = (max - min) / maxq
    code = clamp(round(w / scale) + zero, 0, maxq);  w_hat = scale * (code - zero)
    float minimum (GGUF's Q4_1/Q5_1): a float offset ``min`` per group instead of an integer zero,
    code = clamp(round((w - min) / scale), 0, maxq);  w_hat = scale * code + min
NF4: code indexes the 16-value NormalFloat table; w_hat = NF4[code] * absmax.
FP8: code is the E4M3 bit pattern of w / scale with scale = absmax / 448.
"""

from __future__ import annotations

import dataclasses
import enum

import torch

from squeezeray._errors import InfeasibleStepError

FP8_E4M3_MAX = 448.0

# QLoRA's NormalFloat-4 levels (quantiles of N(0,1), normalised to [-1, 1]).
NF4_LEVELS = torch.tensor(
    [
        -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
        -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
        0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
        0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
    ]
)


class QuantFormat(str, enum.Enum):
    """How codes map to values."""

    INT = "int"
    NF4 = "nf4"
    FP8_E4M3 = "fp8_e4m3"


class SparsityPattern(str, enum.Enum):
    """Which weights a pruning step may remove, and so how the mask is stored."""

    UNSTRUCTURED = "unstructured"  # any weight; stored as a 1-bit-per-weight bitmap
    NM = "nm"  # N kept of every M consecutive inputs; stored as indices (ceil(log2 M) bits each)
    ROWS = "rows"  # whole output channels; stored as the kept row indices
    HEADS = "heads"  # whole attention heads (groups of head_dim output rows)


@dataclasses.dataclass(frozen=True)
class SuperScales:
    """Two-level scales (GGUF's K-quants): per super-block of ``block`` inputs a float ``d`` (and ``dmin``), per
    group an integer multiplier ``sc`` of ``scale_bits`` bits (and ``mq``), so a group's scale is ``d * sc`` and its
    minimum ``-(dmin * mq)``, both computed in float32 as llama.cpp does.

    Attributes:
        block: Inputs per super-block (a multiple of the grid's group size).
        scale_bits: Bits of each multiplier: signed (two's complement range) on a symmetric grid, unsigned otherwise.
        d: (out, n_super) float32 holding float16 values.
        sc: (out, n_groups) int64 multipliers.
        dmin: (out, n_super) float32 holding float16 values, or None on a symmetric grid.
        mq: (out, n_groups) int64 minimum multipliers (unsigned), or None on a symmetric grid.
    """

    block: int
    scale_bits: int
    d: torch.Tensor
    sc: torch.Tensor
    dmin: torch.Tensor | None = None
    mq: torch.Tensor | None = None

    def _per_group(self, t: torch.Tensor) -> torch.Tensor:
        return t.repeat_interleave(self.sc.shape[1] // t.shape[1], dim=1)

    def scales(self) -> torch.Tensor:
        """(out, n_groups) float32 group scales ``d * sc``."""
        return self._per_group(self.d) * self.sc.float()

    def mins(self) -> torch.Tensor | None:
        """(out, n_groups) float32 group minimums ``-(dmin * mq)``, or None on a symmetric grid."""
        if self.dmin is None or self.mq is None:
            return None
        return -(self._per_group(self.dmin) * self.mq.float())

    def select_rows(self, rows: torch.Tensor) -> SuperScales:
        return dataclasses.replace(
            self, d=self.d[rows], sc=self.sc[rows], dmin=None if self.dmin is None else self.dmin[rows],
            mq=None if self.mq is None else self.mq[rows])


@dataclasses.dataclass(frozen=True)
class QuantGrid:
    """Per-(row, group) quantization parameters of one weight matrix.

    Attributes:
        fmt: Code format.
        bits: Bits per code (8 for FP8, 4 for NF4).
        group_size: Inputs per group; equals in_features for one group per row. When it
            does not divide in_features the last group is shorter (n_groups = ceil(in / gs)).
        symmetric: Integer format only; asymmetric grids store ``zeros``.
        scales: (out, n_groups) float32.
        zeros: (out, n_groups) float32 holding integer values, or None when symmetric or ``mins`` is set.
        mins: (out, n_groups) float32 offsets of an asymmetric grid with a float minimum per group
            (``w_hat = scale * code + min``, computed in float32 in that order, as llama.cpp does), or None.
        superblock: Where ``scales``/``mins`` come from when they are two-level (K-quants): what is stored.
    """

    fmt: QuantFormat
    bits: int
    group_size: int
    symmetric: bool
    scales: torch.Tensor
    zeros: torch.Tensor | None
    mins: torch.Tensor | None = None
    superblock: SuperScales | None = None

    def __post_init__(self) -> None:
        if self.mins is not None and (self.fmt is not QuantFormat.INT or self.symmetric or self.zeros is not None):
            raise ValueError("a grid with float minimums is an asymmetric integer grid without integer zeros")

    @property
    def float_min(self) -> bool:
        return self.mins is not None

    @property
    def maxq(self) -> int:
        return (1 << self.bits) - 1

    def _expand(self, t: torch.Tensor, in_features: int) -> torch.Tensor:
        # (out, n_groups) -> (out, in)
        return t.repeat_interleave(self.group_size, dim=1)[:, :in_features]

    def zero_points(self) -> torch.Tensor:
        if self.mins is not None:
            raise ValueError("a grid with float minimums has no integer zero points")
        if self.zeros is not None:
            return self.zeros
        return torch.full_like(self.scales, (self.maxq + 1) / 2)

    def grouped(self, t: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """(out, in) -> (out, n_groups, group_size), padding a ragged last group with ``fill``."""
        n_groups = self.scales.shape[1]
        pad = n_groups * self.group_size - t.shape[1]
        if pad:
            t = torch.nn.functional.pad(t, (0, pad), value=fill)
        return t.reshape(t.shape[0], n_groups, self.group_size)

    def quantize(self, w: torch.Tensor) -> torch.Tensor:
        """Codes (uint8, same shape as ``w``) of a (out, in) float weight on this grid."""
        return self.quantize_grouped(self.grouped(w.float())).reshape(w.shape[0], -1)[:, : w.shape[1]]

    def quantize_grouped(self, g: torch.Tensor) -> torch.Tensor:
        """Codes (uint8) of a float weight already in groups, (out, n_groups, group_size) (:meth:`grouped`)."""
        scale = self.scales.unsqueeze(-1)
        if self.mins is not None:
            q = torch.clamp(torch.round((g - self.mins.unsqueeze(-1)) / scale), 0, self.maxq).to(torch.uint8)
        elif self.fmt is QuantFormat.INT:
            zero = self.zero_points().unsqueeze(-1)
            q = torch.clamp(torch.round(g / scale) + zero, 0, self.maxq).to(torch.uint8)
        elif self.fmt is QuantFormat.NF4:
            x = (g / scale).clamp(-1, 1)
            levels = NF4_LEVELS.to(x.device)
            q = torch.argmin((x.unsqueeze(-1) - levels).abs(), dim=-1).to(torch.uint8)
        else:
            x = (g / scale).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX)
            q = x.to(torch.float8_e4m3fn).view(torch.uint8)
        return q

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """Float32 (out, in) values of uint8 codes on this grid."""
        return self.dequantize_grouped(self.grouped(codes)).reshape(codes.shape[0], -1)[:, : codes.shape[1]]

    def dequantize_grouped(self, g: torch.Tensor) -> torch.Tensor:
        """Float32 values of uint8 codes already in groups, (out, n_groups, group_size)."""
        scale = self.scales.unsqueeze(-1)
        if self.mins is not None:
            w = g.float() * scale + self.mins.unsqueeze(-1)
        elif self.fmt is QuantFormat.INT:
            w = (g.float() - self.zero_points().unsqueeze(-1)) * scale
        elif self.fmt is QuantFormat.NF4:
            w = NF4_LEVELS.to(g.device)[g.long()] * scale
        else:
            w = g.view(torch.float8_e4m3fn).float() * scale
        return w

    def fake_quantize(self, w: torch.Tensor) -> torch.Tensor:
        """Round ``w`` to the nearest grid value (dequantize(quantize(w)))."""
        return self.dequantize(self.quantize(w))

    def fake_quantize_grouped(self, g: torch.Tensor) -> torch.Tensor:
        """:meth:`fake_quantize` of a float weight already in groups (zero padding stays exactly 0 on every grid
        without float minimums)."""
        return self.dequantize_grouped(self.quantize_grouped(g))

    def columns(self, start: int, stop: int, in_features: int) -> QuantGrid:
        """The grid restricted to input columns [start, stop) (for column-wise solvers)."""
        scale = self._expand(self.scales, in_features)[:, start:stop]
        zeros = None if self.zeros is None else self._expand(self.zeros, in_features)[:, start:stop]
        mins = None if self.mins is None else self._expand(self.mins, in_features)[:, start:stop]
        return dataclasses.replace(self, group_size=1, scales=scale, zeros=zeros, mins=mins, superblock=None)

    def select_rows(self, rows: torch.Tensor) -> QuantGrid:
        """The grid of output rows ``rows`` (integer indices), every per-row tensor indexed alike."""
        zeros = None if self.zeros is None else self.zeros[rows]
        mins = None if self.mins is None else self.mins[rows]
        sb = None if self.superblock is None else self.superblock.select_rows(rows)
        return dataclasses.replace(self, scales=self.scales[rows], zeros=zeros, mins=mins, superblock=sb)


def minmax_grid(
    w: torch.Tensor,
    *,
    bits: int,
    group_size: int | None,
    symmetric: bool,
    fmt: QuantFormat = QuantFormat.INT,
    clip: float = 1.0,
) -> QuantGrid:
    """The min/max (round-to-nearest) grid of a (out, in) weight.

    Args:
        w: (out, in) float weight.
        bits: Bits per code.
        group_size: Inputs per group, or None for one group per row.
        symmetric: Integer format only.
        fmt: Code format.
        clip: Shrink the range by this factor (AWQ/MSE clipping searches use < 1).
    """
    out_f, in_f = w.shape
    gs = in_f if group_size is None else group_size
    if gs > in_f:
        raise InfeasibleStepError(f"group_size={gs} exceeds in_features={in_f}")
    wf = w.float()
    if in_f % gs:  # ragged last group (e.g. 576 = 4 x 128 + 64): zero padding moves no min/max
        wf = torch.nn.functional.pad(wf, (0, gs - in_f % gs))
    g = wf.reshape(out_f, -1, gs)  # (out, n_groups, gs)
    tiny = torch.finfo(torch.float32).tiny * 1e4
    if fmt is QuantFormat.INT and not symmetric:
        lo = g.amin(dim=2).clamp(max=0) * clip
        hi = g.amax(dim=2).clamp(min=0) * clip
        maxq = (1 << bits) - 1
        scale = ((hi - lo) / maxq).clamp(min=tiny)
        zero = torch.round(-lo / scale).clamp(0, maxq)
        return QuantGrid(fmt, bits, gs, False, scale, zero)
    absmax = g.abs().amax(dim=2) * clip
    if fmt is QuantFormat.INT:
        scale = (2 * absmax / ((1 << bits) - 1)).clamp(min=tiny)
    elif fmt is QuantFormat.NF4:
        scale = absmax.clamp(min=tiny)
    else:
        scale = (absmax / FP8_E4M3_MAX).clamp(min=tiny)
    return QuantGrid(fmt, bits, gs, True, scale, None)


def sqnr_db(reference: torch.Tensor, approx: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB (higher is better)."""
    noise = (reference.float() - approx.float()).pow(2).mean()
    signal = reference.float().pow(2).mean()
    return float(10 * torch.log10(signal / noise.clamp(min=1e-30)))
