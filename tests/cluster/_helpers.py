"""Picklable pieces the cluster tests ship to Ray workers (imported there through PYTHONPATH)."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from pathlib import Path

from squeezeray.search._ray_workers import LayerFn
from squeezeray.search._ray_workers import default_worker_evaluate
from squeezeray.spaces import CompressionPlan
from squeezeray.workbench import Workbench


@dataclasses.dataclass(frozen=True)
class SlowEvaluate:
    """The default evaluation, after leaving ``<marker_dir>/<node ip>-<plan name>`` and sleeping ``seconds``."""

    marker_dir: str
    seconds: float

    def __call__(self, bench: Workbench, layer_fn: LayerFn, plan: CompressionPlan, objectives: Sequence[str]):  # noqa: ANN204
        import ray

        Path(self.marker_dir, f"{ray.util.get_node_ip_address()}-{plan.name}").touch()
        time.sleep(self.seconds)
        return default_worker_evaluate(bench, layer_fn, plan, objectives)


@dataclasses.dataclass(frozen=True)
class PoisonEvaluate:
    """Kills the worker process whenever it is handed the plan named ``poison``."""

    poison: str

    def __call__(self, bench: Workbench, layer_fn: LayerFn, plan: CompressionPlan, objectives: Sequence[str]):  # noqa: ANN204
        if plan.name == self.poison:
            os._exit(17)
        return default_worker_evaluate(bench, layer_fn, plan, objectives)


@dataclasses.dataclass(frozen=True)
class SavedTinyBench:
    """Builds the tiny workbench from its pickled model (well under a second; random initialisation takes several)."""

    tokenizer_dir: str
    model_path: str

    def __call__(self) -> Workbench:
        import torch
        import transformers

        from squeezeray.models import LoadedModel
        from squeezeray.models import ModelSource
        from tests._tiny import TINY_DATA

        tok = transformers.AutoTokenizer.from_pretrained(self.tokenizer_dir)
        model = torch.load(self.model_path, weights_only=False)
        return Workbench(LoadedModel(model, tok, ModelSource("tiny-llama", self.tokenizer_dir, None)), TINY_DATA)
