"""The objective plug-in interface and the records it produces."""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import enum
import functools
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from typing import Any
from typing import ClassVar

from torch import nn

from squeezeray.data import TokenData


class Direction(str, enum.Enum):
    MINIMIZE = "minimize"
    MAXIMIZE = "maximize"


class Provenance(str, enum.Enum):
    """How a number was obtained; every figure carries one."""

    MEASURED = "measured"  # timed or counted on real hardware
    PREDICTED = "predicted"  # from a model of hardware (roofline, profile)
    COMPUTED = "computed"  # exact arithmetic on the model (size, perplexity, KL)


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One objective's value for one model.

    Attributes:
        name: Objective name.
        value: The number, in ``unit``.
        unit: e.g. ``bytes``, ``ppl``, ``nats/token``, ``ms``.
        provenance: measured / predicted / computed.
        where: What it was measured or predicted on (device, data), human readable.
        details: Extra numbers (repeats, spread, token counts).
    """

    name: str
    value: float
    unit: str
    provenance: Provenance
    where: str
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "provenance": self.provenance.value,
            "where": self.where,
            "details": dict(self.details),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Measurement:
        return cls(d["name"], float(d["value"]), d["unit"], Provenance(d["provenance"]), d["where"], d.get("details", {}))


@dataclasses.dataclass
class EvalContext:
    """What objectives measure: a candidate beside the original it came from.

    Attributes:
        original: The uncompressed model (never modified).
        candidate: The compressed model (may be ``original`` itself for the baseline row).
        eval_data: Held-out token windows (perplexity).
        proxy_data: Calibration-side token windows (KL proxy).
        reference: Cache of original-model results shared across candidates
            (e.g. its next-token log-probs), keyed by the objective.
        memo: Measurements of this candidate already taken in this context (derived
            objectives such as LAT reuse perplexity and latency instead of re-measuring).
    """

    original: nn.Module
    candidate: nn.Module
    eval_data: TokenData
    proxy_data: TokenData
    reference: dict[str, Any] = dataclasses.field(default_factory=dict)
    memo: dict[str, Measurement] = dataclasses.field(default_factory=dict)

    def measure(self, objective: BaseObjective) -> Measurement:
        """``objective.measure(self)``, once per context and objective setting."""
        key = memo_key(objective)
        if key not in self.memo:
            self.memo[key] = objective.measure(self)
        return self.memo[key]

    def for_original(self) -> EvalContext:
        """The same context with the original model as the candidate (its memo cached in ``reference``)."""
        memo = self.reference.setdefault("original-memo", {})
        return EvalContext(self.original, self.original, self.eval_data, self.proxy_data, self.reference, memo)


class Need(str, enum.Enum):
    """What an objective is given when a workbench builds it for its model (a keyword argument of the same name)."""

    PROFILE = "profile"  # the target hardware profile
    TOKENIZER = "tokenizer"  # the model's tokenizer
    SOURCE_GGUF = "source_gguf"  # the GGUF file the model was loaded from (None when it came from elsewhere)


class BaseObjective(abc.ABC):
    """A number to optimise, with its direction and unit.

    Call order: construct (settings as keyword arguments, plus one per entry of :attr:`needs`), then
    :meth:`measure` once per candidate, with the same :class:`EvalContext`
    ``reference`` cache reused across candidates of one model.
    """

    name: ClassVar[str]
    direction: ClassVar[Direction]
    unit: ClassVar[str]
    needs: ClassVar[frozenset[Need]] = frozenset()
    """What :meth:`squeezeray.workbench.Workbench.objective` passes to the constructor, by :class:`Need` name;
    declared in the class line (``class Accuracy(BaseObjective, needs={Need.TOKENIZER})``), inherited otherwise."""

    def __init_subclass__(cls, *, needs: Iterable[Need | str] | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if needs is not None:
            cls.needs = frozenset(Need(n) for n in needs)
    swap_safe: ClassVar[bool] = False
    """True when measuring a candidate never looks at ``ctx.original`` beyond the reference results cached
    from an earlier measurement of the original: such objectives may score a candidate swapped into the
    original model in place (:meth:`squeezeray.workbench.Workbench.evaluate_plan`). Objectives that compare
    ``ctx.candidate is ctx.original`` or read the original's structure keep the default (a copy)."""

    @abc.abstractmethod
    def measure(self, ctx: EvalContext) -> Measurement:
        """Measure the candidate in ``ctx``."""

    @classmethod
    def infeasible_value(cls, reference: float) -> float:
        """The value a sampler is told for a configuration that cannot exist: worse than anything real.

        ``reference`` is the original model's value. A minimised objective gets twice it plus one, a maximised
        one zero; an objective whose scale makes that wrong overrides this.
        """
        if cls.direction is Direction.MINIMIZE:
            return 2.0 * max(reference, 1e-9) + 1.0
        return 0.0


def memo_key(objective: BaseObjective) -> str:
    """Name plus the objective's plain settings (two Accuracy objectives on different tasks differ)."""
    plain = sorted(
        (k, v) for k, v in vars(objective).items()
        if isinstance(v, (str, int, float, bool, type(None), enum.Enum)) and not k.startswith("_")
    )
    return f"{objective.name}:{plain!r}"


def _materialize_group(group: list[Any], dtype: Any, *_: object) -> None:
    for m in group:
        m.materialize(dtype)


def _release_group(group: list[Any], *_: object) -> None:
    for m in group:
        m.release()


MATERIALIZE_WHOLE_BYTES = 64 << 20
"""Dense bytes up to which :func:`materialized` holds every compressed layer's dense weight at once; above
it, one decoder block's at a time (a whole candidate of the embedded 135M model is 0.27 GB in bfloat16, so its
evaluations take the block-wise path: the same numbers, each forward dequantizing again, about 0.6 s more per
held-out perplexity here)."""


@contextlib.contextmanager
def materialized(model: nn.Module, *, whole_bytes: int = MATERIALIZE_WHOLE_BYTES) -> Iterator[None]:
    """Cache dense weights of compressed layers while accuracy is evaluated (speed only). A layer already
    materialized (by whoever holds it, e.g. the evo screen's own copies) is left as it is, and kept.

    When the dense weights would take more than ``whole_bytes`` (a large model's candidate would otherwise
    hold a second dense copy of its linear layers), each decoder block's layers are materialized as the block
    starts its forward and released when it ends, so memory holds one block's dense weights; the numbers are
    the same either way (the same dense weights, in the same dtype), only each forward dequantizes again.
    Layers outside the blocks (the head) stay materialized throughout.
    """
    from squeezeray.compress import CompressedLinear
    from squeezeray.compress import decoder_parts
    from squeezeray.models import model_dtype

    from squeezeray._errors import SqueezerayError
    from squeezeray._memory import trim

    dtype = model_dtype(model)  # dense weights in the model's own dtype (a bfloat16 model holds bfloat16)
    layers = [m for m in model.modules() if isinstance(m, CompressedLinear) and not m.is_materialized]
    dense = sum(m.fmt.out_features * m.fmt.in_features for m in layers) * dtype.itemsize
    blocks: list[nn.Module] = []
    if dense > whole_bytes:
        try:
            blocks = list(decoder_parts(model)[1])
        except SqueezerayError:
            blocks = []  # no decoder blocks to go through: the whole model's dense weights, as below
    per_block = [[m for m in b.modules() if isinstance(m, CompressedLinear) and not m.is_materialized]
                 for b in blocks]
    in_blocks = {id(m) for group in per_block for m in group}
    hooks = []
    for block, group in zip(blocks, per_block):
        if group:
            hooks.append(block.register_forward_pre_hook(functools.partial(_materialize_group, group, dtype)))
            hooks.append(block.register_forward_hook(functools.partial(_release_group, group)))
    for m in layers:
        if id(m) not in in_blocks:
            m.materialize(dtype)
    try:
        yield
    finally:
        for h in hooks:
            h.remove()
        for m in layers:
            m.release()
        trim()  # the dense weights (a few MB each, kept in glibc's heap) go back to the system
