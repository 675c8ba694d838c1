"""Settings of a short knowledge-distillation recovery step."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from squeezeray._errors import PlanError
from squeezeray._schema import check_header

DISTILL_TYPE = "squeezeray.DistillConfig"
DISTILL_VERSION = 1


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation of the partly compressed model towards the original.

    Unlike a technique step it acts on the whole model at once: every planned layer first
    runs its prune steps, then the surviving weights of all planned layers are trained
    together on calibration text, then each layer's quantize / low-rank steps run on the
    trained weights. Pruned weights stay zero throughout. A layer whose plan quantizes
    before it prunes cannot be distilled in between (that would need quantization-aware
    training) and is refused.

    Loss per token: ``alpha * T^2 * KL(p_teacher^T || p_student^T) + (1 - alpha) * CE(next token)``.

    Attributes:
        steps: Optimizer steps.
        lr: AdamW learning rate.
        temperature: Softmax temperature T of the KL term.
        alpha: Weight of the KL term (the rest is cross-entropy on the text).
        batch_seqs: Calibration sequences per step.
        seed: Seed of the batch order.
    """

    steps: int = 40
    lr: float = 5e-5
    temperature: float = 2.0
    alpha: float = 0.9
    batch_seqs: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_seqs"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise PlanError(f"kd.{name}={v!r}: must be a positive integer")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise PlanError(f"kd.seed={self.seed!r}: must be a non-negative integer")
        if not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) or not 0 < self.lr < 1:
            raise PlanError(f"kd.lr={self.lr!r}: must be a number in (0, 1)")
        if not isinstance(self.temperature, (int, float)) or not 0 < self.temperature <= 100:
            raise PlanError(f"kd.temperature={self.temperature!r}: must be in (0, 100]")
        if not isinstance(self.alpha, (int, float)) or not 0 <= self.alpha <= 1:
            raise PlanError(f"kd.alpha={self.alpha!r}: must be in [0, 1]")

    def label(self) -> str:
        """Preset form, e.g. ``kd-n40`` (settings left at their default are omitted)."""
        d = DistillConfig()
        parts = ["kd", f"n{self.steps}"]
        if self.temperature != d.temperature:
            parts.append(f"t{self.temperature:g}")
        if self.lr != d.lr:
            parts.append(f"lr{self.lr:g}")
        if self.alpha != d.alpha:
            parts.append(f"a{self.alpha:g}")
        if self.batch_seqs != d.batch_seqs:
            parts.append(f"b{self.batch_seqs}")
        return "-".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"_type": DISTILL_TYPE, "_version": DISTILL_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: Any) -> DistillConfig:
        if not isinstance(data, dict):
            raise PlanError(f"distill: must be an object, got {type(data).__name__}")
        check_header(data, type_=DISTILL_TYPE, version=DISTILL_VERSION, where="distill", error=PlanError, optional=True)
        fields = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in data.items() if not k.startswith("_")}
        unknown = sorted(set(kw) - fields)
        if unknown:
            raise PlanError(f"distill: unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(fields))})")
        return cls(**kw)


_TOKEN = re.compile(
    r"^(?:n(?P<steps>\d+)|t(?P<t>\d*\.?\d+)|lr(?P<lr>[\d.]+(?:e-?\d+)?)|a(?P<a>\d*\.?\d+)|b(?P<b>\d+))$"
)


def parse_distill(text: str) -> DistillConfig:
    """Parse ``kd``, ``kd-n60``, ``kd-n40-t4-lr1e-4-a0.5-b2`` (steps, temperature, lr, alpha, batch)."""
    name, *tokens = text.strip().split("-")
    if name != "kd":
        raise PlanError(f"step {text!r}: not a distillation step (expected kd[-n<steps>][-t<T>][-lr<lr>][-a<alpha>])")
    kw: dict[str, Any] = {}
    for tok in tokens:
        mt = _TOKEN.match(tok)
        if mt is None:
            raise PlanError(
                f"step {text!r}: cannot read {tok!r} (expected n<steps>, t<T>, lr<lr>, a<alpha> or b<batch seqs>)"
            )
        g = mt.groupdict()
        if g["steps"] is not None:
            kw["steps"] = int(g["steps"])
        elif g["t"] is not None:
            kw["temperature"] = float(g["t"])
        elif g["lr"] is not None:
            kw["lr"] = float(g["lr"])
        elif g["b"] is not None:
            kw["batch_seqs"] = int(g["b"])
        else:
            kw["alpha"] = float(g["a"])
    return DistillConfig(**kw)
