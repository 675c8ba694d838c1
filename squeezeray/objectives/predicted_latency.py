"""Latency predicted by the roofline model for a device described by a hardware profile.

Per linear layer (compressed or not, the output head included) the cost is the
bytes of its *stored* buffers plus its activations, and its operations, done on
the unit its kernel path uses (:func:`path_dtype`). Attention adds its
score/value products and KV-cache reads; everything else in a block (norms,
rotary, activations, residuals, framework dispatch) is one calibrated
overhead per transformer block and phase (``block-other-prefill``, ``block-other-decode``). Times come from
:func:`squeezeray.hwprofiles.roofline_time` with a
:class:`~squeezeray.hwprofiles.RooflineCalibration`: fitted on the host's
measurements, or the ideal (uncalibrated) roofline for a device nobody measured.

Which kernel path a layer uses: on ``host`` the path attached by the kernel
selector (or the torch reference when none is attached); on another device the
first path in the profile's ``kernels`` list whose format conditions the layer
meets (:func:`target_path`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

import torch
from torch import nn

from squeezeray._errors import SqueezerayError
from squeezeray._schema import load_document
from squeezeray.hwprofiles import Basis
from squeezeray.hwprofiles import ComputeDtype
from squeezeray.hwprofiles import DeviceKind
from squeezeray.hwprofiles import HardwareProfile
from squeezeray.hwprofiles import LayerCost
from squeezeray.hwprofiles import RooflineCalibration
from squeezeray.hwprofiles import get_profile
from squeezeray.hwprofiles import roofline_time
from squeezeray.kernels import KernelPath
from squeezeray.kernels import get_kernel
from squeezeray.objectives._base import BaseObjective
from squeezeray.objectives._base import Direction
from squeezeray.objectives._base import EvalContext
from squeezeray.objectives._base import Measurement
from squeezeray.objectives._base import Need
from squeezeray.objectives._base import Provenance
from squeezeray.objectives.latency import Phase

if TYPE_CHECKING:
    from squeezeray.compress import LayerFormat

ATTENTION_PATH = "attention"
BLOCK_OTHER_PATH = "block-other"  # + "-prefill" / "-decode": see block_other_path()

_TORCH_TO_DTYPE = {torch.float32: ComputeDtype.FP32, torch.float16: ComputeDtype.FP16, torch.bfloat16: ComputeDtype.BF16}
_DTYPE_BYTES = {ComputeDtype.FP32: 4, ComputeDtype.FP16: 2, ComputeDtype.BF16: 2}


def block_other_path(phase: Phase) -> str:
    """Calibration key of the per-block overhead outside linear layers and attention, per phase."""
    return f"{BLOCK_OTHER_PATH}-{phase.value}"


def path_dtype(path: KernelPath, profile: HardwareProfile) -> ComputeDtype:
    """The unit a kernel path multiplies on.

    The CPU int4 kernel computes in bf16 after unpacking; a profile that measured that kernel
    itself (``host``: ``dense_tops.int4`` with basis measured) is rated by its int4 figure.
    """
    if path is KernelPath.CPU_INT4:
        fig = profile.dense_tops.get(ComputeDtype.INT4)
        return ComputeDtype.INT4 if fig is not None and fig.basis is Basis.MEASURED else ComputeDtype.BF16
    return {
        KernelPath.REFERENCE: ComputeDtype.FP32,
        KernelPath.CPU_INT8_DYNAMIC: ComputeDtype.INT8,
        KernelPath.CPU_INT8_WEIGHT: ComputeDtype.BF16,
        KernelPath.TRITON_DEQUANT: ComputeDtype.FP16,
        KernelPath.TRITON_SPARSE24: ComputeDtype.FP16,
        KernelPath.TRITON_W8A8: ComputeDtype.INT8,
    }[path]


def target_path(fmt: LayerFormat, profile: HardwareProfile) -> KernelPath:
    """The kernel path ``profile``'s device would run for a stored format (first that fits, in profile order)."""
    device_type = "cpu" if profile.kind is DeviceKind.CPU else ("cuda" if profile.vendor == "nvidia" else "")
    if fmt.lowrank_only:
        return KernelPath.REFERENCE
    for path in profile.kernels:
        if path is KernelPath.REFERENCE:
            continue
        kernel = get_kernel(path)
        if kernel.device_type == device_type and kernel.unsupported_format(fmt) is None:
            return path
    return KernelPath.REFERENCE


def default_act_dtype(profile: HardwareProfile) -> ComputeDtype:
    """Activations and dense weights: float32 on CPUs (as loaded here), float16 on GPUs and SoCs."""
    return ComputeDtype.FP32 if profile.kind is DeviceKind.CPU else ComputeDtype.FP16


def linear_cost(
    name: str, module: nn.Module, *, tokens: int, profile: HardwareProfile, act_dtype: ComputeDtype
) -> LayerCost:
    """Cost of one call of a linear layer on ``tokens`` rows.

    Args:
        name: Module name.
        module: ``nn.Linear`` (counted at ``act_dtype`` off the host, at its own dtype on it)
            or :class:`~squeezeray.compress.CompressedLinear` (its stored buffers).
        tokens: Rows of the input.
        profile: Target device.
        act_dtype: Activation dtype (sets activation bytes).
    """
    from squeezeray.compress import CompressedLinear
    from squeezeray.techniques._formats import SparsityPattern

    act = _DTYPE_BYTES[act_dtype]
    n, k = int(module.out_features), int(module.in_features)
    act_bytes = tokens * (n + k) * act
    if isinstance(module, CompressedLinear):
        f = module.fmt
        weight_bytes = sum(b.numel() * b.element_size() for b in module.buffers(recurse=False))
        rows = n
        if f.pattern in (SparsityPattern.ROWS, SparsityPattern.HEADS):
            rows = int(module.row_index.numel())
        flops = 0.0 if f.lowrank_only else 2.0 * tokens * rows * k
        flops += 2.0 * tokens * f.rank * (n + k)
        if profile.name == "host":
            choice = module.kernel_choice
            path = KernelPath.REFERENCE if choice is None else choice.path_for(tokens)
        else:
            path = target_path(f, profile)
        return LayerCost(name, weight_bytes, act_bytes, flops, path_dtype(path, profile), path.value)
    if not isinstance(module, nn.Linear):
        raise SqueezerayError(f"{name}: {type(module).__name__} is not a linear layer")
    dtype = _TORCH_TO_DTYPE[module.weight.dtype] if profile.name == "host" else act_dtype
    numel = module.weight.numel() + (0 if module.bias is None else module.bias.numel())
    flops = 2.0 * tokens * n * k
    return LayerCost(name, numel * _DTYPE_BYTES[dtype], act_bytes, flops, dtype, f"dense-{dtype.value}")


def model_costs(
    model: nn.Module,
    *,
    phase: Phase,
    batch: int,
    seq_len: int,
    profile: HardwareProfile,
    act_dtype: ComputeDtype,
) -> list[LayerCost]:
    """Every cost of one forward pass (prefill of ``seq_len`` tokens, or one decode step at that context).

    Linear layers (tied output head included), attention products per block, and one
    :func:`block_other_path` entry per block (zero bytes and operations: calibrated overhead only).
    """
    from squeezeray.objectives.latency import linear_layers

    config = getattr(model, "config", None)
    if config is None:
        raise SqueezerayError("model has no .config; the end-to-end roofline needs its block structure")
    n_blocks = int(config.num_hidden_layers)
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", heads) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    tokens = batch * (seq_len if phase is Phase.PREFILL else 1)
    q_len = seq_len if phase is Phase.PREFILL else 1
    act = _DTYPE_BYTES[act_dtype]
    costs = [
        linear_cost(name, mod, tokens=tokens, profile=profile, act_dtype=act_dtype)
        for name, mod in linear_layers(model).items()
    ]
    att_flops = 2.0 * 2.0 * batch * heads * q_len * seq_len * head_dim  # scores and weighted values
    kv_bytes = 2 * batch * seq_len * kv_heads * head_dim * act  # K and V read once
    io_bytes = 2 * batch * q_len * heads * head_dim * act  # q in, context out
    for i in range(n_blocks):
        costs.append(LayerCost(f"block{i}.attention", kv_bytes, io_bytes, att_flops, act_dtype, ATTENTION_PATH))
        costs.append(LayerCost(f"block{i}.other", 0, 0, 0.0, act_dtype, block_other_path(phase)))
    return costs


def load_calibration(ref: RooflineCalibration | str | Path | None) -> RooflineCalibration:
    """A calibration object, the JSON file written by the latency experiment, or None for the ideal model."""
    if ref is None:
        return RooflineCalibration.ideal()
    if isinstance(ref, RooflineCalibration):
        return ref
    return RooflineCalibration.from_dict(load_document(ref, what="calibration file", syntax="json"))


class PredictedLatency(BaseObjective, needs={Need.PROFILE}):
    """Roofline latency of the candidate on a profiled device (prefill ms per pass, or decode ms per step).

    Args:
        profile: Built-in profile name, ``host`` (detected and measured on first use), a YAML path,
            or a :class:`~squeezeray.hwprofiles.HardwareProfile`.
        phase: Prefill or decode.
        batch, seq_len: Sequences and prompt (context) length.
        calibration: Fitted efficiencies (object or JSON path); None uses the ideal roofline.
        act_dtype: Activation dtype on the target (default :func:`default_act_dtype`).
    """

    name = "predicted_latency"
    direction = Direction.MINIMIZE
    unit = "ms"

    def __init__(
        self,
        *,
        profile: str | HardwareProfile = "h100-sxm",
        phase: Phase | str = Phase.DECODE,
        batch: int = 1,
        seq_len: int = 128,
        calibration: RooflineCalibration | str | Path | None = None,
        act_dtype: ComputeDtype | str | None = None,
    ) -> None:
        self._profile_ref = profile
        self._profile: HardwareProfile | None = profile if isinstance(profile, HardwareProfile) else None
        if isinstance(profile, str) and profile != "host":
            self._profile = get_profile(profile)  # fail early on a bad name
        self.phase = Phase(phase)
        self.batch, self.seq_len = batch, seq_len
        self.calibration = load_calibration(calibration)
        self._act_dtype = None if act_dtype is None else ComputeDtype(act_dtype)

    @property
    def profile(self) -> HardwareProfile:
        if self._profile is None:
            self._profile = get_profile(str(self._profile_ref))
        return self._profile

    def layer_seconds(self, name: str, module: nn.Module) -> float:
        """Predicted seconds of one call of one linear layer (dense or compressed), as :meth:`predict` counts it."""
        profile = self.profile
        tokens = self.batch * (self.seq_len if self.phase is Phase.PREFILL else 1)
        cost = linear_cost(name, module, tokens=tokens, profile=profile, act_dtype=self.act_dtype)
        return roofline_time(cost, profile, self.calibration).total_s

    def describe(self) -> str:
        """What the prediction is: phase, shape, device and calibration."""
        return (f"roofline {self.phase.value} (batch {self.batch}, context {self.seq_len}) on "
                f"{self.profile.device} [{self.profile.name}], {self.calibration.describe()}")

    @property
    def act_dtype(self) -> ComputeDtype:
        """Activation dtype on the target: the one given, else :func:`default_act_dtype` of the profile."""
        return self._act_dtype or default_act_dtype(self.profile)

    def predict(self, model: nn.Module) -> tuple[float, list[tuple[LayerCost, float, str]]]:
        """Seconds per call, and (cost, seconds, bound) for every cost entry."""
        profile = self.profile
        costs = model_costs(model, phase=self.phase, batch=self.batch, seq_len=self.seq_len, profile=profile,
                            act_dtype=self.act_dtype)
        rows = []
        for cost in costs:
            t = roofline_time(cost, profile, self.calibration)
            rows.append((cost, t.total_s, t.bound))
        return sum(r[1] for r in rows), rows

    def measure(self, ctx: EvalContext) -> Measurement:
        total, rows = self.predict(ctx.candidate)
        per_path: dict[str, float] = {}
        bounds: dict[str, int] = {}
        for cost, seconds, bound in rows:
            per_path[cost.path] = per_path.get(cost.path, 0.0) + 1000 * seconds
            if cost.flops or cost.nbytes:
                bounds[bound] = bounds.get(bound, 0) + 1
        profile = self.profile
        details: dict[str, Any] = {
            "phase": self.phase.value, "shape": [self.batch, self.seq_len], "profile": profile.name,
            "ms_per_path": per_path, "bound_counts": bounds, "calibration": self.calibration.describe(),
        }
        where = f"roofline for {profile.device} [{profile.name}], {self.calibration.describe()}"
        if self.calibration.per_path:  # calibrated, but maybe not for every path this model runs
            ideal = sorted(p for p in per_path if not self.calibration.covers(p))
            details["uncalibrated_paths"] = ideal
            if ideal:
                where += f"; no fit for path(s) {', '.join(ideal)}: those at the ideal roofline"
        return Measurement(self.name, 1000 * total, self.unit, Provenance.PREDICTED, where, details)
