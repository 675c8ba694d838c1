"""Export: apply a plan to the full model, write it with its card, load it back, approve it.

Call order of :func:`export_model`:

1. compress the workbench's model with the plan (through ``layer_fn``, e.g. the search's cache);
2. write config, tokenizer and ``model.safetensors`` into a temporary folder beside ``out``;
3. load that folder back (:func:`squeezeray.export._artifact.build_model`) and measure the
   ``measure`` objectives on it, and on the original, with the workbench's data;
4. write ``card.json`` / ``card.md`` and the manifest of SHA-256 hashes;
5. rename the folder to ``out`` and add it to the registry (if one is given).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from squeezeray._errors import SqueezerayError
from squeezeray.export._artifact import ARTIFACT_FORMAT
from squeezeray.export._artifact import ARTIFACT_VERSION
from squeezeray.export._artifact import CARD_JSON
from squeezeray.export._artifact import CARD_MD
from squeezeray.export._artifact import DenseDtype
from squeezeray.export._artifact import MANIFEST_FILE
from squeezeray.export._artifact import WEIGHTS_FILE
from squeezeray.export._artifact import build_model
from squeezeray.export._artifact import dense_dtype
from squeezeray.export._artifact import verify_folder
from squeezeray.export._artifact import write_json_atomic
from squeezeray.export._artifact import write_manifest
from squeezeray.export._artifact import write_model_files
from squeezeray.export._artifact import write_text_atomic
from squeezeray.export._card import Approval
from squeezeray.export._card import DataRecord
from squeezeray.export._card import MeasuredOn
from squeezeray.export._card import ModelCard
from squeezeray.export._card import ObjectiveRecord
from squeezeray.export._card import SearchRecord
from squeezeray.export._card import SourceModel
from squeezeray.export._card import utc_now
from squeezeray.export._card_md import render_markdown
from squeezeray.export._gguf import GGUF_FILE
from squeezeray.export._gguf import write_gguf
from squeezeray.export._registry import RegistryEntry
from squeezeray.export._registry import find_entry
from squeezeray.export._registry import upsert_entry
from squeezeray.export._serving import CT_FOLDER
from squeezeray.export._serving import ServingFormat
from squeezeray.export._serving import serving_formats
from squeezeray.export._serving import write_compressed_tensors
from squeezeray.export._study import StudyRecord
from squeezeray.objectives import Measurement
from squeezeray.objectives import objective_class
from squeezeray.spaces import CompressionPlan

DEFAULT_MEASURE = ("size", "perplexity", "kl")


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """How to export.

    Attributes:
        dense_dtype: Storage dtype of uncompressed tensors (float16 is what ``size`` counts).
        measure: Objectives measured on the exported files at export time (the rest of the
            search's final objectives are copied from the study, marked ``measured_on: search``).
        registry: Registry file to add the export to (None: none).
        overwrite: Replace an existing export folder at ``out`` (never another kind of folder).
        serving: Serving layouts to add (``compressed-tensors`` for vLLM in a subfolder, ``gguf`` for
            llama.cpp as ``model.gguf``); a plan
            that does not map exactly is refused with the reasons.
    """

    dense_dtype: DenseDtype = DenseDtype.FLOAT16
    measure: tuple[str, ...] = DEFAULT_MEASURE
    registry: Path | None = None
    overwrite: bool = False
    serving: tuple[ServingFormat, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "dense_dtype", dense_dtype(self.dense_dtype))
        names = (self.measure,) if isinstance(self.measure, str) else tuple(self.measure)
        if not names:
            raise SqueezerayError("measure: needs at least one objective")
        for n in names:
            objective_class(n)
        object.__setattr__(self, "measure", names)
        if self.registry is not None:
            object.__setattr__(self, "registry", Path(self.registry))
        object.__setattr__(self, "serving", serving_formats(self.serving))


@dataclasses.dataclass(frozen=True)
class ExportedModel:
    """A loaded export: the runnable model, its tokenizer and card.

    Attributes:
        model: The causal LM (compressed layers are :class:`~squeezeray.compress.CompressedLinear`).
        tokenizer: Its tokenizer.
        card: The validated model card.
        path: The export folder.
    """

    model: nn.Module
    tokenizer: Any
    card: ModelCard
    path: Path


# ------------------------------------------------------------------- load
def read_card(path: str | Path) -> ModelCard:
    """The validated card of an export folder (no hash check; :func:`load` does that)."""
    p = Path(path) / CARD_JSON
    if not p.is_file():
        raise SqueezerayError(f"path={str(path)!r}: no {CARD_JSON}")
    return ModelCard.from_json(p.read_text(), origin=str(p))


def load(path: str | Path, *, dtype: torch.dtype = torch.float32) -> ExportedModel:
    """Load an exported model after checking every file against its manifest.

    Args:
        path: The export folder.
        dtype: In-memory dtype of the dense parameters.

    Raises:
        SqueezerayError: A file is missing, modified (its SHA-256 differs; the file is
            named) or unlisted; the card is malformed; the weights do not fit the config.
    """
    import transformers

    folder = Path(path)
    verify_folder(folder)
    card = read_card(folder)
    model = build_model(folder, dtype=dtype)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as err:
        raise SqueezerayError(f"{folder}: tokenizer cannot be loaded ({err})") from None
    return ExportedModel(model, tokenizer, card, folder)


# ---------------------------------------------------------------- records
def hardware_record(ref: Any) -> dict[str, Any]:
    """The card's hardware entry for a profile name / YAML path / HardwareProfile."""
    from squeezeray.hwprofiles import HardwareProfile
    from squeezeray.hwprofiles import get_profile

    if isinstance(ref, HardwareProfile):
        return {"ref": ref.name, "profile": ref.to_dict(), "note": ""}
    if not isinstance(ref, str) or not ref:
        raise SqueezerayError(f"hardware={ref!r}: must be a profile name, a YAML path or a HardwareProfile")
    profile = get_profile(ref)
    note = "detected and measured on the exporting machine at export time" if ref == "host" else ""
    return {"ref": ref, "profile": profile.to_dict(), "note": note}


def _data_record(data: Any) -> DataRecord:
    return DataRecord(data.source, data.digest, tuple(int(s) for s in data.ids.shape))


def _objective(m: Measurement, baseline: Measurement | None, on: MeasuredOn) -> ObjectiveRecord:
    return ObjectiveRecord(
        m.name, float(m.value), m.unit, m.provenance, m.where, dict(m.details),
        None if baseline is None else float(baseline.value), on,
    )


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists():
        if not overwrite:
            raise SqueezerayError(f"out={str(out)!r}: already exists; pick another folder or pass overwrite")
        if not (out / MANIFEST_FILE).is_file():
            raise SqueezerayError(f"out={str(out)!r}: exists and is not a squeezeray export; refusing to replace it")


# ----------------------------------------------------------------- export
def export_model(
    bench: Any,
    plan: CompressionPlan,
    out: str | Path,
    *,
    config: ExportConfig | None = None,
    hardware: Any = "host",
    search: SearchRecord | None = None,
    search_measurements: Mapping[str, Measurement] | None = None,
    search_baseline: Mapping[str, Measurement] | None = None,
    layer_fn: Callable[..., Any] | None = None,
    name: str | None = None,
) -> ExportedModel:
    """Apply ``plan`` to the workbench's model and export it; see the module docstring.

    Args:
        bench: A :class:`~squeezeray.workbench.Workbench` holding the source model and data.
        plan: The plan to apply (checked against the model).
        out: The export folder to create.
        config: Export settings.
        hardware: Profile name / YAML path / HardwareProfile recorded on the card.
        search: The search that found the plan (None: exported without one).
        search_measurements: The search's final measurements of this plan (copied to the
            card for objectives not re-measured at export).
        search_baseline: The original's values for those, from the search.
        layer_fn: Passed to ``bench.compress`` (e.g. a layer cache).
        name: Card name (default: the folder name).

    Returns:
        The export, loaded back from disk (hashes checked).
    """
    from squeezeray._version import __version__

    cfg = config or ExportConfig()
    out = Path(out)
    _check_out(out, cfg.overwrite)
    plan.check(bench.layers)
    hw = hardware_record(hardware)
    candidate, _ = bench.compress(plan, layer_fn=layer_fn)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        info = write_model_files(candidate, bench.loaded.tokenizer, tmp, cfg.dense_dtype)
        info["serving"] = []
        if ServingFormat.COMPRESSED_TENSORS in cfg.serving:
            info["serving"].append(write_compressed_tensors(candidate, bench.loaded.tokenizer, tmp / CT_FOLDER,
                                                            cfg.dense_dtype))
        if ServingFormat.GGUF in cfg.serving:
            src = bench.loaded.source
            source_gguf = Path(src.path) / src.gguf_file if src.gguf_file else None
            info["serving"].append(write_gguf(candidate, bench.original, source_gguf, tmp / GGUF_FILE))
        del candidate
        reloaded = build_model(tmp)
        measured = bench.evaluate(reloaded, list(cfg.measure))
        base = bench.evaluate(bench.original, list(cfg.measure))
        objectives = [_objective(measured[n], base[n], MeasuredOn.EXPORT) for n in cfg.measure]
        for n, m in (search_measurements or {}).items():
            if n not in cfg.measure:
                objectives.append(_objective(m, (search_baseline or {}).get(n), MeasuredOn.SEARCH))
        original = bench.original
        card = ModelCard(
            name=name or out.name,
            created=utc_now(),
            squeezeray_version=__version__,
            source=SourceModel(
                ref=bench.loaded.source.ref, fingerprint=bench.loaded.fingerprint(),
                architecture=type(original).__name__, parameters=sum(p.numel() for p in original.parameters()),
            ),
            plan=plan.to_dict(),
            hardware=hw,
            objectives=tuple(objectives),
            evaluation={"held_out": _data_record(bench.held_out), "proxy": _data_record(bench.proxy),
                        "calibration": _data_record(bench.calibration)},
            artifact={"format": ARTIFACT_FORMAT, "format_version": ARTIFACT_VERSION, **info},
            search=search,
        )
        ModelCard.from_dict(card.to_dict())  # what we write must read back
        write_json_atomic(tmp / CARD_JSON, card.to_dict())
        write_text_atomic(tmp / CARD_MD, render_markdown(card))
        manifest = write_manifest(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    if cfg.registry is not None:
        upsert_entry(cfg.registry, RegistryEntry.from_card(out, card, manifest["files"][WEIGHTS_FILE]["sha256"]))
    return load(out)


def export_trial(
    record: StudyRecord,
    trial: int,
    bench: Any,
    out: str | Path,
    *,
    config: ExportConfig | None = None,
    hardware: Any = None,
    selection: str = "",
    constraints: Mapping[str, float] | None = None,
    layer_fn: Callable[..., Any] | None = None,
) -> ExportedModel:
    """Export a trial of a finished search.

    Args:
        record: The study, read with :meth:`StudyRecord.read`.
        trial: Trial number (a completed, measured trial).
        bench: Workbench with the model and calibration data the search used (checked).
        out: Export folder.
        config: Export settings.
        hardware: Profile for the card (None: the study's ``hardware``).
        selection: The selector's reason when this trial is its pick ("" when a user chose it).
        constraints: The constraints that selection ran under.
        layer_fn: Passed to ``bench.compress``.
    """
    record.check_bench(bench)
    plan = record.plan(trial, tuple(bench.layers))
    search = SearchRecord(
        study=record.name, storage=record.storage_url(), trial=trial, seed=int(record.header.seed),
        objectives=record.objectives, final_objectives=record.final_objectives, space=record.space.name,
        n_trials=len(record.study.get_trials(deepcopy=False)), selection=selection,
        constraints=dict(constraints or {}),
    )
    return export_model(
        bench, plan, out, config=config,
        hardware=record.header.hardware if hardware is None else hardware,
        search=search, search_measurements=record.finals.get(trial), search_baseline=record.baseline,
        layer_fn=layer_fn,
    )


# ---------------------------------------------------------------- approve
def approve(path: str | Path, *, by: str, note: str, registry: str | Path | None = None) -> ModelCard:
    """Append an approval to an export's card (after checking every file's hash).

    The approval records the SHA-256 of ``model.safetensors`` it saw; ``card.json``,
    ``card.md`` and the manifest are rewritten; the registry entry (if the registry
    lists this folder) is updated.

    Raises:
        SqueezerayError: Empty ``by`` or ``note``; the folder fails its hash check.
    """
    folder = Path(path)
    manifest = verify_folder(folder)
    card = read_card(folder)
    sha = manifest["files"][WEIGHTS_FILE]["sha256"]
    card = card.with_approval(Approval(by=by, note=note, at=utc_now(), model_sha256=sha))
    write_json_atomic(folder / CARD_JSON, card.to_dict())
    write_text_atomic(folder / CARD_MD, render_markdown(card))
    write_manifest(folder)
    if registry is not None and find_entry(registry, folder) is not None:
        upsert_entry(registry, RegistryEntry.from_card(folder, card, sha))
    return card


def summarize(card: ModelCard, names: Sequence[str] = ("size", "perplexity", "kl")) -> str:
    """One line: name, key objectives and approvals."""
    parts = []
    for o in card.objectives:
        if o.name in names:
            v = f"{o.value / 2**20:.2f} MiB" if o.unit == "bytes" else f"{o.value:.4g}"
            parts.append(f"{o.name} {v}")
    return f"{card.name}: " + ", ".join(parts) + f"; {len(card.approvals)} approval(s)"
