"""The timing helper."""

from __future__ import annotations

import pytest
import torch

from squeezeray.kernels import time_callable
from squeezeray.kernels._timing import last_level_cache_bytes


def test_time_callable_counts_and_orders() -> None:
    calls = []
    stats = time_callable(lambda: calls.append(torch.ones(64).sum()), warmup=2, repeats=5)
    assert len(calls) == 7 and stats.repeats == 5
    assert 0 <= stats.min_s <= stats.median_s <= stats.max_s
    assert stats.method == "perf_counter"


def test_flush_is_labelled_and_repeats_checked() -> None:
    assert time_callable(lambda: None, warmup=0, repeats=1, flush=True).method == "perf_counter+flush"
    assert last_level_cache_bytes() >= 2**20
    with pytest.raises(ValueError, match="repeats"):
        time_callable(lambda: None, repeats=0)


def test_time_interleaved_runs_round_robin() -> None:
    from squeezeray.kernels import time_interleaved

    order: list[str] = []
    stats = time_interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, warmup=1, repeats=3)
    assert order == ["a", "b"] + ["a", "b"] * 3  # warm-up, then alternating repetitions
    assert set(stats) == {"a", "b"} and stats["a"].repeats == 3
    assert stats["a"].method == "perf_counter+interleaved"
