"""The process-memory readings the estimate, the progress bar and experiments/scaling use."""

from __future__ import annotations

import sys

import pytest

from squeezeray import _memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_peak_follows_an_allocation_and_resets() -> None:
    assert _memory.reset_peak()
    before = _memory.peak_resident_bytes()
    block = bytearray(64 << 20)
    block[::4096] = b"x" * len(block[::4096])  # touch every page
    assert _memory.peak_resident_bytes() >= before + (60 << 20)
    assert _memory.resident_bytes() <= _memory.peak_resident_bytes()
    del block
    assert _memory.trim() in (True, False)
    assert _memory.reset_peak() and _memory.peak_resident_bytes() < before + (60 << 20) + (16 << 20)
    assert _memory.available_bytes() > 0
