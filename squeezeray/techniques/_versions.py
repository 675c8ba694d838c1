"""Code versions of the techniques and of calibration, for cache keys that go stale after a fix.

A compressed layer depends on the code that made it: the technique's module and the private
technique modules it imports (grids, Hessian helpers, packing ...). Each technique declares a
``code_version`` (:class:`~squeezeray.techniques.BaseTechnique`) that is bumped with any change to
that code; the layer cache's key holds the versions of a plan's steps, and the calibration
statistics' key holds :data:`CALIBRATION_CODE_VERSION`, so a shared cache never serves a layer or
statistics computed before a fix.

The versions are checked against the code by a test: :func:`code_record` digests each
technique's sources (their syntax tree without docstrings, so comments and formatting do not
count) and the test compares the digests with ``tests/techniques/code_versions.json``. A digest
that changed under the same version fails ("bump code_version"); after the bump,
``python -m squeezeray.techniques._versions > tests/techniques/code_versions.json`` records it.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import json
import sys
from collections.abc import Mapping
from pathlib import Path

CALIBRATION_CODE_VERSION = 5  # bump with any change to squeezeray/compress/_calibrate.py's statistics
CALIBRATION_MODULE = "squeezeray.compress._calibrate"
_PACKAGE = "squeezeray.techniques"


def technique_code_version(name: str) -> int:
    """The ``code_version`` of the technique registered as ``name``."""
    from squeezeray.techniques._registry import TECHNIQUES

    return int(TECHNIQUES.get(name).code_version)


def steps_code_versions(techniques: list[str]) -> dict[str, int]:
    """Technique name -> code version, for the techniques a plan's steps use."""
    return {t: technique_code_version(t) for t in sorted(set(techniques))}


def module_sources(module: str, *, within: str = _PACKAGE) -> list[str]:
    """``module`` and every module of the package ``within`` it imports, transitively (module names, sorted)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        tree = ast.parse(Path(_file_of(name)).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for t in targets:
                if (t == within or t.startswith(within + ".")) and t != within and _is_module(t):
                    todo.append(t)
    return sorted(seen)


def digest(modules: list[str]) -> str:
    """SHA-256 of the modules' syntax trees, docstrings removed (comments and layout never count)."""
    h = hashlib.sha256()
    for name in modules:
        tree = ast.parse(Path(_file_of(name)).read_text())
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                    and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
        h.update(name.encode() + b"\0" + ast.dump(tree).encode() + b"\0")
    return h.hexdigest()


def code_record() -> dict[str, dict[str, object]]:
    """Per registered technique (and ``calibration``): its code version, the modules it counts and their digest."""
    from squeezeray.techniques._registry import TECHNIQUES

    out: dict[str, dict[str, object]] = {}
    for name in TECHNIQUES.names():
        cls = TECHNIQUES.get(name)
        mods = module_sources(cls.__module__)
        out[name] = {"version": int(cls.code_version), "modules": mods, "digest": digest(mods)}
    mods = [CALIBRATION_MODULE]
    out["calibration"] = {"version": CALIBRATION_CODE_VERSION, "modules": mods, "digest": digest(mods)}
    return out


def stale(recorded: Mapping[str, Mapping[str, object]], current: Mapping[str, Mapping[str, object]]) -> list[str]:
    """What differs between a recorded and the current :func:`code_record`, one sentence each."""
    out = []
    for name in sorted(set(recorded) | set(current)):
        r, c = recorded.get(name), current.get(name)
        if r is None or c is None:
            out.append(f"{name}: {'not recorded' if r is None else 'recorded but no longer registered'}; re-record")
        elif r["digest"] != c["digest"] and r["version"] == c["version"]:
            where = "CALIBRATION_CODE_VERSION" if name == "calibration" else f"{name}'s code_version"
            out.append(f"{name}: its code changed ({', '.join(map(str, c['modules']))}) but {where} is still "
                       f"{c['version']}: bump it, then re-record")
        elif r != c:
            out.append(f"{name}: version {r['version']} -> {c['version']}; re-record")
    return out


def _file_of(module: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(module)
    return spec.origin


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ModuleNotFoundError, ValueError):
        return False


if __name__ == "__main__":
    json.dump(code_record(), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
