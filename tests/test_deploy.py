"""The KubeRay job spec in deploy/kuberay agrees with the CLI, the pinned Ray version and its Dockerfile."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from squeezeray.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "kuberay"


@pytest.fixture(scope="module")
def job() -> dict:
    return yaml.safe_load((DEPLOY / "rayjob.yaml").read_text())


def _pinned_ray() -> str:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["cluster"]
    return next(re.search(r"==([\d.]+)", d).group(1) for d in extras if d.startswith("ray"))  # type: ignore[union-attr]


def _quantity(value: str) -> float:
    """A Kubernetes quantity in GiB (memory) or cores (cpu): 16Gi, 512Mi, 4, 500m."""
    units = {"Gi": 1.0, "Mi": 1 / 1024, "m": 1e-3, "": 1.0}
    number, unit = re.fullmatch(r"([\d.]+)(Gi|Mi|m|)", str(value)).groups()  # type: ignore[union-attr]
    return float(number) * units[unit]


def test_entrypoint_is_a_valid_cluster_search(job: dict) -> None:
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["squeezeray", "search"]
    args = build_parser().parse_args(argv[1:])
    assert args.ray == "auto"  # the job runs on the head of the cluster KubeRay made
    assert args.resume == "auto"  # a restarted job continues its study instead of failing on it
    assert args.storage == "$SQUEEZERAY_STORAGE" and args.no_worker_disk_cache


def test_cluster_matches_the_pinned_ray_and_the_image(job: dict) -> None:
    ray_version = _pinned_ray()
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == ray_version
    assert cluster["authOptions"]["mode"] in ("token", "disabled")  # RAY_AUTH_MODE set in every container
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{ray_version}-" in dockerfile
    assert "[cluster" in dockerfile  # the image installs the cluster extra, so the same Ray


def test_workers_fit_what_each_trial_reserves(job: dict) -> None:
    args = build_parser().parse_args(shlex.split(job["spec"]["entrypoint"])[1:])
    cluster = job["spec"]["rayClusterSpec"]
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # the driver's pod takes no worker actor
    head_env = head["template"]["spec"]["containers"][0]["env"]
    assert "SQUEEZERAY_STORAGE" in {e["name"] for e in head_env}
    for group in cluster["workerGroupSpecs"]:
        container = group["template"]["spec"]["containers"][0]
        assert container["env"] == head_env, f"worker group {group['groupName']}: environment differs from the head"
        limits = container["resources"]["limits"]
        cpus = float(group["rayStartParams"]["num-cpus"])
        assert cpus <= _quantity(limits["cpu"]) and cpus >= args.cpus_per_trial
        # Ray leaves ~30% of a pod's memory to the object store: the reservation must fit in the rest
        assert args.memory_per_trial <= 0.7 * _quantity(limits["memory"])
