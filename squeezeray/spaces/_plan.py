"""The per-layer compression plan: which technique steps each linear layer gets.

A :class:`CompressionPlan` maps module names to :class:`LayerPlan` s; a layer
absent from the plan stays as it is. Plans are frozen, versioned and
serialise to JSON as ``{"_type": "squeezeray.CompressionPlan", "_version": 1,
"name": ..., "layers": {"model.layers.0.mlp.up_proj": [{"technique": "gptq",
"bits": 4, ...}], ...}}``.

Steps within a layer run in the order given (e.g. prune then quantize).
Composition rules: at most one step of each kind (quantize, prune, low-rank);
a non-residual SVD is the only step; a residual SVD comes last, after a
quantize or prune step.

A plan may also carry one model-level knowledge-distillation step
(:class:`~squeezeray.recovery.DistillConfig`, preset token ``kd``): it runs after
every layer's prune steps and before any quantize / low-rank step, so every
layer of such a plan must prune before it quantizes. JSON: ``"distill": {...}``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from squeezeray._errors import PlanError
from squeezeray._schema import check_header
from squeezeray._schema import did_you_mean
from squeezeray._schema import load_document
from squeezeray.recovery import DistillConfig
from squeezeray.recovery import parse_distill
from squeezeray.techniques import GGUFType
from squeezeray.techniques import SVDConfig
from squeezeray.techniques import StepKind
from squeezeray.techniques import TECHNIQUES
from squeezeray.techniques import TechniqueConfig
from squeezeray.techniques import config_from_dict
from squeezeray.techniques._registry import config_class

PLAN_TYPE = "squeezeray.CompressionPlan"
PLAN_VERSION = 1


@dataclasses.dataclass(frozen=True)
class LayerPlan:
    """The ordered technique steps of one layer."""

    steps: tuple[TechniqueConfig, ...]

    def __post_init__(self) -> None:
        steps = tuple(self.steps)
        object.__setattr__(self, "steps", steps)
        if not steps:
            raise PlanError("a layer plan needs at least one step")
        for step in steps:
            if not isinstance(step, TechniqueConfig):
                raise PlanError(f"step {step!r} is not a technique config")
        kinds = [s.kind for s in steps]
        for kind in StepKind:
            if kinds.count(kind) > 1:
                raise PlanError(f"steps {self.label()!r}: at most one {kind.value} step per layer")
        for i, step in enumerate(steps):
            if isinstance(step, SVDConfig):
                if not step.residual and len(steps) > 1:
                    raise PlanError(f"steps {self.label()!r}: a non-residual svd must be the only step")
                if step.residual and (i != len(steps) - 1 or i == 0):
                    raise PlanError(
                        f"steps {self.label()!r}: a residual svd must come last, after a quantize or prune step"
                    )

    def label(self) -> str:
        return "+".join(s.label() for s in self.steps)

    def split_for_distill(self) -> tuple[tuple[TechniqueConfig, ...], tuple[TechniqueConfig, ...]]:
        """(prune steps, the rest): the steps before and after a model-level distillation.

        Raises:
            PlanError: A prune step follows a quantize or low-rank step.
        """
        n_before = 0
        while n_before < len(self.steps) and self.steps[n_before].kind is StepKind.PRUNE:
            n_before += 1
        if any(s.kind is StepKind.PRUNE for s in self.steps[n_before:]):
            raise PlanError(
                f"steps {self.label()!r}: distillation (kd) trains dense weights between pruning and "
                "quantization, so prune steps must come first in a plan with kd"
            )
        return self.steps[:n_before], self.steps[n_before:]

    @property
    def technique_names(self) -> tuple[str, ...]:
        return tuple(s.technique for s in self.steps)

    def needs_hessian(self) -> bool:
        return any(TECHNIQUES.get(t).needs_hessian for t in self.technique_names)

    def check_shape(self, out_features: int, in_features: int) -> None:
        for step in self.steps:
            step.check_shape(out_features, in_features)

    def to_list(self) -> list[dict[str, Any]]:
        return [s.to_dict() for s in self.steps]

    @classmethod
    def from_list(cls, data: Any) -> LayerPlan:
        if not isinstance(data, list):
            raise PlanError(f"a layer plan must be a list of steps, got {type(data).__name__}")
        return cls(tuple(config_from_dict(d) for d in data))  # type: ignore[misc]


@dataclasses.dataclass(frozen=True)
class CompressionPlan:
    """Per-layer plan for a whole model.

    Attributes:
        layers: Module name -> LayerPlan (read-only mapping).
        name: Free label (e.g. the preset it came from).
        version: Serialisation version.
        distill: Optional model-level distillation between the layers' prune and quantize steps.
    """

    layers: Mapping[str, LayerPlan]
    name: str = ""
    version: int = PLAN_VERSION
    distill: DistillConfig | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", MappingProxyType(dict(self.layers)))
        for key, value in self.layers.items():
            if not isinstance(key, str) or not isinstance(value, LayerPlan):
                raise PlanError(f"plan entry {key!r}: expected a module name and a LayerPlan")
        if self.distill is not None:
            if not isinstance(self.distill, DistillConfig):
                raise PlanError(f"distill={self.distill!r}: expected a DistillConfig or None")
            for key, value in self.layers.items():
                try:
                    value.split_for_distill()
                except PlanError as err:
                    raise PlanError(f"layer {key!r}: {err}") from None

    # --------------------------------------------------------------- checks
    def check(self, layer_shapes: Mapping[str, tuple[int, int]]) -> None:
        """Raise :class:`PlanError` if a layer is unknown or a step does not fit its shape."""
        for name, lp in self.layers.items():
            if name not in layer_shapes:
                hint = did_you_mean(name, layer_shapes, n=2, cutoff=0.6)
                raise PlanError(f"layer {name!r} is not a compressible linear layer of this model.{hint}")
            out_f, in_f = layer_shapes[name]
            try:
                lp.check_shape(out_f, in_f)
            except PlanError as err:
                raise PlanError(f"layer {name!r} ({out_f}x{in_f}): {err}") from None

    def needs_hessian(self) -> bool:
        return any(lp.needs_hessian() for lp in self.layers.values())

    def summary(self) -> dict[str, int]:
        """Count of layers per step label."""
        counts: dict[str, int] = {}
        for lp in self.layers.values():
            counts[lp.label()] = counts.get(lp.label(), 0) + 1
        return counts

    # -------------------------------------------------------- serialisation
    def layer_label(self, name: str) -> str:
        """The steps of layer ``name`` as a preset, with the distillation step where it runs."""
        lp = self.layers[name]
        if self.distill is None:
            return lp.label()
        before, after = lp.split_for_distill()
        return "+".join([s.label() for s in before] + [self.distill.label()] + [s.label() for s in after])

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "_type": PLAN_TYPE,
            "_version": self.version,
            "name": self.name,
            "layers": {k: v.to_list() for k, v in self.layers.items()},
        }
        if self.distill is not None:
            out["distill"] = self.distill.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Any) -> CompressionPlan:
        if not isinstance(data, dict):
            raise PlanError(f"a plan must be a JSON object, got {type(data).__name__}")
        check_header(data, type_=PLAN_TYPE, version=PLAN_VERSION, where="plan", error=PlanError)
        layers = data.get("layers")
        if not isinstance(layers, dict):
            raise PlanError("layers: must be an object mapping module names to step lists")
        parsed = {}
        for name, steps in layers.items():
            try:
                parsed[name] = LayerPlan.from_list(steps)
            except PlanError as err:
                raise PlanError(f"layer {name!r}: {err}") from None
        distill = data.get("distill")
        return cls(
            parsed, name=str(data.get("name", "")),
            distill=None if distill is None else DistillConfig.from_dict(distill),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> CompressionPlan:
        return cls.from_dict(load_document(path, what="plan file", error=PlanError, syntax="json"))

    @classmethod
    def uniform(cls, steps: LayerPlan | str, layer_names: Iterable[str], *, name: str = "") -> CompressionPlan:
        """The same steps on every named layer; ``steps`` may be a preset string (``kd`` allowed)."""
        if isinstance(steps, str):
            lp, distill = parse_preset(steps)
            return cls({n: lp for n in layer_names}, name=name or steps.strip(), distill=distill)
        return cls({n: steps for n in layer_names}, name=name or steps.label())


# ------------------------------------------------------------------ presets
_STEP_TOKEN = re.compile(
    r"^(?:w(?P<bits>\d+)(?:g(?P<g>\d+))?|g(?P<g2>\d+)|s(?P<s>\d+(?:\.\d+)?)|(?P<n>\d+):(?P<m>\d+)"
    r"|r(?P<rank>\d+)|a(?P<alpha>\d*\.?\d+)|(?P<gguf>q8_0|q[45]_[01]|q[2-6]_k)|(?P<word>asym|sym|rows|heads|res|noact|noclip|clip|f64))$"
)


def parse_step(text: str) -> TechniqueConfig:
    """Parse one step label such as ``gptq-w4g128``, ``wanda-2:4``, ``magnitude-s30-rows``,
    ``svd-r64-res``, ``nf4-g64``, ``fp8``, ``w8a8-a0.5``, ``rtn-w8`` (no g: one group per row), ``gptq-q4_0``
    (a GGUF block type: Q8_0, Q5_1, Q5_0, Q4_1, Q4_0, or a K-quant Q6_K ... Q2_K)."""
    name, *tokens = text.strip().split("-")
    cls = config_class(name)
    fields = {f.name for f in dataclasses.fields(cls)}
    kw: dict[str, Any] = {}
    for tok in tokens:
        mt = _STEP_TOKEN.match(tok)
        if mt is None:
            raise PlanError(f"step {text!r}: cannot read {tok!r}")
        g = mt.groupdict()
        if g["bits"] is not None:
            kw["bits"] = int(g["bits"])
            kw["group_size"] = int(g["g"]) if g["g"] else None
        elif g["g2"] is not None:
            kw["group_size"] = int(g["g2"])
        elif g["s"] is not None:
            kw["sparsity"] = float(g["s"]) / 100
        elif g["n"] is not None:
            kw.update(pattern="nm", n=int(g["n"]), m=int(g["m"]), sparsity=None)
        elif g["rank"] is not None:
            kw["rank"] = int(g["rank"])
        elif g["alpha"] is not None:
            kw["alpha"] = float(g["alpha"])
        elif g["gguf"] is not None:
            t = GGUFType(g["gguf"])
            kw.update(gguf=t.value, bits=t.bits, group_size=t.group, symmetric=not t.has_min)
        else:
            word = g["word"]
            kw.update(
                {"asym": {"symmetric": False}, "sym": {"symmetric": True}, "rows": {"pattern": "rows"},
                 "heads": {"pattern": "heads"}, "res": {"residual": True}, "noact": {"act_order": False},
                 "noclip": {"clip_search": False}, "clip": {"clip_search": True}, "f64": {"float64_solve": True}}[word]
            )
    unknown = sorted(set(kw) - fields)
    if unknown:
        raise PlanError(f"step {text!r}: {name} has no setting {', '.join(unknown)}")
    return cls(**kw)


def _is_distill(part: str) -> bool:
    return part.strip().split("-")[0] == "kd"


def parse_steps(text: str) -> LayerPlan:
    """Parse ``step+step+...`` (applied left to right), e.g. ``wanda-2:4+gptq-w4g128``."""
    if not text.strip():
        raise PlanError("empty preset")
    if any(_is_distill(p) for p in text.split("+")):
        raise PlanError(
            f"preset {text!r}: kd is a model-level step; parse it with parse_preset or CompressionPlan.uniform"
        )
    return LayerPlan(tuple(parse_step(part) for part in text.split("+")))


def parse_preset(text: str) -> tuple[LayerPlan, DistillConfig | None]:
    """Parse a preset that may hold one ``kd`` step, e.g. ``wanda-s50+kd-n40+gptq-w4g128``.

    The ``kd`` step must sit after the prune steps and before the quantize / low-rank ones.
    """
    if not text.strip():
        raise PlanError("empty preset")
    parts = [p.strip() for p in text.split("+")]
    at = [i for i, p in enumerate(parts) if _is_distill(p)]
    if not at:
        return parse_steps(text), None
    if len(at) > 1:
        raise PlanError(f"preset {text!r}: at most one kd step")
    i = at[0]
    distill = parse_distill(parts[i])
    steps = tuple(parse_step(p) for p in parts[:i] + parts[i + 1 :])
    if not steps:
        raise PlanError(f"preset {text!r}: kd needs at least one technique step to recover from")
    lp = LayerPlan(steps)
    before, _ = lp.split_for_distill()
    if len(before) != i:
        raise PlanError(
            f"preset {text!r}: kd must come right after the prune steps and before any quantize or low-rank step"
        )
    return lp, distill
