"""materialized(): the whole candidate's dense weights at once, or one decoder block's at a time, same numbers."""

from __future__ import annotations

import torch

from squeezeray.compress import compress_layer
from squeezeray.compress import swapped
from squeezeray.models import compressible_layers
from squeezeray.objectives._base import materialized
from squeezeray.spaces import parse_steps
from squeezeray.techniques import LayerStats
from tests._tiny import tiny_model


def _candidate_layers(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    steps = parse_steps("rtn-w4g32")
    out = {}
    for name in compressible_layers(model):
        linear = model.get_submodule(name)
        x = torch.randn(32, linear.in_features, generator=torch.Generator().manual_seed(1))
        out[name] = compress_layer(name, linear, steps, LayerStats.synthetic(x, with_hessian=False))
    return out


def test_block_by_block_gives_the_same_logits_and_holds_one_block() -> None:
    model = tiny_model(320).to(torch.bfloat16)
    ids = torch.randint(0, 320, (2, 16), generator=torch.Generator().manual_seed(0))
    layers = _candidate_layers(model)
    with swapped(model, layers):
        with materialized(model):  # the tiny model's dense weights fit the default bound: all at once
            assert all(m.is_materialized for m in layers.values())
            whole = model(input_ids=ids).logits
        peak = [0]

        def count(*_: object) -> None:
            peak[0] = max(peak[0], sum(m.is_materialized for m in layers.values()))

        hooks = [m.register_forward_pre_hook(count) for m in layers.values()]
        with materialized(model, whole_bytes=0):
            blockwise = model(input_ids=ids).logits
            assert not any(m.is_materialized for n, m in layers.items() if ".layers." in n)  # released after
        for h in hooks:
            h.remove()
        assert not any(m.is_materialized for m in layers.values())
    per_block = sum(".layers.0." in n for n in layers)
    head = sum(".layers." not in n for n in layers)
    assert peak[0] == per_block + head  # one block's layers (and the head) at a time, never two blocks'
    assert torch.equal(whole, blockwise)
