"""Where the model and its math run: ``--device`` resolved once, and the device a model's weights are on.

Everything downstream follows the weights: calibration batches go to the model's device, a technique
computes on its layer's weight's device, an objective feeds its token ids to the candidate's device.
Statistics, cached layers and reference log-probabilities are kept on the host and moved per layer/chunk.
"""

from __future__ import annotations

import dataclasses
import platform
from typing import TypeVar

import torch
from torch import nn

from squeezeray._errors import SqueezerayError

T = TypeVar("T")

AUTO = "auto"  # the first CUDA device when one is visible, the CPU otherwise


def resolve_device(value: str | torch.device | None, *, field: str = "device") -> torch.device:
    """The torch device ``value`` names: ``auto`` (or None), ``cpu``, ``cuda`` or ``cuda:N``.

    Raises:
        SqueezerayError: ``value`` is another spelling, or names a CUDA device this process cannot see
            (no silent move to the CPU: a run asked to use a GPU either uses it or says why not).
    """
    text = AUTO if value is None else str(value).strip().lower()
    if text == AUTO:
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise SqueezerayError(f"{field}={value!r}: choose auto, cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type != "cuda":
        raise SqueezerayError(f"{field}={value!r}: choose auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise SqueezerayError(f"{field}={value!r}: no CUDA device is visible to this process "
                              f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use --device cpu")
    index = 0 if device.index is None else device.index
    if index >= torch.cuda.device_count():
        raise SqueezerayError(f"{field}={value!r}: this process sees {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index)


def host_description() -> str:
    """``host CPU <model name>, torch <version>, <n> threads``: where a CPU measurement ran."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"host CPU {cpu}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def device_description(device: torch.device) -> str:
    """Where a measurement ran: the GPU by name on CUDA, else the host CPU."""
    if device.type == "cuda":
        return f"GPU {torch.cuda.get_device_name(device)} (cuda:{device.index or 0}), torch {torch.__version__}, " \
               f"CUDA {torch.version.cuda}"
    return host_description()


def model_device(model: nn.Module) -> torch.device:
    """The device ``model``'s weights are on: its first parameter's or buffer's (the CPU when it has neither)."""
    t = next(iter(model.parameters()), None)
    if t is None:
        t = next(iter(model.buffers()), None)
    return torch.device("cpu") if t is None else t.device


def tensors_on(obj: T, device: torch.device | str) -> T:
    """The frozen dataclass ``obj`` with every tensor field (nested dataclasses' too) on ``device``; ``obj`` itself
    when they are all there already (statistics and grids kept on one device, used on another)."""
    device = torch.device(device)
    moved: dict[str, object] = {}
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        v = getattr(obj, f.name)
        if isinstance(v, torch.Tensor) and v.device != device:
            moved[f.name] = v.to(device)
        elif dataclasses.is_dataclass(v) and not isinstance(v, type) and (w := tensors_on(v, device)) is not v:
            moved[f.name] = w
    return dataclasses.replace(obj, **moved) if moved else obj  # type: ignore[type-var]
