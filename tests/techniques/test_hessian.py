"""The shared damped inverse-Cholesky factor: in-place damping equals the textbook formula bit for bit."""

from __future__ import annotations

import pytest
import torch

from squeezeray.techniques._hessian import damped_inverse_cholesky


def _textbook(h: torch.Tensor, frac: float) -> torch.Tensor:
    """Upper factor of ``(H + frac * mean(diag H) * I)^-1`` the way GPTQ's reference code writes it."""
    mean = float(torch.diagonal(h).mean())
    eye = torch.eye(h.shape[0], dtype=h.dtype)
    lower = torch.linalg.cholesky(h + frac * mean * eye)
    return torch.linalg.cholesky(torch.cholesky_inverse(lower), upper=True)


def test_equals_the_textbook_factor_bit_for_bit() -> None:
    torch.manual_seed(0)
    x = torch.randn(256, 48, dtype=torch.float64)
    h = x.T @ x / 256
    upper, used = damped_inverse_cholesky(h.clone(), 0.01, retries=3, technique="T")
    assert used == 0.01
    assert torch.equal(upper, _textbook(h, 0.01))
    assert torch.equal(upper, torch.triu(upper))


def test_a_retry_damps_the_original_diagonal_not_the_damped_one() -> None:
    torch.manual_seed(1)
    x = torch.randn(64, 32, dtype=torch.float64)
    h = x.T @ x / 64 - 1e-3 * torch.eye(32, dtype=torch.float64)  # one slightly negative direction at most
    h[0, 1] = h[1, 0] = float(torch.sqrt(h[0, 0] * h[1, 1])) * 1.01  # indefinite until damped
    upper, used = damped_inverse_cholesky(h.clone(), 1e-6, retries=9, technique="T")
    assert used > 1e-6
    assert torch.equal(upper, _textbook(h, used))


def test_gives_up_naming_the_technique() -> None:
    h = torch.zeros(8, 8, dtype=torch.float64)
    h[0, 0] = 1.0
    h[1, 1] = -1.0
    with pytest.raises(ValueError, match="SomeSolver: the Hessian is not positive definite"):
        damped_inverse_cholesky(h, 0.01, retries=2, technique="SomeSolver")
