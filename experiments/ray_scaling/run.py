"""Ray scaling: trials per hour in-process and on 1 and 2 Ray workers, and the Ray path's per-trial overhead.

Usage:
    RAY_AUTH_MODE=disabled python experiments/ray_scaling/run.py [--trials 24] [--model small] [--out results.csv]
    RAY_AUTH_MODE=disabled python experiments/ray_scaling/run.py --trials 16 --model medium --append

Every mode runs the same search (random sampler, same seed and budget, fresh workdir, so the same
plans and the same cold layer cache) on a randomly initialised Llama built once and loaded by every
worker. Ray runs on a private local instance (``--cpus`` CPUs, 256 MiB object store); each worker
reserves one CPU and uses one torch thread, and so does the in-process run, so the per-trial
comparison is like for like. Throughput counts every trial of the search over the time from the
first worker ready (in-process: the first trial asked) to the last trial told, so the one-time model
loading of the workers is reported apart (startup_s); the end-to-end rate includes it.
Writes results.csv beside this file and prints a markdown table for the README.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import optuna  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from squeezeray.models import LoadedModel  # noqa: E402
from squeezeray.models import ModelSource  # noqa: E402
from squeezeray._device import host_description  # noqa: E402
from squeezeray.search import RayConfig  # noqa: E402
from squeezeray.search import RayExecutor  # noqa: E402
from squeezeray.search import SearchConfig  # noqa: E402
from squeezeray.search import run_search  # noqa: E402
from squeezeray.workbench import DataConfig  # noqa: E402
from squeezeray.workbench import Workbench  # noqa: E402

HERE = Path(__file__).resolve().parent
SIZES = {  # hidden, intermediate, layers, heads
    "tiny": (128, 256, 2, 4),
    "small": (256, 688, 4, 4),
    "medium": (512, 1376, 4, 8),
}
DATA = DataConfig(calib_seqs=8, calib_len=128, eval_tokens=256, eval_len=128, proxy_seqs=2)


@dataclasses.dataclass(frozen=True)
class SavedBench:
    """Builds the benchmark workbench from a pickled model (every process gets the same weights)."""

    tokenizer_dir: str
    model_path: str

    def __call__(self) -> Workbench:
        import transformers

        tok = transformers.AutoTokenizer.from_pretrained(self.tokenizer_dir)
        model = torch.load(self.model_path, weights_only=False)
        return Workbench(LoadedModel(model, tok, ModelSource("synthetic-llama", self.tokenizer_dir, None)), DATA)


def build(size: str, folder: Path) -> SavedBench:
    import transformers

    from squeezeray.models import resolve_model

    src = resolve_model(None)
    tok = transformers.AutoTokenizer.from_pretrained(src.path, gguf_file=src.gguf_file)
    tok.save_pretrained(folder / "tokenizer")
    hidden, inter, layers, heads = SIZES[size]
    torch.manual_seed(1234)
    cfg = transformers.LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads // 2, max_position_embeddings=256, tie_word_embeddings=True,
    )
    model = transformers.LlamaForCausalLM(cfg).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    torch.save(model, folder / "model.pt")
    return SavedBench(str(folder / "tokenizer"), str(folder / "model.pt"))


def window_s(study: optuna.Study) -> float:
    """Seconds from the first trial asked to the last one told."""
    trials = [t for t in study.trials if t.datetime_complete is not None]
    first = min(t.datetime_start.timestamp() for t in trials)
    return max(t.datetime_complete.timestamp() for t in trials) - first


def mean_eval_s(study: optuna.Study) -> float:
    walls = [json.loads(t.user_attrs["result"])["wall_s"] for t in study.trials if "result" in t.user_attrs]
    return sum(walls) / len(walls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--model", default="small", choices=sorted(SIZES))
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance (default 2)")
    parser.add_argument("--modes", default="inprocess,ray-1,ray-2")
    parser.add_argument("--out", default=str(HERE / "results.csv"))
    parser.add_argument("--append", action="store_true", help="keep the rows of other models already in --out")
    args = parser.parse_args()
    if "RAY_AUTH_MODE" not in os.environ:
        raise SystemExit("set RAY_AUTH_MODE (disabled for this private local instance)")
    import ray

    root = Path(tempfile.mkdtemp(prefix="ray_scaling-"))
    factory = build(args.model, root)
    bench = factory()
    ray.init(num_cpus=args.cpus, object_store_memory=256 * 2**20, include_dashboard=False, logging_level="WARNING",
             runtime_env={"env_vars": {"RAY_AUTH_MODE": os.environ["RAY_AUTH_MODE"]}})
    rows = []
    try:
        for mode in args.modes.split(","):
            cfg = SearchConfig(space="weights-int", n_trials=args.trials, sampler="random", seed=0, data=DATA,
                               workdir=root / mode, final_objectives=("size", "kl"), rerank=1, study_name="bench")
            bench = factory()  # fresh: no calibration statistics or reference outputs carried over
            row: dict[str, object] = {"mode": mode, "model": args.model, "trials": args.trials}
            t0 = time.perf_counter()
            if mode == "inprocess":
                threads = torch.get_num_threads()
                torch.set_num_threads(1)  # like a worker reserving one CPU
                try:
                    result = run_search(cfg, bench=bench, progress=False)
                finally:
                    torch.set_num_threads(threads)
                workers, stats = 1, None
            else:
                workers = int(mode.split("-")[1])
                executor = RayExecutor(RayConfig(address="auto", workers=workers, cpus_per_trial=1), bench_factory=factory)
                result = run_search(cfg, bench=bench, progress=False, executor=executor)
                stats = executor.stats()
            row["search_s"] = time.perf_counter() - t0
            window = window_s(result.study)  # in-process: all evaluation; Ray: worker startup too
            running = stats.elapsed_s if stats is not None else window  # from the first worker ready
            row.update(workers=workers, trials_per_hour=args.trials / running * 3600,
                       trials_per_hour_end_to_end=args.trials / window * 3600, mean_eval_s=mean_eval_s(result.study))
            if stats is not None:
                row.update(startup_s=stats.startup_s, utilisation=stats.utilisation, ray_overhead_s=stats.overhead_s)
            row["values"] = json.dumps({t.number: [round(v, 9) for v in t.values] for t in result.study.trials})
            rows.append(row)
            print({k: v for k, v in row.items() if k != "values"}, flush=True)
    finally:
        ray.shutdown()
    df = pd.DataFrame(rows)
    base = df[df["mode"] == "inprocess"]
    if not base.empty:
        per_trial = 3600 / float(base["trials_per_hour"].iloc[0])
        df["per_trial_s"] = 3600 / df["trials_per_hour"]
        df["overhead_vs_inprocess_s"] = df["per_trial_s"] - per_trial
        df["same_values_as_inprocess"] = df["values"] == base["values"].iloc[0]
    df["machine"] = f"{host_description()}; {platform.node()}; load average {os.getloadavg()[0]:.1f} at the end"
    df = df.drop(columns=["values"])
    if args.append and Path(args.out).is_file():
        old = pd.read_csv(args.out)
        df = pd.concat([old[old["model"] != args.model], df], ignore_index=True)
    df.to_csv(args.out, index=False)
    print()
    print("| model | mode | workers | trials/h (running) | trials/h (end to end) | mean evaluation (s) | per trial (s) | "
          "overhead vs in-process (s/trial) | Ray dispatch overhead (s/trial) | utilisation | worker startup (s) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for _, r in df.iterrows():
        def f(key: str, fmt: str) -> str:
            v = r.get(key)
            return "-" if v is None or pd.isna(v) else format(v, fmt)

        print(f"| {r['model']} | {r['mode']} | {r['workers']} | {f('trials_per_hour', '.0f')} | {f('trials_per_hour_end_to_end', '.0f')} | "
              f"{f('mean_eval_s', '.2f')} | {f('per_trial_s', '.2f')} | {f('overhead_vs_inprocess_s', '+.2f')} | "
              f"{f('ray_overhead_s', '.3f')} | {f('utilisation', '.0%')} | {f('startup_s', '.1f')} |")
    print(f"\nmachine: {df['machine'].iloc[0]}")


if __name__ == "__main__":
    main()
