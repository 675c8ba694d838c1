"""Measured latency of the embedded model on this host, and the roofline prediction against it.

For each variant of SmolLM2-135M (fp32 original, bf16, int8 W8A8, int8 weight-only, 4-bit RTN with
the fastest correct kernels, and 4-bit RTN forced onto the torch reference path) this script

1. detects and measures the host (``detect_host``: matmul rates per dtype, copy bandwidth);
2. lets the kernel selector choose each compressed layer's path (decode: 1 token, prefill: 128);
3. times linear layers alone (blocks given by ``--blocks`` plus ``lm_head``; 1 and 128 tokens,
   last-level cache flushed before every timed call so weights come from DRAM);
4. times the whole model: prefill of 128 tokens and decode steps at context 128 (KV cache).
   All timings run the variants round-robin (repetition r of every variant before repetition
   r + 1), so load from other processes on this shared machine drifts equally over all of them;
5. fits the roofline calibration per kernel path on the per-layer times, and reports the
   per-layer prediction error in-sample, leave-one-shape-out, and uncalibrated; then the
   end-to-end prediction (one overhead per block and phase fitted on the end-to-end times);
6. predicts the same variants on the datasheet profiles (ideal roofline, not calibrated there).

Usage::

    python experiments/latency/run.py --threads 1 --out experiments/latency/results

Writes to ``--out``: host_profile.json, paths.csv, layers.csv, e2e.csv, roofline_layers.csv,
roofline_e2e.csv, calibration.json, targets.csv and summary.md (the tables for the README).
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from squeezeray.hwprofiles import ComputeDtype
from squeezeray.hwprofiles import HardwareProfile
from squeezeray.hwprofiles import LayerCost
from squeezeray.hwprofiles import PathEfficiency
from squeezeray.hwprofiles import RooflineCalibration
from squeezeray.hwprofiles import detect_host
from squeezeray.hwprofiles import fit_calibration
from squeezeray.hwprofiles import get_profile
from squeezeray.hwprofiles import roofline_time
from squeezeray.hwprofiles._roofline import relative_error
from squeezeray.kernels import KernelSelector
from squeezeray.kernels import path_summary
from squeezeray.kernels import time_interleaved
from squeezeray.kernels import use_reference
from squeezeray.objectives.latency import Phase
from squeezeray._device import host_description
from squeezeray.objectives.latency import linear_layers
from squeezeray.objectives.latency import time_decode
from squeezeray.objectives.predicted_latency import block_other_path
from squeezeray.objectives.predicted_latency import PredictedLatency
from squeezeray.objectives.predicted_latency import linear_cost
from squeezeray.objectives.predicted_latency import model_costs
from squeezeray.workbench import DataConfig
from squeezeray.workbench import Workbench

PREFILL_TOKENS = 128
TARGETS = ("h100-sxm", "a100-80gb-sxm", "rtx-4090", "jetson-agx-orin-64gb", "xeon-8480plus", "epyc-9654")


@dataclasses.dataclass(frozen=True)
class Variant:
    """One model variant: a label, a plan preset (None: not compressed), a dtype, and a kernel policy."""

    name: str
    preset: str | None
    dtype: torch.dtype = torch.float32
    reference_kernels: bool = False
    decode_tokens: int = 16
    decode_repeats: int = 3


VARIANTS = (
    Variant("fp32", None),
    Variant("bf16", None, dtype=torch.bfloat16),
    Variant("int8 W8A8 (w8a8-a0.5)", "w8a8-a0.5"),
    Variant("int8 weight-only (rtn-w8)", "rtn-w8"),
    Variant("4-bit (rtn-w4g128)", "rtn-w4g128"),
    Variant("4-bit, torch reference path", "rtn-w4g128", reference_kernels=True, decode_tokens=4, decode_repeats=2),
)


def _git_rev() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    if not rows:
        return
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _layer_kind(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def build_variant(bench: Workbench, v: Variant) -> nn.Module:
    if v.preset is None:
        model = copy.deepcopy(bench.original)
        return model.to(v.dtype)
    plan = bench.uniform(v.preset)
    model, _ = bench.compress(plan)
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps timings stable on a shared 2-core machine)")
    ap.add_argument("--blocks", default="0,14,29", help="transformer blocks whose layers are timed one by one")
    ap.add_argument("--repeats", type=int, default=7, help="timed calls per layer")
    ap.add_argument("--e2e-repeats", type=int, default=5, help="timed prefill passes per variant")
    ap.add_argument("--out", default="experiments/latency/results")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    load_start = [round(x, 2) for x in os.getloadavg()]  # other processes share this machine; recorded

    host = detect_host()
    (out / "host_profile.json").write_text(json.dumps(host.to_dict(), indent=1) + "\n")
    print(f"host: {host.device}; copy bandwidth {host.memory_bandwidth_gbs.value:.2f} GB/s; "
          + ", ".join(f"{k.value} {v.value * 1e3:.1f} GOPS" for k, v in host.dense_tops.items() if v.value), flush=True)

    bench = Workbench.load(None, DataConfig(calib_seqs=8, calib_len=128, eval_tokens=512, eval_len=128, proxy_seqs=1))
    ids = bench.held_out.ids.reshape(-1)[:PREFILL_TOKENS].view(1, PREFILL_TOKENS)
    blocks = [int(b) for b in args.blocks.split(",")]
    timed_names = [n for n in linear_layers(bench.original) if any(n.startswith(f"model.layers.{b}.") for b in blocks)]
    timed_names.append("lm_head")
    n_blocks = int(bench.original.config.num_hidden_layers)

    layer_rows: list[dict[str, object]] = []
    e2e_rows: list[dict[str, object]] = []
    path_rows: list[dict[str, object]] = []
    samples: list[tuple[LayerCost, float, str, tuple[int, int], int]] = []  # cost, measured s, variant, shape, tokens
    models: dict[str, nn.Module] = {}
    for v in VARIANTS:
        model = build_variant(bench, v)
        models[v.name] = model
        if v.preset is None:
            continue
        if v.reference_kernels:
            use_reference(model)
            continue
        choices = KernelSelector(token_counts=(1, PREFILL_TOKENS), repeats=5).select_model(model)
        for tokens in (1, PREFILL_TOKENS):
            counts: dict[str, int] = {}
            for c in choices.values():
                counts[c.path_for(tokens).value] = counts.get(c.path_for(tokens).value, 0) + 1
            rejected = sorted({f"{p.value}: {r}" for c in choices.values() for p, r in c.rejected.items() if "cuda" not in r})
            path_rows.append({"variant": v.name, "tokens": tokens, "paths": json.dumps(counts), "rejected_on_cpu": " | ".join(rejected)})
    print(f"variants built and kernels selected ({time.time() - t_start:.0f} s)", flush=True)

    # Per layer: every variant's copy of a layer is timed round-robin (same load drift for all).
    gen = torch.Generator().manual_seed(0)
    act_of = {v.name: ComputeDtype.BF16 if v.dtype is torch.bfloat16 else ComputeDtype.FP32 for v in VARIANTS}
    for tokens in (1, PREFILL_TOKENS):
        for name in timed_names:
            mods = {v.name: linear_layers(models[v.name])[name] for v in VARIANTS}
            x = torch.randn(tokens, mods["fp32"].in_features, generator=gen)
            fns = {
                v.name: (lambda m=mods[v.name], xx=x.to(v.dtype): m(xx)) for v in VARIANTS
            }
            with torch.no_grad():
                stats = time_interleaved(fns, warmup=1, repeats=args.repeats, flush=True)
            for v in VARIANTS:
                st, mod = stats[v.name], mods[v.name]
                cost = linear_cost(name, mod, tokens=tokens, profile=host, act_dtype=act_of[v.name])
                shape = (int(mod.out_features), int(mod.in_features))
                samples.append((cost, st.median_s, v.name, shape, tokens))
                layer_rows.append({
                    "variant": v.name, "layer": name, "kind": _layer_kind(name), "out": shape[0], "in": shape[1],
                    "tokens": tokens, "path": cost.path, "median_ms": round(st.median_ms, 4),
                    "min_ms": round(1000 * st.min_s, 4), "max_ms": round(1000 * st.max_s, 4), "repeats": st.repeats,
                    "method": st.method, "weight_bytes": cost.weight_bytes,
                })
    print(f"per-layer timings done ({time.time() - t_start:.0f} s)", flush=True)

    # End to end, also round-robin over variants.
    with torch.no_grad():
        pre = time_interleaved(
            {v.name: (lambda m=models[v.name]: m(input_ids=ids, use_cache=False)) for v in VARIANTS},
            warmup=1, repeats=args.e2e_repeats,
        )
        dec: dict[str, list[float]] = {v.name: [] for v in VARIANTS}
        rounds = max(v.decode_repeats for v in VARIANTS)
        for r in range(rounds + 1):  # round 0 is warm-up
            for v in VARIANTS:
                if r > v.decode_repeats:
                    continue
                steps = time_decode(models[v.name], ids, new_tokens=v.decode_tokens, warmup=0, repeats=1)
                if r > 0:
                    dec[v.name].extend(steps)
    for v in VARIANTS:
        p, d = pre[v.name], dec[v.name]
        e2e_rows.append({
            "variant": v.name, "prefill_ms": round(p.median_ms, 2), "prefill_min_ms": round(1000 * p.min_s, 2),
            "decode_ms_per_token": round(1000 * statistics.median(d), 2), "decode_min_ms": round(1000 * min(d), 2),
            "prefill_repeats": p.repeats, "decode_steps": len(d), "paths_last_decode": json.dumps(path_summary(models[v.name])),
        })
        print(f"{v.name}: prefill {e2e_rows[-1]['prefill_ms']} ms, decode {e2e_rows[-1]['decode_ms_per_token']} ms/token", flush=True)

    # ------------------------------------------------------------------ roofline on the host
    where = f"{host.device}, per-layer times of {len(VARIANTS)} variants (experiments/latency)"
    calib = fit_calibration([(c, s) for c, s, *_ in samples], host, where=where)
    ideal = RooflineCalibration.ideal()
    roof_rows = []
    shapes = sorted({s for *_, s, _ in samples})
    loso: dict[int, float] = {}
    for shape in shapes:  # leave one layer shape out: fit on the others, predict it
        train = [(c, s) for c, s, _, sh, _ in samples if sh != shape]
        held = [i for i, (_, _, _, sh, _) in enumerate(samples) if sh == shape]
        cal = fit_calibration(train, host, where="leave-one-shape-out")
        for i in held:
            c = samples[i][0]
            if c.path in cal.per_path:
                loso[i] = roofline_time(c, host, cal).total_s
    for i, (c, s, vname, shape, tokens) in enumerate(samples):
        fit_t = roofline_time(c, host, calib)
        raw_t = roofline_time(c, host, ideal)
        roof_rows.append({
            "variant": vname, "layer": c.name, "tokens": tokens, "path": c.path, "bound": fit_t.bound,
            "measured_ms": round(1000 * s, 4), "predicted_ms": round(1000 * fit_t.total_s, 4),
            "error": round(relative_error(fit_t.total_s, s), 4),
            "loso_predicted_ms": round(1000 * loso[i], 4) if i in loso else "",
            "loso_error": round(relative_error(loso[i], s), 4) if i in loso else "",
            "uncalibrated_ms": round(1000 * raw_t.total_s, 4), "uncalibrated_error": round(relative_error(raw_t.total_s, s), 4),
            "bytes": c.nbytes, "flops": int(c.flops),
        })

    # end to end: fit the per-block overhead outside linear layers and attention, per phase,
    # as the median over variants of (measured - predicted linear and attention) / blocks
    e2e_pred: dict[tuple[str, str], float] = {}
    residuals: dict[str, list[float]] = {"prefill": [], "decode": []}
    for v in VARIANTS:
        act = ComputeDtype.BF16 if v.dtype is torch.bfloat16 else ComputeDtype.FP32
        row = next(r for r in e2e_rows if r["variant"] == v.name)
        for phase, measured in ((Phase.PREFILL, row["prefill_ms"]), (Phase.DECODE, row["decode_ms_per_token"])):
            costs = model_costs(models[v.name], phase=phase, batch=1, seq_len=PREFILL_TOKENS, profile=host, act_dtype=act)
            t = sum(roofline_time(c, host, calib).total_s for c in costs if c.path != block_other_path(phase))
            e2e_pred[(v.name, phase.value)] = t
            residuals[phase.value].append((float(measured) / 1000 - t) / n_blocks)
    block_other = {ph: max(0.0, float(np.median(r))) for ph, r in residuals.items()}
    calib = RooflineCalibration(
        {**calib.per_path, **{block_other_path(Phase(ph)): PathEfficiency(1.0, 1.0, o) for ph, o in block_other.items()}},
        calib.where,
    )
    (out / "calibration.json").write_text(json.dumps(calib.to_dict(), indent=1) + "\n")
    roof_e2e = []
    for v in VARIANTS:
        row = next(r for r in e2e_rows if r["variant"] == v.name)
        for phase, measured in (("prefill", row["prefill_ms"]), ("decode", row["decode_ms_per_token"])):
            pred = e2e_pred[(v.name, phase)] + n_blocks * block_other[phase]
            roof_e2e.append({
                "variant": v.name, "phase": phase, "measured_ms": measured, "predicted_ms": round(1000 * pred, 2),
                "error": round(relative_error(pred, float(measured) / 1000), 4),
                "linear_and_attention_ms": round(1000 * e2e_pred[(v.name, phase)], 2),
                "block_other_ms": round(1000 * n_blocks * block_other[phase], 2),
            })

    # ------------------------------------------------------------------ other targets (ideal roofline)
    target_rows = []
    for name in TARGETS:
        prof: HardwareProfile = get_profile(name)
        for v in VARIANTS:
            if v.reference_kernels or v.dtype is torch.bfloat16:
                continue  # same prediction as the fast-path / fp32 rows off the host
            row = {"target": name, "variant": v.name}
            for phase in (Phase.PREFILL, Phase.DECODE):
                m = PredictedLatency(profile=prof, phase=phase, batch=1, seq_len=PREFILL_TOKENS)
                total, _ = m.predict(models[v.name])
                row[f"{phase.value}_ms"] = round(1000 * total, 4)
            target_rows.append(row)

    _write_csv(out / "layers.csv", layer_rows)
    _write_csv(out / "e2e.csv", e2e_rows)
    _write_csv(out / "paths.csv", path_rows)
    _write_csv(out / "roofline_layers.csv", roof_rows)
    _write_csv(out / "roofline_e2e.csv", roof_e2e)
    _write_csv(out / "targets.csv", target_rows)
    meta = {
        "load_average_start_end": [load_start, [round(x, 2) for x in os.getloadavg()]],
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": host_description(), "host_profile": host.device, "platform": platform.platform(),
        "git": _git_rev(), "seconds": round(time.time() - t_start, 1), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    (out / "summary.md").write_text(summarize(layer_rows, e2e_rows, roof_rows, roof_e2e, target_rows, meta, calib))
    print((out / "summary.md").read_text())


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def summarize(layer_rows, e2e_rows, roof_rows, roof_e2e, target_rows, meta, calib) -> str:  # noqa: ANN001
    """The README tables (markdown)."""
    lines = [
        f"Machine: {meta['machine']}. Command: `{meta['command']}` (git {meta['git']}, {meta['date']}, "
        f"{meta['seconds']} s; load average at start / end {meta['load_average_start_end']}).",
        "",
    ]
    variants = list(dict.fromkeys(r["variant"] for r in e2e_rows))
    base = next(r for r in e2e_rows if r["variant"] == "fp32")
    lines += ["End to end (median; prefill = 1 x 128 tokens; decode = ms per new token at context 128):", ""]
    lines += ["| variant | prefill ms | x fp32 | decode ms/token | x fp32 |", "|---|---:|---:|---:|---:|"]
    for r in e2e_rows:
        lines.append(
            f"| {r['variant']} | {r['prefill_ms']:.1f} | {r['prefill_ms'] / base['prefill_ms']:.2f} | "
            f"{r['decode_ms_per_token']:.1f} | {r['decode_ms_per_token'] / base['decode_ms_per_token']:.2f} |"
        )
    lines.append("")
    for tokens, label in ((PREFILL_TOKENS, "prefill, 128 tokens"), (1, "decode, 1 token")):
        lines += [f"Per layer ({label}; median over the timed blocks, ms; ratio to fp32 in brackets):", ""]
        lines += ["| layer | " + " | ".join(variants) + " |", "|---|" + "---:|" * len(variants)]
        kinds = list(dict.fromkeys(r["kind"] for r in layer_rows))
        for kind in kinds:
            cells = []
            ref = _median([r["median_ms"] for r in layer_rows if r["kind"] == kind and r["tokens"] == tokens and r["variant"] == "fp32"])
            for v in variants:
                ms = _median([r["median_ms"] for r in layer_rows if r["kind"] == kind and r["tokens"] == tokens and r["variant"] == v])
                paths = sorted({r["path"] for r in layer_rows if r["kind"] == kind and r["tokens"] == tokens and r["variant"] == v})
                cells.append(f"{ms:.3f} ({ms / ref:.2f}) {'/'.join(paths)}" if v != "fp32" else f"{ms:.3f}")
            lines.append(f"| {kind} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["Roofline on the host, per-layer relative error |predicted - measured| / measured (median and max over layers):", ""]
    lines += ["| path | tokens | layers | calibrated (in-sample) | leave-one-shape-out | uncalibrated |", "|---|---:|---:|---|---|---|"]
    groups = sorted({(r["path"], r["tokens"]) for r in roof_rows})
    for path, tokens in groups:
        rs = [r for r in roof_rows if r["path"] == path and r["tokens"] == tokens]
        def stat(key: str, rs=rs) -> str:
            xs = [abs(float(r[key])) for r in rs if r[key] != ""]
            return f"{100 * _median(xs):.0f}% / {100 * max(xs):.0f}%" if xs else "n/a"
        lines.append(f"| {path} | {tokens} | {len(rs)} | {stat('error')} | {stat('loso_error')} | {stat('uncalibrated_error')} |")
    lines += ["", "Fitted efficiencies (fraction of measured peak bandwidth / rate, fixed overhead per call):", ""]
    lines += ["| path | bandwidth | compute | overhead us |", "|---|---:|---:|---:|"]
    for path, e in sorted(calib.per_path.items()):
        lines.append(f"| {path} | {e.bandwidth:.3g} | {e.compute:.3g} | {1e6 * e.overhead_s:.1f} |")
    lines += ["", "End to end, roofline (calibrated per-layer terms + one fitted per-block overhead per phase) vs measured:", ""]
    lines += ["| variant | phase | measured ms | predicted ms | error |", "|---|---|---:|---:|---:|"]
    for r in roof_e2e:
        lines.append(f"| {r['variant']} | {r['phase']} | {r['measured_ms']} | {r['predicted_ms']} | {100 * r['error']:+.0f}% |")
    lines += ["", "Predicted on datasheet profiles (ideal roofline, not calibrated on those devices; fp16 activations on GPUs):", ""]
    tvars = list(dict.fromkeys(r["variant"] for r in target_rows))
    lines += ["| target | " + " | ".join(f"{v} prefill / decode ms" for v in tvars) + " |", "|---|" + "---:|" * len(tvars)]
    for t in dict.fromkeys(r["target"] for r in target_rows):
        cells = []
        for v in tvars:
            r = next(x for x in target_rows if x["target"] == t and x["variant"] == v)
            cells.append(f"{r['prefill_ms']:.3g} / {r['decode_ms']:.3g}")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
