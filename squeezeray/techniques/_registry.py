"""The explicit technique registry (lazy entries: importing it loads no technique)."""

from __future__ import annotations

from typing import Any

from squeezeray._errors import PlanError
from squeezeray._registry import Registry
from squeezeray.techniques import _configs
from squeezeray.techniques._base import BaseTechnique
from squeezeray.techniques._config import TechniqueConfig

TECHNIQUES: Registry[BaseTechnique] = Registry("technique", BaseTechnique)

for _name, _path in (
    ("rtn", "squeezeray.techniques.rtn:RTN"),
    ("gptq", "squeezeray.techniques.gptq:GPTQ"),
    ("awq", "squeezeray.techniques.awq:AWQ"),
    ("nf4", "squeezeray.techniques.nf4:NF4"),
    ("fp8", "squeezeray.techniques.fp8:FP8"),
    ("w8a8", "squeezeray.techniques.w8a8:W8A8"),
    ("magnitude", "squeezeray.techniques.magnitude:Magnitude"),
    ("wanda", "squeezeray.techniques.wanda:Wanda"),
    ("sparsegpt", "squeezeray.techniques.sparsegpt:SparseGPT"),
    ("svd", "squeezeray.techniques.svd:SVD"),
):
    TECHNIQUES.register(_name, _path)


_BUILTIN_CONFIGS: dict[str, type[TechniqueConfig]] = {
    c.technique: c
    for c in (
        _configs.RTNConfig, _configs.GPTQConfig, _configs.AWQConfig, _configs.NF4Config, _configs.FP8Config,
        _configs.W8A8Config, _configs.MagnitudeConfig, _configs.WandaConfig, _configs.SparseGPTConfig,
        _configs.SVDConfig,
    )
}


def get_technique(name: str) -> BaseTechnique:
    """An instance of the technique registered as ``name`` (raises with "did you mean")."""
    return TECHNIQUES.get(name)()


def config_class(name: str) -> type[TechniqueConfig]:
    """The config dataclass of technique ``name`` (built-ins need no import of the technique)."""
    if name in _BUILTIN_CONFIGS:
        return _BUILTIN_CONFIGS[name]
    return TECHNIQUES.get(name).config_cls


def config_from_dict(data: dict[str, Any]) -> TechniqueConfig:
    """Rebuild a step config from its ``to_dict`` form, checking the technique name."""
    if not isinstance(data, dict) or "technique" not in data:
        raise PlanError(f"a step must be an object with a 'technique' field, got {data!r}")
    return config_class(str(data["technique"])).from_dict(data)
