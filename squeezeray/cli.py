"""The ``squeezeray`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from squeezeray._cli_args import build_parser as _build_parser
from squeezeray._errors import SqueezerayError



def _quiet_env() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def _data_config(args: argparse.Namespace):  # noqa: ANN202
    """The data options as a DataConfig; every source is read and split here, before any model loads."""
    from squeezeray.data import DataConfig
    from squeezeray.data import split_data

    data = DataConfig(
        calib_seqs=args.calib_seqs, calib_len=args.calib_len, eval_tokens=args.eval_tokens, seed=args.seed,
        **({"calib_data": tuple(args.calib_data)} if args.calib_data else {}),
        **({"proxy_data": tuple(args.proxy_data)} if args.proxy_data else {}),
        **({"eval_data": args.eval_data} if args.eval_data else {}),
    )
    split_data(data)
    return data


def _data_flags_untouched(args: argparse.Namespace) -> bool:
    """True when no data option differs from its default (a study's recorded data then applies)."""
    from squeezeray.data import DataConfig

    d = DataConfig()
    sizes = all(getattr(args, k) == getattr(d, k) for k in ("calib_seqs", "calib_len", "eval_tokens", "seed"))
    return sizes and args.calib_data is None and args.proxy_data is None and args.eval_data is None


def _print_data_notes(notes: Sequence[str]) -> None:
    for line in notes:
        print(f"data: {line}", file=sys.stderr)


def _read_plan(text: str, bench, head_steps: str | None):  # noqa: ANN001, ANN202
    """A plan file as it is, or a preset on every layer but the output head, which takes ``head_steps``
    (the tied token table when tied; None: it stays dense)."""
    from squeezeray.spaces import CompressionPlan

    if text.endswith(".json") or Path(text).is_file():
        if head_steps is not None:
            raise SqueezerayError(f"--head {head_steps!r}: a plan file says what the head gets; --head goes with a preset")
        return CompressionPlan.load(text)
    return bench.uniform(text, head=head_steps)


def _fmt(value: float, unit: str) -> str:
    if unit == "bytes":
        return f"{value / 2**20:.2f} MiB"
    if unit == "nats/token":
        return f"{value:.4f}"
    return f"{value:.2f} {unit}" if unit == "ms" else f"{value:.3f}"


def cmd_compress(args: argparse.Namespace) -> int:
    from squeezeray.workbench import Workbench

    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    from squeezeray._offload import TIMING_REFUSAL
    from squeezeray.objectives import objective_class
    from squeezeray.objectives._registry import refuse_timed

    for o in objectives:
        objective_class(o)  # fail before loading the model
    if args.offload:
        refuse_timed(objectives, field="--objectives", reason=TIMING_REFUSAL)
    data = _data_config(args)
    if not (args.plan.endswith(".json") or Path(args.plan).is_file()):
        from squeezeray.spaces import parse_preset
        from squeezeray.spaces import parse_steps

        parse_preset(args.plan)  # a bad preset fails before the model loads
        if args.head is not None:
            parse_steps(args.head)
    elif not Path(args.plan).is_file():
        raise SqueezerayError(f"plan file {args.plan!r} does not exist")
    from squeezeray._device import resolve_device

    device = resolve_device(args.device, field="--device")  # before the model loads
    print(f"loading model {args.model or 'smollm2'} on {device} ...", file=sys.stderr)
    bench = Workbench.load(args.model, data, progress=not args.no_progress, dtype=args.dtype or "auto",
                           device=str(device), offload=args.offload)
    _print_data_notes(bench.data_notes)
    plan = _read_plan(args.plan, bench, args.head)
    plan.check(bench.layers)
    print(f"plan {plan.name or args.plan}: {len(plan.layers)} of {len(bench.layers)} layers", file=sys.stderr)
    base = bench.evaluate(bench.original, objectives)
    candidate, reports = bench.compress(plan)
    for r in reports:
        for note in r.notes:  # a step that did other than asked says so
            print(f"note: layer {r.name}: {note}", file=sys.stderr)
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


def _ray_executor(args: argparse.Namespace):  # noqa: ANN202
    """The Ray executor the cluster flags ask for, or None (in-process) without ``--ray``."""
    if args.ray is None:
        for flag, value in (("--workers", args.workers), ("--gpus-per-trial", args.gpus_per_trial),
                            ("--memory-per-trial", args.memory_per_trial), ("--cpus-per-trial", args.cpus_per_trial),
                            ("--max-retries", args.max_retries)):
            if value is not None:
                raise SqueezerayError(f"{flag}={value}: only applies with --ray local|auto|ADDRESS")
        if args.no_worker_disk_cache:
            raise SqueezerayError("--no-worker-disk-cache: only applies with --ray local|auto|ADDRESS")
        return None
    from squeezeray.search import RayConfig
    from squeezeray.search import RayExecutor

    memory = None
    if args.memory_per_trial is not None:
        if args.memory_per_trial <= 0:
            raise SqueezerayError(f"--memory-per-trial={args.memory_per_trial}: must be a positive number of GiB")
        memory = int(args.memory_per_trial * 2**30)
    config = RayConfig(
        address=args.ray, workers=args.workers,
        cpus_per_trial=1.0 if args.cpus_per_trial is None else args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial, memory_per_trial=memory,
        max_retries=2 if args.max_retries is None else args.max_retries, disk_cache=not args.no_worker_disk_cache,
    )
    config.resolved_auth_mode()  # RAY_AUTH_MODE must be set: say so before the model loads
    return RayExecutor(config)


def _evo_config(args: argparse.Namespace):  # noqa: ANN202
    from squeezeray.search import EvoConfig

    given = (("bits_min", args.bits_min), ("bits_max", args.bits_max), ("sensitivity_len", args.sensitivity_len),
             ("screen", args.evo_screen), ("max_predicted_latency_ms", args.max_predicted_latency_ms))
    return EvoConfig(**{k: v for k, v in given if v is not None})


def _final_objectives(args: argparse.Namespace) -> tuple[str, ...]:
    """``--final-objectives`` plus ``accuracy:<task>[@<limit>]`` for each ``--final-task``."""
    names = [o.strip() for o in args.final_objectives.split(",") if o.strip()]
    if args.final_limit is not None and not args.final_task:
        raise SqueezerayError(f"--final-limit {args.final_limit}: give the task with --final-task")
    if args.final_limit is not None and args.final_limit < 1:
        raise SqueezerayError(f"--final-limit {args.final_limit}: must be a positive number of items")
    from squeezeray.evaluation import resolve_task

    for task in (t.strip() for t in (args.final_task or "").split(",") if t.strip()):
        resolve_task(task)  # an unknown task or a bad labelled file fails before the model loads
        names.append(f"accuracy:{task}" + ("" if args.final_limit is None else f"@{args.final_limit}"))
    return tuple(names)


def cmd_search(args: argparse.Namespace) -> int:
    import pandas as pd

    from squeezeray.search import SearchConfig
    from squeezeray.search import run_search
    from squeezeray.search import select_from
    from squeezeray.spaces import load_space
    from squeezeray.ui import write_report

    load_space(args.space)  # fail on a bad space before the model loads
    from squeezeray._device import resolve_device

    device = resolve_device(args.device, field="--device")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress bar says what Optuna's INFO lines would
    constraints = _constraints(args)
    cfg = SearchConfig(
        model=args.model, dtype=args.dtype or "auto", device=args.device, offload=args.offload, hardware=args.hardware,
        space=args.space,
        objectives=tuple(o.strip() for o in args.objectives.split(",") if o.strip()),
        final_objectives=_final_objectives(args),
        n_trials=args.trials, sampler=args.sampler, seed=args.seed,
        max_size_bytes=constraints.get("max_size_bytes"), rerank=args.rerank, data=_data_config(args),
        workdir=Path(args.workdir), study_name=args.study_name, storage=args.storage,
        allow=tuple(a.strip() for a in (args.allow or "").split(",") if a.strip()),
        evo=_evo_config(args), memory_limit_gib=args.memory_limit,
    )
    weights = _weights(args.weights)
    executor = _ray_executor(args)  # before the model loads: bad cluster flags fail fast
    print(f"loading model {args.model or 'smollm2'} on {device} ...", file=sys.stderr)
    result = run_search(cfg, resume=args.resume, progress=not args.no_progress, executor=executor)
    _print_data_notes(result.data_notes)
    for line in result.rule_notes:
        print(line)
    result = select_from(result, constraints, weights)
    folder = Path(args.workdir) / result.study.study_name
    folder.mkdir(parents=True, exist_ok=True)
    front = result.front.sort_values("size")
    front.to_csv(folder / "front.csv", index=False)
    result.trials.to_csv(folder / "trials.csv", index=False)
    if result.sensitivity is not None:
        result.sensitivity.to_csv(folder / "sensitivity.csv", index=False)
        result.solver_front.to_csv(folder / "solver_front.csv", index=False)
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
    print(f"report: {write_report(result, folder / 'report.html')}  (open it in a browser; squeezeray ui {folder} to export)")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from squeezeray.techniques import TECHNIQUES

    print("techniques:", ", ".join(TECHNIQUES.names()))
    print("preset grammar: step[+step...], step = technique[-token...]; tokens:")
    print("  w<bits>[g<group>]  g<group>  asym|sym  s<percent>  <n>:<m>  rows|heads  r<rank>  res  a<alpha>  noact  noclip  clip")
    print("examples: rtn-w8  gptq-w4g128  gptq-w3g128-asym-clip  awq-w3g128-asym  nf4-g64  fp8  w8a8-a0.5  wanda-2:4  sparsegpt-s50")
    print("          magnitude-s25-rows  wanda-2:4+gptq-w4g128  rtn-w3g128+svd-r32-res  svd-r128")
    return 0


# ------------------------------------------------------- ui, export, approve, registry
def _study_and_bench(args: argparse.Namespace):  # noqa: ANN202
    """The study named on the command line and a workbench with the model and data it was searched on."""
    from squeezeray.export import StudyRecord
    from squeezeray.export import open_study
    from squeezeray.workbench import Workbench

    record = StudyRecord.read(open_study(args.study, args.study_name))
    data = _data_config(args)
    recorded = record.header.data
    if isinstance(recorded, dict) and _data_flags_untouched(args):
        from squeezeray.data import DataConfig

        data = DataConfig.from_dict(recorded["config"])  # the data the search used, unless flags say otherwise
    model = args.model or record.header.model
    dtype = args.dtype or record.header.dtype  # the dtype the search ran in
    from squeezeray._device import resolve_device

    device = resolve_device(args.device, field="--device")
    print(f"loading model {model} ({dtype}) on {device} ...", file=sys.stderr)
    bench = Workbench.load(model, data, dtype=dtype, device=str(device), offload=args.offload)
    _print_data_notes(bench.data_notes)
    record.check_bench(bench)
    return record, bench


def _export_config(args: argparse.Namespace):  # noqa: ANN202
    from squeezeray.export import ExportConfig

    serving = tuple(f.strip() for f in (args.serving or "").split(",") if f.strip())
    return ExportConfig(dense_dtype=args.dense_dtype, registry=Path(args.registry), serving=serving)


def _constraints(args: argparse.Namespace) -> dict[str, float]:
    """The selector's limits from the --max-* options a command has (sizes given in MiB, kept in bytes)."""
    given = {"max_accuracy_drop": getattr(args, "max_accuracy_drop", None),
             "max_latency_ms": getattr(args, "max_latency_ms", None),
             "max_size_bytes": None if getattr(args, "max_size_mb", None) is None else args.max_size_mb * 2**20,
             "max_energy_j": getattr(args, "max_energy_j", None)}
    return {k: float(v) for k, v in given.items() if v is not None}


def cmd_ui(args: argparse.Namespace) -> int:
    from squeezeray.search import LayerCache
    from squeezeray.ui import FrontApp
    from squeezeray.ui import make_server

    record, bench = _study_and_bench(args)
    layer_fn = None
    if args.cache:
        layer_fn = LayerCache(args.cache).layer_fn(bench.loaded.fingerprint(), bench.calibration.digest)
    app = FrontApp(record, bench, args.out_dir, export_config=_export_config(args), layer_fn=layer_fn)
    server = make_server(app, port=args.port)
    host, port = server.server_address[:2]
    print(f"squeezeray ui: study {record.name} at http://{host}:{port}/  (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from squeezeray.export import export_trial
    from squeezeray.export import summarize
    from squeezeray.search import LayerCache

    record, bench = _study_and_bench(args)
    limits = _constraints(args)
    if args.trial is None:
        sel = record.select(limits)  # nothing to export without a pick: the selector's error says why
        trial = int(sel.trial)
        print(f"trial {trial}: {sel.reason}", file=sys.stderr)
    else:
        trial = args.trial
        try:
            sel = record.select(limits)
        except SqueezerayError:  # the trial asked for is exported, without a selection
            sel = None
    picked = sel is not None and sel.trial == trial
    out = Path(args.out) if args.out else Path(args.out_dir) / f"{record.name}-t{trial}"
    layer_fn = None
    if args.cache:
        layer_fn = LayerCache(args.cache).layer_fn(bench.loaded.fingerprint(), bench.calibration.digest)
    exported = export_trial(
        record, trial, bench, out, config=_export_config(args), selection=sel.reason if picked else "",
        constraints=limits if picked else None, layer_fn=layer_fn,
    )
    print(summarize(exported.card))
    print(f"written: {exported.path}  (card: {exported.path / 'card.md'}; registry: {args.registry})")
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    from squeezeray.export import approve

    card = approve(args.path, by=args.by, note=args.note, registry=Path(args.registry))
    last = card.approvals[-1]
    print(f"approved {card.name} by {last.by} at {last.at} ({len(card.approvals)} approval(s); weights {last.model_sha256[:16]}...)")
    return 0


def cmd_registry(args: argparse.Namespace) -> int:
    from squeezeray.export import read_registry
    from squeezeray.export import verify_folder

    entries = read_registry(args.registry)
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], indent=1))
        return 0
    if not entries:
        print(f"no exported models in {args.registry}")
        return 0
    print(f"{'name':<32} {'created':<25} {'source':<14} {'study#trial':<30} {'size':>10} {'ppl':>10} {'approvals':>9}  status")
    for e in entries:
        status = "ok"
        if not Path(e.path).is_dir():
            status = "missing"
        elif args.verify:
            try:
                verify_folder(e.path)
            except SqueezerayError as err:
                status = f"FAILS CHECK: {err}"
        size = e.objectives.get("size")
        ppl = e.objectives.get("perplexity")
        found = f"{e.study}#{e.trial}" if e.study else "-"
        print(
            f"{e.name:<32} {e.created:<25} {e.source:<14} {found:<30} "
            f"{'-' if size is None else f'{size / 2**20:.2f} MiB':>10} {'-' if ppl is None else f'{ppl:.4g}':>10} "
            f"{e.approvals:>9}  {status}"
        )
        print(f"  {e.path}" + (f"  (last approved by {e.last_approved_by})" if e.last_approved_by else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    return _build_parser({'compress': cmd_compress, 'search': cmd_search, 'presets': cmd_presets, 'ui': cmd_ui, 'export': cmd_export, 'approve': cmd_approve, 'registry': cmd_registry})


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
