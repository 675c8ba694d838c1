"""The human-readable model card (``card.md``) rendered from a :class:`~squeezeray.export._card.ModelCard`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from squeezeray._errors import SqueezerayError
from squeezeray.export._card import ModelCard


def _fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "bytes":
        return f"{value / 2**20:.3f} MiB"
    return f"{value:.4g} {unit}"


def render_markdown(card: ModelCard) -> str:
    """``card.md``: the card for people (``card.json`` is the record)."""
    lines = [f"# {card.name}", ""]
    lines.append(f"Compressed with squeezeray {card.squeezeray_version} on {card.created}.")
    lines += ["", "## Source model", ""]
    lines.append(f"- reference: `{card.source.ref}` ({card.source.architecture}, {card.source.parameters:,} parameters)")
    lines.append(f"- fingerprint (SHA-256 of parameter names, shapes and bytes): `{card.source.fingerprint}`")
    lines += ["", "## Objectives", "", "| objective | compressed | original | change | how | measured on |",
              "|---|---|---|---|---|---|"]
    for o in card.objectives:
        change = "-"
        if o.baseline:
            change = f"{100 * (o.value - o.baseline) / abs(o.baseline):+.2f}%"
        lines.append(
            f"| {o.name} | {_fmt_value(o.value, o.unit)} | {_fmt_value(o.baseline, o.unit)} | {change} | "
            f"{o.provenance.value}: {o.where} | {o.measured_on.value} |"
        )
    lines += ["", "## Evaluation data", ""]
    for key, d in card.evaluation.items():
        lines.append(f"- {key}: {d.source} (shape {list(d.shape)}, SHA-256 `{d.digest[:16]}…`)")
    lines += ["", "## Hardware profile", ""]
    hw = card.hardware
    prof = hw.get("profile") or {}
    lines.append(f"- `{hw.get('ref')}`: {prof.get('device', 'no profile recorded')}" + (f" — {hw['note']}" if hw.get("note") else ""))
    lines += ["", "## Search", ""]
    if card.search is None:
        lines.append("Not found by a search (plan exported directly).")
    else:
        s = card.search
        lines.append(f"- study `{s.study}` ({s.storage}), trial {s.trial} of {s.n_trials}, seed {s.seed}, space `{s.space}`")
        lines.append(f"- search objectives: {', '.join(s.objectives)}; re-measured on: {', '.join(s.final_objectives)}")
        if s.constraints:
            lines.append(f"- constraints: {', '.join(f'{k}={v:g}' for k, v in s.constraints.items())}")
        lines.append(f"- selection: {s.selection or 'picked by the user'}")
    lines += ["", "## Plan", ""]
    summary: dict[str, int] = {}
    for steps in card.plan.get("layers", {}).values():
        label = "+".join(_step_label(s) for s in steps)
        summary[label] = summary.get(label, 0) + 1
    for label, n in sorted(summary.items(), key=lambda kv: -kv[1]):
        lines.append(f"- {n} layers: `{label}`")
    lines.append("")
    lines.append("The full per-layer plan is in `card.json` (`plan`).")
    a = card.artifact
    lines += ["", "## Files", ""]
    lines.append(
        f"- `model.safetensors`: {a.get('format')} v{a.get('format_version')}, {a.get('compressed_layers')} compressed "
        f"layers, other tensors in {a.get('dense_dtype')}; load with `squeezeray.load(path)`"
    )
    for sv in a.get("serving", []):
        if sv["format"] == "gguf":
            counts = ", ".join(f"{n} {t}" for t, n in sv.get("type_counts", {}).items())
            lines.append(f"- `{sv['path']}`: GGUF for {sv['runtime']} ({counts} tensors; SHA-256 `{sv['sha256'][:16]}…`; "
                         "the same codes and scales, repacked into GGUF blocks; per-tensor types in `card.json`)")
        else:
            lines.append(f"- `{sv['path']}/`: {sv['format']} checkpoint for {sv['runtime']} (the same weights, repacked)")
    lines.append("- `manifest.json`: SHA-256 of every file; checked on every load")
    lines += ["", "## Approvals", ""]
    if not card.approvals:
        lines.append("None yet (`squeezeray approve PATH --by NAME --note ...`).")
    for ap in card.approvals:
        lines.append(f"- {ap.at} — **{ap.by}**: {ap.note} (weights `{ap.model_sha256[:16]}…`)")
    return "\n".join(lines) + "\n"


def _step_label(step: Mapping[str, Any]) -> str:
    from squeezeray.techniques import config_from_dict

    try:
        return config_from_dict(dict(step)).label()
    except SqueezerayError:
        return str(step.get("technique", "?"))
