"""The built-in profiles, by name, and lookup of a name, a user's file, or ``host``."""

from __future__ import annotations

from pathlib import Path

from squeezeray._errors import UnknownNameError
from squeezeray._schema import did_you_mean
from squeezeray.hwprofiles._host import MicrobenchConfig
from squeezeray.hwprofiles._host import detect_host
from squeezeray.hwprofiles._profile import HardwareProfile
from squeezeray.hwprofiles._profile import load_profile

PROFILE_DIR = Path(__file__).parent / "profiles"

# Explicit list (no directory walking): name -> file in PROFILE_DIR.
BUILTIN_PROFILES: dict[str, str] = {
    "h100-sxm": "h100-sxm.yaml",
    "h100-pcie": "h100-pcie.yaml",
    "h200-sxm": "h200-sxm.yaml",
    "a100-80gb-sxm": "a100-80gb-sxm.yaml",
    "l40s": "l40s.yaml",
    "rtx-4090": "rtx-4090.yaml",
    "jetson-agx-orin-64gb": "jetson-agx-orin-64gb.yaml",
    "apple-m2-max": "apple-m2-max.yaml",
    "xeon-8480plus": "xeon-8480plus.yaml",
    "epyc-9654": "epyc-9654.yaml",
}

HOST = "host"


def profile_names() -> list[str]:
    """Built-in profile names plus ``host``."""
    return sorted(BUILTIN_PROFILES) + [HOST]


def get_profile(ref: str, *, bench: MicrobenchConfig | None = None) -> HardwareProfile:
    """A profile by built-in name, ``host`` (detected and measured now), or the path of a YAML file.

    Args:
        ref: ``h100-sxm`` ..., ``host``, or ``path/to/my-device.yaml``.
        bench: Microbenchmark sizes when ``ref`` is ``host``.

    Raises:
        UnknownNameError: For an unknown name (with close matches).
        ProfileError: For a malformed file.
    """
    if ref == HOST:
        return detect_host(bench=bench)
    if ref in BUILTIN_PROFILES:
        return load_profile(PROFILE_DIR / BUILTIN_PROFILES[ref])
    if ref.endswith((".yaml", ".yml")) or "/" in ref:
        return load_profile(ref)
    hint = did_you_mean(ref, profile_names())
    raise UnknownNameError(
        f"unknown hardware profile {ref!r}.{hint} Known: {', '.join(profile_names())}, or a path to a .yaml file"
    )
