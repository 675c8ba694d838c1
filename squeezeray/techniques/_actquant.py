"""Per-input-channel scales and dynamic per-token activation quantization (pure math).

:class:`~squeezeray.techniques._state.ActQuantState` carries a per-input-channel
vector ``smooth`` and an activation bit width. The layer computes
``A(x / smooth) @ W_stored.T`` where ``A`` is :func:`fake_quant_per_token` at
``bits`` bits, except that ``bits == SCALE_ONLY_BITS`` (16) means no activation
quantization at all: only the division by ``smooth`` (AWQ's folded scale).

``smooth`` is stored in float16, so techniques round it with
:func:`to_float16_scale` before using it; the stored layer then computes exactly
what the technique measured. A layer holds one ``smooth`` at most
(:func:`require_no_act_scale`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from squeezeray._errors import InfeasibleStepError

if TYPE_CHECKING:
    from squeezeray.techniques._state import LayerState

# ``ActQuantState.bits`` value meaning "divide x by smooth, do not quantize x" (AWQ).
SCALE_ONLY_BITS = 16

_FP16_MIN_NORMAL = 2.0**-14
_FP16_MAX = 65504.0


def fake_quant_per_token(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric absmax quantize-dequantize of each token (row) of ``x``.

    ``scale = max_j |x_j| / qmax`` with ``qmax = 2**(bits-1) - 1``; codes are
    ``clamp(round(x / scale), -qmax, qmax)``. All-zero rows stay zero. With
    ``bits >= SCALE_ONLY_BITS`` the input is returned unchanged.

    Args:
        x: (..., in) activations, any float dtype.
        bits: Activation bits (8 for W8A8), 2..8, or >= 16 for no quantization.

    Returns:
        Tensor of the shape and dtype of ``x`` holding the dequantized values.
    """
    if bits >= SCALE_ONLY_BITS:
        return x
    q, scale = quantize_per_token(x, bits)
    return (q * scale).to(x.dtype)


def quantize_per_token(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The codes and scales behind :func:`fake_quant_per_token` (one arithmetic for both, so
    integer kernels reproduce the reference exactly).

    Args:
        x: (..., in) activations, any float dtype.
        bits: 2..8.

    Returns:
        ``q`` (..., in) float32 holding integers in [-qmax, qmax] and ``scale`` (..., 1) float32.
    """
    if not 2 <= bits <= 8:
        raise ValueError(f"bits={bits}: activation quantization supports 2..8 bits (or >= 16 for none)")
    qmax = float((1 << (bits - 1)) - 1)
    xf = x.float()  # (..., in)
    absmax = xf.abs().amax(dim=-1, keepdim=True)  # (..., 1)
    scale = torch.where(absmax > 0, absmax / qmax, torch.ones_like(absmax))  # (..., 1)
    q = torch.clamp(torch.round(xf / scale), -qmax, qmax)  # (..., in) integer values
    return q, scale


def to_float16_scale(s: torch.Tensor) -> torch.Tensor:
    """Clamp a positive per-channel scale into float16's normal range and round it there.

    Args:
        s: (in,) positive float scale.

    Returns:
        (in,) float32 holding float16-representable values.
    """
    return s.float().clamp(_FP16_MIN_NORMAL, _FP16_MAX).half().float()


def require_no_act_scale(state: LayerState, technique: str) -> None:
    """Guard of the techniques that set ``state.act`` (AWQ, W8A8): a layer takes one activation scale."""
    if state.act is not None:
        raise InfeasibleStepError(f"{state.name}: {technique} cannot apply to a layer that already has an activation scale")
