"""Helpers of the kernel tests: small compressed layers and the GPU marker."""

from __future__ import annotations

import pytest
import torch

from squeezeray.compress import CompressedLinear
from squeezeray.compress import compress_layer
from squeezeray.spaces._plan import parse_steps
from squeezeray.techniques import LayerStats


def compressed(preset: str, out_f: int = 48, in_f: int = 192, *, bias: bool = True, seed: int = 0) -> CompressedLinear:
    """A CompressedLinear made by running ``preset`` on a random (out_f, in_f) layer."""
    g = torch.Generator().manual_seed(seed)
    lin = torch.nn.Linear(in_f, out_f, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(out_f, in_f, generator=g) / in_f**0.5)
        if bias:
            lin.bias.copy_(torch.randn(out_f, generator=g))
    x = torch.randn(64, in_f, generator=g)
    x[:, 1] *= 10  # an outlier channel, so smoothing has something to do
    return compress_layer("layer", lin, parse_steps(preset), LayerStats.synthetic(x))


HAS_GPU = torch.cuda.is_available()
gpu = pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU")
