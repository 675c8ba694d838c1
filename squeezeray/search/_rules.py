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

Conditions and selectors: :mod:`squeezeray.search._rule_match`; applying a rule set to a
space and explaining what it did: :mod:`squeezeray.search._rule_apply`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import string
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any


from squeezeray._errors import SqueezerayError
from squeezeray._errors import UnknownNameError
from squeezeray._schema import check_header
from squeezeray._schema import check_keys
from squeezeray._schema import did_you_mean
from squeezeray._schema import load_document
from squeezeray.hwprofiles import HardwareProfile
from squeezeray.search._rule_match import Condition
from squeezeray.search._rule_match import REASON_FIELDS
from squeezeray.search._rule_match import RuleEffect
from squeezeray.search._rule_match import Selector
from squeezeray.search._rule_match import _as_tuple
from squeezeray.search._rule_match import _enum
from squeezeray.search._rule_match import _globs
from squeezeray.spaces._space import GroupSpec

RULES_TYPE = "squeezeray.Rules"
RULES_VERSION = 1
RULES_DIR = Path(__file__).parent / "rules"
DEFAULT_RULES_FILE = RULES_DIR / "default.yaml"

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
                f"{where}: reason uses {{{name}}}.{did_you_mean(name, REASON_FIELDS, n=1)} "
                f"Allowed: {', '.join('{' + f + '}' for f in REASON_FIELDS)}"
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
        check_keys(data, _RULE_KEYS, where=where)
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
        hint = did_you_mean(name, self.names())
        raise UnknownNameError(f"unknown rule {name!r} in {self.source}.{hint} Known: {', '.join(self.names())}")

    @classmethod
    def from_dict(cls, data: Any, *, origin: str = "rules") -> RuleSet:
        if not isinstance(data, Mapping):
            raise SqueezerayError(f"{origin}: a rule file must be a mapping, got {type(data).__name__}")
        check_keys(data, ("_type", "_version", "rules"), where=origin)
        check_header(data, type_=RULES_TYPE, version=RULES_VERSION, where=origin)
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
    return RuleSet.from_dict(load_document(path, what="rule file"), origin=Path(path).name)


def default_rules() -> RuleSet:
    """The built-in rules (``squeezeray/search/rules/default.yaml``), read fresh on each call."""
    return load_rules(DEFAULT_RULES_FILE)


