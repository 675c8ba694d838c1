"""Hardware profile loading and validation, the registry, and host detection."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from squeezeray._errors import UnknownNameError
from squeezeray.hwprofiles import BUILTIN_PROFILES
from squeezeray.hwprofiles import Basis
from squeezeray.hwprofiles import ComputeDtype
from squeezeray.hwprofiles import DeviceKind
from squeezeray.hwprofiles import HardwareProfile
from squeezeray.hwprofiles import MicrobenchConfig
from squeezeray.hwprofiles import ProfileError
from squeezeray.hwprofiles import detect_host
from squeezeray.hwprofiles import get_profile
from squeezeray.hwprofiles import parse_cpuinfo
from squeezeray.hwprofiles._registry import PROFILE_DIR
from squeezeray.kernels import KernelPath


def _h100_dict() -> dict:
    return yaml.safe_load((PROFILE_DIR / "h100-sxm.yaml").read_text())


def test_builtin_h100_numbers() -> None:
    p = get_profile("h100-sxm")
    assert p.kind is DeviceKind.GPU
    assert p.rate(ComputeDtype.FP16) == pytest.approx(989.5e12)
    assert p.rate(ComputeDtype.FP8) == pytest.approx(2 * p.rate(ComputeDtype.FP16))
    assert p.bandwidth() == pytest.approx(3.35e12)
    assert p.tdp_w.value == 700
    assert p.dense_tops[ComputeDtype.FP16].basis is Basis.DERIVED  # halved sparse figure, says so
    with pytest.raises(ProfileError, match="int4"):
        p.rate(ComputeDtype.INT4)  # Hopper has no INT4 tensor cores: unavailable, not zero
    assert KernelPath.TRITON_DEQUANT in p.kernels


def test_unknown_top_level_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    d = _h100_dict()
    d["memory_bandwith_gbs"] = d.pop("memory_bandwidth_gbs")
    f = tmp_path / "typo.yaml"
    f.write_text(yaml.safe_dump(d))
    with pytest.raises(ProfileError, match=r"typo\.yaml: unknown key 'memory_bandwith_gbs'.*Did you mean: memory_bandwidth_gbs"):
        get_profile(str(f))


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        (lambda d: d["tdp_w"].update(watts=3), r"unknown key 'watts' in tdp_w"),
        (lambda d: d["dense_tops"].update(fp64={"value": 1, "basis": "datasheet", "source": "x"}), r"unknown key 'fp64' in dense_tops"),
        (lambda d: d["tdp_w"].pop("source"), r"tdp_w is missing 'source'"),
        (lambda d: d["tdp_w"].update(source=" "), r"non-empty source"),
        (lambda d: d["idle_w"].update(basis="datasheet"), r"only they, are 'unavailable'"),
        (lambda d: d["tdp_w"].update(value=-1), r"non-negative"),
        (lambda d: d.update(_version=2), r"_version=2"),
        (lambda d: d.update(kind="tpu"), r"kind='tpu': must be one of"),
        (lambda d: d.update(kernels=["triton-dequant-gemm"]), r"must include 'torch-reference'"),
        (lambda d: d["sparse24_speedup"].update(value=0.5), r"sparse24_speedup=0.5"),
        (lambda d: d["idle_w"].update(value=800.0, basis="estimate"), r"idle_w=800.0 must be below tdp_w=700"),
        (lambda d: d.pop("formats"), r"missing key\(s\) formats"),
    ],
)
def test_malformed_profiles_are_rejected(tmp_path: Path, mutate, pattern: str) -> None:  # noqa: ANN001
    d = copy.deepcopy(_h100_dict())
    mutate(d)
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(d))
    with pytest.raises(ProfileError, match=pattern):
        get_profile(str(f))


def test_user_profile_file_and_round_trip(tmp_path: Path) -> None:
    d = _h100_dict()
    d["name"] = "my-gpu"
    d["memory_bandwidth_gbs"] = {"value": 1000, "basis": "measured", "source": "my stream benchmark"}
    f = tmp_path / "my-gpu.yaml"
    f.write_text(yaml.safe_dump(d))
    p = get_profile(str(f))
    assert p.name == "my-gpu" and p.bandwidth() == 1e12
    assert HardwareProfile.from_dict(p.to_dict()) == p


def test_unknown_name_suggests() -> None:
    with pytest.raises(UnknownNameError, match="Did you mean: h100-sxm"):
        get_profile("h100sxm")
    assert "h100-sxm" in BUILTIN_PROFILES


def test_parse_cpuinfo() -> None:
    text = (
        "processor\t: 0\nmodel name\t: Some Xeon\nflags\t\t: fpu avx2 avx512f avx512_vnni amx_int8\n\n"
        "processor\t: 1\nmodel name\t: Some Xeon\nflags\t\t: fpu avx2\n"
    )
    info = parse_cpuinfo(text)
    assert info.model == "Some Xeon" and info.logical_cpus == 2
    assert {"avx512_vnni", "amx_int8"} <= info.flags and "avx512_bf16" not in info.flags


def test_detect_host_is_measured() -> None:
    host = detect_host(bench=MicrobenchConfig.quick())
    assert host.name == "host" and host.kind is DeviceKind.CPU
    assert host.memory_bandwidth_gbs.basis is Basis.MEASURED and host.bandwidth() > 1e8
    fp32 = host.dense_tops[ComputeDtype.FP32]
    assert fp32.basis is Basis.MEASURED and fp32.value is not None and fp32.value > 1e-4  # > 0.1 GFLOP/s
    assert "thread" in fp32.source
    assert host.tdp_w.value is None and host.tdp_w.basis is Basis.UNAVAILABLE  # never invented
    assert KernelPath.REFERENCE in host.kernels
