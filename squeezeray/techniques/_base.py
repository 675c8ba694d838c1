"""The technique plug-in interface."""

from __future__ import annotations

import abc
from typing import ClassVar
from typing import Generic
from typing import TypeVar

from squeezeray.techniques._config import TechniqueConfig
from squeezeray.techniques._state import LayerState
from squeezeray.techniques._state import LayerStats

C = TypeVar("C", bound=TechniqueConfig)


class BaseTechnique(abc.ABC, Generic[C]):
    """One compression technique applied to one linear layer.

    Call order: the plan validates each step's config (``config_cls``) against
    the layer shape and the other steps when the plan is built; calibration
    statistics are collected once (with the Hessian only if some step's technique
    sets ``needs_hessian``); then ``apply`` runs for each step of the layer, in
    the plan's order, on the shared :class:`LayerState`.

    A technique that meets a state it cannot honour (e.g. a second quantization)
    raises; it never silently skips.
    """

    name: ClassVar[str]
    config_cls: ClassVar[type[TechniqueConfig]]
    needs_hessian: ClassVar[bool] = False
    rows_independent: ClassVar[bool] = False
    """True when each output row's result depends on that row's weights and the layer's statistics alone (no
    scale, mask or factor shared across rows): a tall layer can then be compressed a block of rows at a time."""
    code_version: ClassVar[int] = 1  # bump with any change to the code that computes the layer (see _versions)

    @abc.abstractmethod
    def apply(self, state: LayerState, config: C, stats: LayerStats) -> None:
        """Apply this technique to ``state`` in place.

        Args:
            state: The layer between steps; see its invariant.
            config: This step's settings (an instance of ``config_cls``).
            stats: Calibration statistics of the layer's input in the original model.
        """
