"""The distillation loop: train the planned layers' surviving weights towards the original's outputs."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from squeezeray._device import model_device
from squeezeray._offload import refuse_offloaded
from squeezeray.recovery._config import DistillConfig
from squeezeray.recovery._loss import distill_loss


@dataclasses.dataclass(frozen=True)
class DistillReport:
    """What a distillation run did.

    Attributes:
        steps: Optimizer steps taken.
        tokens: Tokens seen (steps x batch x sequence length).
        trained_params: Number of trainable weights (pruned positions included, they stay zero).
        seconds: Wall time.
        first_kl, last_kl: KL term (at the config's temperature) of the first and last steps.
        first_ce, last_ce: Cross-entropy of the first and last steps.
    """

    steps: int
    tokens: int
    trained_params: int
    seconds: float
    first_kl: float
    last_kl: float
    first_ce: float
    last_ce: float

    def to_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


def distill(
    student: nn.Module,
    teacher: nn.Module,
    tokens: torch.Tensor,
    config: DistillConfig,
    trainable: Mapping[str, torch.Tensor | None],
    *,
    progress: bool = False,
) -> DistillReport:
    """Train ``student``'s named linear layers in place; every other parameter stays frozen.

    Args:
        student: The partly compressed model (its trainable layers are plain ``nn.Linear``).
        teacher: The original model (only run forward, under ``no_grad``).
        tokens: (n_seqs, seq_len) int64 calibration ids.
        config: Steps, learning rate, temperature, loss weights, batch size, seed.
        trainable: Module name -> keep-mask of its weight (True = kept), or None when dense.
            Masked weights are zero before and after every step.
        progress: Show a progress bar over steps.
    """
    if tokens.ndim != 2 or tokens.shape[1] < 2:
        raise ValueError(f"distill tokens must be (n_seqs, seq_len >= 2), got {tuple(tokens.shape)}")
    refuse_offloaded(student, "distillation (kd)")  # its gradients would meet the host copies of the weights
    modules = dict(student.named_modules())
    flags = {n: p.requires_grad for n, p in student.named_parameters()}
    for p in student.parameters():
        p.requires_grad_(False)
    weights: list[tuple[nn.Parameter, torch.Tensor | None]] = []
    for name, mask in trainable.items():
        lin = modules.get(name)
        if not isinstance(lin, nn.Linear):
            raise ValueError(f"distill: {name!r} is not an nn.Linear in the student")
        lin.weight.requires_grad_(True)
        m = None if mask is None else mask.to(lin.weight.dtype)
        if m is not None:
            with torch.no_grad():
                lin.weight.mul_(m)
        weights.append((lin.weight, m))
    optimizer = torch.optim.AdamW([w for w, _ in weights], lr=config.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(config.seed)
    teacher_mode, student_mode = teacher.training, student.training
    device = model_device(student)
    teacher.eval()
    student.eval()  # no dropout: the recovery must be deterministic for a seed
    parts: list[dict[str, float]] = []
    t0 = time.perf_counter()
    try:
        for _ in tqdm(range(config.steps), desc="distilling", unit="step", disable=not progress, leave=False):
            idx = torch.randint(0, tokens.shape[0], (config.batch_seqs,), generator=gen)
            ids = tokens[idx].to(device)  # drawn on the host; the models run where their weights are
            with torch.no_grad():
                t_logits = teacher(input_ids=ids, use_cache=False).logits
            s_logits = student(input_ids=ids, use_cache=False).logits
            loss, p = distill_loss(
                s_logits[:, :-1], t_logits[:, :-1], ids[:, 1:], temperature=config.temperature, alpha=config.alpha
            )
            if not torch.isfinite(loss):
                raise FloatingPointError(f"distillation loss became {float(loss)} at step {len(parts) + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                for w, m in weights:
                    if m is not None:
                        w.mul_(m)
            parts.append(p)
    finally:
        for n, p in student.named_parameters():
            p.requires_grad_(flags.get(n, True))
            p.grad = None
        teacher.train(teacher_mode)
        student.train(student_mode)
    return DistillReport(
        steps=len(parts),
        tokens=len(parts) * config.batch_seqs * int(tokens.shape[1]),
        trained_params=sum(w.numel() for w, _ in weights),
        seconds=time.perf_counter() - t0,
        first_kl=parts[0]["kl"],
        last_kl=parts[-1]["kl"],
        first_ce=parts[0]["ce"],
        last_ce=parts[-1]["ce"],
    )
