"""The search engine: Optuna study, compressed-layer cache, staged evaluation, selection."""

from squeezeray.search._allocate import Allocation
from squeezeray.search._allocate import AllocationProblem
from squeezeray.search._allocate import allocate
from squeezeray.search._allocate import solve_front
from squeezeray.search._api import search
from squeezeray.search._api import select_from
from squeezeray.search._api import select_front
from squeezeray.search._cache import LayerCache
from squeezeray.search._cache import layer_key
from squeezeray.search._config import Resume
from squeezeray.search._config import SamplerName
from squeezeray.search._config import SearchConfig
from squeezeray.search._driver import SearchResult
from squeezeray.search._driver import run_search
from squeezeray.search._evo import EvoConfig
from squeezeray.search._evo import EvoSampler
from squeezeray.search._executor import BaseExecutor
from squeezeray.search._executor import Evaluation
from squeezeray.search._executor import InProcessExecutor
from squeezeray.search._pareto import pareto_mask
from squeezeray.search._ray import RayExecutor
from squeezeray.search._ray_config import ExecutorStats
from squeezeray.search._ray_config import RayAuthMode
from squeezeray.search._ray_config import RayConfig
from squeezeray.search._ray_config import WorkerStats
from squeezeray.search._result import TrialOutcome
from squeezeray.search._result import TrialResult
from squeezeray.search._rule_apply import RuleOutcome
from squeezeray.search._rule_apply import apply_rules
from squeezeray.search._rule_apply import explain
from squeezeray.search._rules import default_rules
from squeezeray.search._select import Constraints
from squeezeray.search._select import Selection
from squeezeray.search._select import select

__all__ = [
    "Allocation",
    "AllocationProblem",
    "allocate",
    "EvoConfig",
    "EvoSampler",
    "solve_front",
    "BaseExecutor",
    "Constraints",
    "Evaluation",
    "ExecutorStats",
    "InProcessExecutor",
    "RayAuthMode",
    "RayConfig",
    "RayExecutor",
    "Resume",
    "WorkerStats",
    "LayerCache",
    "RuleOutcome",
    "Selection",
    "apply_rules",
    "default_rules",
    "explain",
    "select",
    "SamplerName",
    "SearchConfig",
    "SearchResult",
    "TrialOutcome",
    "TrialResult",
    "layer_key",
    "pareto_mask",
    "run_search",
    "search",
    "select_from",
    "select_front",
]


class _CallableSearchModule(__import__("types").ModuleType):
    """Makes ``squeezeray.search(...)`` call :func:`search` while ``squeezeray.search.X`` stays the package."""

    def __call__(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN204
        return search(*args, **kwargs)


__import__("sys").modules[__name__].__class__ = _CallableSearchModule
