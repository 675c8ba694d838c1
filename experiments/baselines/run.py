"""Baselines: perplexity, size and KL of uniform plans on the embedded model.

Usage: python experiments/baselines/run.py [--config experiments/baselines/config.yaml] [--out results.csv]
Writes results.csv beside this file and prints a markdown table for the README.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from squeezeray.objectives.latency import host_description
from squeezeray.search import LayerCache
from squeezeray.spaces import CompressionPlan
from squeezeray.workbench import DataConfig
from squeezeray.workbench import Workbench

HERE = Path(__file__).resolve().parent


def _table(rows: list[dict], base: dict, out: str) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    df["size_mib"] = df["size"] / 2**20
    df["size_ratio"] = df["size"] / df["size"].iloc[0]
    df["machine"] = f"{host_description()}; {platform.node()}"
    df["eval"] = base["perplexity"].where
    df.to_csv(out, index=False)
    return df


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=str(HERE / "config.yaml"))
    parser.add_argument("--out", default=str(HERE / "results.csv"))
    parser.add_argument("--only", default=None, help="comma-separated subset of the config's plans")
    parser.add_argument("--cache", default=str(HERE.parent / ".work" / "cache"), help="compressed-layer cache folder")
    args = parser.parse_args()
    cfg = yaml.safe_load(Path(args.config).read_text())
    plans = cfg["plans"] if not args.only else args.only.split(",")
    bench = Workbench.load(cfg.get("model"), DataConfig(**cfg["data"]), progress=False)
    # shared with experiments/search_vs_uniform: the same (layer, steps, calibration) is compressed once
    bench.cache_dir = Path(args.cache)
    layer_fn = LayerCache(args.cache).layer_fn(bench.loaded.fingerprint(), bench.calibration.digest)
    objectives = ["size", "perplexity", "kl"]
    rows = []
    base = bench.evaluate(bench.original, objectives)
    rows.append({"plan": "original (fp16 storage)", **{k: m.value for k, m in base.items()}, "compress_s": 0.0})
    print(rows[-1], flush=True)
    for preset in plans:
        t0 = time.perf_counter()
        candidate, _ = bench.compress(CompressionPlan.uniform(preset, bench.layers), layer_fn=layer_fn)
        seconds = time.perf_counter() - t0
        r = bench.evaluate(candidate, objectives)
        rows.append({"plan": preset, **{k: m.value for k, m in r.items()}, "compress_s": seconds})
        print(rows[-1], flush=True)
        del candidate
        _table(rows, base, args.out)  # keep what is done if the run is stopped
    df = _table(rows, base, args.out)

    print()
    print("| plan | size (MiB) | size ratio | perplexity | KL (nats/token) | compress time (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for _, row in df.iterrows():
        print(f"| {row['plan']} | {row['size_mib']:.1f} | {row['size_ratio']:.3f} | {row['perplexity']:.2f} | "
              f"{row['kl']:.4f} | {row['compress_s']:.0f} |")
    print(f"\nmachine: {df['machine'].iloc[0]}; torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
