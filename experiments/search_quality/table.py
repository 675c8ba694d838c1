"""The README's search-quality tables from the committed CSVs: ``python experiments/search_quality/table.py [model]``."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
MIB = 2**20


def markdown(model: str = "smollm2-135m") -> str:
    folder = HERE / model
    plans = pd.read_csv(folder / "plans.csv")
    summary = pd.read_csv(folder / "summary.csv")
    out = []
    w = out.append
    uni = plans[plans["method"].str.startswith("uniform")].sort_values("avg_bits")
    w("| uniform plan | avg bits | size (MiB) | KL proxy | perplexity |")
    w("|---|---:|---:|---:|---:|")
    for _, r in uni.iterrows():
        w(f"| {r['plan']} | {r['avg_bits']:.3f} | {r['size'] / MIB:.1f} | {r['kl']:.3f} | {r['perplexity']:.2f} |")
    w("")
    clip = "band_ratio_3.0_3.5_vs_clip_line" in summary.columns
    w("| method | plans measured | 3.0–3.5 bits, curve vs g128 line | curve vs best uniform GPTQ | "
      "budget vs g128 line | budget vs best uniform GPTQ | "
      + ("curve vs asym+clip g128 line | budget vs asym+clip g128 line | " if clip else "")
      + "geo-mean of its plans' ratios, 3.0–3.5 (n) | geo-mean, whole band | worst ratio | smaller and better "
      "than gptq-w4g128 | " + ("smaller and better than gptq-w4g128-asym-clip | " if clip else "")
      + "final hypervolume | search time (s) |")
    w("|---|" + "---:|" * (13 if clip else 11))
    for _, r in summary.iterrows():
        extra = (f"{r['band_ratio_3.0_3.5_vs_clip_line']:.3f} | {r['budget_ratio_3.0_3.5_vs_clip_line']:.3f} | "
                 if clip else "")
        extra2 = f"{r['smaller_and_better_than_gptq_w4g128_asym_clip']} | " if clip else ""
        w(f"| {r['method']} | {r['plans']} | {r['band_ratio_3.0_3.5_vs_g128']:.3f} | "
          f"{r['band_ratio_3.0_3.5_vs_gptq_envelope']:.3f} | {r['budget_ratio_3.0_3.5_vs_g128']:.3f} | "
          f"{r['budget_ratio_3.0_3.5_vs_gptq_envelope']:.3f} | {extra}"
          f"{r['geo_mean_ratio_3.0_3.5_bits']:.3f} ({r['plans_3.0_3.5_bits']}) | "
          f"{r['geo_mean_ratio_band']:.3f} | {r['worst_ratio_band']:.3f} | {r['smaller_and_better_than_gptq_w4g128']} | "
          f"{extra2}{r['final_hypervolume']:.4g} | {r['search_seconds']:.0f} |")
    w("")
    evo = plans[plans["method"] == "evo"].sort_values("avg_bits")
    clip_plans = "ppl_ratio_vs_clip_line" in plans.columns
    w("Front plans of the evo search (ratios: perplexity over uniform GPTQ g128, over the best uniform GPTQ "
      "plan of any group size or grid" + (", and over the uniform asym+clip g128 line" if clip_plans else "")
      + ", interpolated at equal size):\n")
    w("| trial | avg bits | size (MiB) | KL proxy | perplexity | uniform GPTQ g128 at that size | ratio | "
      "ratio vs best uniform GPTQ |" + (" ratio vs asym+clip line |" if clip_plans else ""))
    w("|---:|" + "---:|" * (8 if clip_plans else 7))
    for _, r in evo.iterrows():
        last = f" {r['ppl_ratio_vs_clip_line']:.3f} |" if clip_plans else ""
        w(f"| {r['trial']} | {r['avg_bits']:.3f} | {r['size'] / MIB:.1f} | {r['kl']:.3f} | {r['perplexity']:.2f} | "
          f"{r['uniform_gptq_ppl_at_size']:.2f} | {r['ppl_ratio_vs_uniform_gptq']:.3f} | "
          f"{r['ppl_ratio_vs_best_uniform_gptq']:.3f} |{last}")
    arc = folder / "arc_easy.csv"
    if arc.is_file():
        a = pd.read_csv(arc)
        w("")
        w("ARC-Easy, all validation items, 0-shot `acc`, Δ paired with the original on the same items:\n")
        w("| plan | size (MiB) | perplexity | ARC-Easy | Δ vs original |")
        w("|---|---:|---:|---:|---:|")
        for _, r in a.iterrows():
            size = "" if pd.isna(r.get("size")) else f"{r['size'] / MIB:.1f}"
            ppl = "" if pd.isna(r.get("perplexity")) else f"{r['perplexity']:.2f}"
            d = "—" if r["plan"] == "original" else f"{r['arc_easy_delta']:+.3f} ± {r['arc_easy_delta_stderr']:.3f}"
            w(f"| {r['plan']} | {size} | {ppl} | {r['arc_easy']:.3f} ± {r['arc_easy_stderr']:.3f} | {d} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(markdown(*sys.argv[1:]))
