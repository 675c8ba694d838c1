"""The ``squeezeray`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from squeezeray._errors import SqueezerayError

DEFAULT_OBJECTIVES = "size,perplexity,kl,latency"


def _quiet_env() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="smollm2 (default, embedded), a local HF folder, a .gguf file or a hub id")
    p.add_argument("--calib-seqs", type=int, default=32, help="calibration sequences (default 32)")
    p.add_argument("--calib-len", type=int, default=256, help="tokens per calibration sequence (default 256)")
    p.add_argument("--eval-tokens", type=int, default=4096, help="held-out tokens for perplexity (default 4096)")
    p.add_argument("--seed", type=int, default=0, help="calibration sampling seed (default 0)")


def _data_config(args: argparse.Namespace):  # noqa: ANN202
    from squeezeray.workbench import DataConfig

    return DataConfig(
        calib_seqs=args.calib_seqs, calib_len=args.calib_len, eval_tokens=args.eval_tokens, seed=args.seed
    )


def _read_plan(text: str, layers: dict[str, tuple[int, int]]):  # noqa: ANN202
    from squeezeray.spaces import CompressionPlan

    if text.endswith(".json") or Path(text).is_file():
        return CompressionPlan.load(text)
    return CompressionPlan.uniform(text, layers)


def _fmt(value: float, unit: str) -> str:
    if unit == "bytes":
        return f"{value / 2**20:.2f} MiB"
    if unit == "nats/token":
        return f"{value:.4f}"
    return f"{value:.2f} {unit}" if unit == "ms" else f"{value:.3f}"


def cmd_compress(args: argparse.Namespace) -> int:
    from squeezeray.workbench import Workbench

    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    from squeezeray.objectives import OBJECTIVES

    for o in objectives:
        OBJECTIVES.get(o)  # fail before loading the model
    data = _data_config(args)
    if not (args.plan.endswith(".json") or Path(args.plan).is_file()):
        from squeezeray.spaces import parse_steps

        parse_steps(args.plan)  # a bad preset fails before the model loads
    elif not Path(args.plan).is_file():
        raise SqueezerayError(f"plan file {args.plan!r} does not exist")
    print(f"loading model {args.model or 'smollm2'} ...", file=sys.stderr)
    bench = Workbench.load(args.model, data, progress=not args.no_progress)
    plan = _read_plan(args.plan, bench.layers)
    plan.check(bench.layers)
    print(f"plan {plan.name or args.plan}: {len(plan.layers)} of {len(bench.layers)} layers", file=sys.stderr)
    base = bench.evaluate(bench.original, objectives)
    candidate, reports = bench.compress(plan)
    comp = bench.evaluate(candidate, objectives)
    rows = []
    print(f"\n{'objective':<12} {'original':>16} {'compressed':>16} {'ratio':>8}  how")
    for name in objectives:
        b, c = base[name], comp[name]
        ratio = c.value / b.value if b.value else float("nan")
        print(f"{name:<12} {_fmt(b.value, b.unit):>16} {_fmt(c.value, c.unit):>16} {ratio:>8.3f}  {c.provenance.value}: {c.where}")
        rows.append({"objective": name, "original": b.to_dict(), "compressed": c.to_dict(), "ratio": ratio})
    if args.save_plan:
        plan.save(args.save_plan)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "model": bench.loaded.source.ref,
                    "plan": plan.to_dict(),
                    "objectives": rows,
                    "layers": [r.__dict__ for r in reports],
                },
                indent=1,
            )
        )
    return 0


def _weights(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    out = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise SqueezerayError(f"--weights: {part!r} is not name=number") from None
        if not sep:
            raise SqueezerayError(f"--weights: {part!r} is not name=number")
    return out


def cmd_search(args: argparse.Namespace) -> int:
    import pandas as pd

    from squeezeray.search import SearchConfig
    from squeezeray.search import run_search
    from squeezeray.search import select_from
    from squeezeray.spaces import load_space

    load_space(args.space)  # fail on a bad space before the model loads
    constraints: dict[str, float] = {}
    if args.max_accuracy_drop is not None:
        constraints["max_accuracy_drop"] = args.max_accuracy_drop
    if args.max_latency_ms is not None:
        constraints["max_latency_ms"] = args.max_latency_ms
    if args.max_size_mb is not None:
        constraints["max_size_bytes"] = args.max_size_mb * 2**20
    if args.max_energy_j is not None:
        constraints["max_energy_j"] = args.max_energy_j
    cfg = SearchConfig(
        model=args.model, hardware=args.hardware, space=args.space,
        objectives=tuple(o.strip() for o in args.objectives.split(",") if o.strip()),
        final_objectives=tuple(o.strip() for o in args.final_objectives.split(",") if o.strip()),
        n_trials=args.trials, sampler=args.sampler, seed=args.seed,
        max_size_bytes=constraints.get("max_size_bytes"), rerank=args.rerank, data=_data_config(args),
        workdir=Path(args.workdir), study_name=args.study_name, storage=args.storage,
        allow=tuple(a.strip() for a in (args.allow or "").split(",") if a.strip()),
    )
    weights = _weights(args.weights)
    print(f"loading model {args.model or 'smollm2'} ...", file=sys.stderr)
    result = run_search(cfg, resume=args.resume, progress=not args.no_progress)
    for line in result.rule_notes:
        print(line)
    result = select_from(result, constraints, weights)
    folder = Path(args.workdir) / result.study.study_name
    folder.mkdir(parents=True, exist_ok=True)
    front = result.front.sort_values("size")
    front.to_csv(folder / "front.csv", index=False)
    result.trials.to_csv(folder / "trials.csv", index=False)
    plan = result.plan()
    plan.save(folder / "selected_plan.json")
    if args.save_plan:
        plan.save(args.save_plan)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_colwidth", 70):
        base = {k: round(v, 4) for k, v in result.baseline.items()}
        print(f"\noriginal: {base}")
        print(front.drop(columns=["plan"]).to_string(index=False))
    print(f"\nselected trial {result.selected}: {result.selection_reason}")
    print(f"plan: {folder / 'selected_plan.json'}   front: {folder / 'front.csv'}   study: {cfg.storage_url()}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from squeezeray.techniques import TECHNIQUES

    print("techniques:", ", ".join(TECHNIQUES.names()))
    print("preset grammar: step[+step...], step = technique[-token...]; tokens:")
    print("  w<bits>[g<group>]  g<group>  asym|sym  s<percent>  <n>:<m>  rows|heads  r<rank>  res  a<alpha>  noact  noclip")
    print("examples: rtn-w8  gptq-w4g128  awq-w3g128-asym  nf4-g64  fp8  w8a8-a0.5  wanda-2:4  sparsegpt-s50")
    print("          magnitude-s25-rows  wanda-2:4+gptq-w4g128  rtn-w3g128+svd-r32-res  svd-r128")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="squeezeray", description="Automated compression search for LLMs")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("compress", help="apply a plan (preset or JSON file) and compare objectives with the original")
    p.add_argument("--plan", required=True, help="a preset such as gptq-w4g128 (see 'squeezeray presets') or a plan JSON file")
    p.add_argument("--objectives", default=DEFAULT_OBJECTIVES, help=f"comma-separated (default {DEFAULT_OBJECTIVES})")
    p.add_argument("--save-plan", default=None, help="write the plan as JSON here")
    p.add_argument("--json", default=None, help="write the results as JSON here")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_data_args(p)
    p.set_defaults(fn=cmd_compress)
    p = sub.add_parser("search", help="search per-layer plans (Optuna, multi-objective) and select one")
    p.add_argument("--space", default="weights-int", help="weights-int (default), prune+quant, full, or a YAML file")
    p.add_argument("--hardware", default="host", help="hardware profile name or YAML file (default host)")
    p.add_argument("--objectives", default="size,kl", help="search-stage objectives (default size,kl)")
    p.add_argument("--final-objectives", default="size,perplexity,kl,latency", help="re-measured on the front")
    p.add_argument("--trials", type=int, default=40, help="trials to finish, baselines included (default 40)")
    p.add_argument("--sampler", default="nsga2", help="nsga2 (default), tpe, random, gp")
    p.add_argument("--rerank", type=int, default=6, help="trials re-measured on the final objectives (default 6)")
    p.add_argument("--max-accuracy-drop", type=float, default=None, help="e.g. 0.1: perplexity at most 10%% worse")
    p.add_argument("--max-latency-ms", type=float, default=None)
    p.add_argument("--max-size-mb", type=float, default=None, help="also told to the sampler as a constraint")
    p.add_argument("--max-energy-j", type=float, default=None)
    p.add_argument("--weights", default=None, help="selection weights, e.g. size=1,perplexity=2,latency=0.5")
    p.add_argument("--allow", default=None, help="expert rules to lift, comma-separated")
    p.add_argument("--workdir", default="runs", help="study database, layer cache and results (default runs/)")
    p.add_argument("--study-name", default=None)
    p.add_argument("--storage", default=None, help="RDB URL (default SQLite in the workdir; PostgreSQL works)")
    p.add_argument("--resume", action="store_true", help="continue a study; trials in flight when it stopped are re-run")
    p.add_argument("--save-plan", default=None, help="also write the selected plan here")
    p.add_argument("--no-progress", action="store_true")
    _add_data_args(p)
    p.set_defaults(fn=cmd_search)
    p = sub.add_parser("presets", help="list techniques and the preset grammar")
    p.set_defaults(fn=cmd_presets)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_env()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args))
    except SqueezerayError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
