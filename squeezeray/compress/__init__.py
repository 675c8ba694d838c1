"""Calibration, plan application and the stored form of compressed layers."""

from squeezeray.compress._apply import DENSE_BYTES
from squeezeray.compress._apply import LayerReport
from squeezeray.compress._apply import apply_plan
from squeezeray.compress._apply import compress_layer
from squeezeray.compress._apply import dense_nbytes
from squeezeray.compress._calibrate import collect_stats
from squeezeray.compress._calibrate import collect_stats_blockwise
from squeezeray._decoder import decoder_parts
from squeezeray.compress._stats_store import StatsStore
from squeezeray.compress._embedding import CompressedEmbedding
from squeezeray.compress._embedding import replace_layers
from squeezeray.compress._embedding import replace_module
from squeezeray.compress._embedding import with_tied
from squeezeray.compress._module import CompressedLinear
from squeezeray.compress._module import LayerFormat
from squeezeray.compress._swap import swapped

__all__ = [
    "DENSE_BYTES",
    "CompressedEmbedding",
    "CompressedLinear",
    "LayerFormat",
    "LayerReport",
    "apply_plan",
    "StatsStore",
    "collect_stats",
    "collect_stats_blockwise",
    "decoder_parts",
    "compress_layer",
    "dense_nbytes",
    "replace_layers",
    "replace_module",
    "swapped",
    "with_tied",
]
