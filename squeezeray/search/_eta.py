"""How long the rest of a search should take, from the trials finished so far.

A trial costs one evaluation plus the compression of every layer the cache lacks (its misses), so its wall
time is modelled as ``evaluate + per_layer * misses``, fitted by least squares to the finished trials. The
first trials (the uniform baselines) compress nearly every layer and later ones mostly read the cache, so
the remaining time is given as a range: every remaining trial reading all its layers from the cache, and
every one compressing as many layers as the trials so far did on average.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

ESTIMATE_AFTER = (3, 10)
"""The search prints an estimate when this many of its trials have been measured."""


@dataclasses.dataclass(frozen=True)
class TimeEstimate:
    """The remaining time of a search, as a range (seconds).

    Attributes:
        trials: Finished trials the fit is based on.
        mean_s: Their mean wall time.
        evaluate_s: A trial whose layers are all cached (None: the trials so far cannot tell it apart, all
            having compressed the same number of layers).
        per_layer_s: One compressed layer (None: as for ``evaluate_s``).
        remaining: Trials still to run.
        low_s, high_s: The remaining time with every layer cached (None: not known yet, see ``evaluate_s``),
            and with as many misses per trial as so far.
    """

    trials: int
    mean_s: float
    evaluate_s: float | None
    per_layer_s: float | None
    remaining: int
    low_s: float | None
    high_s: float

    def describe(self) -> str:
        """One line for the console."""
        split = ("" if self.evaluate_s is None or self.per_layer_s is None else
                 f" (~{_span(self.evaluate_s)} to evaluate, ~{_span(self.per_layer_s)} per layer compressed)")
        if self.low_s is None:
            rest = (f"{self.remaining} remaining: at most {_span(self.high_s)} (each compressing as many new layers "
                    "as so far; trials from cached layers cost less)")
        elif self.low_s < self.high_s:
            rest = (f"{self.remaining} remaining: {_span(self.low_s)} (every layer cached) to {_span(self.high_s)} "
                    "(as many new layers as so far)")
        else:
            rest = f"{self.remaining} remaining: about {_span(self.high_s)}"
        return (f"time estimate after {self.trials} trial(s): {_span(self.mean_s)} per trial{split}; {rest}, "
                "then the front's re-measurement")


def estimate_remaining(walls: Sequence[tuple[float, int]], remaining: int) -> TimeEstimate:
    """Fit ``wall = evaluate + per_layer * misses`` to finished trials' ``(wall_s, cache_misses)``.

    Raises:
        ValueError: no trial finished yet, or ``remaining`` is negative.
    """
    if not walls:
        raise ValueError("estimate_remaining: needs at least one finished trial")
    if remaining < 0:
        raise ValueError(f"remaining={remaining}: must be >= 0")
    n = len(walls)
    mean_wall = sum(w for w, _ in walls) / n
    mean_miss = sum(m for _, m in walls) / n
    var = sum((m - mean_miss) ** 2 for _, m in walls)
    evaluate: float | None = None
    per_layer: float | None = None
    if var == 0 and mean_miss == 0:  # every trial read all its layers from the cache
        evaluate = mean_wall
    elif var > 0:
        slope = sum((m - mean_miss) * (w - mean_wall) for w, m in walls) / var
        slope = max(0.0, slope)  # more layers to compress never saves time
        intercept = mean_wall - slope * mean_miss
        if intercept < 0:  # the fit's line crosses zero: all of the time is compression
            intercept, slope = 0.0, mean_wall / mean_miss
        evaluate, per_layer = intercept, slope
    high = remaining * mean_wall
    low = None if evaluate is None else remaining * evaluate
    return TimeEstimate(n, mean_wall, evaluate, per_layer, remaining, low, high)


def _span(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
