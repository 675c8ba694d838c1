"""Calibration statistics of every compressible layer's input, in one pass over the original model.

Statistics come from the *original* model (not from a partly compressed one),
so a layer's compressed result depends only on (model, layer, steps,
calibration data): the property the search's compressed-layer cache relies on.
Layers that read the same input tensor (q/k/v, gate/up) share one computation.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from squeezeray.techniques import LayerStats


class _Accumulator:
    def __init__(self, width: int, hessian: bool) -> None:
        self.n = 0
        self.sq = torch.zeros(width, dtype=torch.float64)
        self.abs = torch.zeros(width, dtype=torch.float64)
        self.max = torch.zeros(width)
        self.h = torch.zeros(width, width) if hessian else None

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).float()  # (tokens, in)
        self.n += x.shape[0]
        self.sq += x.pow(2).sum(0, dtype=torch.float64)
        self.abs += x.abs().sum(0, dtype=torch.float64)
        self.max = torch.maximum(self.max, x.abs().amax(0))
        if self.h is not None:
            self.h.addmm_(x.T, x)

    def stats(self) -> LayerStats:
        n = max(self.n, 1)
        h = None if self.h is None else self.h / n
        return LayerStats(self.n, (self.sq / n).float(), (self.abs / n).float(), self.max.clone(), h)


@torch.no_grad()
def collect_stats(
    model: nn.Module,
    layer_names: Iterable[str],
    tokens: torch.Tensor,
    *,
    hessian: bool,
    batch_size: int = 8,
    progress: bool = False,
) -> dict[str, LayerStats]:
    """Run ``tokens`` through ``model`` and gather each named layer's input statistics.

    Args:
        model: The original (uncompressed) causal LM.
        layer_names: Linear layers to observe.
        tokens: (n_seqs, seq_len) int64 calibration ids.
        hessian: Also accumulate X^T X (needed by GPTQ, AWQ, SparseGPT).
        batch_size: Sequences per forward pass.
        progress: Show a progress bar.

    Returns:
        Module name -> :class:`LayerStats`.
    """
    modules = dict(model.named_modules())
    names = list(layer_names)
    owner: dict[str, _Accumulator] = {}
    # Sibling layers (q/k/v, gate/up) are called one after another on the very same
    # tensor object; holding a reference to the last input lets them share one
    # accumulator without confusing a freed tensor's address with a new one's.
    last: list[tuple[torch.Tensor, _Accumulator]] = []

    def hook_for(name: str):  # noqa: ANN202
        def hook(mod: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0]
            if last and last[0][0] is x:
                acc = last[0][1]
                if name in owner and owner[name] is not acc:
                    raise RuntimeError(f"{name}: input sharing changed between batches")
            else:
                acc = owner.get(name) or _Accumulator(x.shape[-1], hessian)
                acc.add(x)
                last[:] = [(x, acc)]
            owner.setdefault(name, acc)

        return hook

    handles = [modules[n].register_forward_pre_hook(hook_for(n)) for n in names]
    try:
        batches = range(0, tokens.shape[0], batch_size)
        for start in tqdm(batches, desc="calibrating", disable=not progress, leave=False):
            model(input_ids=tokens[start : start + batch_size], use_cache=False)
    finally:
        for h in handles:
            h.remove()
        last.clear()
    cache: dict[int, LayerStats] = {}
    return {n: cache.setdefault(id(owner[n]), owner[n].stats()) for n in names}
