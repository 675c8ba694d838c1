"""The roofline model: terms, bound, calibration fit and its serialisation."""

from __future__ import annotations

import numpy as np
import pytest

from squeezeray.hwprofiles import ComputeDtype
from squeezeray.hwprofiles import LayerCost
from squeezeray.hwprofiles import PathEfficiency
from squeezeray.hwprofiles import ProfileError
from squeezeray.hwprofiles import RooflineCalibration
from squeezeray.hwprofiles import fit_calibration
from squeezeray.hwprofiles import get_profile
from squeezeray.hwprofiles import roofline_time
from squeezeray.hwprofiles._roofline import fit_path


def _cost(tokens: int, n: int = 4096, k: int = 4096, wbytes: float = 0.5) -> LayerCost:
    return LayerCost("l", int(n * k * wbytes), tokens * (n + k) * 2, 2.0 * tokens * n * k, ComputeDtype.FP16, "triton-dequant-gemm")


def test_decode_is_memory_bound_and_prefill_compute_bound() -> None:
    h100 = get_profile("h100-sxm")
    ideal = RooflineCalibration.ideal()
    dec = roofline_time(_cost(1), h100, ideal)
    assert dec.bound == "memory"
    assert dec.total_s == pytest.approx((4096 * 4096 * 0.5 + 2 * 8192) / 3.35e12)
    pre = roofline_time(_cost(4096), h100, ideal)
    assert pre.bound == "compute"
    assert pre.total_s == pytest.approx(2.0 * 4096**3 / 989.5e12)
    # Fewer weight bytes help decode, not compute-bound prefill.
    assert roofline_time(_cost(1, wbytes=0.25), h100, ideal).total_s < dec.total_s
    assert roofline_time(_cost(4096, wbytes=0.25), h100, ideal).total_s == pytest.approx(pre.total_s)


def test_efficiency_and_overhead_apply() -> None:
    h100 = get_profile("h100-sxm")
    cal = RooflineCalibration({"triton-dequant-gemm": PathEfficiency(0.5, 0.25, 1e-5)}, "test")
    base = roofline_time(_cost(1), h100, RooflineCalibration.ideal())
    t = roofline_time(_cost(1), h100, cal)
    assert t.total_s == pytest.approx(2 * base.memory_s + 1e-5)


def test_fit_recovers_known_efficiencies() -> None:
    rng = np.random.default_rng(0)
    mem = rng.uniform(1e-5, 1e-3, 40)
    comp = rng.uniform(1e-5, 1e-3, 40)
    true = PathEfficiency(0.3, 0.1, 2e-5)
    measured = np.maximum(mem / true.bandwidth, comp / true.compute) + true.overhead_s
    fit = fit_path(mem, comp, measured * rng.uniform(0.98, 1.02, 40))
    assert fit.bandwidth == pytest.approx(0.3, rel=0.15)
    assert fit.compute == pytest.approx(0.1, rel=0.15)
    pred = np.maximum(mem / fit.bandwidth, comp / fit.compute) + fit.overhead_s
    assert float(np.median(np.abs(pred / measured - 1))) < 0.05


def test_fit_calibration_groups_by_path_and_round_trips() -> None:
    h100 = get_profile("h100-sxm")
    samples = []
    for tokens in (1, 8, 64, 512, 2048):
        c = _cost(tokens)
        samples.append((c, 3 * roofline_time(c, h100, RooflineCalibration.ideal()).total_s))
    cal = fit_calibration(samples, h100, where="synthetic")
    assert set(cal.per_path) == {"triton-dequant-gemm"}
    for c, s in samples:
        assert roofline_time(c, h100, cal).total_s == pytest.approx(s, rel=0.1)
    again = RooflineCalibration.from_dict(cal.to_dict())
    assert again == cal and "calibrated on synthetic" == again.describe()
    with pytest.raises(ProfileError, match="_version"):
        RooflineCalibration.from_dict({**cal.to_dict(), "_version": 9})
    with pytest.raises(ValueError, match="positive"):
        fit_path(np.ones(2), np.ones(2), np.array([1.0, 0.0]))
