"""Hardware profiles (datasheet figures for real devices, and the measured ``host``) and the roofline model."""

from squeezeray.hwprofiles._host import CpuInfo
from squeezeray.hwprofiles._host import MicrobenchConfig
from squeezeray.hwprofiles._host import detect_host
from squeezeray.hwprofiles._host import parse_cpuinfo
from squeezeray.hwprofiles._profile import Basis
from squeezeray.hwprofiles._profile import ComputeDtype
from squeezeray.hwprofiles._profile import DeviceKind
from squeezeray.hwprofiles._profile import Figure
from squeezeray.hwprofiles._profile import HardwareProfile
from squeezeray.hwprofiles._profile import ProfileError
from squeezeray.hwprofiles._profile import load_profile
from squeezeray.hwprofiles._registry import BUILTIN_PROFILES
from squeezeray.hwprofiles._roofline import LayerCost
from squeezeray.hwprofiles._roofline import PathEfficiency
from squeezeray.hwprofiles._roofline import RooflineCalibration
from squeezeray.hwprofiles._roofline import RooflineTime
from squeezeray.hwprofiles._roofline import fit_calibration
from squeezeray.hwprofiles._roofline import roofline_time
from squeezeray.hwprofiles._registry import get_profile
from squeezeray.hwprofiles._registry import profile_names

__all__ = [
    "BUILTIN_PROFILES",
    "Basis",
    "ComputeDtype",
    "CpuInfo",
    "DeviceKind",
    "Figure",
    "HardwareProfile",
    "LayerCost",
    "MicrobenchConfig",
    "PathEfficiency",
    "ProfileError",
    "RooflineCalibration",
    "RooflineTime",
    "detect_host",
    "fit_calibration",
    "get_profile",
    "load_profile",
    "parse_cpuinfo",
    "profile_names",
    "roofline_time",
]
