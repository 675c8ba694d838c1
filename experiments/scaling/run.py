"""Peak resident memory and wall time of each pipeline stage, by model size (issue 14).

For every model in ``config.yaml``, one fresh process runs the stages in order and measures each on its
own: the process's peak resident set (``VmHWM``, reset at the start of each stage through
``/proc/self/clear_refs``, so a stage's peak includes what earlier stages left resident, the model above
all) and its wall time.

    load         the weights, in the checkpoint's dtype (bfloat16 for every model here)
    calibrate    block-wise statistics with Hessians, written to disk (cold: the folder is removed first)
    gptq-all     GPTQ on every compressible layer but the head, through an empty layer cache, swapped in
    reference    the original's log-probabilities on the KL proxy (once per search)
    kl-eval      one candidate (the same plan, layers from the cache's memory) swapped in and its KL measured
    cached-trial a trial of a later search: a new layer cache over the same folder (layers read from disk),
                 size and KL measured

Run from the repository root: ``python experiments/scaling/run.py`` (all models; ``--only NAME`` for one).
Writes ``results.csv`` and ``results.png`` here. The random-weight models are written once under
``experiments/.work/scaling`` and reused.

``--search NAME`` runs the CLI's short search (``config.yaml``'s ``search.args``) on model NAME in a child
process and appends its wall time, peak resident memory (the child's ``ru_maxrss``) and outcome to
``search.csv`` (earlier runs' rows stay, each with its commit); the run's stdout, front, trials and resident
memory every 2 s (total, anonymous and file-backed) are kept as ``search_<NAME>_stdout.txt`` / ``_front.csv`` /
``_trials.csv`` / ``_rss.csv``.
"""

from __future__ import annotations

import argparse
import csv
import resource
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))
WORK = ROOT / "experiments" / ".work" / "scaling"
GIB = 1 << 30
FIELDS = ["model", "commit", "params", "real_weights", "dtype", "stage", "wall_s", "peak_rss_gib", "estimated_gib",
          "model_bf16_gib", "goal_gib", "within_goal", "note"]
ESTIMATE_STAGE = {"load": "load", "calibrate": "calibration", "gptq-all": "compression", "reference": "evaluation",
                  "kl-eval": "evaluation", "cached-trial": "evaluation"}  # which Footprint stage bounds each


def model_folder(spec: dict[str, Any]) -> str:
    """The model reference: an embedded name, or a random-initialised bfloat16 folder of ``spec['shape']``."""
    if "model" in spec:
        return str(spec["model"])
    folder = WORK / spec["name"]
    if (folder / "config.json").is_file():
        return str(folder)
    import torch
    import transformers

    from squeezeray.models import load_tokenizer

    cfg = transformers.LlamaConfig(**spec["shape"], max_position_embeddings=4096, dtype="bfloat16")
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    model = transformers.LlamaForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    tmp = folder.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    load_tokenizer("smollm2").save_pretrained(tmp)  # token ids stay below 49152; the vocab is the shape's own
    tmp.rename(folder)
    return str(folder)


CODE_PATHS = ("squeezeray", "pyproject.toml", "experiments/scaling/run.py", "experiments/scaling/config.yaml")
"""What a run executes: changes anywhere else (this folder's own results) do not make it 'dirty'."""


def head_commit() -> str:
    """The commit the runs measure (short hash; ``+dirty`` when :data:`CODE_PATHS` have uncommitted changes)."""
    git = ["git", "-C", str(ROOT)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS],
                           capture_output=True, text=True).stdout
    return commit + ("+dirty" if dirty.strip() else "")


def run_one(spec: dict[str, Any], cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """The stages of one model, in this process (a fresh one per model)."""
    from squeezeray._memory import peak_resident_bytes
    from squeezeray._memory import reset_peak
    from squeezeray.models import dtype_name
    from squeezeray.search import LayerCache
    from squeezeray.workbench import DataConfig
    from squeezeray.workbench import Workbench

    ref = model_folder(spec)
    commit = head_commit()
    rows: list[dict[str, Any]] = []
    cache_dir = WORK / "cache" / spec["name"]
    shutil.rmtree(cache_dir, ignore_errors=True)

    def stage(name: str, fn: Any) -> Any:
        if not reset_peak():
            raise SystemExit("this needs Linux's /proc/self/clear_refs to measure each stage's peak")
        t0 = time.perf_counter()
        out = fn()
        rows.append({"stage": name, "wall_s": round(time.perf_counter() - t0, 2),
                     "peak_rss_gib": round(peak_resident_bytes() / GIB, 3)})
        print(f"  {spec['name']:14s} {name:13s} {rows[-1]['wall_s']:8.1f} s  {rows[-1]['peak_rss_gib']:6.2f} GiB",
              flush=True)
        return out

    bench = stage("load", lambda: Workbench.load(ref, DataConfig.from_dict(cfg["data"])))
    bench.cache_dir = cache_dir
    stage("calibrate", lambda: bench.stats(hessian=True))
    plan = bench.uniform(cfg["plan"])
    first = {"fn": LayerCache(cache_dir / "layers").layer_fn(bench.loaded.fingerprint(), bench.calibration.digest)}

    def gptq_all() -> None:
        with bench.swapped(plan, layer_fn=first["fn"]):
            pass

    stage("gptq-all", gptq_all)
    stage("reference", lambda: bench.evaluate(bench.original, ["kl"]))
    kl = stage("kl-eval", lambda: bench.evaluate_plan(plan, ["kl"], layer_fn=first["fn"]))["kl"].value
    first.clear()  # a later search has its own cache: this one's layers leave memory
    later = LayerCache(cache_dir / "layers").layer_fn(bench.loaded.fingerprint(), bench.calibration.digest)
    stage("cached-trial", lambda: bench.evaluate_plan(plan, ["size", "kl"], layer_fn=later))
    params = sum(p.numel() for p in bench.original.parameters())
    bf16 = params * 2 / GIB
    goal = 1.5 * bf16 + 2
    real = "model" in spec
    for r in rows:
        r.update(model=spec["name"], commit=commit, params=params, real_weights=real, dtype=dtype_name(bench.loaded.dtype),
                 model_bf16_gib=round(bf16, 3), goal_gib=round(goal, 3), within_goal=r["peak_rss_gib"] <= goal,
                 note=(f"KL {kl:.4f}" if real else "random weights: KL meaningless") if r["stage"] == "kl-eval" else "")
    shutil.rmtree(cache_dir, ignore_errors=True)  # statistics with Hessians: GBs per model
    return rows


def add_estimates(rows: list[dict[str, Any]], cfg: dict[str, Any]) -> None:
    """Each row's ``estimated_gib``: what squeezeray's pre-load estimate (``search/_footprint.py``) says of its stage."""
    from squeezeray.data import DataConfig
    from squeezeray.models import resolve_dtype
    from squeezeray.models import resolve_model
    from squeezeray.search._footprint import estimate
    from squeezeray.search._footprint import model_shape

    data = DataConfig.from_dict(cfg["data"])
    for spec in cfg["models"]:
        src = resolve_model(model_folder(spec))
        # the stages' plans solve in float32 (GPTQ's default)
        stages = estimate(model_shape(src), resolve_dtype("auto", src), data, float64_solve=False).stages
        for r in rows:
            if r["model"] == spec["name"]:
                r["estimated_gib"] = round(stages[ESTIMATE_STAGE[r["stage"]]] / GIB, 3)


def plot(rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = list(dict.fromkeys(r["stage"] for r in rows))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for s in stages:
        sel = sorted((r for r in rows if r["stage"] == s), key=lambda r: r["params"])
        x = [r["params"] / 1e9 for r in sel]
        ax1.plot(x, [r["peak_rss_gib"] for r in sel], "o-", label=s)
        ax2.loglog(x, [max(r["wall_s"], 0.01) for r in sel], "o-", label=s)
    goal = sorted({(r["params"], r["goal_gib"]) for r in rows})
    ax1.plot([p / 1e9 for p, _ in goal], [g for _, g in goal], "k--", label="goal: 1.5x bf16 + 2 GiB")
    ax1.set(xlabel="parameters (B)", ylabel="peak resident memory (GiB)", title="memory by stage")
    ax2.set(xlabel="parameters (B)", ylabel="wall time (s)", title="time by stage (log-log)")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(HERE / "results.png", dpi=120)


def table(rows: list[dict[str, Any]]) -> str:
    """The README's table: one row per model, each stage's wall time and peak (GiB), and the goal."""
    stages = list(ESTIMATE_STAGE)
    lines = ["| model | params | weights | goal GiB | " + " | ".join(stages) + " |",
             "|---|---:|---|---:|" + "---:|" * len(stages)]
    for name in sorted(dict.fromkeys(r["model"] for r in rows), key=lambda n: next(float(r["params"]) for r in rows
                                                                                   if r["model"] == n)):
        sel = {r["stage"]: r for r in rows if r["model"] == name}
        first = next(iter(sel.values()))
        cells = []
        for s in stages:
            r = sel[s]
            mark = "" if str(r["within_goal"]) == "True" else " ✗"
            cells.append(f"{float(r['wall_s']):.0f} s / {float(r['peak_rss_gib']):.2f}{mark}")
        real = "real" if str(first["real_weights"]) == "True" else "random"
        lines.append(f"| {name} | {int(float(first['params'])) / 1e9:.2f}B | {real} | {float(first['goal_gib']):.2f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


SEARCH_FIELDS = ["model", "commit", "params", "real_weights", "args", "rc", "wall_s", "peak_rss_gib", "peak_anon_gib",
                 "model_bf16_gib", "goal_gib", "within_goal", "trials_complete", "trials_failed", "front_plans", "note"]


def _rss_sample(pid: int) -> tuple[float, float, float] | None:
    """A process's resident, anonymous and file-backed resident GiB now (None once it has gone)."""
    from squeezeray._memory import kib_fields

    keys = ("VmRSS", "RssAnon", "RssFile")
    got = kib_fields(f"/proc/{pid}/status", keys)
    if len(got) < len(keys):
        return None
    return tuple(round(got[k] / GIB, 3) for k in keys)  # type: ignore[return-value]


def short_search(spec: dict[str, Any], cfg: dict[str, Any], trials: int | None = None) -> dict[str, Any]:
    """The CLI's short search on one model, in a child process: wall time, peak memory, what it completed
    (``trials``: instead of the config's trial count)."""
    ref = model_folder(spec)
    args = [str(a) for a in cfg["search"]["args"]]
    if trials is not None:
        args[args.index("--trials") + 1] = str(trials)
    workdir = WORK / "search" / spec["name"]
    shutil.rmtree(workdir, ignore_errors=True)
    cmd = [sys.executable, "-m", "squeezeray.cli", "search", "--model", ref, *args, "--workdir", str(workdir),
           "--no-progress"]
    commit = head_commit()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    trace = []  # (seconds, resident, anonymous, file-backed) GiB every 2 s: where in the run the peak lies
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, cwd=ROOT)
        while proc.poll() is None:
            sample = _rss_sample(proc.pid)
            if sample:
                trace.append((round(time.perf_counter() - t0, 1), *sample))
            time.sleep(2)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    wall = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest child so far (Linux: KiB)
    (HERE / f"search_{spec['name']}_stdout.txt").write_text(stdout + ("\n--- stderr (tail)\n" + stderr[-4000:]
                                                                     if proc.returncode else ""))
    with open(HERE / f"search_{spec['name']}_rss.csv", "w", newline="") as f:
        csv.writer(f).writerows([("seconds", "rss_gib", "anon_gib", "file_gib"), *trace])
    runs = sorted(workdir.glob("*/trials.csv"))
    trials = list(csv.DictReader(runs[0].open())) if runs else []
    fronts = sorted(workdir.glob("*/front.csv"))
    front = list(csv.DictReader(fronts[0].open())) if fronts else []
    if fronts:
        shutil.copy(fronts[0], HERE / f"search_{spec['name']}_front.csv")
    if runs:  # each trial's state, outcome and values (the workdir, GBs, is removed below)
        shutil.copy(runs[0], HERE / f"search_{spec['name']}_trials.csv")
    from squeezeray.models import resolve_model
    from squeezeray.search._footprint import model_shape

    params = model_shape(resolve_model(ref)).params
    bf16 = params * 2 / GIB
    goal = 1.5 * bf16 + 2
    peak = peak_kib * 1024 / GIB
    real = "model" in spec
    note = "" if peak_kib > before else "peak not attributable (an earlier child was larger)"
    shutil.rmtree(workdir, ignore_errors=True)  # statistics with Hessians and every compressed layer: GBs
    return {"model": spec["name"], "commit": commit, "params": params, "real_weights": real, "args": " ".join(args),
            "rc": proc.returncode, "wall_s": round(wall, 1), "peak_rss_gib": round(peak, 3),
            "model_bf16_gib": round(bf16, 3), "goal_gib": round(goal, 3), "within_goal": peak <= goal,
            "trials_complete": sum(t["state"] == "COMPLETE" for t in trials),
            "trials_failed": sum(t["state"] != "COMPLETE" or t.get("outcome") not in ("ok", None) for t in trials),
            "peak_anon_gib": max((t[2] for t in trace), default=None),
            "front_plans": len(front), "note": note or ("" if real else "random weights: quality meaningless")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="one model of the config (its name), run in this process; prints JSON rows")
    ap.add_argument("--plot-only", action="store_true", help="re-read results.csv: estimates and plot, no runs")
    ap.add_argument("--table", action="store_true", help="print results.csv as the README's markdown table")
    ap.add_argument("--models", help="comma-separated names to (re)run; the other models' rows are kept")
    ap.add_argument("--search", metavar="NAME", help="the short search on model NAME, appended to search.csv")
    ap.add_argument("--trials", type=int, help="with --search: this many trials instead of the config's")
    args = ap.parse_args()
    cfg = yaml.safe_load((HERE / "config.yaml").read_text())
    if args.search:
        spec = next((m for m in cfg["models"] if m["name"] == args.search), None)
        if spec is None:
            raise SystemExit(f"--search {args.search!r}: not in config.yaml ({', '.join(m['name'] for m in cfg['models'])})")
        row = short_search(spec, cfg, args.trials)
        path = HERE / "search.csv"
        old = list(csv.DictReader(path.open())) if path.is_file() else []  # earlier runs stay, each with its commit
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=SEARCH_FIELDS)
            w.writeheader()
            w.writerows([*old, row])
        print(json.dumps(row))
        return
    if args.only:
        spec = next((m for m in cfg["models"] if m["name"] == args.only), None)
        if spec is None:
            raise SystemExit(f"--only {args.only!r}: not in config.yaml ({', '.join(m['name'] for m in cfg['models'])})")
        print("ROWS " + json.dumps(run_one(spec, cfg)), flush=True)
        return
    out = HERE / "results.csv"
    if args.table:
        print(table(list(csv.DictReader(out.open()))))
        return
    done = list(csv.DictReader(out.open())) if out.is_file() else []
    chosen = [] if args.plot_only else [m for m in cfg["models"]
                                        if not args.models or m["name"] in args.models.split(",")]
    rows: list[dict[str, Any]] = [r for r in done if r["model"] not in {m["name"] for m in chosen}]
    for spec in chosen:
        model_folder(spec)  # write a random-weight folder once, in its own process, before anything is timed
        proc = subprocess.run([sys.executable, __file__, "--only", spec["name"]], capture_output=True, text=True)
        sys.stdout.write("".join(line + "\n" for line in proc.stdout.splitlines() if not line.startswith("ROWS ")))
        found = [line for line in proc.stdout.splitlines() if line.startswith("ROWS ")]
        if proc.returncode or not found:
            print(f"{spec['name']}: failed (rc {proc.returncode})\n{proc.stderr[-3000:]}", flush=True)
            rows += [r for r in done if r["model"] == spec["name"]]  # keep its earlier rows, if any
            continue
        rows += json.loads(found[0][5:])
    add_estimates(rows, cfg)
    order = {m["name"]: i for i, m in enumerate(cfg["models"])}
    rows.sort(key=lambda r: (order.get(r["model"], len(order)), list(ESTIMATE_STAGE).index(r["stage"])))
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    for r in rows:
        for k in ("params", "wall_s", "peak_rss_gib", "goal_gib"):
            r[k] = float(r[k])
    plot(rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
