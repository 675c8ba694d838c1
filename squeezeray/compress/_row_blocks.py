"""Compressing a tall layer a block of output rows at a time, with the same stored result.

A technique's working set is several float32/float64 copies of the layer's weight (the state's
original and effective weight, GPTQ's float64 solve and its permuted copy, the dequantized check): for a
49,152 x 2,048 token table that is 2-4 GiB of temporaries for a moment, more than the rest of the
search holds. When every step of a layer's plan computes each output row from that row's weights and
the layer's calibration statistics alone (``BaseTechnique.rows_independent``: RTN, GPTQ, NF4, FP8), the
layer is compressed :data:`~squeezeray.compress._rows.ROW_BLOCK_BYTES` of float32 weight at a time and the packed blocks are joined
row-wise: the stored tensors are those of the whole layer compressed at once (codes, scales, zero points
and bias are row-major, and a block of a multiple of 8 rows ends on a byte of every packed stream).

A plan with a step that looks across rows (AWQ's and SmoothQuant's per-input scales, pruning's masks,
SVD) is compressed whole.
"""

from __future__ import annotations

import dataclasses

import torch

from squeezeray.compress._module import CompressedLinear
from squeezeray.compress._rows import ROW_ALIGN

ROW_BUFFERS = ("codes", "values", "scales", "zeros", "mins", "sb_d", "sb_sc", "sb_dmin", "sb_mq", "bias")
"""The stored buffers of a layer that are row-major (one record per output row, in row order)."""


def join_rows(parts: list[CompressedLinear]) -> CompressedLinear:
    """The layer whose rows are ``parts``' rows in order: row-major buffers concatenated.

    Every part must share the format (settings and steps) but for its number of rows, store only
    row-major buffers (:data:`ROW_BUFFERS`: quantized or float16 values, no sparsity, low-rank or smoothing)
    and, but for the last, end every packed stream on a byte.

    Raises:
        ValueError: Naming the part and what differs.
    """
    if not parts:
        raise ValueError("join_rows: no parts")
    first = parts[0].fmt
    for i, part in enumerate(parts):
        f = part.fmt
        other = {k for k in part._buffers if k not in ROW_BUFFERS}  # noqa: SLF001
        if other:
            raise ValueError(f"join_rows: part {i} stores {sorted(other)}, which are not row-major")
        if dataclasses.replace(f, out_features=first.out_features, n_kept=first.n_kept, notes=first.notes) != first:
            raise ValueError(f"join_rows: part {i}'s format {f.to_dict()} differs from part 0's {first.to_dict()}")
        if i < len(parts) - 1 and f.out_features % ROW_ALIGN:
            raise ValueError(f"join_rows: part {i} has {f.out_features} rows, not a multiple of {ROW_ALIGN}")
    names = list(parts[0]._buffers)  # noqa: SLF001
    buffers: dict[str, torch.Tensor] = {}
    for name in names:
        pieces = [p._buffers[name] for p in parts]  # noqa: SLF001
        if any(t is None for t in pieces):
            raise ValueError(f"join_rows: buffer {name!r} is missing from a part")
        buffers[name] = torch.cat(pieces, dim=0)  # type: ignore[arg-type]
    out_features = sum(p.fmt.out_features for p in parts)
    notes = tuple(dict.fromkeys(n for p in parts for n in p.fmt.notes))  # the same in every block as a rule
    fmt = dataclasses.replace(first, out_features=out_features, n_kept=sum(p.fmt.n_kept for p in parts), notes=notes)
    return CompressedLinear(fmt, buffers)
