"""Contract suite: every hardware profile (built-in files and the detected host) passes the same checks."""

from __future__ import annotations

import pytest

from squeezeray.hwprofiles import BUILTIN_PROFILES
from squeezeray.hwprofiles import Basis
from squeezeray.hwprofiles import ComputeDtype
from squeezeray.hwprofiles import DeviceKind
from squeezeray.hwprofiles import HardwareProfile
from squeezeray.hwprofiles import MicrobenchConfig
from squeezeray.hwprofiles import detect_host
from squeezeray.hwprofiles import get_profile
from squeezeray.hwprofiles._registry import PROFILE_DIR
from squeezeray.kernels import KernelPath
from squeezeray.kernels import get_kernel

_HOST: list[HardwareProfile] = []


def _host() -> HardwareProfile:
    if not _HOST:
        _HOST.append(detect_host(bench=MicrobenchConfig.quick()))
    return _HOST[0]


@pytest.fixture(params=[*sorted(BUILTIN_PROFILES), "host"])
def profile(request: pytest.FixtureRequest) -> HardwareProfile:
    return _host() if request.param == "host" else get_profile(request.param)


def test_every_profile_file_is_registered() -> None:
    files = {p.name for p in PROFILE_DIR.glob("*.yaml")}
    assert files == set(BUILTIN_PROFILES.values())
    for name, file in BUILTIN_PROFILES.items():
        assert get_profile(name).name == name == file.removesuffix(".yaml")


def test_every_figure_has_a_source(profile: HardwareProfile) -> None:
    for field, fig in profile.figures().items():
        assert fig.source.strip(), field
        if fig.basis is Basis.ESTIMATE:
            assert fig.note, f"{profile.name}.{field}: an estimate must say how it was made"
        if fig.value is None:
            assert fig.basis is Basis.UNAVAILABLE


def test_core_figures_are_available_and_plausible(profile: HardwareProfile) -> None:
    assert 1e9 <= profile.bandwidth() <= 2e13  # 1 GB/s .. 20 TB/s
    assert profile.memory_capacity_gb.require("capacity") > 0
    assert 1e9 <= profile.rate(ComputeDtype.FP32) <= 1e15
    speedup = profile.sparse24_speedup.value
    assert speedup is None or 1.0 <= speedup <= 2.0
    if profile.tdp_w.value is not None:
        assert 1 <= profile.tdp_w.value <= 2000
        if profile.idle_w.value is not None:
            assert profile.idle_w.value < profile.tdp_w.value


def test_native_formats_have_a_rate(profile: HardwareProfile) -> None:
    for fmt in profile.formats:
        assert profile.rate(fmt) > 0, f"{profile.name} lists {fmt.value} as native but has no rate"


def test_low_precision_is_not_slower_on_tensor_core_gpus(profile: HardwareProfile) -> None:
    if profile.kind is not DeviceKind.GPU or profile.name == "host":
        pytest.skip("datasheet GPUs only")
    assert profile.rate(ComputeDtype.FP16) >= profile.rate(ComputeDtype.FP32)
    assert profile.rate(ComputeDtype.INT8) >= profile.rate(ComputeDtype.FP16)


def test_kernels_match_the_device_kind(profile: HardwareProfile) -> None:
    assert KernelPath.REFERENCE in profile.kernels
    want = "cpu" if profile.kind is DeviceKind.CPU else "cuda"
    for path in profile.kernels:
        if path is not KernelPath.REFERENCE:
            assert get_kernel(path).device_type == want, f"{profile.name}: {path.value}"


def test_round_trip(profile: HardwareProfile) -> None:
    assert HardwareProfile.from_dict(profile.to_dict(), origin=profile.name) == profile
