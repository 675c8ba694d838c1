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
