"""Search spaces: which compression choices each group of layers may take.

A :class:`SearchSpace` is an ordered list of :class:`GroupSpec` s. Each layer
belongs to the first group whose glob patterns match its module name. A group
offers quantize options, prune options, the orders they may run in, and
residual low-rank options, each as step labels (``gptq-w4g128``, ``wanda-2:4``,
``svd-r32-res``; ``none`` for "no step of this kind").

Layers are sampled in *units* that share one choice:

* deployment ties: with ``fuse`` (default) q/k/v of a block form one unit, and
  so do gate/up, because serving engines fuse them into one matrix;
* a group's ``tie``: ``layer`` (each layer or fused unit), ``block`` (all the
  group's layers in a transformer block) or ``all`` (one choice for the group).

Every unit always has the same parameters (``<unit>/quant``, ``<unit>/prune``,
``<unit>/order``, ``<unit>/lowrank`` where the group offers more than one
value), so the space is static, as NSGA-II and TPE prefer.
"""

from __future__ import annotations

import dataclasses
import enum
import fnmatch
import re
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from squeezeray._errors import PlanError
from squeezeray._errors import SqueezerayError
from squeezeray._schema import check_header
from squeezeray._schema import check_keys
from squeezeray._schema import load_document
from squeezeray.spaces._plan import CompressionPlan
from squeezeray.spaces._plan import LayerPlan
from squeezeray.spaces._plan import parse_step
from squeezeray.techniques import StepKind
from squeezeray.techniques import TechniqueConfig


NONE = "none"


SPACE_TYPE = "squeezeray.SearchSpace"


SPACE_VERSION = 1


_BLOCK = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")


_FUSED = {"q_proj": "qkv", "k_proj": "qkv", "v_proj": "qkv", "gate_proj": "gate_up", "up_proj": "gate_up"}


class Order(str, enum.Enum):
    """Which step runs first when a layer is both pruned and quantized."""

    PRUNE_FIRST = "prune-first"
    QUANT_FIRST = "quant-first"


class Tie(str, enum.Enum):
    """How many layers of a group share one sampled choice."""

    LAYER = "layer"
    BLOCK = "block"
    ALL = "all"


def _labels(values: Any, field: str, group: str, kind: StepKind | None) -> tuple[str, ...]:
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, (list, tuple)) or not values:
        raise SqueezerayError(f"space group {group!r}: {field} must be a non-empty list, got {values!r}")
    out = []
    for v in values:
        v = str(v).strip()
        if v != NONE:
            try:
                step = parse_step(v)
            except PlanError as err:
                raise SqueezerayError(f"space group {group!r}: {field} option {v!r}: {err}") from None
            if kind is not None and step.kind is not kind:
                raise SqueezerayError(f"space group {group!r}: {field} option {v!r} is a {step.kind.value} step")
            if field == "lowrank" and not getattr(step, "residual", False):
                raise SqueezerayError(f"space group {group!r}: lowrank option {v!r} must be residual (…-res)")
            v = step.label()
        if v in out:
            raise SqueezerayError(f"space group {group!r}: {field} lists {v!r} twice")
        out.append(v)
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class GroupSpec:
    """The choices offered to the layers a set of glob patterns match.

    Attributes:
        name: Group name (used in parameter names and reports).
        match: fnmatch globs over module names, e.g. ``*.self_attn.[qkv]_proj``.
        quantize: Quantize step labels or ``none``.
        prune: Prune step labels or ``none``.
        orders: Allowed orders when both a prune and a quantize step are chosen.
        lowrank: Residual SVD step labels or ``none``.
        tie: How layers share a choice.
        blocks: Restrict the group to these transformer blocks (0 = first, -1 = last; resolved against
            the model's block count, so one space fits models of any depth). Empty: any layer the
            patterns match, in a block or not.
    """

    name: str
    match: tuple[str, ...]
    quantize: tuple[str, ...] = (NONE,)
    prune: tuple[str, ...] = (NONE,)
    orders: tuple[Order, ...] = (Order.PRUNE_FIRST,)
    lowrank: tuple[str, ...] = (NONE,)
    tie: Tie = Tie.LAYER
    blocks: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", self.name):
            raise SqueezerayError(f"space group name {self.name!r}: use letters, digits, '_', '.', '-'")
        match = (self.match,) if isinstance(self.match, str) else tuple(self.match)
        if not match:
            raise SqueezerayError(f"space group {self.name!r}: match needs at least one pattern")
        object.__setattr__(self, "match", match)
        object.__setattr__(self, "quantize", _labels(self.quantize, "quantize", self.name, StepKind.QUANTIZE))
        object.__setattr__(self, "prune", _labels(self.prune, "prune", self.name, StepKind.PRUNE))
        object.__setattr__(self, "lowrank", _labels(self.lowrank, "lowrank", self.name, StepKind.LOWRANK))
        orders = (self.orders,) if isinstance(self.orders, (str, Order)) else tuple(self.orders)
        try:
            orders = tuple(Order(o) for o in orders)
            tie = Tie(self.tie)
        except ValueError as err:
            raise SqueezerayError(f"space group {self.name!r}: {err}") from None
        if not orders:
            raise SqueezerayError(f"space group {self.name!r}: orders needs at least one value")
        object.__setattr__(self, "orders", orders)
        object.__setattr__(self, "tie", tie)
        blocks = (self.blocks,) if isinstance(self.blocks, int) else tuple(self.blocks or ())
        for b in blocks:
            if isinstance(b, bool) or not isinstance(b, int):
                raise SqueezerayError(
                    f"space group {self.name!r}: blocks={list(blocks)!r}: block indices must be integers (-1 = last)"
                )
        object.__setattr__(self, "blocks", blocks)

    def matches(self, layer: str, n_blocks: int | None = None) -> bool:
        """Whether ``layer`` is this group's; ``n_blocks`` (the model's block count) resolves ``blocks``."""
        if not any(fnmatch.fnmatchcase(layer, p) for p in self.match):
            return False
        if not self.blocks:
            return True
        if n_blocks is None:
            raise SqueezerayError(f"space group {self.name!r} selects blocks {list(self.blocks)}: the model's block "
                                  "count is needed to match it")
        block = _block_of(layer)
        return block is not None and int(block) in {b % n_blocks for b in self.blocks if -n_blocks <= b < n_blocks}

    def params(self) -> dict[str, tuple[str, ...]]:
        """Parameter suffix -> choices, for the parameters this group samples (more than one value)."""
        out = {"quant": self.quantize, "prune": self.prune, "order": tuple(o.value for o in self.orders),
               "lowrank": self.lowrank}
        if not (any(q != NONE for q in self.quantize) and any(p != NONE for p in self.prune)):
            out.pop("order")
        return {k: v for k, v in out.items() if len(v) > 1}

    def layer_plan(self, quant: str, prune: str, order: str, lowrank: str) -> LayerPlan | None:
        """The steps for one choice, or None when the choice is "no step at all"."""
        steps = []
        q = None if quant == NONE else parse_step(quant)
        p = None if prune == NONE else parse_step(prune)
        if q is not None and p is not None:
            steps = [p, q] if Order(order) is Order.PRUNE_FIRST else [q, p]
        else:
            steps = [s for s in (p, q) if s is not None]
        if lowrank != NONE:
            steps.append(parse_step(lowrank))
        return LayerPlan(tuple(steps)) if steps else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "match": list(self.match), "quantize": list(self.quantize), "prune": list(self.prune),
            "orders": [o.value for o in self.orders], "lowrank": list(self.lowrank), "tie": self.tie.value,
        } | ({"blocks": list(self.blocks)} if self.blocks else {})


@dataclasses.dataclass(frozen=True)
class Unit:
    """Layers that share one sampled choice.

    Attributes:
        key: Parameter-name prefix (e.g. ``L3.attn_qkv``).
        group: The group the layers belong to.
        layers: Module names.
    """

    key: str
    group: GroupSpec
    layers: tuple[str, ...]


def block_count(layer_names: Iterable[str]) -> int:
    """How many transformer blocks the layer names span (highest block index + 1; 0 without blocks)."""
    indices = [int(b) for b in map(_block_of, layer_names) if b is not None]
    return max(indices) + 1 if indices else 0


def _block_of(layer: str) -> str | None:
    m = _BLOCK.search(layer)
    return m.group(1) if m else None


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """Per-group compression choices; see the module docstring.

    Attributes:
        name: Space name.
        groups: First matching group wins; layers no group matches stay uncompressed.
        fuse: Tie q/k/v and gate/up of a block (deployment fusion).
    """

    name: str
    groups: tuple[GroupSpec, ...]
    fuse: bool = True
    version: int = SPACE_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", tuple(self.groups))
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names):
            raise SqueezerayError(f"space {self.name!r}: group names must be unique, got {names}")

    # ------------------------------------------------------------- structure
    def group_of(self, layer: str, n_blocks: int | None = None) -> GroupSpec | None:
        """The first group that matches ``layer`` (``n_blocks``: see :func:`block_count`)."""
        return next((g for g in self.groups if g.matches(layer, n_blocks)), None)

    def assign(self, layer_names: Iterable[str]) -> dict[str, GroupSpec]:
        """Each of a model's layers that a group claims -> that group, in layer order (block indices
        resolved against the model's depth)."""
        layer_names = list(layer_names)
        n_blocks = block_count(layer_names)
        groups = ((layer, self.group_of(layer, n_blocks)) for layer in layer_names)
        return {layer: group for layer, group in groups if group is not None}

    def units(self, layer_names: Iterable[str]) -> list[Unit]:
        """The sampling units of a model's layers, in first-seen order."""
        buckets: dict[str, tuple[GroupSpec, list[str]]] = {}
        for layer, group in self.assign(layer_names).items():
            block = _block_of(layer)
            if group.tie is Tie.ALL:
                key = group.name
            elif group.tie is Tie.BLOCK:
                key = f"{group.name}@{block}" if block is not None else f"{group.name}@{layer}"
            else:
                head, _, leaf = layer.rpartition(".")
                leaf = _FUSED.get(leaf, leaf) if self.fuse else leaf
                key = f"{group.name}@{head}.{leaf}" if head else f"{group.name}@{leaf}"
            buckets.setdefault(key, (group, []))[1].append(layer)
        return [Unit(k, g, tuple(ls)) for k, (g, ls) in buckets.items()]

    def distributions(self, layer_names: Iterable[str]) -> dict[str, tuple[str, ...]]:
        """Every parameter name and its choices (static for a given model)."""
        out = {}
        for u in self.units(layer_names):
            for suffix, choices in u.group.params().items():
                out[f"{u.key}/{suffix}"] = choices
        return out

    # -------------------------------------------------------------- sampling
    def plan_from_params(self, params: Mapping[str, Any], layer_names: Iterable[str], *, name: str = "") -> CompressionPlan:
        """The plan a full set of parameter values stands for (raises PlanError for an impossible combination)."""
        layers: dict[str, LayerPlan] = {}
        for u in self.units(layer_names):
            g = u.group

            def value(suffix: str, default: str, unit: Unit = u) -> str:
                key = f"{unit.key}/{suffix}"
                return str(params[key]) if key in params else default

            lp = g.layer_plan(
                value("quant", g.quantize[0]), value("prune", g.prune[0]), value("order", g.orders[0].value),
                value("lowrank", g.lowrank[0]),
            )
            if lp is not None:
                for layer in u.layers:
                    layers[layer] = lp
        return CompressionPlan(layers, name=name)

    def sample(self, trial: Any, layer_names: Sequence[str]) -> CompressionPlan:
        """Ask ``trial`` (an optuna Trial) for every parameter and build the plan."""
        params = {k: trial.suggest_categorical(k, list(v)) for k, v in self.distributions(layer_names).items()}
        return self.plan_from_params(params, layer_names, name=f"trial-{trial.number}")

    def params_for(self, plan: CompressionPlan, layer_names: Sequence[str]) -> dict[str, str]:
        """Parameter values that reproduce ``plan`` (inverse of :meth:`plan_from_params`).

        Raises:
            SqueezerayError: the plan is not expressible in this space.
        """
        params: dict[str, str] = {}
        for u in self.units(layer_names):
            g = u.group
            plans = {plan.layers.get(layer) for layer in u.layers}
            if len(plans) != 1:
                raise SqueezerayError(f"plan gives the tied layers of unit {u.key!r} different steps")
            lp = plans.pop()
            steps = () if lp is None else lp.steps
            chosen = {"quant": NONE, "prune": NONE, "lowrank": NONE, "order": g.orders[0].value}
            kinds = [s.kind for s in steps]
            for s in steps:
                key = {StepKind.QUANTIZE: "quant", StepKind.PRUNE: "prune", StepKind.LOWRANK: "lowrank"}[s.kind]
                chosen[key] = s.label()
            if StepKind.QUANTIZE in kinds and StepKind.PRUNE in kinds:
                first_prune = kinds.index(StepKind.PRUNE) < kinds.index(StepKind.QUANTIZE)
                chosen["order"] = (Order.PRUNE_FIRST if first_prune else Order.QUANT_FIRST).value
            for suffix, choices in g.params().items():
                if chosen[suffix] not in choices:
                    raise SqueezerayError(f"unit {u.key!r}: {suffix}={chosen[suffix]!r} is not among {list(choices)}")
                params[f"{u.key}/{suffix}"] = chosen[suffix]
            fixed = {"quant": g.quantize, "prune": g.prune, "lowrank": g.lowrank}
            for suffix, choices in fixed.items():
                if len(choices) == 1 and chosen[suffix] != choices[0]:
                    raise SqueezerayError(f"unit {u.key!r}: {suffix}={chosen[suffix]!r} but the space fixes {choices[0]!r}")
        return params

    def uniform_params(self, choice: Mapping[str, str], layer_names: Sequence[str]) -> dict[str, str]:
        """Parameters giving every unit the same choice (e.g. ``{"quant": "gptq-w4g128"}``); a unit whose
        group does not offer the value keeps its first option."""
        params = {}
        for key, choices in self.distributions(layer_names).items():
            suffix = key.rsplit("/", 1)[1]
            if suffix in choice and choice[suffix] in choices:
                params[key] = choice[suffix]
            else:
                params[key] = choices[0]
        return params

    def steps(self) -> tuple[TechniqueConfig, ...]:
        """Every step some group offers (each label once, in the groups' order)."""
        labels = dict.fromkeys(label for g in self.groups for label in (*g.quantize, *g.prune, *g.lowrank)
                               if label != NONE)
        return tuple(parse_step(label) for label in labels)

    def size(self, layer_names: Sequence[str]) -> int:
        """Number of distinct plans in the space."""
        n = 1
        for choices in self.distributions(layer_names).values():
            n *= len(choices)
        return n

    # ------------------------------------------------------------ serialise
    def to_dict(self) -> dict[str, Any]:
        return {"_type": SPACE_TYPE, "_version": self.version, "name": self.name, "fuse": self.fuse,
                "groups": [g.to_dict() for g in self.groups]}

    @classmethod
    def from_dict(cls, data: Any) -> SearchSpace:
        if not isinstance(data, dict):
            raise SqueezerayError(f"a search space must be a mapping, got {type(data).__name__}")
        check_header(data, type_=SPACE_TYPE, version=SPACE_VERSION, where="search space", optional=True)
        check_keys(data, ("_type", "_version", "name", "fuse", "groups"), where="search space")
        groups = []
        allowed = {f.name for f in dataclasses.fields(GroupSpec)}
        for i, g in enumerate(data.get("groups") or []):
            if not isinstance(g, dict):
                raise SqueezerayError(f"search space group #{i}: must be a mapping")
            bad = set(g) - allowed
            if bad:
                raise SqueezerayError(f"search space group #{i}: unknown key(s) {sorted(bad)}; allowed {sorted(allowed)}")
            groups.append(GroupSpec(**g))
        if not groups:
            raise SqueezerayError("search space: groups must list at least one group")
        return cls(str(data.get("name", "custom")), tuple(groups), bool(data.get("fuse", True)))

    @classmethod
    def from_yaml(cls, path: str | Path) -> SearchSpace:
        return cls.from_dict(load_document(path, what="search space file", syntax="yaml"))

    def with_groups(self, groups: Sequence[GroupSpec]) -> SearchSpace:
        return dataclasses.replace(self, groups=tuple(groups))
