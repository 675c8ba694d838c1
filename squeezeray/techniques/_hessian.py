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

    The caller hands ``hessian`` over: it is damped in place (only its diagonal changes, and each retry
    rewrites it from a saved copy, so the damped matrix equals ``H + frac * mean * I`` bit for bit), and the
    inverse and its factor are computed in the lower factor's storage, so two (in, in) matrices are alive at
    a time: for a layer with 8192 inputs 1 GiB in float64 where a damped copy, an identity and three
    factors took 2.5 GiB.

    Args:
        hessian: (in, in) symmetric positive semi-definite with a positive diagonal
            (dead columns already fixed), in the dtype the caller solves in; overwritten (the caller must
            not read it afterwards).
        damp: Fraction of the mean diagonal added to the diagonal.
        retries: Attempts before giving up.
        technique: Named in the error.

    Returns:
        ``(U, used)``: (in, in) upper-triangular, same dtype as ``hessian``; ``used`` the damping fraction the
        factorisation succeeded with (``damp`` unless it had to be raised: callers record that).
    """
    mean_diag = float(torch.diagonal(hessian).mean())  # over the strided view: a contiguous copy sums in another order
    diag = torch.diagonal(hessian).clone()  # (in,) the undamped diagonal
    info = torch.empty((), dtype=torch.int32, device=hessian.device)
    frac = damp
    for _ in range(retries):
        torch.diagonal(hessian).copy_(diag + frac * mean_diag)
        factor, info0 = torch.linalg.cholesky_ex(hessian)  # (in, in) lower
        if int(info0) == 0:
            # The inverse and its upper factor overwrite the lower factor (LAPACK potri/potrf work in place).
            torch.cholesky_inverse(factor, out=factor)
            torch.linalg.cholesky_ex(factor, upper=True, out=(factor, info))
            if int(info) == 0:
                return factor, frac
        frac *= 10.0
    raise ValueError(
        f"{technique}: the Hessian is not positive definite even with damping {frac / 10:g}; increase damp"
    )


def note_damping(state: LayerState, technique: str, asked: float, used: float) -> None:
    """Record on the layer that the Hessian damping had to be raised (nothing when it was not)."""
    if used != asked:
        state.notes.append(f"{technique}: Hessian damping raised from {asked:g} to {used:g} (not positive definite "
                           f"at {asked:g})")
