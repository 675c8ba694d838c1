"""User-facing errors.

Every error a user can cause by bad input is a :class:`SqueezerayError`. The CLI
prints ``error: <message>`` on one line for these and exits with status 2; any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class SqueezerayError(Exception):
    """Bad input or an impossible request; the message names the field and the value."""


class PlanError(SqueezerayError):
    """A compression plan (or one of its steps) is invalid."""


class InfeasibleStepError(PlanError, ValueError):
    """A technique step that cannot exist on this layer by its nature (a composition the step does not
    allow, a shape it does not fit). Raised by techniques; a search tells such a plan as infeasible.
    Any other error inside a technique (a numerical failure, a bug) is not this: the trial fails with its
    traceback instead."""


class UnknownNameError(SqueezerayError, KeyError):
    """A registry lookup missed; the message lists close matches."""

    def __str__(self) -> str:  # KeyError would add quotes around the message
        return str(self.args[0]) if self.args else ""


class ModelLoadError(SqueezerayError):
    """A model reference could not be resolved or loaded."""


class DataError(SqueezerayError):
    """Packaged benchmark or calibration data is missing or malformed."""
