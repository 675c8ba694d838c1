"""Shared Hessian algebra of the second-order solvers (GPTQ, SparseGPT)."""

from __future__ import annotations

import torch

from squeezeray.techniques._state import LayerState

FLIP_CHUNK = 1 << 20
"""Elements swapped at a time by :func:`flip_both_`."""

SUB = 16
"""Columns per sub-block of the solvers' lazy updates inside a block: a sub-block's errors reach the block's later
columns in one matrix product (GPTQ's dynamic groups take the divisor of this and the group size, so a group's
first column starts a sub-block and reads fully updated weights)."""


def flip_both_(m: torch.Tensor) -> None:
    """Reverse a dense matrix's rows and columns in place (``J M J``), :data:`FLIP_CHUNK` elements at a time.

    Row- or column-major (LAPACK's factors are column-major): reversing both axes reverses the storage either way.
    """
    if m.is_contiguous():
        v = m.view(-1)
    elif m.T.is_contiguous():
        v = m.T.view(-1)
    else:
        raise ValueError(f"flip_both_ needs a row- or column-major matrix, got strides {m.stride()}")
    total = v.numel()
    half = total // 2
    for s in range(0, half, FLIP_CHUNK):
        e = min(s + FLIP_CHUNK, half)
        low = v[s:e]
        high = v[total - e : total - s]
        saved = low.clone()
        low.copy_(high.flip(0))
        high.copy_(saved.flip(0))


def damped_unit_cholesky(
    reversed_hessian: torch.Tensor, damp: float, *, retries: int, technique: str
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The upper unit-triangular ``C`` and diagonal ``b`` with ``H + frac * mean(diag H) * I = B B^T`` for
    ``B = C diag(b)``, and the damping ``frac`` used, from the Hessian with its order reversed, ``J H J`` (a caller
    that permutes the Hessian gets the reversal for free).

    ``B = J L J`` for the lower Cholesky factor ``L`` of ``J H J`` (``n^3 / 3`` multiply-adds). ``B^-1`` is the
    upper Cholesky factor of the damped inverse Hessian that GPTQ's and SparseGPT's papers write their updates
    with; the solvers work with ``B`` itself and need no inverse (a blockwise triangular inversion took another
    ``n^3 / 6``: GPTQ's factor of a layer with 8192 inputs 3.85 -> 2.30 s in float32 on a 2-vCPU EPYC VM).

    If the damped matrix is not positive definite, the damping is multiplied by 10 and the factorisation
    retried, ``retries`` attempts in all; each retry rewrites the diagonal from a saved copy, so the damped matrix
    equals ``H + frac * mean * I`` bit for bit (``mean`` summed in the reversed order).

    Args:
        reversed_hessian: (in, in) ``J H J``, symmetric positive semi-definite with a positive diagonal (dead
            columns already fixed), in the dtype the caller solves in; handed over (damped in place, not needed
            afterwards). The factor is a new (in, in) matrix: two alive at a time (0.5 GiB in float32 at 8192
            inputs).
        damp: Fraction of the mean diagonal added to the diagonal.
        retries: Attempts before giving up.
        technique: Named in the error.

    Returns:
        ``(C, b, used)``: (in, in) upper unit-triangular ``C`` (``B`` with column j divided by ``B_jj``, in
        place) and (in,) ``b``, the diagonal of ``B``, both in the Hessian's dtype; ``used`` the damping fraction
        the factorisation succeeded with (``damp`` unless it had to be raised: callers record that).
    """
    h = reversed_hessian if reversed_hessian.is_contiguous() else reversed_hessian.contiguous()
    mean_diag = float(torch.diagonal(h).mean())
    diag = torch.diagonal(h).clone()  # (in,) the undamped diagonal
    frac = damp
    for _ in range(retries):
        torch.diagonal(h).copy_(diag + frac * mean_diag)
        upper, info = torch.linalg.cholesky_ex(h, upper=True)  # (in, in) J H J = L L^T, L = upper.T
        if int(info) == 0:
            factor = upper.T  # LAPACK's storage is column-major: its transpose L is row-major
            flip_both_(factor)  # B = J L J, upper, row-major
            diag = torch.diagonal(factor).clone()  # (in,) b
            return factor.div_(diag), diag, frac  # C = B diag(b)^-1
        frac *= 10.0
    raise ValueError(
        f"{technique}: the Hessian is not positive definite even with damping {frac / 10:g}; increase damp"
    )


def given_errors(weights: torch.Tensor, targets: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
    """Columns' weights given every earlier column's error, the weights the papers' updates reach before the
    columns are solved: ``w_G + C_GG^-T (t_G - w_G)``.

    Args:
        weights: (g, out) the columns' own weights (input-major rows).
        targets: (g, out) their targets ``t_j = w_j + sum_{k<j} e_k C_kj``, with every earlier column's error in.
        unit: (g, g) the columns' diagonal block ``C_GG`` of the unit factor (:func:`damped_unit_cholesky`).
    """
    return weights + torch.linalg.solve_triangular(unit.T, targets - weights, upper=False, unitriangular=True)


def note_damping(state: LayerState, technique: str, asked: float, used: float) -> None:
    """Record on the layer that the Hessian damping had to be raised (nothing when it was not)."""
    if used != asked:
        state.notes.append(f"{technique}: Hessian damping raised from {asked:g} to {used:g} (not positive definite "
                           f"at {asked:g})")
