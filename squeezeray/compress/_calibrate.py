"""Calibration statistics of every compressible layer's input, from the original model.

Statistics come from the *original* model (not from a partly compressed one),
so a layer's compressed result depends only on (model, layer, steps,
calibration data): the property the search's compressed-layer cache relies on.
Layers that read the same input tensor (q/k/v, gate/up) share one computation.

Two ways to gather them, with equal results:

* :func:`collect_stats` runs whole-model forwards with every observed layer hooked at once, so it
  holds every layer's statistics (and Hessian) together;
* :func:`collect_stats_blockwise` (the way GPTQ and llm-compressor's sequential pipeline calibrate)
  captures the input of the first decoder block, runs the blocks one at a time over every calibration
  batch, and hands each block's statistics to a ``sink`` before the next block starts: peak memory
  holds the calibration activations of one block boundary and one block's statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from squeezeray._errors import SqueezerayError
from squeezeray._memory import trim
from squeezeray._decoder import decoder_parts
from squeezeray._device import model_device
from squeezeray.techniques import LayerStats


class _Accumulator:
    """Running sums of one input's statistics, on the device the input arrives on (X^T X on the GPU when the
    model runs there); :meth:`stats` hands them over on the host, where the store keeps them."""

    def __init__(self, width: int, hessian: bool, device: torch.device) -> None:
        self.n = 0
        self.sq = torch.zeros(width, dtype=torch.float64, device=device)
        self.abs = torch.zeros(width, dtype=torch.float64, device=device)
        self.max = torch.zeros(width, device=device)
        self.h = torch.zeros(width, width, device=device) if hessian else None

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).float()  # (tokens, in), upcast from the model's dtype one layer at a time
        self.n += x.shape[0]
        self.sq += x.pow(2).sum(0, dtype=torch.float64)
        self.abs += x.abs().sum(0, dtype=torch.float64)
        self.max = torch.maximum(self.max, x.abs().amax(0))
        if self.h is not None:
            self.h.addmm_(x.T, x)

    def stats(self) -> LayerStats:
        n = max(self.n, 1)
        h = None if self.h is None else (self.h / n).cpu()
        return LayerStats(self.n, (self.sq / n).float().cpu(), (self.abs / n).float().cpu(), self.max.cpu().clone(), h)


class _Observer:
    """Forward pre-hooks on named linear layers that accumulate their input statistics.

    Sibling layers (q/k/v, gate/up) are called one after another on the very same tensor object;
    holding a reference to the last input lets them share one accumulator without confusing a freed
    tensor's address with a new one's.
    """

    def __init__(self, model: nn.Module, names: Iterable[str], *, hessian: bool) -> None:
        self.names = list(names)
        self.hessian = hessian
        self.owner: dict[str, _Accumulator] = {}
        self._last: list[tuple[torch.Tensor, _Accumulator]] = []
        modules = dict(model.named_modules())
        missing = [n for n in self.names if n not in modules]
        if missing:
            raise SqueezerayError(f"calibration: the model has no layer(s) {missing[:3]}")
        self._handles = [modules[n].register_forward_pre_hook(self._hook_for(n)) for n in self.names]

    def _hook_for(self, name: str):  # noqa: ANN202
        def hook(mod: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0]
            if self._last and self._last[0][0] is x:
                acc = self._last[0][1]
                if name in self.owner and self.owner[name] is not acc:
                    raise RuntimeError(f"{name}: input sharing changed between batches")
            else:
                acc = self.owner.get(name) or _Accumulator(x.shape[-1], self.hessian, x.device)
                acc.add(x)
                self._last[:] = [(x, acc)]
            self.owner.setdefault(name, acc)

        return hook

    def observe(self, name: str, x: torch.Tensor) -> None:
        """Count ``x`` as an input of ``name`` without running the layer (the output head's input)."""
        self._hook_for(name)(None, (x,))  # type: ignore[arg-type]

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._last.clear()

    def close(self) -> dict[str, LayerStats]:
        """Remove the hooks; name -> statistics (layers that shared an input share one object)."""
        self.remove()
        unseen = [n for n in self.names if n not in self.owner]
        if unseen:
            raise SqueezerayError(f"calibration: layer(s) {unseen[:3]} never ran in the forward pass")
        cache: dict[int, LayerStats] = {}
        return {n: cache.setdefault(id(self.owner[n]), self.owner[n].stats()) for n in self.names}


def _batches(tokens: torch.Tensor, batch_size: int, device: torch.device) -> list[torch.Tensor]:
    """The calibration ids in batches on the model's ``device`` (the ids are drawn on the host)."""
    return [tokens[s : s + batch_size].to(device) for s in range(0, tokens.shape[0], batch_size)]


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
    """Run ``tokens`` through the whole ``model`` and gather each named layer's input statistics.

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
    observer = _Observer(model, layer_names, hessian=hessian)
    try:
        for batch in tqdm(_batches(tokens, batch_size, model_device(model)), desc="calibrating", disable=not progress, leave=False):
            model(input_ids=batch, use_cache=False)
    except BaseException:
        observer.remove()
        raise
    return observer.close()


class _Stop(Exception):
    pass


class _Recorder(nn.Module):
    """Stands in for one decoder block while the inputs are captured: records the block's call
    (hidden states and keyword arguments, which carry the rotary embeddings and the mask this
    block type gets) and passes the hidden states through; the last one stops the forward."""

    def __init__(self, calls: list[tuple[torch.Tensor, dict[str, Any]]], last: bool) -> None:
        super().__init__()
        self.calls = calls
        self.last = last

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        if len(args) > 1 or (not args and "hidden_states" not in kwargs):
            raise SqueezerayError("block-wise calibration: a decoder block was not called as block(hidden_states, "
                                  "**kwargs); use the whole-model calibration for this architecture")
        hidden = args[0] if args else kwargs.pop("hidden_states")
        self.calls.append((hidden, kwargs))
        if self.last:
            raise _Stop
        return hidden


@torch.no_grad()
def collect_stats_blockwise(
    model: nn.Module,
    layer_names: Iterable[str],
    tokens: torch.Tensor,
    *,
    hessian: bool,
    batch_size: int = 8,
    sink: Callable[[Mapping[str, LayerStats]], None] | None = None,
    progress: bool = False,
) -> dict[str, LayerStats]:
    """The statistics :func:`collect_stats` gathers, one decoder block at a time.

    The blocks are swapped for recorders while one forward per batch captures each block's call; then
    block ``i`` runs over every batch with its layers observed, its outputs become block ``i+1``'s
    inputs, and its statistics go to ``sink`` (e.g. written to disk) before block ``i+1`` starts.
    Layers outside the blocks (the output head) are observed on the final norm's output after the last
    block. With a ``sink`` the returned dict is empty (nothing is kept); without one it holds every layer.
    """
    names = list(layer_names)
    prefix, blocks, norm = decoder_parts(model)
    per_block: list[list[str]] = [[] for _ in blocks]
    tail: list[str] = []
    for n in names:
        rest = n[len(prefix) + 1 :] if n.startswith(prefix + ".") else None
        index = rest.split(".", 1)[0] if rest else None
        if index is not None and index.isdigit() and int(index) < len(blocks):
            per_block[int(index)].append(n)
        else:
            tail.append(n)
    hidden: list[torch.Tensor] = []  # per batch: the current block boundary's hidden states
    kwargs: list[list[dict[str, Any]]] = []  # batch -> block -> the keyword arguments the block was called with
    originals = list(blocks)
    try:
        for batch in _batches(tokens, batch_size, model_device(model)):
            record: list[tuple[torch.Tensor, dict[str, Any]]] = []
            for i in range(len(blocks)):
                blocks[i] = _Recorder(record, last=i == len(blocks) - 1)
            try:
                model(input_ids=batch, use_cache=False)
            except _Stop:
                pass
            if len(record) != len(blocks):
                raise SqueezerayError(f"block-wise calibration: {len(record)} of {len(blocks)} blocks were called")
            hidden.append(record[0][0])
            kwargs.append([kw for _, kw in record])
    finally:
        for i, block in enumerate(originals):
            blocks[i] = block
    keep: dict[str, LayerStats] = {}

    def hand(stats: Mapping[str, LayerStats]) -> None:
        if sink is not None:
            sink(stats)
        else:
            keep.update(stats)

    for i in tqdm(range(len(blocks)), desc="calibrating", disable=not progress, leave=False):
        observer = _Observer(model, per_block[i], hessian=hessian)
        try:
            for b, per_block_kwargs in enumerate(kwargs):
                out = blocks[i](hidden[b], **per_block_kwargs[i])
                hidden[b] = out[0] if isinstance(out, tuple) else out
        except BaseException:
            observer.remove()
            raise
        hand(observer.close())
        trim()  # the block's statistics went to the sink: give their heap pages back before the next block
    if tail:
        head = model.get_output_embeddings()
        outside = [n for n in tail if model.get_submodule(n) is not head]
        if outside:
            raise SqueezerayError(f"block-wise calibration: layer(s) {outside[:3]} are outside the decoder blocks "
                                  "and are not the output head; use the whole-model calibration")
        observer = _Observer(model, (), hessian=hessian)
        observer.names = tail
        for h in hidden:
            out = norm(h)  # the head's input; the head itself is not run (its logits are not needed)
            for name in tail:
                observer.observe(name, out)
        hand(observer.close())
    return keep
