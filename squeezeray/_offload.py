"""A model larger than its device's memory, run block by block: the decoder blocks' weights stay on the host and
each block's tensors are copied to the device for its own forward only.

This is what accelerate's device map does with a ``cpu`` placement, with one difference that everything here
relies on: the host tensors stay real. (accelerate moves an offloaded module's weights to ``meta`` and keeps them
in a side map, so code that reads ``linear.weight`` sees no numbers.) Calibration, techniques and the in-place
swap of compressed layers read and replace a block's layers as usual; only a forward through a block moves its
parameters, buffers and cached tensors (a compressed layer's materialized weight) to the device, and puts the
very same host tensors back afterwards (also when the forward raises). Everything outside the decoder blocks
(embeddings, final norm, output head, rotary tables) lives on the device, so :func:`squeezeray._device.model_device`
names the device the model runs on.

What an offloaded model cannot do, it refuses by name: measure latency or energy (the copies would dominate)
and train (distillation keeps gradients on the weights).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from squeezeray._decoder import decoder_parts
from squeezeray._errors import SqueezerayError

_ATTR = "_squeezeray_offload"

TIMING_REFUSAL = "with offload (the host-to-device copies would dominate)"
"""Why timed objectives (latency, energy, lat) are refused on an offloaded run: the ``reason`` of
:func:`squeezeray.objectives._registry.refuse_timed`."""


@dataclasses.dataclass(frozen=True)
class Offload:
    """How a model is offloaded (recorded with every measurement of it).

    Attributes:
        device: Where the model runs: its non-block parts live there, each block is copied there for its forward.
        blocks: Decoder blocks kept on the host.
        host_bytes: Their weights' bytes (at offload time) on the host.
    """

    device: str
    blocks: int
    host_bytes: int

    VERSION = 1

    def describe(self) -> str:
        return (f"decoder blocks offloaded: {self.blocks} blocks ({self.host_bytes / (1 << 30):.2f} GiB) kept on the "
                f"host, each copied to {self.device} for its forward")

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.VERSION, **dataclasses.asdict(self)}


def offload_of(model: nn.Module) -> Offload | None:
    """How ``model`` is offloaded (None: it is not)."""
    entry = model.__dict__.get(_ATTR)
    return None if entry is None else entry[0]


def placement(model: nn.Module) -> str:
    """Where ``model`` runs, for records: the device (the GPU by name, or the host CPU), and its offload if any."""
    from squeezeray._device import device_description
    from squeezeray._device import model_device

    off = offload_of(model)
    where = device_description(model_device(model))
    return where if off is None else f"{where}; {off.describe()}"


def refuse_offloaded(model: nn.Module, what: str) -> None:
    """Raise when ``model`` is offloaded: ``what`` (e.g. ``latency``) would measure the copies, or cannot run."""
    off = offload_of(model)
    if off is not None:
        raise SqueezerayError(f"{what}: the model is offloaded ({off.describe()}), so {what} cannot run on it "
                              "faithfully; use a device that holds the whole model (latency and energy can also be "
                              "predicted from a hardware profile)")


def check_offload(device: torch.device, offload: bool, *, field: str = "offload") -> None:
    """Refuse offloading onto the CPU: the blocks are on the host already (offload moves them to a GPU).

    Raises:
        SqueezerayError: ``offload`` with a CPU ``device``, naming ``field`` and the device.
    """
    if offload and device.type == "cpu":
        raise SqueezerayError(f"{field}=True with device {str(device)!r}: the weights are on the host already; "
                              "offloading runs decoder blocks kept on the host on a GPU (device cuda)")


def offload_blocks(model: nn.Module, device: torch.device | str) -> Offload:
    """Keep ``model``'s decoder blocks on the host and move everything else to ``device``; each block's tensors are
    copied to ``device`` while it runs.

    Raises:
        SqueezerayError: ``model`` is already offloaded, or has no decoder blocks (``.layers`` and ``.norm``).
    """
    device = torch.device(device)
    if offload_of(model) is not None:
        raise SqueezerayError(f"offload: the model is offloaded already ({offload_of(model).describe()})")  # type: ignore[union-attr]
    _, blocks, _ = decoder_parts(model)
    for b in blocks:
        b.to("cpu")  # the host holds the blocks (a no-op for a model read there)
    inside = {id(m) for b in blocks for m in b.modules()}
    host_bytes = sum(t.numel() * t.element_size() for b in blocks for t in (*b.parameters(), *b.buffers()))
    for m in model.modules():
        if id(m) in inside:
            continue
        for p in m._parameters.values():  # the Parameter object itself moves, so a tied head and embedding stay one
            if p is not None and p.device != device:
                torch.utils.swap_tensors(p, nn.Parameter(p.detach().to(device), requires_grad=p.requires_grad))
        for k, b in m._buffers.items():
            if b is not None and b.device != device:
                m._buffers[k] = b.to(device)
    mover = _BlockMover(device)
    handles = [h for b in blocks for h in (b.register_forward_pre_hook(mover.pre),
                                            b.register_forward_hook(mover.post, always_call=True))]
    record = Offload(str(device), len(blocks), host_bytes)
    model.__dict__[_ATTR] = (record, handles)
    return record


def on_execution_device(model: nn.Module, linear: nn.Linear, compute: Callable[[nn.Linear], nn.Module]) -> nn.Module:
    """``compute(linear)`` (e.g. compress it) on the device ``model`` runs on, the result returned where ``linear``
    lives: an offloaded block's layer is compressed on the device from a copy, and handed back to the host.
    Not offloaded, or the layer is on the device already: ``compute(linear)`` as it is."""
    off = offload_of(model)
    if off is None or linear.weight.device == torch.device(off.device):
        return compute(linear)
    home = linear.weight.device
    device = torch.device(off.device)
    with torch.device("meta"):
        view = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None)
    view.weight = nn.Parameter(linear.weight.detach().to(device), requires_grad=False)
    if linear.bias is not None:
        view.bias = nn.Parameter(linear.bias.detach().to(device), requires_grad=False)
    return compute(view).to(home)


class _BlockMover:
    """The hooks of one offloaded model: a block's tensors to the device before its forward, back after."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.moved: dict[int, list[tuple[dict[str, Any], str, torch.Tensor]]] = {}

    def pre(self, block: nn.Module, args: tuple[Any, ...]) -> None:
        moved: list[tuple[dict[str, Any], str, torch.Tensor]] = []
        for m in block.modules():
            stores: list[dict[str, Any]] = [m._parameters, m._buffers, m.__dict__]  # __dict__: cached tensors
            for store in stores:
                for k, t in list(store.items()):
                    if isinstance(t, torch.Tensor) and t.device != self.device:
                        moved.append((store, k, t))
                        on = t.detach().to(self.device)
                        store[k] = nn.Parameter(on, requires_grad=False) if isinstance(t, nn.Parameter) else on
        self.moved[id(block)] = moved

    def post(self, block: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        for store, k, t in self.moved.pop(id(block), []):
            store[k] = t  # the very host tensor (and Parameter object) it was
