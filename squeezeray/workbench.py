"""One model, its calibration data and statistics, and the objectives to score candidates.

The :class:`Workbench` is the thin stateful object the CLI and the search share:
calibration statistics are collected once (the Hessian only when a plan needs
it) and the original model's reference results are cached across candidates.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import dataclasses
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from squeezeray._device import resolve_device
from squeezeray._errors import SqueezerayError
from squeezeray._offload import check_offload
from squeezeray._offload import on_execution_device
from squeezeray.compress import LayerReport
from squeezeray.compress import apply_plan
from squeezeray.compress import collect_stats
from squeezeray.compress import StatsStore
from squeezeray.compress import collect_stats_blockwise
from squeezeray.compress import decoder_parts
from squeezeray.compress import compress_layer
from squeezeray.compress import swapped
from squeezeray.compress._swap import is_swapped
from squeezeray.compress._swap import page_out_modules
from squeezeray.data import DataConfig
from squeezeray.data import PreparedData
from squeezeray.data import TokenData
from squeezeray.data import prepare_data
from squeezeray.data import split_data
from squeezeray.models import LoadedModel
from squeezeray.models import compressible_layers
from squeezeray.models import head_layer
from squeezeray.models import load_model
from squeezeray.models import load_tokenizer
from squeezeray.objectives import BaseObjective
from squeezeray.objectives import EvalContext
from squeezeray.objectives import Measurement
from squeezeray.objectives import Need
from squeezeray.objectives import OBJECTIVES
from squeezeray.objectives import objective_key
from squeezeray.objectives import split_objective_name
from squeezeray.objectives._base import memo_key
from squeezeray.spaces import CompressionPlan
from squeezeray.techniques import LayerStats
from squeezeray.techniques import StatsMemo


class Workbench:
    """Holds the original model and everything derived from it once."""

    def __init__(
        self, loaded: LoadedModel, data: DataConfig | None = None, *, progress: bool = False, hardware: str = "host",
        prepared: PreparedData | None = None,
    ) -> None:
        self.loaded = loaded
        self.hardware = hardware  # profile handed to objectives that take one (energy, predicted latency)
        self.cache_dir: Path | None = None  # where calibration statistics persist (set by the search)
        self.data = data or DataConfig()
        self.progress = progress
        ready = prepared or prepare_data(loaded.tokenizer, self.data)
        self.calibration: TokenData = ready.calibration
        self.held_out: TokenData = ready.held_out
        self.proxy: TokenData = ready.proxy
        self.data_notes = ready.notes  # what the split did (a user source held out in part, overlaps dropped)
        self.layers = compressible_layers(loaded.model)
        self.head = head_layer(loaded.model)  # the output head (the tied token table when tied), or None
        self._stats: Mapping[str, LayerStats] | None = None
        self.calibration_method: str | None = None  # "block-wise" or "whole-model", once statistics were collected
        self._stats_have_hessian = False
        self.stats_passes = 0  # calibration passes this workbench ran itself (0 when it adopted statistics)
        self.reference: dict[str, object] = {}

    @classmethod
    def load(
        cls, model: str | None = None, data: DataConfig | None = None, *, progress: bool = False,
        prepared: PreparedData | None = None, tokenizer: object | None = None, dtype: str = "auto",
        device: str | None = None, offload: bool = False,
    ) -> Workbench:
        """Load ``model`` (in ``dtype``, on ``device``: see :func:`~squeezeray.models.load_model`) and draw ``data``: every data
        source is read and split first, and the token sets are drawn with the tokenizer alone, so bad data (an
        unreadable file, a missing field, too little text) fails before the weights load. ``prepared`` (with its
        ``tokenizer``): token sets already drawn. ``offload``: decoder blocks on the host, run on ``device`` (a GPU)."""
        data = data or DataConfig()
        check_offload(resolve_device(device, field="device"), offload)  # a device this process cannot use fails before any data is read
        if prepared is None:
            split = split_data(data)
            tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model)
            prepared = prepare_data(tokenizer, data, split)
        loaded = load_model(model, tokenizer=tokenizer, dtype=dtype, device=device, offload=offload)
        return cls(loaded, data, progress=progress, prepared=prepared)

    def data_record(self) -> dict[str, object]:
        """What the study and the model card record of the data: the config (sources, sizes) and each token set's
        description (sources with their content digests) and SHA-256."""
        return {
            "config": self.data.to_dict(),
            **{role: {"source": t.source, "digest": t.digest}
               for role, t in (("calibration", self.calibration), ("proxy", self.proxy), ("held_out", self.held_out))},
            "notes": list(self.data_notes),
        }

    @property
    def original(self) -> nn.Module:
        return self.loaded.model

    def stats(self, *, hessian: bool) -> Mapping[str, LayerStats]:
        """Calibration statistics of every compressible layer.

        Collected once per workbench (with the Hessian on demand), one decoder block at a time
        (:func:`~squeezeray.compress.collect_stats_blockwise`; a model without a recognisable decoder
        runs whole-model forwards instead, and :attr:`calibration_method` says which ran). With
        ``cache_dir`` set, each block's statistics go straight to disk under a content key (model
        fingerprint, calibration digest, layer set, Hessian or not) and the mapping returned loads a
        layer's statistics when a technique asks for them, so memory holds one block's statistics while
        calibrating and a few layers' while compressing; other processes and later runs open the same folder.
        """
        if self._stats is not None and (self._stats_have_hessian or not hessian):
            return self._stats
        folder = self._stats_dir(hessian)
        if folder is not None and not hessian:
            with_h = self._stats_dir(True)
            if with_h is not None and StatsStore.open(with_h) is not None:
                folder = with_h
        store = StatsStore.open(folder) if folder is not None else None
        if store is not None:
            self._stats, self._stats_have_hessian = store, bool(store.hessian)  # its key names the layer set
            return store
        names = list(self.layers)
        writer = StatsStore(folder) if folder is not None else None
        try:
            decoder_parts(self.original)
            self.calibration_method = "block-wise"
        except SqueezerayError:
            self.calibration_method = "whole-model"  # no decoder blocks to run one at a time: same statistics
        if self.calibration_method == "block-wise":
            kept = collect_stats_blockwise(self.original, names, self.calibration.ids, hessian=hessian,
                                           sink=None if writer is None else writer.add, progress=self.progress)
        else:
            kept = collect_stats(self.original, names, self.calibration.ids, hessian=hessian, progress=self.progress)
            if writer is not None:
                writer.add(kept)
        self._stats = kept if writer is None else writer.finish()
        self._stats_have_hessian = hessian
        self.stats_passes += 1
        return self._stats

    def _stats_dir(self, hessian: bool) -> Path | None:
        if self.cache_dir is None:
            return None
        from squeezeray.techniques._versions import CALIBRATION_CODE_VERSION

        key = hashlib.sha256(
            f"{self.loaded.fingerprint()}|{self.calibration.digest}|hessian={hessian}|"
            f"layers={hashlib.sha256(' '.join(sorted(self.layers)).encode()).hexdigest()[:16]}|"
            f"code={CALIBRATION_CODE_VERSION}".encode()
        ).hexdigest()
        return Path(self.cache_dir) / "stats" / key

    def adopt_stats(self, stats: Mapping[str, LayerStats], *, hessian: bool) -> None:
        """Use calibration statistics collected elsewhere (another process holding the same model and data).

        The caller vouches for the match (same model fingerprint and calibration digest);
        every compressible layer must be present, with its Hessian when ``hessian``.
        """
        missing = sorted(set(self.layers) - set(stats))
        if missing:
            raise SqueezerayError(f"adopt_stats: no statistics for layers {missing[:3]} (of {len(missing)} missing)")
        if hessian and any(stats[n].hessian is None for n in self.layers):
            raise SqueezerayError("adopt_stats: hessian=True but some layers' statistics have no Hessian")
        self._stats = {n: stats[n] for n in self.layers}
        self._stats_have_hessian = hessian

    def uniform(self, preset: str, *, head: str | None = None) -> CompressionPlan:
        """``preset`` on every compressible layer but the output head, which takes ``head`` (steps such as
        ``rtn-w8``; None: it stays dense). The head of a tied model is the token table the input embedding
        shares: what a preset means for "the linear layers" should not silently reach it."""
        from squeezeray.spaces import parse_steps

        plan = CompressionPlan.uniform(preset, [n for n in self.layers if n != self.head])
        if head is None:
            return plan
        if self.head is None:
            raise SqueezerayError(f"head={head!r}: this model's output head is not a linear layer")
        return dataclasses.replace(plan, layers={**plan.layers, self.head: parse_steps(head)},
                                   name=f"{plan.name} head={head}")

    def compress(self, plan: CompressionPlan, *, layer_fn=None) -> tuple[nn.Module, list[LayerReport]]:  # noqa: ANN001
        """A compressed copy of the original model (the original is untouched)."""
        plan.check(self.layers)
        stats = self.stats(hessian=plan.needs_hessian())
        candidate = copy.deepcopy(self.original)
        reports = apply_plan(
            candidate, plan, stats, progress=self.progress, layer_fn=layer_fn,
            teacher=self.original, distill_tokens=self.calibration.ids,
        )
        return candidate, reports

    @contextlib.contextmanager
    def swapped(self, plan: CompressionPlan, *, layer_fn=None) -> Iterator[nn.Module]:  # noqa: ANN001
        """The original model with ``plan``'s layers compressed and swapped in place, restored on exit.

        No copy of the model is made: the planned modules are replaced in the one model this
        workbench holds and the original module objects are put back afterwards, so the original
        stays bit-identical. A plan with distillation trains the whole model and needs
        :meth:`compress` (a copy) instead.
        """
        if plan.distill is not None:
            raise SqueezerayError(f"plan {plan.name or '(unnamed)'!r} has a distillation step: use compress(), "
                                  "which trains a copy")
        if is_swapped(self.original):
            raise SqueezerayError("swapped(): a swap is already active on this model; finish it first")
        plan.check(self.layers)
        stats = self.stats(hessian=plan.needs_hessian())
        fn = layer_fn or compress_layer
        memo = StatsMemo()  # layers reading one input (q/k/v, gate/up) share what is derived from its statistics
        replacements = {}
        for name, lp in plan.layers.items():  # an offloaded block's layers are compressed on the device, handed back
            linear = self.original.get_submodule(name)
            replacements[name] = on_execution_device(
                self.original, linear, lambda lin, name=name, lp=lp: fn(name, lin, lp, stats[name], memo=memo))
            page_out_modules([linear])  # not read again before the restore: its checkpoint pages leave memory now
        memo.clear()  # the last input's factorisation goes before the candidate is evaluated
        with swapped(self.original, replacements, page_out_originals=False) as model:  # paged out above
            yield model

    def evaluate_plan(
        self, plan: CompressionPlan, objectives: Sequence[str | BaseObjective], *, layer_fn=None  # noqa: ANN001
    ) -> dict[str, Measurement]:
        """Measure ``plan`` on ``objectives``: swapped in place when every objective is ``swap_safe``, on a
        copy otherwise (a plan that trains, kd, or an objective that compares the candidate with the original).

        The original's reference results (its log-probs for KL, its outputs for loyalty) are
        taken before the first swap, so no objective ever mistakes the swapped model for the original.
        """
        objs = [self.objective(o) if isinstance(o, str) else o for o in objectives]
        if plan.distill is not None or not all(o.swap_safe for o in objs):
            candidate, _ = self.compress(plan, layer_fn=layer_fn)  # trains, or an objective reads the original
            return self.evaluate(candidate, objs)
        done = self.reference.setdefault("original-evaluated", set())
        missing = [o for o in objs if memo_key(o) not in done]
        if missing:
            self.evaluate(self.original, missing)
            done.update(memo_key(o) for o in missing)
        with self.swapped(plan, layer_fn=layer_fn) as model:
            return self.evaluate(model, objs)

    def context(self, candidate: nn.Module) -> EvalContext:
        return EvalContext(self.original, candidate, self.held_out, self.proxy, self.reference)  # type: ignore[arg-type]

    def objective(self, name: str) -> BaseObjective:
        """The registered objective ``name``, given this workbench's hardware profile and tokenizer if it takes them.

        A task-keyed name (``accuracy:arc_easy@570``) is that task on a seeded subset of that many items (all
        without ``@``), scored paired with the original and keyed ``accuracy:arc_easy``.
        """
        base, task, limit = split_objective_name(name)
        cls = OBJECTIVES.get(base)
        kwargs: dict[str, object] = {need.value: self._given(need) for need in cls.needs}
        if task is not None:
            kwargs.update(task=task, limit=limit, paired=True, key=objective_key(name))
            if self.cache_dir is not None:
                kwargs["run_dir"] = Path(self.cache_dir) / "tasks"
        return cls(**kwargs)  # type: ignore[arg-type]

    def _given(self, need: Need) -> object:
        """What this workbench hands an objective that declares ``need``."""
        if need is Need.PROFILE:
            return self.hardware
        if need is Need.TOKENIZER:
            return self.loaded.tokenizer
        src = self.loaded.source
        return Path(src.path) / src.gguf_file if src.gguf_file else None

    def evaluate(self, candidate: nn.Module, objectives: Sequence[BaseObjective | str]) -> dict[str, Measurement]:
        ctx = self.context(candidate)
        out = {}
        for obj in objectives:
            o = self.objective(obj) if isinstance(obj, str) else obj
            out[o.name] = ctx.measure(o)
        return out
