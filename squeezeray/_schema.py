"""One schema helper for every versioned record squeezeray reads (plans, spaces, profiles, rules, cards ...).

Each record carries a ``_type`` and a ``_version`` header; :func:`check_header` is the only place that
checks them, :func:`check_keys` the only place that rejects unknown keys (naming a close match),
:func:`did_you_mean` the one wording of a close match, :func:`check_int` / :func:`check_number` the one
check (and wording) of a numeric setting, and :func:`load_document` reads a YAML or JSON file into data. Every function raises the error class its caller passes (a plan raises
:class:`~squeezeray._errors.PlanError`, a profile :class:`~squeezeray._errors.ProfileError` ...), with
the record's name (``where``) and the field in the message.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from squeezeray._errors import SqueezerayError


def close_matches(name: str, known: Iterable[str], *, n: int = 1, cutoff: float = 0.5) -> list[str]:
    """Up to ``n`` of ``known`` that look like ``name``."""
    return difflib.get_close_matches(str(name), [str(k) for k in known], n=n, cutoff=cutoff)


def did_you_mean(name: str, known: Iterable[str], *, n: int = 3, cutoff: float = 0.5) -> str:
    """`` Did you mean: x, y?`` for the closest of ``known``, or ``""`` (the one wording squeezeray uses)."""
    close = close_matches(name, known, n=n, cutoff=cutoff)
    return f" Did you mean: {', '.join(close)}?" if close else ""


def require_mapping(data: Any, *, where: str, what: str = "a mapping", error: type[Exception] = SqueezerayError
                    ) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise error(f"{where}: must be {what}, got {type(data).__name__}")
    return data


def check_int(value: Any, *, field: str, minimum: int = 1, where: str = "", error: type[Exception] = SqueezerayError
              ) -> int:
    """``value`` when it is an integer (not a bool) of at least ``minimum`` (1: positive, 0: non-negative), or
    ``error`` naming ``field`` and the value (``where`` prefixes the field: ``evo n_seeds=0: ...``)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "positive" if minimum == 1 else "non-negative" if minimum == 0 else f"at least {minimum}, an"
        raise error(f"{where}{field}={value!r}: must be a {kind} integer")
    return value


def check_number(value: Any, *, field: str, minimum: float = 0.0, where: str = "",
                 error: type[Exception] = SqueezerayError) -> float:
    """``value`` when it is a real number (not a bool) of at least ``minimum``, or ``error`` naming the field."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        kind = "non-negative" if minimum == 0 else f"at least {minimum}, a"
        raise error(f"{where}{field}={value!r}: must be a {kind} number")
    return float(value)


def check_header(
    data: Mapping[str, Any], *, type_: str, version: int, where: str, error: type[Exception] = SqueezerayError,
    optional: bool = False,
) -> None:
    """``data["_type"] == type_`` and ``data["_version"] == version``, or ``error`` naming what was found.

    Args:
        optional: A record without a header (hand-written YAML) counts as the current type and version.
    """
    found_type = data.get("_type", type_ if optional else None)
    if found_type != type_:
        raise error(f"{where}: _type={data.get('_type')!r}, expected {type_!r}")
    found_version = data.get("_version", version if optional else None)
    if found_version != version:
        raise error(f"{where}: _version={data.get('_version')!r}, this squeezeray reads version {version}")


def enum_value(cls: type[Any], value: Any, *, where: str, error: type[Exception] = SqueezerayError) -> Any:
    """``cls(value)`` for a closed choice (a ``(str, Enum)``), or ``error`` listing the allowed values."""
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in cls)
        raise error(f"{where}={value!r}: must be one of {allowed}") from None


def check_keys(data: Mapping[str, Any], allowed: Iterable[str], *, where: str,
               error: type[Exception] = SqueezerayError) -> None:
    """Every key of ``data`` is in ``allowed``; the first unknown one is named with a close match."""
    allowed = list(allowed)
    for key in data:
        if key not in allowed:
            raise error(f"{where}: unknown key {key!r}.{did_you_mean(str(key), allowed, n=1)} Allowed: {', '.join(allowed)}")


def load_document(
    path: str | Path, *, what: str = "file", error: type[Exception] = SqueezerayError, syntax: str | None = None
) -> Any:
    """The data of a YAML or JSON file; ``error`` naming ``what`` and the path when it is missing or malformed.

    Args:
        syntax: ``"json"`` or ``"yaml"``; by default the suffix decides (``.json``: JSON, anything else: YAML).
    """
    import yaml

    p = Path(path).expanduser()
    if not p.is_file():
        raise error(f"{what} {str(p)!r} does not exist")
    syntax = syntax or ("json" if p.suffix.lower() == ".json" else "yaml")
    if syntax not in ("json", "yaml"):
        raise ValueError(f"syntax={syntax!r}: choose json or yaml")
    try:
        text = p.read_text()
        return json.loads(text) if syntax == "json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as err:
        raise error(f"{what} {str(p)!r} is not valid {syntax.upper()}: {err}") from None
