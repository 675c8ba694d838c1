"""Expert rules: prune a search space of options that make no sense on a device.

A rule is data (``squeezeray/search/rules/default.yaml``): a condition on the
hardware profile, a selector over the step an option label parses to, a scope
(which groups), a reason template, and an effect:

* ``remove``: the matching options leave the group's quantize / prune / lowrank
  list, and a :class:`Removal` records why;
* ``note``: the options stay and a :class:`Note` is attached to them (e.g. INT4 on a
  device without int4 units is valued for memory, not compute; a latency
  predictor may read it).

A rule file looks like::

    _type: squeezeray.Rules
    _version: 1
    rules:
      - name: fp8-needs-fp8-units
        when: {profile_lacks_format: fp8}        # every key given must hold
        select: {technique: [fp8]}               # every key given must match
        groups: ["*"]                            # optional: globs over group names
        layers: ["*lm_head*"]                    # optional: globs over layer names
        effect: remove                           # or note
        overridable: true                        # the user may lift it by name
        reason: "{profile} lists no fp8 units: {option} in group {group} ..."

Unknown keys are rejected by name (with a close match where there is one).

Decisions, in the order :func:`apply_rules` meets them:

* Rules apply in file order, each to the space the earlier ones left.
* A rule named in ``allow`` is *lifted*: it does nothing and the outcome records
  that the user lifted it. Naming an unknown rule, or one with
  ``overridable: false``, raises :class:`~squeezeray._errors.SqueezerayError`.
* ``none`` (no step of that kind) is never selected, so a list holding ``none``
  can never be emptied.
* A parameter is never left without options: when a rule would remove *every*
  remaining option of one group's list, it removes none of them there, and the
  outcome records a :class:`Blocked` entry (shown by :func:`explain`). The user's
  space asked for exactly those options, so the search keeps them, visibly.
* Scope: with no ``groups`` and no ``layers`` a rule covers every group. Otherwise
  a group is covered when its name matches a ``groups`` glob, when one of its own
  match patterns, read as text, matches a ``layers`` glob (group ``lm_head`` /
  pattern ``lm_head`` vs glob ``*lm_head*``), or, when ``layer_names`` are given,
  when a layer the group owns (first matching group wins, as in sampling) matches
  a ``layers`` glob. A covered group is restricted as a whole: give the head its
  own group to keep the other layers free.
* A profile whose ``sparse24_speedup`` figure is unavailable counts as having no
  speed-up (1.0): no acceleration is claimed, and the removal's reason says so.
"""

from __future__ import annotations

import dataclasses
import re
import difflib
import enum
import fnmatch
import string
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from squeezeray._errors import SqueezerayError
from squeezeray._errors import UnknownNameError
from squeezeray.hwprofiles import ComputeDtype
from squeezeray.hwprofiles import DeviceKind
from squeezeray.hwprofiles import HardwareProfile
from squeezeray.spaces._plan import parse_step
from squeezeray.spaces._space import NONE
from squeezeray.spaces._space import GroupSpec
from squeezeray.spaces._space import SearchSpace
from squeezeray.techniques import FP8Config
from squeezeray.techniques import IntQuantConfig
from squeezeray.techniques import NF4Config
from squeezeray.techniques import PruneConfig
from squeezeray.techniques import SparsityPattern
from squeezeray.techniques import StepKind
from squeezeray.techniques import TechniqueConfig
from squeezeray.techniques import W8A8Config
from squeezeray.techniques._registry import config_class

RULES_TYPE = "squeezeray.Rules"
RULES_VERSION = 1
RULES_DIR = Path(__file__).parent / "rules"
DEFAULT_RULES_FILE = RULES_DIR / "default.yaml"

# The option lists of a group that rules act on (orders are not options of a step).
FIELDS = ("quantize", "prune", "lowrank")
# Names a reason template may use.
REASON_FIELDS = ("profile", "option", "group", "rule", "formats", "sparse24_speedup")


class RuleEffect(str, enum.Enum):
    """What a rule does to the options it selects."""

    REMOVE = "remove"  # drop them from the space
    NOTE = "note"  # keep them, attach an annotation


def _close(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_keys(where: str, data: Mapping[str, Any], allowed: Sequence[str]) -> None:
    for key in data:
        if key not in allowed:
            raise SqueezerayError(
                f"{where}: unknown key {key!r}{_close(str(key), allowed)}; allowed: {', '.join(allowed)}"
            )


def _globs(where: str, field: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise SqueezerayError(f"{where}: {field}={value!r}: must be a list of non-empty glob strings")
    return tuple(value)


def _enum(where: str, field: str, cls: type[enum.Enum], value: Any) -> Any:
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in cls)  # type: ignore[attr-defined]
        raise SqueezerayError(f"{where}: {field}={value!r}: must be one of {allowed}") from None


def _number(where: str, field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SqueezerayError(f"{where}: {field}={value!r}: must be a number")
    return float(value)


# ---------------------------------------------------------------- pure helpers
def step_bits(step: TechniqueConfig) -> int | None:
    """Bits per stored weight code of a quantize step; None for prune and low-rank steps.

    Integer methods (RTN/GPTQ/AWQ) give their ``bits``; NF4 is 4; FP8 and W8A8 are 8.
    """
    if isinstance(step, IntQuantConfig):
        return step.bits
    if isinstance(step, NF4Config):
        return 4
    if isinstance(step, (FP8Config, W8A8Config)):
        return 8
    return None


def sparse24_speedup(profile: HardwareProfile) -> float:
    """The profile's 2:4 speed-up; an unavailable figure counts as 1.0 (no speed-up claimed)."""
    value = profile.sparse24_speedup.value
    return 1.0 if value is None else float(value)


# ------------------------------------------------------------------ condition
_CONDITION_KEYS = (
    "always", "profile_lacks_format", "profile_has_format", "profile_sparse24_speedup_at_most",
    "profile_sparse24_speedup_above", "profile_kind",
)


def _as_tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


@dataclasses.dataclass(frozen=True)
class Condition:
    """When a rule applies, as a test of the hardware profile; every key set must hold.

    Attributes:
        always: True: applies on every profile (must be the only key).
        profile_lacks_format: Applies when the profile's ``formats`` lack this dtype.
        profile_has_format: Applies when the profile's ``formats`` hold this dtype.
        profile_sparse24_speedup_at_most: Applies when the 2:4 speed-up is <= this.
        profile_sparse24_speedup_above: Applies when the 2:4 speed-up is > this.
        profile_kind: Applies when the profile's kind is one of these.
    """

    always: bool = False
    profile_lacks_format: ComputeDtype | None = None
    profile_has_format: ComputeDtype | None = None
    profile_sparse24_speedup_at_most: float | None = None
    profile_sparse24_speedup_above: float | None = None
    profile_kind: tuple[DeviceKind, ...] = ()

    def __post_init__(self) -> None:
        where = "rule condition"
        if not isinstance(self.always, bool):
            raise SqueezerayError(f"{where}: always={self.always!r}: must be true")
        for key in ("profile_lacks_format", "profile_has_format"):
            if getattr(self, key) is not None:
                object.__setattr__(self, key, _enum(where, key, ComputeDtype, getattr(self, key)))
        for key in ("profile_sparse24_speedup_at_most", "profile_sparse24_speedup_above"):
            if getattr(self, key) is not None:
                object.__setattr__(self, key, _number(where, key, getattr(self, key)))
        kinds = tuple(_enum(where, "profile_kind", DeviceKind, k) for k in _as_tuple(self.profile_kind))
        object.__setattr__(self, "profile_kind", kinds)
        n_tests = sum(getattr(self, k) not in (None, ()) for k in _CONDITION_KEYS[1:])
        if self.always and n_tests:
            raise SqueezerayError(f"{where}: always=true cannot be combined with profile tests")
        if not self.always and not n_tests:
            raise SqueezerayError(f"{where}: give always: true or one of {', '.join(_CONDITION_KEYS[1:])}")

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Condition:
        where = f"{where}.when"
        if not isinstance(data, Mapping):
            raise SqueezerayError(f"{where}: must be a mapping, got {data!r}")
        _check_keys(where, data, _CONDITION_KEYS)
        if "always" in data and data["always"] is not True:
            raise SqueezerayError(f"{where}: always={data['always']!r}: must be true (delete the rule to disable it)")
        try:
            return cls(**data)
        except SqueezerayError as err:
            raise SqueezerayError(f"{where}: {str(err).removeprefix('rule condition: ')}") from None

    def holds(self, profile: HardwareProfile) -> bool:
        if self.always:
            return True
        ok = True
        if self.profile_lacks_format is not None:
            ok &= self.profile_lacks_format not in profile.formats
        if self.profile_has_format is not None:
            ok &= self.profile_has_format in profile.formats
        if self.profile_sparse24_speedup_at_most is not None:
            ok &= sparse24_speedup(profile) <= self.profile_sparse24_speedup_at_most
        if self.profile_sparse24_speedup_above is not None:
            ok &= sparse24_speedup(profile) > self.profile_sparse24_speedup_above
        if self.profile_kind:
            ok &= profile.kind in self.profile_kind
        return ok


# ------------------------------------------------------------------- selector
_SELECT_KEYS = ("kind", "technique", "pattern", "nm", "bits", "bits_below", "label")


def _positive_int(where: str, field: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SqueezerayError(f"{where}: {field}={value!r}: must be a positive integer")
    return value


@dataclasses.dataclass(frozen=True)
class Selector:
    """Which options a rule acts on, tested on the parsed step; every key set must match.

    ``none`` is never selected.

    Attributes:
        kind: quantize / prune / lowrank.
        technique: Technique names (``rtn``, ``fp8``, ...).
        pattern: Sparsity pattern of a prune step (``nm``, ``unstructured``, ...).
        nm: ``"n:m"`` strings of an N:M prune step (``["2:4"]``).
        bits: Exact weight bits (see :func:`step_bits`).
        bits_below: Weight bits strictly below this.
        label: fnmatch globs over the option label (``gptq-w3*``).
    """

    kind: StepKind | None = None
    technique: tuple[str, ...] = ()
    pattern: SparsityPattern | None = None
    nm: tuple[str, ...] = ()
    bits: tuple[int, ...] = ()
    bits_below: int | None = None
    label: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        where = "rule select"
        if self.kind is not None:
            object.__setattr__(self, "kind", _enum(where, "kind", StepKind, self.kind))
        if self.pattern is not None:
            object.__setattr__(self, "pattern", _enum(where, "pattern", SparsityPattern, self.pattern))
        techniques = _globs(where, "technique", _as_tuple(self.technique)) if self.technique else ()
        for name in techniques:
            try:
                config_class(name)
            except SqueezerayError as err:
                raise SqueezerayError(f"{where}: technique {name!r}: {err}") from None
        object.__setattr__(self, "technique", techniques)
        nm = _globs(where, "nm", _as_tuple(self.nm)) if self.nm else ()
        for v in nm:
            n, _, m = v.partition(":")
            if not (n.isdigit() and m.isdigit()):
                raise SqueezerayError(f"{where}: nm={v!r}: write N:M, e.g. '2:4'")
        object.__setattr__(self, "nm", nm)
        object.__setattr__(self, "bits", tuple(_positive_int(where, "bits", b) for b in _as_tuple(self.bits)))
        if self.bits_below is not None:
            _positive_int(where, "bits_below", self.bits_below)
        object.__setattr__(self, "label", _globs(where, "label", _as_tuple(self.label)) if self.label else ())
        if all(getattr(self, f.name) in (None, ()) for f in dataclasses.fields(self)):
            raise SqueezerayError(f"{where}: give at least one of {', '.join(_SELECT_KEYS)} (it would select everything)")

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Selector:
        where = f"{where}.select"
        if not isinstance(data, Mapping):
            raise SqueezerayError(f"{where}: must be a mapping, got {data!r}")
        _check_keys(where, data, _SELECT_KEYS)
        try:
            return cls(**data)
        except SqueezerayError as err:
            raise SqueezerayError(f"{where}: {str(err).removeprefix('rule select: ')}") from None

    def matches(self, step: TechniqueConfig) -> bool:
        if self.kind is not None and step.kind is not self.kind:
            return False
        if self.technique and step.technique not in self.technique:
            return False
        is_prune = isinstance(step, PruneConfig)
        if self.pattern is not None and not (is_prune and step.pattern is self.pattern):  # type: ignore[union-attr]
            return False
        if self.nm:
            if not (is_prune and step.pattern is SparsityPattern.NM):  # type: ignore[union-attr]
                return False
            if f"{step.n}:{step.m}" not in self.nm:  # type: ignore[attr-defined]
                return False
        bits = step_bits(step)
        if self.bits and bits not in self.bits:
            return False
        if self.bits_below is not None and (bits is None or bits >= self.bits_below):
            return False
        if self.label and not any(fnmatch.fnmatchcase(step.label(), g) for g in self.label):
            return False
        return True


# ----------------------------------------------------------------------- rule
_RULE_KEYS = ("name", "when", "select", "reason", "effect", "groups", "layers", "overridable")


def _check_template(where: str, text: Any) -> str:
    if not isinstance(text, str) or not text.strip():
        raise SqueezerayError(f"{where}: reason must be a non-empty string")
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as err:
        raise SqueezerayError(f"{where}: reason {text!r}: {err}") from None
    for name in names:
        if name not in REASON_FIELDS:
            raise SqueezerayError(
                f"{where}: reason uses {{{name}}}{_close(name, REASON_FIELDS)}; "
                f"allowed: {', '.join('{' + f + '}' for f in REASON_FIELDS)}"
            )
    return text


@dataclasses.dataclass(frozen=True)
class Rule:
    """One expert rule; see the module docstring for the YAML form.

    Attributes:
        name: Unique name; the user lifts a rule by it.
        when: Condition on the hardware profile.
        select: Which options it acts on.
        reason: Template; may use {profile} {option} {group} {rule} {formats} {sparse24_speedup}.
        effect: Remove the options, or attach a note to them.
        groups: Globs over group names (scope).
        layers: Globs over layer names (scope).
        overridable: Whether ``allow`` may lift it.
    """

    name: str
    when: Condition
    select: Selector
    reason: str
    effect: RuleEffect = RuleEffect.REMOVE
    groups: tuple[str, ...] = ()
    layers: tuple[str, ...] = ()
    overridable: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise SqueezerayError(f"rule name={self.name!r}: must be a non-empty string")
        object.__setattr__(self, "effect", _enum(f"rule {self.name!r}", "effect", RuleEffect, self.effect))
        where = f"rule {self.name!r}"
        for key in ("groups", "layers"):
            value = getattr(self, key)
            object.__setattr__(self, key, _globs(where, key, _as_tuple(value)) if value else ())
        if not isinstance(self.when, Condition) or not isinstance(self.select, Selector):
            raise SqueezerayError(f"{where}: when must be a Condition and select a Selector")
        _check_template(where, self.reason)
        if not isinstance(self.overridable, bool):
            raise SqueezerayError(f"rule {self.name!r}: overridable={self.overridable!r}: must be true or false")

    @classmethod
    def from_dict(cls, data: Any, where: str = "rule") -> Rule:
        if not isinstance(data, Mapping):
            raise SqueezerayError(f"{where}: must be a mapping, got {data!r}")
        if "name" in data:
            where = f"rule {data['name']!r}"
        _check_keys(where, data, _RULE_KEYS)
        for key in ("name", "when", "select", "reason"):
            if key not in data:
                raise SqueezerayError(f"{where}: missing key {key!r}")
        when = Condition.from_dict(data["when"], where)
        select = Selector.from_dict(data["select"], where)
        return cls(**{**data, "when": when, "select": select})

    def covers(self, group: GroupSpec, owned: Sequence[str] = ()) -> bool:
        """Whether ``group`` is in scope (``owned``: layers the group owns in a model, if known)."""
        if not self.groups and not self.layers:
            return True
        if any(fnmatch.fnmatchcase(group.name, g) for g in self.groups):
            return True
        texts = tuple(group.match) + tuple(owned)
        return any(fnmatch.fnmatchcase(t, g) for t in texts for g in self.layers)

    def render(self, profile: HardwareProfile, group: str, option: str) -> str:
        speedup = profile.sparse24_speedup.value
        return self.reason.format(
            profile=profile.name, option=option, group=group, rule=self.name,
            formats=", ".join(sorted(f.value for f in profile.formats)) or "none",
            sparse24_speedup="unavailable" if speedup is None else f"{speedup:g}",
        )


@dataclasses.dataclass(frozen=True)
class RuleSet:
    """An ordered set of rules with unique names.

    Attributes:
        rules: Applied in this order.
        source: Where they came from (file name), for messages.
        version: Schema version.
    """

    rules: tuple[Rule, ...]
    source: str = "rules"
    version: int = RULES_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))
        seen: set[str] = set()
        for r in self.rules:
            if not isinstance(r, Rule):
                raise SqueezerayError(f"{self.source}: {r!r} is not a Rule")
            if r.name in seen:
                raise SqueezerayError(f"{self.source}: rule name {r.name!r} appears twice")
            seen.add(r.name)

    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.rules)

    def get(self, name: str) -> Rule:
        for r in self.rules:
            if r.name == name:
                return r
        close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownNameError(f"unknown rule {name!r} in {self.source}.{hint} Known: {', '.join(self.names())}")

    @classmethod
    def from_dict(cls, data: Any, *, origin: str = "rules") -> RuleSet:
        if not isinstance(data, Mapping):
            raise SqueezerayError(f"{origin}: a rule file must be a mapping, got {type(data).__name__}")
        _check_keys(origin, data, ("_type", "_version", "rules"))
        if data.get("_type") != RULES_TYPE:
            raise SqueezerayError(f"{origin}: _type={data.get('_type')!r}, expected {RULES_TYPE!r}")
        if data.get("_version") != RULES_VERSION:
            raise SqueezerayError(
                f"{origin}: _version={data.get('_version')!r}, this squeezeray reads version {RULES_VERSION}"
            )
        raw = data.get("rules")
        if not isinstance(raw, list):
            raise SqueezerayError(f"{origin}: rules must be a list")
        try:
            return cls(tuple(Rule.from_dict(r, f"rule #{i}") for i, r in enumerate(raw)), source=origin)
        except UnknownNameError:
            raise
        except SqueezerayError as err:
            msg = str(err)
            raise SqueezerayError(msg if msg.startswith(origin) else f"{origin}: {msg}") from None


def load_rules(path: str | Path) -> RuleSet:
    """Read and validate a rule YAML file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise SqueezerayError(f"rule file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise SqueezerayError(f"{p.name}: not valid YAML: {err}") from None
    return RuleSet.from_dict(data, origin=p.name)


def default_rules() -> RuleSet:
    """The built-in rules (``squeezeray/search/rules/default.yaml``), read fresh on each call."""
    return load_rules(DEFAULT_RULES_FILE)


# -------------------------------------------------------------------- outcome
@dataclasses.dataclass(frozen=True)
class Removal:
    """An option a rule took out of a group.

    Attributes:
        rule: Rule name.
        group: Group name.
        option: Option label.
        reason: Rendered reason.
        field: quantize / prune / lowrank.
    """

    rule: str
    group: str
    option: str
    reason: str
    field: str


@dataclasses.dataclass(frozen=True)
class Note:
    """An annotation a rule attached to an option it kept (same fields as :class:`Removal`)."""

    rule: str
    group: str
    option: str
    text: str
    field: str


@dataclasses.dataclass(frozen=True)
class Blocked:
    """A rule that would have emptied a group's list, and so removed nothing there.

    Attributes:
        rule: Rule name.
        group: Group name.
        field: quantize / prune / lowrank.
        options: The options it selected (all that were left), kept.
        reason: The rule's rendered reason for the first of them.
    """

    rule: str
    group: str
    field: str
    options: tuple[str, ...]
    reason: str


@dataclasses.dataclass(frozen=True)
class RuleOutcome:
    """The pruned space and the record of what the rules did.

    Attributes:
        space: The space with removed options gone.
        profile: The profile's name.
        removals: Options removed, in the order removed.
        notes: Annotations on options that stay.
        blocked: Rules that would have left a list empty (nothing removed there).
        lifted: Rules the user lifted with ``allow``.
    """

    space: SearchSpace
    profile: str
    removals: tuple[Removal, ...] = ()
    notes: tuple[Note, ...] = ()
    blocked: tuple[Blocked, ...] = ()
    lifted: tuple[str, ...] = ()

    def notes_for(self, group: str, option: str) -> tuple[Note, ...]:
        """The notes on one option of one group (for a latency predictor)."""
        return tuple(n for n in self.notes if n.group == group and n.option == option)

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "space": self.space.to_dict(),
            "removals": [dataclasses.asdict(r) for r in self.removals],
            "notes": [dataclasses.asdict(n) for n in self.notes],
            "blocked": [{**dataclasses.asdict(b), "options": list(b.options)} for b in self.blocked],
            "lifted": list(self.lifted),
        }


def _owned_layers(space: SearchSpace, layer_names: Iterable[str] | None) -> dict[str, list[str]]:
    owned: dict[str, list[str]] = {g.name: [] for g in space.groups}
    for layer, group in space.assign(layer_names or ()).items():
        owned[group.name].append(layer)
    return owned


def apply_rules(
    space: SearchSpace,
    profile: HardwareProfile,
    *,
    rules: RuleSet | Sequence[Rule] | None = None,
    allow: Iterable[str] = (),
    layer_names: Iterable[str] | None = None,
) -> RuleOutcome:
    """Remove the options the rules rule out on ``profile``; see the module docstring.

    Args:
        space: The user's search space.
        profile: The target device.
        rules: A rule set or sequence of rules; None uses :func:`default_rules`.
        allow: Names of rules the user lifts.
        layer_names: The model's layer names, to scope rules by the layers a group
            owns (optional; without them scope uses group names and match patterns).

    Returns:
        The pruned space and the removals, notes, blocked rules and lifted rules.

    Raises:
        SqueezerayError: ``profile`` is not a HardwareProfile, or ``allow`` names a rule
            that is unknown (with close matches) or not overridable.
    """
    if not isinstance(profile, HardwareProfile):
        raise SqueezerayError(f"profile={profile!r}: must be a HardwareProfile (see squeezeray.hwprofiles.get_profile)")
    if not isinstance(space, SearchSpace):
        raise SqueezerayError(f"space={space!r}: must be a SearchSpace")
    ruleset = default_rules() if rules is None else rules if isinstance(rules, RuleSet) else RuleSet(tuple(rules))
    if isinstance(allow, str):
        allow = (allow,)
    lifted = []
    for name in allow:
        rule = ruleset.get(str(name))
        if not rule.overridable:
            raise SqueezerayError(f"allow={name!r}: rule {name!r} is not overridable")
        if rule.name not in lifted:
            lifted.append(rule.name)

    owned = _owned_layers(space, layer_names)
    options: dict[str, dict[str, list[str]]] = {
        g.name: {f: list(getattr(g, f)) for f in FIELDS} for g in space.groups
    }
    removals: list[Removal] = []
    notes: list[Note] = []
    blocked: list[Blocked] = []
    for rule in ruleset.rules:
        if rule.name in lifted or not rule.when.holds(profile):
            continue
        for group in space.groups:
            if not rule.covers(group, owned[group.name]):
                continue
            for field in FIELDS:
                current = options[group.name][field]
                hit = [o for o in current if o != NONE and rule.select.matches(parse_step(o))]
                if not hit:
                    continue
                if rule.effect is RuleEffect.NOTE:
                    notes.extend(
                        Note(rule.name, group.name, o, rule.render(profile, group.name, o), field) for o in hit
                    )
                elif len(hit) == len(current):
                    blocked.append(
                        Blocked(rule.name, group.name, field, tuple(hit), rule.render(profile, group.name, hit[0]))
                    )
                else:
                    removals.extend(
                        Removal(rule.name, group.name, o, rule.render(profile, group.name, o), field) for o in hit
                    )
                    options[group.name][field] = [o for o in current if o not in hit]
    groups = [dataclasses.replace(g, **{f: tuple(options[g.name][f]) for f in FIELDS}) for g in space.groups]
    return RuleOutcome(
        space.with_groups(groups), profile.name, tuple(removals), tuple(notes), tuple(blocked), tuple(lifted)
    )


def explain(outcome: RuleOutcome) -> str:
    """Human-readable lines: what was removed and why, what was kept though a rule objected,
    the notes, and the rules the user lifted. One fact said of several groups or options is one line."""
    lines = [f"expert rules on profile {outcome.profile!r} (space {outcome.space.name!r}):"]
    if not (outcome.removals or outcome.notes or outcome.blocked or outcome.lifted):
        lines.append("  no rule changed the space")
    for rule, groups, options, field, text in _merged((r.rule, r.group, r.option, r.field, r.reason)
                                                      for r in outcome.removals):
        lines.append(f"  removed {options} from {groups}.{field} [{rule}]: {text}")
    for b in outcome.blocked:
        lines.append(
            f"  kept {', '.join(b.options)} in {b.group}.{b.field} although rule [{b.rule}] objects: they are the "
            f"group's only {b.field} options, and a parameter keeps at least one. The rule says: {b.reason}"
        )
    for rule, groups, options, field, text in _merged((n.rule, n.group, n.option, n.field, n.text)
                                                      for n in outcome.notes):
        lines.append(f"  note on {options} in {groups}.{field} [{rule}]: {text}")
    for name in outcome.lifted:
        lines.append(f"  rule [{name}] lifted by the user (allow)")
    return "\n".join(lines)


_GROUP, _OPTION = "\x00group\x00", "\x00option\x00"


def _merged(entries: Iterable[tuple[str, str, str, str, str]]) -> list[tuple[str, str, str, str, str]]:
    """(rule, group, option, field, text) entries that differ only in the group, then only in the option
    (where the text names them as "group <g>" / the option itself), merged into one line each, in first-seen
    order: (rule, groups, options, field, text)."""
    by_group: dict[tuple[str, str, str, str], list[str]] = {}
    for rule, group, option, field, text in entries:
        generic = re.sub(rf"\bgroup '?{re.escape(group)}'?(?=\W|$)", "group " + _GROUP, text) if group else text
        by_group.setdefault((rule, option, field, generic), []).append(group)
    by_option: dict[tuple[str, tuple[str, ...], str, str], list[str]] = {}
    for (rule, option, field, generic), groups in by_group.items():
        key = (rule, tuple(groups), field, generic.replace(option, _OPTION) if option else generic)
        by_option.setdefault(key, []).append(option)
    out = []
    for (rule, groups, field, generic), options in by_option.items():
        text = generic.replace(_GROUP, groups[0]) if len(groups) == 1 else generic.replace("group " + _GROUP, "each group")
        text = text.replace(_OPTION, options[0] if len(options) == 1 else "each of them")
        out.append((rule, _listed(list(groups)), ", ".join(options), field, text))
    return out


def _listed(groups: list[str]) -> str:
    return groups[0] if len(groups) == 1 else "{" + ", ".join(groups) + "}"
