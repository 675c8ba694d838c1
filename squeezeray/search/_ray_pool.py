"""The driver's view of its Ray workers: what each is doing, and which of them stand on nodes gone from the cluster."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

from squeezeray._errors import SqueezerayError

NODE_CHECK_S = 5.0
"""While trials run, how often the driver checks that each busy worker's node is still alive: when a node is removed
Ray may leave its tasks pending for good (seen on Ray 2.60 with a worker node removed mid-trial), and the trial would
wait forever (another worker waiting on a layer that worker claimed, too)."""


@dataclasses.dataclass
class _Worker:
    label: str
    handle: Any
    ready_ref: Any | None
    name: str = ""
    node_ip: str = ""
    started: float = 0.0
    ready_at: float | None = None
    dead_at: float | None = None
    death: str = ""
    trials: int = 0
    busy_s: float = 0.0
    running: _Pending | None = None
    ref: Any | None = None
    dispatched_at: float = 0.0

    @property
    def alive(self) -> bool:
        return self.dead_at is None


@dataclasses.dataclass(frozen=True)
class _Pending:
    number: int
    plan: dict[str, Any]
    retries: tuple[str, ...] = ()


def on_dead_nodes(workers: Iterable[_Worker], nodes: Iterable[Mapping[str, Any]]) -> list[_Worker]:
    """The living ``workers`` whose node address is not among the ``nodes`` (``ray.nodes()`` entries) marked alive."""
    alive = {n.get("NodeManagerAddress") for n in nodes if n.get("Alive")}
    return [w for w in workers if w.alive and w.node_ip and w.node_ip not in alive]


def node_gone(w: _Worker) -> SqueezerayError:
    """Why ``w`` counts as lost when :func:`on_dead_nodes` finds it."""
    return SqueezerayError(f"its node {w.node_ip} is no longer alive")


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]
