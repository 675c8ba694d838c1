"""The driver's liveness check of its workers' nodes (pure: no cluster)."""

from __future__ import annotations

from squeezeray.search._ray_pool import _Worker
from squeezeray.search._ray_pool import on_dead_nodes


def test_workers_on_nodes_no_longer_alive_are_found() -> None:
    a = _Worker("a", None, None, name="a@127.0.0.2", node_ip="127.0.0.2")
    b = _Worker("b", None, None, name="b@127.0.0.3", node_ip="127.0.0.3")
    starting = _Worker("c", None, None)  # not ready yet: no node known
    gone = _Worker("d", None, None, node_ip="127.0.0.3", dead_at=1.0)  # already counted as lost
    nodes = [{"NodeManagerAddress": "127.0.0.2", "Alive": True}, {"NodeManagerAddress": "127.0.0.3", "Alive": False}]
    assert on_dead_nodes([a, b, starting, gone], nodes) == [b]
    assert on_dead_nodes([a, b], nodes[:1]) == [b]  # a node missing from the list counts as gone
    assert on_dead_nodes([a, b], [{**nodes[1], "Alive": True}, nodes[0]]) == []
