"""Applying expert rules to a search space, and saying what they did.

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
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from squeezeray._errors import PlanError
from squeezeray._errors import SqueezerayError
from squeezeray.hwprofiles import HardwareProfile
from squeezeray.search._rule_match import FIELDS
from squeezeray.search._rule_match import RuleEffect
from squeezeray.search._rules import Rule
from squeezeray.search._rules import RuleSet
from squeezeray.search._rules import default_rules
from squeezeray.spaces._plan import parse_step
from squeezeray.spaces._space import NONE
from squeezeray.spaces._space import SearchSpace


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


SHAPE_RULE = "layer-shape"


def _misfit(step: Any, layers: Iterable[str], shapes: Mapping[str, tuple[int, int]]) -> str:
    """Why ``step`` cannot apply to the first of ``layers`` it does not fit (empty: it fits them all)."""
    for layer in layers:
        if layer not in shapes:
            continue
        out_f, in_f = shapes[layer]
        try:
            step.check_shape(out_f, in_f)
        except PlanError as err:  # "<technique>.<field>=<value>: why": the why, so one line covers many options
            return f"{step.label()} does not fit {layer} ({out_f} x {in_f}): {str(err).split(': ', 1)[-1]}"
    return ""


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
    layer_shapes: Mapping[str, tuple[int, int]] | None = None,
) -> RuleOutcome:
    """Remove the options the rules rule out on ``profile``; see the module docstring.

    Args:
        space: The user's search space.
        profile: The target device.
        rules: A rule set or sequence of rules; None uses :func:`default_rules`.
        allow: Names of rules the user lifts.
        layer_names: The model's layer names, to scope rules by the layers a group
            owns (optional; without them scope uses group names and match patterns).
        layer_shapes: Layer name -> (out, in) of its weight. With them, the built-in rule
            :data:`SHAPE_RULE` removes every option whose step cannot apply to a layer its group owns
            (e.g. a K-quant on rows that are not whole 256-input super-blocks), with the step's own reason;
            it cannot be lifted (such an option could only give infeasible trials).

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
    if layer_shapes is not None:
        for group in space.groups:
            for field in FIELDS:
                current = options[group.name][field]
                misfit = {o: why for o in current if o != NONE
                          and (why := _misfit(parse_step(o), owned[group.name], layer_shapes))}
                if not misfit:
                    continue
                if len(misfit) == len(current):
                    blocked.append(Blocked(SHAPE_RULE, group.name, field, tuple(misfit), next(iter(misfit.values()))))
                    continue
                removals.extend(Removal(SHAPE_RULE, group.name, o, why, field) for o, why in misfit.items())
                options[group.name][field] = [o for o in current if o not in misfit]
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
