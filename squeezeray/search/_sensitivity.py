"""Per-layer sensitivity: the cost of each option of each sampling unit, alone.

For every unit of a space and every option its group offers, the unit's layers are compressed
(through the layer cache) and swapped into the one working model in place while every other
layer stays original; the KL of the next-token distributions against the original is measured
on a short proxy, with the unit's stored bytes beside it. The table feeds the allocation solver
(:mod:`squeezeray.search._allocate`) and is shown as a heat map.

Speed: the blocks before the unit's first block compute exactly what the original computes, so
they are replaced during the measurement by replays of the original's outputs captured once
(:class:`_Replay`); only the unit's block and the ones after it run. The result is the same
number a full forward gives (the same inputs reach the same modules).

Persistence: each unit's rows are handed to ``on_unit`` as soon as they are measured (the search
stores them in the study), and rows given in ``done`` are not measured again, so a killed
sensitivity stage resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import time
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from squeezeray._errors import PlanError
from squeezeray._errors import SqueezerayError
from squeezeray.compress import compress_layer
from squeezeray.compress import dense_nbytes
from squeezeray.compress import swapped
from squeezeray.data import TokenData
from squeezeray.models import tied_table
from squeezeray.objectives._base import materialized
from squeezeray.objectives._logits import LogitChunks
from squeezeray.objectives.kl import kl_sum
from squeezeray.objectives._reference import reference_log_probs
from squeezeray.search._allocate import AllocationProblem
from squeezeray.spaces import NONE
from squeezeray.spaces import GroupSpec
from squeezeray.spaces import LayerPlan
from squeezeray.spaces import Unit
from squeezeray.techniques import StatsMemo

SENSITIVITY_VERSION = 1
_BLOCKS = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)$")
_BLOCK_OF = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")


@dataclasses.dataclass(frozen=True)
class UnitOption:
    """One choice for one unit: the parameter values that select it and the steps it stands for.

    Attributes:
        label: Canonical label of the steps (``none`` for no step at all).
        params: Parameter suffix -> value (only the group's sampled parameters).
        plan: The layer plan (None: the unit stays dense).
    """

    label: str
    params: Mapping[str, str]
    plan: LayerPlan | None


def unit_options(group: GroupSpec) -> list[UnitOption]:
    """Every distinct plan a group offers (combinations that cannot exist are left out), in a stable order."""
    choices = group.params()
    keys = list(choices)
    defaults = {"quant": group.quantize[0], "prune": group.prune[0], "order": group.orders[0].value,
                "lowrank": group.lowrank[0]}
    out: dict[str, UnitOption] = {}
    for values in itertools.product(*(choices[k] for k in keys)):
        params = dict(zip(keys, values))
        v = defaults | params
        try:
            lp = group.layer_plan(v["quant"], v["prune"], v["order"], v["lowrank"])
        except PlanError:
            continue
        label = NONE if lp is None else lp.label()
        out.setdefault(label, UnitOption(label, params, lp))
    return list(out.values())


def option_label(group: GroupSpec, params: Mapping[str, Any], unit_key: str) -> str:
    """The canonical option label a trial's parameters give a unit (inverse of :class:`UnitOption`)."""
    def value(suffix: str, default: str) -> str:
        return str(params.get(f"{unit_key}/{suffix}", default))

    lp = group.layer_plan(value("quant", group.quantize[0]), value("prune", group.prune[0]),
                          value("order", group.orders[0].value), value("lowrank", group.lowrank[0]))
    return NONE if lp is None else lp.label()


@dataclasses.dataclass(frozen=True)
class SensitivityRow:
    """One option of one unit, measured alone.

    Attributes:
        unit: Unit key.
        option: Option label.
        kl: KL(original || model with only this unit compressed), nats/token, on the sensitivity proxy.
        nbytes: The unit's stored bytes with this option (exact).
        dense_nbytes: The unit's bytes uncompressed (2 bytes per element).
        n_weights: Weights in the unit.
        seconds: Wall time of compressing and measuring it.
    """

    unit: str
    option: str
    kl: float
    nbytes: int
    dense_nbytes: int
    n_weights: int
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SensitivityRow:
        return cls(str(d["unit"]), str(d["option"]), float(d["kl"]), int(d["nbytes"]), int(d["dense_nbytes"]),
                   int(d["n_weights"]), float(d.get("seconds", 0.0)))


@dataclasses.dataclass(frozen=True)
class SensitivityTable:
    """Every unit's options measured alone, with where they were measured.

    Attributes:
        rows: One per (unit, option), units in space order.
        proxy: What the KL was measured on (source, tokens).
        proxy_digest: Content hash of the proxy token ids.
        version: Record version.
    """

    rows: tuple[SensitivityRow, ...]
    proxy: str
    proxy_digest: str
    version: int = SENSITIVITY_VERSION

    def frame(self) -> pd.DataFrame:
        """One row per (unit, option): kl, nbytes, bits (8 x bytes / weights), seconds."""
        df = pd.DataFrame([r.to_dict() for r in self.rows])
        if not df.empty:
            df["bits"] = 8.0 * df["nbytes"] / df["n_weights"]
        return df

    def heatmap(self) -> pd.DataFrame:
        """Units x options, KL in each cell (the per-layer sensitivity map users read)."""
        df = self.frame()
        heat = df.pivot(index="unit", columns="option", values="kl")
        return heat.reindex(index=list(dict.fromkeys(df["unit"])), columns=list(dict.fromkeys(df["option"])))

    def problem(self, units: Sequence[Unit], original_bytes: int) -> AllocationProblem:
        """The knapsack over ``units`` (every one must be in the table); ``original_bytes`` is the
        original model's stored size, so fixed bytes = it minus the units' dense bytes."""
        by_unit: dict[str, list[SensitivityRow]] = {}
        for r in self.rows:
            by_unit.setdefault(r.unit, []).append(r)
        missing = [u.key for u in units if u.key not in by_unit]
        if missing:
            raise SqueezerayError(f"sensitivity table has no rows for units {missing[:3]} ({len(missing)} missing)")
        rows = [by_unit[u.key] for u in units]
        dense = sum(rs[0].dense_nbytes for rs in rows)
        return AllocationProblem(
            units=tuple(u.key for u in units),
            options=tuple(tuple(r.option for r in rs) for rs in rows),
            nbytes=tuple(tuple(r.nbytes for r in rs) for rs in rows),
            cost=tuple(tuple(r.kl for r in rs) for rs in rows),
            fixed_bytes=int(original_bytes - dense),
            n_weights=sum(rs[0].n_weights for rs in rows),
        )


class _Replay(nn.Module):
    """Stands in for an original block whose output is known: returns it (repeated ``n`` times along
    the batch) without computing."""

    def __init__(self, output: Any, n: int) -> None:
        super().__init__()
        self.output = _repeat(output, n)

    def forward(self, *args: Any, **kwargs: Any) -> Any:  # noqa: ARG002 - same inputs as the block it replaces
        return self.output


def _repeat(output: Any, n: int) -> Any:
    if n == 1:
        return output
    if isinstance(output, torch.Tensor):
        return output.repeat(n, *([1] * (output.dim() - 1)))
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return (_repeat(output[0], n), *output[1:])
    raise SqueezerayError(f"cannot replay a block output of type {type(output).__name__}")


class _Stacked(nn.Module):
    """Several candidates for one layer in one forward: batch slice ``i`` goes through ``parts[i]``."""

    def __init__(self, parts: Sequence[nn.Module]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chunks = x.chunk(len(self.parts), dim=0)  # (n * B, T, in) -> n x (B, T, in)
        return torch.cat([m(c) for m, c in zip(self.parts, chunks)], dim=0)


def block_list(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """The model's transformer blocks (``model.layers`` and the like), or None."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and _BLOCKS.search(name) and len(module) > 0:
            return name, module
    return None


def first_block(layers: Sequence[str]) -> int | None:
    """The lowest block index among ``layers``; None when one of them lies outside every block."""
    found = [_BLOCK_OF.search(name) for name in layers]
    if any(m is None for m in found):
        return None
    return min(int(m.group(1)) for m in found if m is not None)


class SensitivityProbe:
    """The original model, its reference log-probs on the proxy and its block outputs, for one-unit KLs."""

    def __init__(self, model: nn.Module, proxy: TokenData) -> None:
        self.model = model
        self.proxy = proxy
        self.blocks = block_list(model)
        self.stream = LogitChunks(model, proxy.ids)  # before the hooks: its check runs a forward of its own;
        # it serves the candidates too (swapped into this model in place)
        outputs: list[Any] = []
        hooks = []
        if self.blocks is not None:
            for block in self.blocks[1]:
                hooks.append(block.register_forward_hook(lambda _m, _a, out: outputs.append(out)))
        try:
            self.reference = reference_log_probs(self.stream, proxy.ids)
        finally:
            for h in hooks:
                h.remove()
        self.block_outputs = outputs
        self.table = tied_table(model)

    def kl(self, replacements: Mapping[str, nn.Module]) -> float:
        """KL(original || original with ``replacements`` swapped in), nats/token, on the proxy."""
        return self.kl_many([replacements])[0]

    def kl_many(self, candidates: Sequence[Mapping[str, nn.Module]]) -> list[float]:
        """:meth:`kl` for several replacement sets of the same layers, in one batched forward.

        Candidate ``i`` occupies batch slice ``i`` (the proxy repeated); every layer they replace
        becomes a :class:`_Stacked` of the candidates' modules.
        """
        n = len(candidates)
        names = list(candidates[0])
        if any(list(c) != names for c in candidates):
            raise SqueezerayError("kl_many: every candidate must replace the same layers")
        if n > 1 and self.table is not None and self.table.head in names:
            # a tied table's candidates each bring their own embedding too: one forward per candidate
            return [self.kl_many([c])[0] for c in candidates]
        start = first_block(names)
        replays: dict[str, nn.Module] = {}
        if self.blocks is not None and start and len(self.block_outputs) == len(self.blocks[1]):
            prefix = self.blocks[0]
            replays = {f"{prefix}.{i}": _Replay(self.block_outputs[i], n) for i in range(start)}
        stacked = {name: (_Stacked([c[name] for c in candidates]) if n > 1 else candidates[0][name]) for name in names}
        seqs = self.reference.shape[0]
        sums = [0.0] * n
        with swapped(self.model, {**replays, **stacked}) as model, materialized(model), torch.no_grad():
            for row, at, logits in self.stream(self.proxy.ids.repeat(n, 1)):  # candidate row // seqs, sequence row % seqs
                sums[row // seqs] += kl_sum(self.reference.read(row % seqs, at).to(logits.device), logits)
        tokens = seqs * self.reference.shape[1]
        return [max(total / tokens, 0.0) for total in sums]


def measure_sensitivity(
    model: nn.Module,
    units: Sequence[Unit],
    stats: Mapping[str, Any],
    proxy: TokenData,
    *,
    layer_fn: Callable[..., nn.Module] | None = None,
    done: Mapping[str, Sequence[SensitivityRow]] | None = None,
    on_unit: Callable[[str, list[SensitivityRow]], None] | None = None,
    progress: bool = False,
    batch: int = 4,
) -> SensitivityTable:
    """Measure every option of every unit alone; see the module docstring.

    Args:
        model: The original model (layers are swapped in and restored; it is never left modified).
        units: The space's sampling units.
        stats: Calibration statistics per layer.
        proxy: Token ids (n_seqs, seq_len) the KL is measured on (one batch).
        layer_fn: ``(name, linear, layer_plan, stats, *, memo) -> module`` (e.g. the layer cache); default
            :func:`~squeezeray.compress.compress_layer`.
        done: Rows already measured, by unit (resume); those units are not measured again.
        on_unit: Called with each newly measured unit's rows (persist them).
        progress: Show a progress bar over units.
        batch: Options of one unit measured together in one batched forward (memory: ``batch`` x the
            proxy's logits).
    """
    fn = layer_fn or compress_layer
    memo = StatsMemo()
    done = dict(done or {})
    probe: SensitivityProbe | None = None
    rows: list[SensitivityRow] = []
    for unit in tqdm(units, desc="sensitivity", unit="unit", disable=not progress):
        if unit.key in done:
            rows.extend(done[unit.key])
            continue
        probe = probe or SensitivityProbe(model, proxy)
        linears = {name: model.get_submodule(name) for name in unit.layers}
        dense = sum(dense_nbytes(lin) for lin in linears.values())
        n_weights = sum(int(lin.weight.numel()) for lin in linears.values())
        unit_rows = []
        options = unit_options(unit.group)
        for i in range(0, len(options), batch):
            t0 = time.perf_counter()
            chunk = options[i : i + batch]
            # Layer by layer, every option of the chunk: one layer's options (and layers reading one input)
            # share what is derived from its statistics alone (GPTQ's Hessian factor).
            made = {(name, k): fn(name, lin, o.plan, stats[name], memo=memo)
                    for name, lin in linears.items() for k, o in enumerate(chunk) if o.plan is not None}
            built = [None if o.plan is None else {name: made[name, k] for name in linears}
                     for k, o in enumerate(chunk)]
            real = [b for b in built if b is not None]
            kls = iter(probe.kl_many(real) if real else [])
            per = (time.perf_counter() - t0) / len(chunk)
            for o, b in zip(chunk, built):
                kl = 0.0 if b is None else next(kls)
                nbytes = dense if b is None else sum(int(m.nbytes()) for m in b.values())
                unit_rows.append(SensitivityRow(unit.key, o.label, kl, nbytes, dense, n_weights, per))
        if on_unit is not None:
            on_unit(unit.key, unit_rows)
        rows.extend(unit_rows)
    return SensitivityTable(tuple(rows), f"{proxy.source} ({int(proxy.ids.numel())} tokens)", proxy.digest)

