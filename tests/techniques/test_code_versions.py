"""Code versions in the cache keys: a technique's or calibration's code change without a version bump fails here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from squeezeray.search._cache import layer_key
from squeezeray.spaces import parse_steps
from squeezeray.techniques import _versions
from squeezeray.techniques._registry import TECHNIQUES

RECORD = Path(__file__).with_name("code_versions.json")


def test_every_technique_and_calibration_match_their_recorded_code() -> None:
    problems = _versions.stale(json.loads(RECORD.read_text()), _versions.code_record())
    assert not problems, "\n".join(problems) + (
        f"\n(after bumping: python -m squeezeray.techniques._versions > {RECORD.relative_to(Path.cwd())})"
        if RECORD.is_relative_to(Path.cwd()) else "")


def test_a_changed_digest_under_the_same_version_asks_for_a_bump() -> None:
    rec = {"gptq": {"version": 1, "modules": ["m"], "digest": "a"}}
    assert "bump it" in _versions.stale(rec, {"gptq": {"version": 1, "modules": ["m"], "digest": "b"}})[0]
    assert "re-record" in _versions.stale(rec, {"gptq": {"version": 2, "modules": ["m"], "digest": "b"}})[0]
    assert _versions.stale(rec, rec) == []
    assert "not recorded" in _versions.stale({}, rec)[0]


def test_the_digest_sees_code_but_not_docstrings_or_comments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    src = '"""Doc."""\n\ndef f(x):\n    """Doc."""\n    return x * 2  # twice\n'
    (tmp_path / "sq_same.py").write_text(src)
    base = _versions.digest(["sq_same"])
    (tmp_path / "sq_same.py").write_text(src.replace("# twice", "# double").replace('"""Doc."""', '"""Other."""'))
    assert _versions.digest(["sq_same"]) == base
    (tmp_path / "sq_same.py").write_text(src.replace("x * 2", "x * 3"))
    assert _versions.digest(["sq_same"]) != base
    sys.modules.pop("sq_same", None)


def test_gptq_counts_the_grid_and_hessian_modules_it_imports() -> None:
    mods = _versions.module_sources(TECHNIQUES.get("gptq").__module__)
    assert {"squeezeray.techniques.gptq", "squeezeray.techniques._formats", "squeezeray.techniques._hessian"} <= set(mods)
    assert "squeezeray.techniques.awq" not in mods


def test_layer_key_changes_with_the_technique_code_version(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = parse_steps("gptq-w4g128")
    before = layer_key("fp", "model.layers.0.mlp.down_proj", plan, "calib")
    version = TECHNIQUES.get("gptq").code_version
    monkeypatch.setattr(TECHNIQUES.get("gptq"), "code_version", version + 1)
    assert layer_key("fp", "model.layers.0.mlp.down_proj", plan, "calib") != before
    monkeypatch.setattr(TECHNIQUES.get("gptq"), "code_version", version)
    monkeypatch.setattr(TECHNIQUES.get("rtn"), "code_version", 7)  # a technique the plan does not use
    assert layer_key("fp", "model.layers.0.mlp.down_proj", plan, "calib") == before


def test_layer_key_changes_with_the_calibration_code_version(monkeypatch: pytest.MonkeyPatch) -> None:
    from squeezeray.search import _cache

    plan = parse_steps("rtn-w8")
    before = layer_key("fp", "lm_head", plan, "calib")
    monkeypatch.setattr(_cache, "CALIBRATION_CODE_VERSION", _cache.CALIBRATION_CODE_VERSION + 1)
    assert layer_key("fp", "lm_head", plan, "calib") != before


def test_statistics_path_changes_with_the_calibration_code_version(bench, tmp_path: Path,  # noqa: ANN001
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "cache_dir", tmp_path)
    before = bench._stats_dir(True)
    monkeypatch.setattr(_versions, "CALIBRATION_CODE_VERSION", _versions.CALIBRATION_CODE_VERSION + 1)
    assert bench._stats_dir(True) != before
