"""What the front page shows, as JSON-ready dicts (pure functions over a :class:`StudyRecord`).

* :func:`front_payload`: the re-measured trials, each objective's direction and unit, the
  original's values, a Pareto mask for every pair and triple of objectives (so the page
  dims dominated trials in whichever view it draws), the stops of the constraint sliders
  and the recommendation under no constraints;
* :func:`trial_payload`: one trial's objectives beside the original's, its plan as JSON and
  a per-layer table (block x layer kind) of bits, sparsity and technique for the heat maps;
* :func:`select_payload`: the selector's pick under slider constraints (the same
  :meth:`StudyRecord.select <squeezeray.export.StudyRecord.select>` ``squeezeray export`` runs).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import pandas as pd

from squeezeray._errors import SqueezerayError
from squeezeray.export._study import StudyRecord
from squeezeray.objectives import objective_class
from squeezeray.objectives import Direction
from squeezeray.objectives.tradeoff import relative_cost
from squeezeray.search._study import is_baseline
from squeezeray.spaces import CompressionPlan
from squeezeray.techniques import StepKind

# The sliders the page offers: constraint field -> what it reads.
SLIDERS = ("max_accuracy_drop", "max_size_bytes", "max_latency_ms")
_BLOCK = re.compile(r"^(?P<head>.*?)(?:^|\.)(?:layers|h|blocks|layer)\.(?P<i>\d+)\.(?P<leaf>.+)$")
_FIXED_BITS = {"nf4": 4, "fp8": 8, "w8a8": 8}  # quantize techniques whose bit width is not a setting


def _directions(names: Sequence[str]) -> dict[str, Direction]:
    return {n: objective_class(n).direction for n in names}


def pareto_mask(values: list[list[float]], directions: Sequence[Direction]) -> list[bool]:
    """Non-dominated rows of ``values`` (n rows of k objectives)."""
    sign = [1.0 if d is Direction.MINIMIZE else -1.0 for d in directions]
    loss = [[v * s for v, s in zip(row, sign)] for row in values]
    keep = []
    for i, a in enumerate(loss):
        dominated = any(
            all(b_k <= a_k for b_k, a_k in zip(b, a)) and any(b_k < a_k for b_k, a_k in zip(b, a))
            for j, b in enumerate(loss) if j != i
        )
        keep.append(not dominated)
    return keep


def pareto_views(front: pd.DataFrame, names: Sequence[str]) -> dict[str, list[bool]]:
    """A Pareto mask for every pair, triple and the full set of ``names``, keyed by the sorted names joined with ','."""
    dirs = _directions(names)
    out: dict[str, list[bool]] = {}
    sizes = sorted({2, 3, len(names)} & set(range(1, len(names) + 1)))
    for k in sizes:
        for combo in itertools.combinations(sorted(names), k):
            values = front[list(combo)].to_numpy(dtype=float).tolist()
            out[",".join(combo)] = pareto_mask(values, [dirs[c] for c in combo])
    return out


def _accuracy_columns(names: Sequence[str]) -> list[str]:
    from squeezeray.search import Constraints

    return [a for a in Constraints().accuracy_objectives if a in names]


def row_checks(front: pd.DataFrame, baseline: Mapping[str, float], names: Sequence[str]) -> dict[str, list[float]]:
    """Per slider the study offers, each row's value under it (the page greys rows above a limit).

    ``max_accuracy_drop`` reads the worst relative loss over the accuracy columns (as
    :class:`~squeezeray.search.Constraints` does), the others read their column.
    """
    from squeezeray.search import Constraints

    c = Constraints()
    out: dict[str, list[float]] = {}
    acc = _accuracy_columns(names)
    if acc:
        dirs = _directions(acc)
        out["max_accuracy_drop"] = [
            max(relative_cost(float(row[a]), float(baseline[a]), dirs[a]) for a in acc) for _, row in front.iterrows()
        ]
    for field, col in (("max_size_bytes", c.size_objective), ("max_latency_ms", c.latency_objective)):
        if col in names:
            out[field] = [float(v) for v in front[col]]
    return out


def slider_stops(checks: Mapping[str, Sequence[float]], names: Sequence[str]) -> dict[str, Any]:
    """Per slider: the limits at which a trial enters or leaves the feasible set (sorted), or why it is off.

    Every stop is a value some trial has, so each step of a slider changes what is feasible;
    the last position of a slider is "no limit".
    """
    from squeezeray.search import Constraints

    c = Constraints()
    out: dict[str, Any] = {}
    if "max_accuracy_drop" in checks:
        # Constraints wants a limit in (0, 1): a trial at or better than the original needs a tiny positive limit
        stops = sorted({min(max(d, 1e-9), 0.999999) for d in checks["max_accuracy_drop"] if d < 1})
        out["max_accuracy_drop"] = {"stops": stops, "column": ", ".join(_accuracy_columns(names)), "unit": "fraction"}
    else:
        out["max_accuracy_drop"] = {"off": "no perplexity or accuracy objective in this study"}
    for field, col, unit in (("max_size_bytes", c.size_objective, "bytes"), ("max_latency_ms", c.latency_objective, "ms")):
        if field in checks:
            out[field] = {"stops": sorted({v for v in checks[field] if v > 0}), "column": col, "unit": unit}
        else:
            out[field] = {"off": f"no {col} objective in this study"}
    return out


def _clean(value: float) -> float | None:
    return float(value) if math.isfinite(float(value)) else None


def select_payload(
    record: StudyRecord, constraints: Mapping[str, float | None], weights: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """The selector's pick under ``constraints`` (unset limits dropped), or the reason nothing fits."""
    limits = {k: float(v) for k, v in constraints.items() if v is not None}
    for k in limits:
        if k not in SLIDERS:
            raise SqueezerayError(f"constraint {k!r}: the page offers {', '.join(SLIDERS)}")
    try:
        sel = record.select(limits, weights)
    except SqueezerayError as err:
        return {"selected": None, "reason": "", "error": str(err), "constraints": limits}
    return {"selected": int(sel.trial), "reason": sel.reason, "error": "", "constraints": limits}


def front_payload(record: StudyRecord) -> dict[str, Any]:
    """Everything the page draws the front from (JSON-ready)."""
    front = record.front()
    names = list(record.final_objectives)
    if front.empty:
        raise SqueezerayError(f"study {record.name!r}: no re-measured trials to show")
    baseline = {k: float(m.value) for k, m in record.baseline.items()}
    meta = {
        n: {"direction": objective_class(n).direction.value, "unit": record.baseline[n].unit,
            "where": record.baseline[n].where, "provenance": record.baseline[n].provenance.value}
        for n in names
    }
    checks = row_checks(front, baseline, names)
    rows = [
        {"trial": int(r["trial"]), "baseline_trial": bool(r["baseline"]), "plan": str(r["plan"]),
         "values": {n: _clean(r[n]) for n in names}, "checks": {k: _clean(v[i]) for k, v in checks.items()}}
        for i, (_, r) in enumerate(front.iterrows())
    ]
    return {
        "study": record.name,
        "model": str(record.header.model),
        "hardware": str(record.header.hardware),
        "space": record.space.name,
        "n_trials": len(record.study.get_trials(deepcopy=False)),
        "objectives": names,
        "search_objectives": list(record.objectives),
        "meta": meta,
        "original": baseline,
        "rows": rows,
        "pareto": pareto_views(front, names),
        "sliders": slider_stops(checks, names),
        "recommendation": select_payload(record, {}),
        "sensitivity": sensitivity_payload(record),
    }


def sensitivity_payload(record: StudyRecord) -> dict[str, Any] | None:
    """The per-layer sensitivity heat map (units x options, KL alone), or None when the study has none."""
    from squeezeray.search._evo_stage import read_table

    table = read_table(record.study)
    if table is None or not table.rows:
        return None
    heat = table.heatmap()
    return {"proxy": table.proxy, "units": [str(u) for u in heat.index], "options": [str(o) for o in heat.columns],
            "kl": [[None if v != v else float(v) for v in row] for row in heat.to_numpy()]}


# ----------------------------------------------------------------- trial
def _bits_and_sparsity(steps: Sequence[Any]) -> tuple[int | None, float, str]:
    bits: int | None = 16
    sparsity = 0.0
    for step in steps:
        if step.kind is StepKind.QUANTIZE:
            bits = getattr(step, "bits", None) or _FIXED_BITS.get(step.technique)
        elif step.kind is StepKind.PRUNE:
            sparsity = float(step.sparsity or 0.0)
    return bits, sparsity, "+".join(s.label() for s in steps) or "none"


def layer_table(plan: CompressionPlan, layer_names: Sequence[str]) -> dict[str, Any]:
    """Per-layer bits / sparsity / technique laid out as a (layer kind x block) grid.

    Returns:
        ``{"blocks": [...], "kinds": [...], "bits": [[...]], "sparsity": [[...]], "technique":
        [[...]], "layers": [{"name", "block", "kind", "bits", "sparsity", "technique"}]}``;
        a cell without a layer is None; bits is None for a quantizer whose width is unknown.
    """
    layers = []
    for name in layer_names:
        m = _BLOCK.match(name)
        block, kind = (m.group("i"), m.group("leaf")) if m else ("-", name)
        lp = plan.layers.get(name)
        bits, sparsity, label = _bits_and_sparsity(lp.steps if lp is not None else ())
        layers.append({"name": name, "block": block, "kind": kind, "bits": bits, "sparsity": sparsity,
                       "technique": label})
    blocks = list(dict.fromkeys(r["block"] for r in layers))
    blocks.sort(key=lambda b: (b == "-", int(b) if b.isdigit() else 0))
    kinds = list(dict.fromkeys(r["kind"] for r in layers))
    grid = {f: [[None] * len(blocks) for _ in kinds] for f in ("bits", "sparsity", "technique")}
    for r in layers:
        i, j = kinds.index(r["kind"]), blocks.index(r["block"])
        for f in grid:
            grid[f][i][j] = r[f]
    return {"blocks": blocks, "kinds": kinds, **grid, "layers": layers}


def trial_payload(record: StudyRecord, trial: int, layer_names: Sequence[str]) -> dict[str, Any]:
    """One re-measured trial: objectives beside the original's, the per-layer table and the plan."""
    if trial not in record.finals:
        raise SqueezerayError(
            f"trial={trial!r}: not re-measured in study {record.name!r}; the front has {sorted(record.finals)}"
        )
    plan = record.plan(trial, layer_names)
    objectives = []
    for n, m in record.finals[trial].items():
        b = record.baseline[n]
        change = None
        if b.value != 0 and math.isfinite(b.value):
            change = (m.value - b.value) / abs(b.value)
        objectives.append({
            "name": n, "value": _clean(m.value), "original": _clean(b.value), "unit": m.unit, "change": change,
            "direction": objective_class(n).direction.value, "provenance": m.provenance.value, "where": m.where,
        })
    t = record.study.get_trials(deepcopy=False)[trial]
    return {
        "trial": trial,
        "baseline_trial": is_baseline(t),
        "search_values": dict(zip(record.objectives, [float(v) for v in (t.values or [])])),
        "objectives": objectives,
        "layers": layer_table(plan, layer_names),
        "plan": plan.to_dict(),
    }
