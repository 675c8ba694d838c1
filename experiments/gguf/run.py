"""Mixed-precision GGUF from the search against llama.cpp's own quantizer, all measured by llama.cpp.

Run from the repository root: ``python experiments/gguf/run.py``. Writes ``results.csv`` (one row per file:
method, file bytes, bits per weight, llama.cpp perplexity and its excess over F16's, squeezeray's own
perplexity of the same weights where squeezeray made them, prefill and decode tokens/s), ``summary.csv``
and ``front.png``; ``machine.txt`` says where and how long.

Bits per weight here = 8 x the GGUF file's bytes / the model's parameters (the tied token table counted once).
"""

from __future__ import annotations

import argparse
import ctypes
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from experiments._common import WORK  # noqa: E402
from experiments._common import load_bench  # noqa: E402
from experiments._common import machine  # noqa: E402
from experiments._common import pyplot  # noqa: E402
from experiments._common import searched_front  # noqa: E402
from experiments._common import spread  # noqa: E402
from squeezeray.export._gguf import write_gguf  # noqa: E402
from squeezeray.objectives import Direction  # noqa: E402
from squeezeray.objectives.llamacpp import default_threads  # noqa: E402
from squeezeray.objectives.llamacpp import llamacpp_perplexity  # noqa: E402
from squeezeray.objectives.llamacpp import llamacpp_speed  # noqa: E402
from squeezeray.objectives.llamacpp import with_repacking  # noqa: E402
from squeezeray.search import LayerCache  # noqa: E402
from squeezeray.search import SearchConfig  # noqa: E402
from squeezeray.search import run_search  # noqa: E402
from squeezeray.search._pareto import pareto_mask  # noqa: E402
from squeezeray.search._evo import EvoConfig  # noqa: E402

HERE = Path(__file__).resolve().parent
OUT = WORK / "gguf"


def llamacpp_quantize(src: Path, dst: Path, ftype: str, threads: int) -> None:
    """llama.cpp's own quantizer (``llama_model_quantize``) from the F16 file."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}")
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize {ftype} returned {rc}")


def on_llamacpp(fn, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
    """``fn`` in its own process with llama.cpp's weight repacking on (its default), rerun with it off when that
    crashes (it does on some CPUs for some types); returns the result and whether repacking was on."""
    value, crash = with_repacking(fn, *args, **kwargs)
    return value, crash is None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replot", action="store_true", help="redraw front.png and summary.csv from results.csv")
    args = ap.parse_args()
    cfg = yaml.safe_load((HERE / "config.yaml").read_text())
    if args.replot:
        df = pd.read_csv(HERE / "results.csv")
        summarize(df, cfg["band"])
        plot(df, cfg["band"])
        return
    t_start = time.time()
    OUT.mkdir(parents=True, exist_ok=True)
    threads = default_threads()
    bench, _ = load_bench(cfg)
    src = bench.loaded.source
    source_gguf = Path(src.path) / src.gguf_file
    n_params = sum(p.numel() for p in bench.original.parameters())
    sp = cfg["speed"]
    prompt = bench.held_out.ids.reshape(-1)[: sp["prompt"]].tolist()
    rows: list[dict] = []

    def score(method: str, plan: str, path: Path, ours: float | None = None) -> None:
        t0 = time.perf_counter()
        (ppl, _), _ = on_llamacpp(llamacpp_perplexity, path, bench.held_out.ids, n_threads=threads)
        speed, repack = on_llamacpp(llamacpp_speed, path, prompt, new_tokens=sp["new_tokens"], n_threads=threads,
                                    warmup=sp["warmup"], repeats=sp["repeats"])
        size = path.stat().st_size
        rows.append({"method": method, "plan": plan, "file_bytes": size, "bpw": 8 * size / n_params,
                     "llamacpp_ppl": ppl, "squeezeray_ppl": ours, **speed, "weight_repacking": repack,
                     "seconds": time.perf_counter() - t0})
        print(rows[-1], flush=True)
        pd.DataFrame(rows).to_csv(HERE / "results.csv", index=False)

    f16 = OUT / "f16.gguf"
    write_gguf(bench.original, bench.original, source_gguf, f16)
    score("f16", "original", f16, bench.evaluate(bench.original, ["perplexity"])["perplexity"].value)
    for t in cfg["llamacpp_types"]:
        path = OUT / f"llamacpp-{t}.gguf"
        llamacpp_quantize(f16, path, t, threads)
        score("llama.cpp", t, path)
        path.unlink()

    workdir = OUT / "runs"
    layer_fn = LayerCache(workdir / "cache").layer_fn(bench.loaded.fingerprint(), bench.calibration.digest)

    def ours(method: str, plan) -> None:  # noqa: ANN001
        candidate, _ = bench.compress(plan, layer_fn=layer_fn)
        path = OUT / "candidate.gguf"
        write_gguf(candidate, bench.original, source_gguf, path)
        score(method, plan.name, path, bench.evaluate(candidate, ["perplexity"])["perplexity"].value)
        del candidate

    for preset in cfg["uniform"]:
        ours("squeezeray uniform", bench.uniform(preset, head="rtn-q8_0"))
    s = cfg["search"]
    t0 = time.perf_counter()
    result = run_search(SearchConfig(
        model=cfg["model"], space=s["space"], sampler="evo", n_trials=s["trials"], seed=s["seed"],
        objectives=("size", "kl"), final_objectives=("size", "kl"), rerank=1, data=bench.data, workdir=workdir,
        study_name=f"gguf-evo-s{s['seed']}", evo=EvoConfig(bits_min=s["bits"][0], bits_max=s["bits"][1]),
        allow=tuple(s.get("allow", ())),
    ), bench=bench, resume="auto", progress=False)
    search_s = time.perf_counter() - t0
    for t in spread(searched_front(result.study), s["front"]):
        ours("squeezeray searched", result.plan(t.number))
    df = pd.DataFrame(rows)
    df.to_csv(HERE / "results.csv", index=False)
    (HERE / "machine.txt").write_text(
        f"{machine()}; llama.cpp with {threads} threads\nwall time {time.time() - t_start:.0f} s, search "
        f"{search_s:.0f} s (one process, nothing else running)\n")
    summarize(df, cfg["band"])
    plot(df, cfg["band"])


SOURCE_FORMAT = "Q4_1"  # the embedded SmolLM2 ships as Q4_1: re-quantizing to Q4_1 recovers its own block grid


def _frontier_at(theirs: pd.DataFrame, bpw: float) -> float:
    """llama.cpp's best excess at ``bpw``: its Pareto front (bits, excess), linear between neighbours; above its
    largest front file, that file's (nothing bigger does better); below its smallest file, none (nan)."""
    keep = theirs[pareto_mask(theirs[["bpw", "excess"]].to_numpy(), [Direction.MINIMIZE] * 2)].sort_values("bpw")
    if bpw < keep["bpw"].min():
        return float("nan")
    return float(np.interp(bpw, keep["bpw"], keep["excess"]))  # np.interp holds the last value beyond the end


def summarize(df: pd.DataFrame, band: list[float]) -> None:
    """Excess perplexity over F16 (both by llama.cpp), ours against llama.cpp's own at equal bits per weight,
    with and without llama.cpp's Q4_1 (which only re-finds the grid the source file was quantized on)."""
    base = float(df[df["method"] == "f16"]["llamacpp_ppl"].iloc[0])
    f16_decode = float(df[df["method"] == "f16"]["decode_tokens_per_s"].iloc[0])
    df = df.assign(excess=df["llamacpp_ppl"] - base)
    theirs = df[df["method"] == "llama.cpp"]
    fresh = theirs[theirs["plan"] != SOURCE_FORMAT]
    rows = []
    for _, r in df[df["method"].str.startswith("squeezeray")].iterrows():
        at, at_fresh = _frontier_at(theirs, r["bpw"]), _frontier_at(fresh, r["bpw"])
        rows.append({**r.to_dict(), "llamacpp_excess_at_bpw": at, "excess_reduction": 1 - r["excess"] / at,
                     "llamacpp_excess_at_bpw_without_q4_1": at_fresh,
                     "excess_reduction_without_q4_1": 1 - r["excess"] / at_fresh,
                     "in_band": band[0] <= r["bpw"] <= band[1], "decode_vs_f16": r["decode_tokens_per_s"] / f16_decode})
    s = pd.DataFrame(rows)
    smallest = theirs.loc[theirs["bpw"].idxmin()]
    below = s["bpw"] < smallest["bpw"]  # no llama.cpp file is this small: compared with its smallest (larger) one
    s["smaller_than_every_llamacpp_file"] = below
    s["excess_reduction_vs_smallest_llamacpp_file"] = np.where(below, 1 - s["excess"] / (smallest["llamacpp_ppl"] - base),
                                                               np.nan)
    s.to_csv(HERE / "summary.csv", index=False)
    by_file(df.assign(excess=df["llamacpp_ppl"] - base), band)
    inb = s[s["in_band"]]
    with pd.option_context("display.width", 220):
        print(s[["method", "plan", "bpw", "llamacpp_ppl", "squeezeray_ppl", "excess", "llamacpp_excess_at_bpw",
                 "excess_reduction", "excess_reduction_without_q4_1", "decode_vs_f16"]].round(3).to_string(index=False))
    comparable, small = inb[~inb["smaller_than_every_llamacpp_file"]], inb[inb["smaller_than_every_llamacpp_file"]]
    if len(comparable):
        print(f"mean excess reduction over {band[0]}-{band[1]} bpw ({len(comparable)} plans with a llama.cpp file at "
              f"or below their size): {comparable['excess_reduction'].mean():.3f} against all of llama.cpp's types, "
              f"{comparable['excess_reduction_without_q4_1'].mean():.3f} without {SOURCE_FORMAT}")
    if len(small):
        print(f"{len(small)} plans in the band are smaller than every llama.cpp file; against its smallest "
              f"({smallest['plan']}, {smallest['bpw']:.3f} bpw): excess reduction "
              f"{', '.join(f'{v:.3f}' for v in small['excess_reduction_vs_smallest_llamacpp_file'])}")


def by_file(df: pd.DataFrame, band: list[float]) -> None:
    """The other side of "equal file size": for each of llama.cpp's files in the band, squeezeray's best plan
    (uniform or searched) that is no larger, and how much less excess it has (``by_llamacpp_file.csv``)."""
    ours = df[df["method"].str.startswith("squeezeray")]
    rows = []
    for _, f in df[(df["method"] == "llama.cpp") & df["bpw"].between(*band)].sort_values("bpw").iterrows():
        fits = ours[ours["bpw"] <= f["bpw"]]
        if not len(fits):
            continue
        best = fits.loc[fits["excess"].idxmin()]
        rows.append({"llamacpp_type": f["plan"], "llamacpp_bpw": f["bpw"], "llamacpp_excess": f["excess"],
                     "squeezeray_plan": f"{best['method']}: {best['plan']}", "squeezeray_bpw": best["bpw"],
                     "squeezeray_excess": best["excess"], "excess_reduction": 1 - best["excess"] / f["excess"]})
    t = pd.DataFrame(rows)
    t.to_csv(HERE / "by_llamacpp_file.csv", index=False)
    with pd.option_context("display.width", 220):
        print(t.round(3).to_string(index=False))
    fresh = t[t["llamacpp_type"] != SOURCE_FORMAT]
    print(f"each llama.cpp file in {band[0]}-{band[1]} bpw against squeezeray's best plan no larger: mean excess "
          f"reduction {t['excess_reduction'].mean():.3f} over {len(t)} files, {fresh['excess_reduction'].mean():.3f} "
          f"without {SOURCE_FORMAT}; smallest reduction {t['excess_reduction'].min():.3f}")


def plot(df: pd.DataFrame, band: list[float]) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    base = float(df[df["method"] == "f16"]["llamacpp_ppl"].iloc[0])
    for method, style in (("llama.cpp", "s--"), ("squeezeray uniform", "^-"), ("squeezeray searched", "o-")):
        sub = df[df["method"] == method].sort_values("bpw")
        ax.plot(sub["bpw"], sub["llamacpp_ppl"] - base, style, label=method)
        if method == "llama.cpp":
            for _, r in sub.iterrows():
                ax.annotate(r["plan"], (r["bpw"], r["llamacpp_ppl"] - base), fontsize=7)
    ax.axvspan(band[0], band[1], color="gray", alpha=0.1)
    ax.set_yscale("log")
    ax.set_xlabel("bits per weight (8 x GGUF file bytes / parameters)")
    ax.set_ylabel("excess perplexity over F16 (llama.cpp, held-out)")
    ax.set_title("SmolLM2-135M GGUF, measured by llama.cpp")
    ax.legend()
    fig.tight_layout()
    fig.savefig(HERE / "front.png", dpi=120)


if __name__ == "__main__":
    main()
