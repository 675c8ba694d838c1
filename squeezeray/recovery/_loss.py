"""The distillation loss (pure function)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distill_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float,
    alpha: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Temperature-scaled KL to the teacher plus next-token cross-entropy.

    Args:
        student_logits: (..., vocab) logits of the model being trained.
        teacher_logits: (..., vocab) logits of the original model at the same positions.
        labels: (...) int64 target token of each position.
        temperature: T; the KL term compares softmax(logits / T) and is scaled by T^2 so
            its gradient does not shrink as T grows (Hinton et al. 2015).
        alpha: Weight of the KL term; ``1 - alpha`` weighs the cross-entropy.

    Returns:
        The scalar loss (differentiable w.r.t. ``student_logits``) and its parts as floats
        (``kl`` at temperature T, ``ce``).
    """
    vocab = student_logits.shape[-1]
    s = student_logits.reshape(-1, vocab).float()
    t = teacher_logits.reshape(-1, vocab).float().detach()
    log_ps = F.log_softmax(s / temperature, dim=-1)
    log_pt = F.log_softmax(t / temperature, dim=-1)
    kl = F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True)
    ce = F.cross_entropy(s, labels.reshape(-1))
    loss = alpha * temperature**2 * kl + (1 - alpha) * ce
    return loss, {"kl": float(kl.detach()), "ce": float(ce.detach())}
