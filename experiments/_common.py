"""What the experiment scripts share: the workbench from a config, task objectives, one row per plan.

Each experiment folder holds ``config.yaml``, ``run.py`` and its committed results; run a script
from the repository root (``python experiments/<name>/run.py``). Compressed layers and calibration
statistics are cached under ``experiments/.work`` (not committed), shared by all experiments, so
the same (layer, steps, calibration) is compressed once.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from squeezeray.objectives import Direction
from squeezeray.objectives.accuracy import Accuracy
from squeezeray._device import host_description
from squeezeray.search import LayerCache
from squeezeray.search._pareto import pareto_mask
from squeezeray.spaces import CompressionPlan
from squeezeray.workbench import DataConfig
from squeezeray.workbench import Workbench

WORK = Path(__file__).resolve().parent / ".work"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (the scripts run headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def machine() -> str:
    return f"{host_description()}; {platform.node()}"


def load_bench(cfg: dict[str, Any]) -> tuple[Workbench, Any]:
    """The workbench a config names (``model``, ``data``) and a layer function backed by the shared cache."""
    bench = Workbench.load(cfg.get("model"), DataConfig.from_dict(cfg.get("data", {})), progress=False)
    bench.cache_dir = WORK / "cache"
    layer_fn = LayerCache(WORK / "cache").layer_fn(bench.loaded.fingerprint(), bench.calibration.digest)
    return bench, layer_fn


def task_objectives(bench: Workbench, specs: list[dict[str, Any]]) -> list[Accuracy]:
    """lm-eval accuracy objectives (``{task, limit, seed}`` each), paired with the original on the same items."""
    return [Accuracy(tokenizer=bench.loaded.tokenizer, run_dir=WORK / "tasks", paired=True, **t) for t in specs]


def measure(
    bench: Workbench, candidate: torch.nn.Module, objectives: list[str], tasks: list[Accuracy]
) -> dict[str, float]:
    """Objective values, then each task's accuracy, its standard error and its paired delta to the original."""
    out: dict[str, float] = {k: m.value for k, m in bench.evaluate(candidate, objectives).items()}
    for acc in tasks:
        m = bench.context(candidate).measure(acc)
        name = acc.spec.name
        out[name] = m.value
        out[f"{name}_stderr"] = float(m.details["stderr"])  # type: ignore[arg-type]
        out[f"{name}_delta"] = float(m.details["delta_vs_original"])  # type: ignore[arg-type]
        out[f"{name}_delta_stderr"] = float(m.details["delta_stderr"])  # type: ignore[arg-type]
    return out


def compress_and_measure(
    bench: Workbench, layer_fn: Any, preset: str | CompressionPlan, objectives: list[str], tasks: list[Accuracy]
) -> dict[str, Any]:
    """One row: the plan compressed (through the cache where it can be) and measured."""
    plan = preset if isinstance(preset, CompressionPlan) else bench.uniform(preset)
    t0 = time.perf_counter()
    candidate, reports = bench.compress(plan, layer_fn=layer_fn)
    row: dict[str, Any] = {"plan": plan.name, "compress_s": time.perf_counter() - t0}
    row.update(measure(bench, candidate, objectives, tasks))
    kd = reports[0].distill if reports else None
    if kd is not None:
        row.update({f"kd_{k}": v for k, v in kd.to_dict().items()})
    return row


def spread(items: list, n: int) -> list:  # noqa: ANN001
    """At most ``n`` of ``items`` (sorted by size) spread evenly over them (all of them when there are fewer)."""
    if len(items) <= n:
        return items
    idx = np.unique(np.linspace(0, len(items) - 1, n).round().astype(int))
    return [items[i] for i in idx]


def at_budgets(items: list, values: list[float], targets: list[float]) -> list:  # noqa: ANN001
    """For each target, the item whose value (``values[i]`` for ``items[i]``, ascending) lies nearest and the
    largest one not above it (what a budget of that size buys); each item once, in the items' order."""
    if not items:
        return []
    v = np.asarray(values, dtype=float)
    picked: set[int] = set()
    for t in targets:
        picked.add(int(np.abs(v - t).argmin()))
        below = np.flatnonzero(v <= t)
        if below.size:
            picked.add(int(below[-1]))
    return [items[i] for i in sorted(picked)]


def searched_front(study: Any) -> list:
    """The study's measured, searched trials (no baselines, no duplicates) on the (size, KL) Pareto front, by size."""
    done = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("outcome") == "ok"
            and "duplicate_of" not in t.user_attrs and t.values and not t.user_attrs.get("baseline")]
    if not done:
        return []
    mask = pareto_mask(np.array([t.values for t in done]), [Direction.MINIMIZE] * 2)
    return sorted((t for t, m in zip(done, mask) if m), key=lambda t: t.values[0])
