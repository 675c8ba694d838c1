"""Kernel benchmark on real LLM layer shapes: time, speed-up over the dense baseline, achieved bandwidth.

Shapes are Llama-3-8B's linear layers, given as in_features x out_features: 4096x4096 (attention),
4096x14336 (MLP up/gate), 14336x4096 (MLP down); batches of 1, 16 and 64 rows.

Each compressed path is timed as the layer runs it (:class:`~squeezeray.kernels.PreparedLinear` built
from a real :class:`~squeezeray.compress.CompressedLinear`), against ``F.linear`` on the dense weight:
float16 on a GPU (the issue's baseline), float32 on a CPU (float16 matmul is emulated on CPUs and
would flatter every compressed path). Timing: warm-up, repeats, median; CUDA events with an L2 flush
on a GPU, ``perf_counter`` with a last-level-cache flush on a CPU; kernel and baseline calls alternate
(``time_interleaved``) so that load from other processes affects both alike. Achieved bandwidth is
(bytes of the weights the kernel reads + activations in and out) / time, as a fraction of this
device's measured copy bandwidth (``squeezeray.hwprofiles._host.measure_copy_bandwidth``).

Usage::

    python benchmarks/kernel_bench.py --device cuda --out benchmarks/results/kernel_bench_cuda.csv
    python benchmarks/kernel_bench.py --device cpu --threads 1 --out benchmarks/results/kernel_bench_cpu.csv
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from squeezeray.compress import CompressedLinear
from squeezeray.compress import compress_layer
from squeezeray.hwprofiles._host import measure_copy_bandwidth
from squeezeray.kernels import KernelPath
from squeezeray.kernels import error_bound
from squeezeray.kernels import get_kernel
from squeezeray.kernels import relative_error
from squeezeray.kernels import time_interleaved
from squeezeray._device import host_description
from squeezeray.spaces._plan import parse_steps
from squeezeray.techniques import LayerStats

SHAPES = ((4096, 4096), (4096, 14336), (14336, 4096))  # (in, out)
BATCHES = (1, 16, 64)


@dataclasses.dataclass(frozen=True)
class Case:
    """One compressed path to benchmark: a label, the plan preset that makes the layer, the path."""

    label: str
    preset: str
    path: KernelPath


CPU_CASES = (
    Case("W4A16 g128 (int4pack, bf16)", "rtn-w4g128", KernelPath.CPU_INT4),
    Case("W8A16 per-row (int8pack, bf16)", "rtn-w8", KernelPath.CPU_INT8_WEIGHT),
    Case("W8A8 dynamic (_int_mm)", "w8a8-a0.5", KernelPath.CPU_INT8_DYNAMIC),
)
GPU_CASES = (
    Case("W4A16 g128", "rtn-w4g128", KernelPath.TRITON_DEQUANT),
    Case("W3A16 g128", "rtn-w3g128", KernelPath.TRITON_DEQUANT),
    Case("W2A16 g128", "rtn-w2g128", KernelPath.TRITON_DEQUANT),
    Case("W8A16 per-row", "rtn-w8", KernelPath.TRITON_DEQUANT),
    Case("2:4 sparse fp16", "magnitude-2:4", KernelPath.TRITON_SPARSE24),
    Case("W8A8 int8", "w8a8-a0.5", KernelPath.TRITON_W8A8),
)


def make_layer(preset: str, k: int, n: int, seed: int = 0) -> tuple[torch.nn.Linear, CompressedLinear]:
    g = torch.Generator().manual_seed(seed)
    lin = torch.nn.Linear(k, n, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n, k, generator=g) / k**0.5)
    stats = LayerStats.synthetic(torch.randn(256, k, generator=g), with_hessian=False)
    return lin, compress_layer("bench", lin, parse_steps(preset), stats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)))
    ap.add_argument("--shapes", default=",".join(f"{k}x{n}" for k, n in SHAPES), help="in x out, comma separated")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    gpu = dev.type == "cuda"
    cases = GPU_CASES if gpu else CPU_CASES
    base_dtype = torch.float16 if gpu else torch.float32
    device_name = f"{torch.cuda.get_device_name(dev)}" if gpu else host_description()
    copy_bw = measure_copy_bandwidth(dev, nbytes=(1024 if gpu else 256) * 2**20)
    print(f"device: {device_name}; measured copy bandwidth {copy_bw / 1e9:.1f} GB/s; baseline: dense {base_dtype}", flush=True)

    rows = []
    batches = [int(b) for b in args.batches.split(",")]
    for shape in args.shapes.split(","):
        k, n = (int(v) for v in shape.split("x"))
        base_w = None
        for case in cases:
            t0 = time.time()
            lin, layer = make_layer(case.preset, k, n)
            if base_w is None:
                base_w = lin.weight.detach().to(dev, base_dtype)
            layer = layer.to(dev)
            kernel = get_kernel(case.path)
            why = kernel.unsupported(layer.fmt, dev)
            if why:
                print(f"  {case.label}: skipped ({why})")
                continue
            prepared = kernel.prepare(layer)
            # bytes the kernel reads: its repacked copy (CPU paths) or the stored buffers (Triton paths)
            stored = sum(b.numel() * b.element_size() for b in layer.buffers(recurse=False))
            wbytes = prepared.runtime_nbytes or stored
            act_dtype = torch.float16 if gpu else torch.float32
            xc = torch.randn(2, k)
            err = relative_error(layer.cpu().forward_reference(xc), layer.to(dev).forward_with(xc.to(dev), prepared).cpu())
            for m in batches:
                x = torch.randn(m, k, device=dev).to(act_dtype)
                xs = x  # the smoothing division is outside the timed kernel (identical for every path)
                xb = x.to(base_dtype)
                both = time_interleaved(
                    {"kernel": lambda: prepared(xs), "baseline": lambda: F.linear(xb, base_w)},
                    device=dev, warmup=2, repeats=args.repeats, flush=True,
                )
                st, sb = both["kernel"], both["baseline"]
                act_bytes = m * (k + n) * x.element_size()
                bw = (wbytes + act_bytes) / st.median_s
                base_bw = (base_w.numel() * base_w.element_size() + act_bytes) / sb.median_s
                rows.append({
                    "device": device_name, "shape_in_x_out": f"{k}x{n}", "batch": m, "kernel": case.label,
                    "path": case.path.value, "time_ms": round(st.median_ms, 4), "baseline_ms": round(sb.median_ms, 4),
                    "speedup": round(sb.median_s / st.median_s, 3), "weight_bytes": wbytes,
                    "achieved_gbs": round(bw / 1e9, 2), "bw_fraction": round(bw / copy_bw, 3),
                    "baseline_bw_fraction": round(base_bw / copy_bw, 3), "rel_error": f"{err:.2e}",
                    "error_bound": f"{error_bound(kernel.compute_dtype):.1e}", "method": st.method,
                    "baseline": f"dense {str(base_dtype).removeprefix('torch.')}",
                })
                r = rows[-1]
                print(f"  {k}x{n} M={m:<3} {case.label:32s} {r['time_ms']:9.3f} ms  x{r['speedup']:<6} "
                      f"{r['achieved_gbs']:7.1f} GB/s ({100 * r['bw_fraction']:.0f}% of copy)  err {r['rel_error']}", flush=True)
            print(f"  ({case.label}: {time.time() - t0:.0f} s)", flush=True)
    if args.out and rows:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        print(f"wrote {out}")
    print()
    print(f"Device: {device_name}. Baseline: dense {base_dtype} F.linear. Copy bandwidth {copy_bw / 1e9:.1f} GB/s.")
    print("| shape (in x out) | batch | kernel | ms | baseline ms | speed-up | GB/s | of copy bw |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['shape_in_x_out']} | {r['batch']} | {r['kernel']} | {r['time_ms']:.3f} | {r['baseline_ms']:.3f} | "
              f"{r['speedup']:.2f} | {r['achieved_gbs']:.1f} | {100 * r['bw_fraction']:.0f}% |")


if __name__ == "__main__":
    main()
