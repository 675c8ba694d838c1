"""Shared Hessian algebra of the second-order solvers (GPTQ, SparseGPT)."""

from __future__ import annotations

import torch

from squeezeray.techniques._state import LayerState


def damped_inverse_cholesky(
    hessian: torch.Tensor, damp: float, *, retries: int, technique: str
) -> tuple[torch.Tensor, float]:
    """Upper Cholesky factor ``U`` of ``(H + damp * mean(diag H) * I)^-1`` (``U^T U``), and the damping used.

    If the damped matrix (or its inverse) is not positive definite, the damping is
    multiplied by 10 and the factorisation retried, ``retries`` attempts in all.

    Args:
        hessian: (in, in) symmetric positive semi-definite with a positive diagonal
            (dead columns already fixed), in the dtype the caller solves in.
        damp: Fraction of the mean diagonal added to the diagonal.
        retries: Attempts before giving up.
        technique: Named in the error.

    Returns:
        ``(U, used)``: (in, in) upper-triangular, same dtype as ``hessian``; ``used`` the damping fraction the
        factorisation succeeded with (``damp`` unless it had to be raised: callers record that).
    """
    mean_diag = float(torch.diagonal(hessian).mean())
    eye = torch.eye(hessian.shape[0], dtype=hessian.dtype, device=hessian.device)  # (in, in)
    frac = damp
    for _ in range(retries):
        lower, info = torch.linalg.cholesky_ex(hessian + frac * mean_diag * eye)  # (in, in)
        if int(info) == 0:
            upper, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(lower), upper=True)  # (in, in)
            if int(info) == 0:
                return upper, frac
        frac *= 10.0
    raise ValueError(
        f"{technique}: the Hessian is not positive definite even with damping {frac / 10:g}; increase damp"
    )


def note_damping(state: LayerState, technique: str, asked: float, used: float) -> None:
    """Record on the layer that the Hessian damping had to be raised (nothing when it was not)."""
    if used != asked:
        state.notes.append(f"{technique}: Hessian damping raised from {asked:g} to {used:g} (not positive definite "
                           f"at {asked:g})")
