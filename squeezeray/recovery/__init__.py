"""Model-level recovery steps that run between per-layer steps: short knowledge distillation."""

from squeezeray.recovery._config import DistillConfig
from squeezeray.recovery._config import parse_distill
from squeezeray.recovery._loss import distill_loss
from squeezeray.recovery._train import DistillReport
from squeezeray.recovery._train import distill

__all__ = ["DistillConfig", "DistillReport", "distill", "distill_loss", "parse_distill"]
