"""Shared Hessian algebra of the second-order solvers (GPTQ, SparseGPT)."""

from __future__ import annotations

import torch

from squeezeray.techniques._state import LayerState

TRI_BASE = 128
"""Triangular blocks of at most this order are inverted by a triangular solve; larger ones split in two."""
FLIP_CHUNK = 1 << 20
"""Elements swapped at a time by :func:`flip_both_`."""


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


def _lower_product(t: torch.Tensor, x: torch.Tensor, out: torch.Tensor, *, left: bool) -> None:
    """``out = t @ x`` (``left``) or ``x @ t`` for a lower-triangular ``t``, skipping its zero upper half."""
    k = t.shape[0]
    if k <= TRI_BASE:
        if left:
            torch.mm(t, x, out=out)
        else:
            torch.mm(x, t, out=out)
        return
    h = k // 2
    if left:  # [[P, 0], [Q, R]] @ [X1; X2] = [P X1; Q X1 + R X2]
        _lower_product(t[:h, :h], x[:h], out[:h], left=True)
        _lower_product(t[h:, h:], x[h:], out[h:], left=True)
        out[h:].addmm_(t[h:, :h], x[:h])
    else:  # [X1, X2] @ [[P, 0], [Q, R]] = [X1 P + X2 Q, X2 R]
        _lower_product(t[:h, :h], x[:, :h], out[:, :h], left=False)
        out[:, :h].addmm_(x[:, h:], t[h:, :h])
        _lower_product(t[h:, h:], x[:, h:], out[:, h:], left=False)


def invert_lower_(m: torch.Tensor, work: torch.Tensor) -> None:
    """Invert the lower-triangular ``m`` in place (its strict upper triangle must be zero and stays zero).

    Blockwise, ``[[A, 0], [B, C]]^-1 = [[A^-1, 0], [-C^-1 B A^-1, C^-1]]``: two half-size inversions and two
    products with triangular factors, each skipping the zero half; about ``n^3 / 6`` multiply-adds in all,
    LAPACK trtri's count (torch does not expose trtri; a triangular solve against the identity costs ``n^3``),
    nearly all of it in matrix products.

    Args:
        m: (n, n) lower triangular, non-singular; overwritten with its inverse.
        work: Contiguous scratch of at least ``n * n / 2`` elements of ``m``'s dtype and device.
    """
    n = m.shape[0]
    if n <= TRI_BASE:
        eye = torch.eye(n, dtype=m.dtype, device=m.device)  # (n, n)
        m.copy_(torch.linalg.solve_triangular(m, eye, upper=False))
        return
    k = n // 2
    a, b, c = m[:k, :k], m[k:, :k], m[k:, k:]  # (k, k), (n - k, k), (n - k, n - k) views
    invert_lower_(a, work)
    invert_lower_(c, work)
    flat = work.view(-1)
    size = (n - k) * k
    ba = flat[:size].view(n - k, k)  # B A^-1
    cba = flat[size : 2 * size].view(n - k, k)  # C^-1 B A^-1
    _lower_product(a, b, ba, left=False)
    _lower_product(c, ba, cba, left=True)
    torch.neg(cba, out=b)


def _damped_lower_cholesky(
    h: torch.Tensor, mean_diag: float, damp: float, *, retries: int, technique: str
) -> tuple[torch.Tensor, float]:
    """Row-major lower Cholesky factor ``L`` of ``h + frac * mean_diag * I`` and the damping ``frac`` it
    succeeded with (``damp``, times 10 per failed attempt, ``retries`` attempts in all). ``h`` is damped in place
    (only its diagonal changes, each retry rewriting it from a saved copy) and left for the caller as scratch."""
    diag = torch.diagonal(h).clone()  # (in,) the undamped diagonal
    frac = damp
    for _ in range(retries):
        torch.diagonal(h).copy_(diag + frac * mean_diag)
        upper, info = torch.linalg.cholesky_ex(h, upper=True)  # (in, in) h = L L^T, L = upper.T
        if int(info) == 0:
            # LAPACK's storage is column-major: its transpose L is row-major (products 1.6x faster)
            return upper.T, frac
        frac *= 10.0
    raise ValueError(
        f"{technique}: the Hessian is not positive definite even with damping {frac / 10:g}; increase damp"
    )


def damped_inverse_cholesky(
    hessian: torch.Tensor, damp: float, *, retries: int, technique: str
) -> tuple[torch.Tensor, float]:
    """Upper Cholesky factor ``U`` of ``(H + damp * mean(diag H) * I)^-1`` (``U^T U``), and the damping used.

    If the damped matrix is not positive definite, the damping is multiplied by 10 and the factorisation
    retried, ``retries`` attempts in all.

    With ``J`` the order reversal, ``J H J = L L^T`` (lower Cholesky) gives ``H^-1 = (J L^-1 J)^T (J L^-1 J)``,
    and ``J L^-1 J`` is upper triangular with a positive diagonal: the (unique) factor, from one Cholesky
    factorisation and one triangular inversion (``2 n^3 / 3`` multiply-adds; factorising, inverting through
    ``cholesky_inverse`` and factorising again took ``4 n^3 / 3``: 13.5 -> 6.5 s at 8192 inputs in float64 on a
    2-vCPU EPYC VM). The factor equals the textbook one to rounding (about 1e-15 relative in float64).

    The caller hands ``hessian`` over: it is reversed and damped in place (only its diagonal changes, and
    each retry rewrites it from a saved copy, so the damped matrix equals ``H + frac * mean * I`` bit for
    bit, ``mean`` summed in the original order), then used as the inversion's scratch; the factor is computed
    in the Cholesky factor's storage, so two (in, in) matrices are alive at a time (1 GiB in float64 for a
    layer with 8192 inputs).

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
    h = hessian if hessian.is_contiguous() else hessian.contiguous()
    mean_diag = float(torch.diagonal(h).mean())  # over the strided view, in the original order
    flip_both_(h)
    factor, frac = _damped_lower_cholesky(h, mean_diag, damp, retries=retries, technique=technique)
    invert_lower_(factor, h)  # the damped matrix is not read again: scratch
    flip_both_(factor)  # J L^-1 J, upper
    return factor, frac


def damped_upper_cholesky(
    reversed_hessian: torch.Tensor, damp: float, *, retries: int, technique: str
) -> tuple[torch.Tensor, float]:
    """Upper-triangular ``B`` with ``H + damp * mean(diag H) * I = B B^T``, and the damping used, from the
    Hessian with its order reversed, ``J H J`` (a caller that permutes the Hessian gets the reversal for free).

    ``B = J L J`` for the lower Cholesky factor ``L`` of ``J H J`` (``n^3 / 3`` multiply-adds). ``B^-1`` is the
    upper Cholesky factor of the damped inverse (:func:`damped_inverse_cholesky`): a solver that works with
    ``B`` itself needs no inversion. Damping and retries as in :func:`damped_inverse_cholesky` (``mean`` summed
    in the reversed order); ``reversed_hessian`` is handed over (damped in place, not needed afterwards) and the
    factor is a new (in, in) matrix.
    """
    h = reversed_hessian if reversed_hessian.is_contiguous() else reversed_hessian.contiguous()
    mean_diag = float(torch.diagonal(h).mean())
    factor, frac = _damped_lower_cholesky(h, mean_diag, damp, retries=retries, technique=technique)
    flip_both_(factor)  # J L J, upper
    return factor, frac


def note_damping(state: LayerState, technique: str, asked: float, used: float) -> None:
    """Record on the layer that the Hessian damping had to be raised (nothing when it was not)."""
    if used != asked:
        state.notes.append(f"{technique}: Hessian damping raised from {asked:g} to {used:g} (not positive definite "
                           f"at {asked:g})")
