"""Ranges of output rows of a layer, a budget of float32 bytes each (pure arithmetic): a tall layer is compressed
(:mod:`squeezeray.compress._row_blocks`) and a stored layer dequantized (:mod:`squeezeray.compress._module`) one
range at a time."""

from __future__ import annotations

ROW_BLOCK_BYTES = 64 * 2**20
"""Float32 bytes of weight compressed at once in a tall layer (a block's temporaries are a few times this)."""

ROW_ALIGN = 8
"""Rows in a block are a multiple of this, so every packed stream (1-8 bits a code) ends on a byte boundary."""


def row_blocks(out_features: int, in_features: int, budget_bytes: int = ROW_BLOCK_BYTES) -> list[tuple[int, int]]:
    """``[start, stop)`` output-row ranges of at most ``budget_bytes`` of float32 weight each (one range when the
    whole layer fits), every range but the last a multiple of :data:`ROW_ALIGN` rows.

    Args:
        out_features, in_features: The layer's weight shape.
        budget_bytes: Float32 bytes of weight per block.
    """
    if out_features <= 0 or in_features <= 0:
        raise ValueError(f"row_blocks: shape ({out_features}, {in_features}) has no rows or no inputs")
    if budget_bytes <= 0:
        raise ValueError(f"row_blocks: budget_bytes={budget_bytes} must be positive")
    if out_features * in_features * 4 <= budget_bytes:
        return [(0, out_features)]
    rows = max(budget_bytes // (4 * in_features) // ROW_ALIGN * ROW_ALIGN, ROW_ALIGN)
    return [(r, min(r + rows, out_features)) for r in range(0, out_features, rows)]
