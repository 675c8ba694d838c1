"""Guards that techniques share (composition rules enforced at apply time too)."""

from __future__ import annotations

from squeezeray._errors import InfeasibleStepError
from squeezeray.techniques._state import LayerState


def require_unquantized(state: LayerState, technique: str) -> None:
    if state.quant is not None:
        raise InfeasibleStepError(f"{state.name}: {technique} cannot quantize a layer that is already quantized")
    if state.lowrank is not None:
        raise InfeasibleStepError(f"{state.name}: {technique} cannot follow a low-rank step")


def require_unpruned(state: LayerState, technique: str) -> None:
    if state.sparsity is not None:
        raise InfeasibleStepError(f"{state.name}: {technique} cannot prune a layer that is already pruned")
    if state.lowrank is not None:
        raise InfeasibleStepError(f"{state.name}: {technique} cannot follow a low-rank step")
