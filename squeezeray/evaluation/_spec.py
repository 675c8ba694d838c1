"""Task references: a packaged name, a lm-eval YAML file, or a built-in lm-eval task."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from squeezeray._errors import SqueezerayError
from squeezeray.evaluation._catalog import TASKS
from squeezeray.evaluation._catalog import Metric
from squeezeray.evaluation._catalog import PackagedTask
from squeezeray.evaluation._labelled import LABELLED_SUFFIXES
from squeezeray.evaluation._labelled import labelled_task

LM_EVAL_PREFIX = "lm_eval:"


class TaskKind(str, enum.Enum):
    PACKAGED = "packaged"  # built here from data that ships offline
    LABELLED = "labelled"  # a user's JSONL of prompt, choices, answer, made into a local task
    YAML = "yaml"  # a user's lm-eval task file; its data is the file's business
    LM_EVAL = "lm_eval"  # one of lm-eval's own tasks; its data must already be in the HF cache


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """A resolved task reference.

    Attributes:
        ref: What the user passed (``arc_easy``, ``path/to/task.yaml``, ``lm_eval:sciq``).
        kind: Where the task definition comes from.
        name: The lm-eval task name.
        metric: Headline metric.
        perturb_fields: Document fields the robustness perturbations edit (empty: none given).
        key: Content key for caches (name, kind, and the YAML file's hash).
        packaged: The task built here (``kind`` PACKAGED or LABELLED).
        yaml_path: The task file (``kind`` YAML only).
    """

    ref: str
    kind: TaskKind
    name: str
    metric: Metric
    perturb_fields: tuple[str, ...]
    key: str
    packaged: PackagedTask | None = None
    yaml_path: Path | None = None


class _TaskFileLoader(yaml.SafeLoader):
    """Reads lm-eval task files without importing the functions they name."""


_TaskFileLoader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))  # type: ignore[arg-type]


def _read_task_file(path: Path) -> dict[str, Any]:
    try:
        cfg = yaml.load(path.read_text(), Loader=_TaskFileLoader)  # noqa: S506 (a SafeLoader subclass)
    except (OSError, yaml.YAMLError) as err:
        raise SqueezerayError(f"task file {str(path)!r}: cannot be read: {err}") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("task"), str):
        what = "a group; pass one of its tasks" if isinstance(cfg, dict) and "group" in cfg else "no 'task:' name"
        raise SqueezerayError(f"task file {str(path)!r}: {what}")
    return cfg


def _metric(value: Metric | str | None, default: Metric, allowed: Sequence[Metric], ref: str) -> Metric:
    if value is None:
        return default
    try:
        metric = Metric(value)
    except ValueError:
        raise SqueezerayError(
            f"metric={value!r}: unknown; choose from {', '.join(m.value for m in Metric)}"
        ) from None
    if metric not in allowed:
        raise SqueezerayError(f"task {ref!r} reports {', '.join(m.value for m in allowed)}, not metric={metric.value!r}")
    return metric


def resolve_task(
    ref: str,
    *,
    metric: Metric | str | None = None,
    perturb_fields: Sequence[str] | None = None,
) -> TaskSpec:
    """Turn a task reference into a :class:`TaskSpec`, or raise :class:`SqueezerayError`.

    Args:
        ref: A packaged task name (see ``TASKS``), a path to a lm-eval task YAML
            (``*.yaml``/``*.yml``), a labelled JSONL file (prompt, choices, answer per line), or ``lm_eval:<name>`` for a task built into lm-eval
            (its data set must already be in the local Hugging Face cache).
        metric: Headline metric; default the packaged task's, else ``acc``.
        perturb_fields: Document fields the robustness perturbations edit; default the
            packaged task's, else none (robustness then refuses the task).
    """
    fields = tuple(perturb_fields) if perturb_fields is not None else None
    if ref.endswith(LABELLED_SUFFIXES):
        task, digest = labelled_task(ref)
        return TaskSpec(
            ref, TaskKind.LABELLED, task.name, _metric(metric, task.metric, task.metrics, ref),
            fields if fields is not None else task.perturb_fields, f"labelled:{digest[:16]}", packaged=task,
        )
    if ref.endswith((".yaml", ".yml")):
        path = Path(ref).expanduser().resolve()
        if not path.is_file():
            raise SqueezerayError(f"task file {ref!r} does not exist")
        cfg = _read_task_file(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        return TaskSpec(
            ref, TaskKind.YAML, cfg["task"], _metric(metric, Metric.ACC, tuple(Metric), ref), fields or (),
            f"yaml:{cfg['task']}:{digest}", yaml_path=path,
        )
    if ref.startswith(LM_EVAL_PREFIX):
        name = ref[len(LM_EVAL_PREFIX) :]
        if not name:
            raise SqueezerayError(f"task {ref!r}: name the lm-eval task after {LM_EVAL_PREFIX!r}")
        return TaskSpec(
            ref, TaskKind.LM_EVAL, name, _metric(metric, Metric.ACC, tuple(Metric), ref), fields or (), f"lm_eval:{name}"
        )
    task = TASKS.get(ref)
    return TaskSpec(
        ref,
        TaskKind.PACKAGED,
        task.name,
        _metric(metric, task.metric, task.metrics, ref),
        fields if fields is not None else task.perturb_fields,
        f"packaged:{task.name}",
        packaged=task,
    )
