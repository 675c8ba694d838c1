"""The shared damped Cholesky factor of the second-order solvers (the Hessian's own, ``H = B B^T``): its inverse
is the textbook inverse factor to rounding; the damping's retries; the in-place reversal."""

from __future__ import annotations

import pytest
import torch

from squeezeray.techniques import _hessian
from squeezeray.techniques._hessian import damped_unit_cholesky
from squeezeray.techniques._hessian import flip_both_


def _textbook(h: torch.Tensor, frac: float) -> torch.Tensor:
    """Upper factor of ``(H + frac * mean(diag H) * I)^-1`` the way GPTQ's reference code writes it."""
    mean = float(torch.diagonal(h).mean())
    eye = torch.eye(h.shape[0], dtype=h.dtype)
    lower = torch.linalg.cholesky(h + frac * mean * eye)
    return torch.linalg.cholesky(torch.cholesky_inverse(lower), upper=True)


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-12) -> bool:
    return float((a - b).abs().max()) <= rel * float(b.abs().max())


def _factor(h: torch.Tensor, damp: float, retries: int = 3) -> tuple[torch.Tensor, float]:
    """``B = C diag(b)`` from the unit factor of ``h`` (given ``J H J``), and the damping used."""
    c, b, used = damped_unit_cholesky(torch.flip(h, (0, 1)), damp, retries=retries, technique="T")
    assert torch.equal(torch.diagonal(c), torch.ones_like(b))
    return c * b, used


@pytest.mark.parametrize("n", [1, 7, 48, 128, 129, 300])
def test_the_factor_of_the_hessian_inverts_to_the_textbook_inverse_factor(n: int) -> None:
    torch.manual_seed(n)
    x = torch.randn(2 * n + 8, n, dtype=torch.float64)
    h = x.T @ x / x.shape[0]
    b, used = _factor(h, 0.01)
    assert used == 0.01
    assert torch.equal(b, torch.triu(b)) and bool((torch.diagonal(b) > 0).all())
    damped = h + 0.01 * float(torch.diagonal(h).mean()) * torch.eye(n, dtype=torch.float64)
    assert _close(b @ b.T, damped)
    assert _close(torch.linalg.inv(b), _textbook(h, 0.01), rel=1e-10)


def test_float32_factor_is_close_too() -> None:
    torch.manual_seed(3)
    x = torch.randn(600, 200, dtype=torch.float64)
    h = x.T @ x / 600
    b, _ = _factor(h.float(), 0.01)
    assert b.dtype == torch.float32
    assert _close(torch.linalg.inv(b.double()), _textbook(h, 0.01), rel=1e-5)


@pytest.mark.parametrize("shape", [(1, 1), (3, 3), (4, 4), (5, 5), (7, 3)])
@pytest.mark.parametrize("column_major", [False, True])
def test_flip_both_reverses_rows_and_columns(monkeypatch: pytest.MonkeyPatch, shape: tuple[int, int],
                                             column_major: bool) -> None:
    monkeypatch.setattr(_hessian, "FLIP_CHUNK", 2)  # several chunks, a ragged last one
    m = torch.arange(shape[0] * shape[1], dtype=torch.float64).reshape(shape)
    if column_major:
        m = m.T.contiguous().T
    want = torch.flip(m, (0, 1))
    flip_both_(m)
    assert torch.equal(m, want)


def test_flip_both_refuses_a_strided_view() -> None:
    with pytest.raises(ValueError, match="row- or column-major"):
        flip_both_(torch.zeros(6, 6)[::2, ::2])


def test_a_retry_damps_the_original_diagonal_not_the_damped_one() -> None:
    torch.manual_seed(1)
    x = torch.randn(64, 32, dtype=torch.float64)
    h = x.T @ x / 64 - 1e-3 * torch.eye(32, dtype=torch.float64)  # one slightly negative direction at most
    h[0, 1] = h[1, 0] = float(torch.sqrt(h[0, 0] * h[1, 1])) * 1.01  # indefinite until damped
    b, used = _factor(h, 1e-6, retries=9)
    assert used > 1e-6
    assert _close(torch.linalg.inv(b), _textbook(h, used), rel=1e-8)


def test_gives_up_naming_the_technique() -> None:
    h = torch.zeros(8, 8, dtype=torch.float64)
    h[0, 0] = 1.0
    h[1, 1] = -1.0
    with pytest.raises(ValueError, match="SomeSolver: the Hessian is not positive definite"):
        damped_unit_cholesky(h, 0.01, retries=2, technique="SomeSolver")
