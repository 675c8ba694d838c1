"""The original's log-probabilities in a temporary file: written and read back chunk by chunk, exactly."""

from __future__ import annotations

import pickle

import pytest
import torch

from squeezeray._errors import SqueezerayError
from squeezeray.objectives._reference import LogProbFile


def test_chunks_read_back_exactly_where_they_were_written() -> None:
    torch.manual_seed(0)
    full = torch.log_softmax(torch.randn(3, 10, 7), dim=-1)  # (windows, tokens, vocab)
    f = LogProbFile((3, 10, 7))
    for w in (2, 0, 1):  # any order
        f.write(w, slice(4, 10), full[w, 4:])
        f.write(w, slice(0, 4), full[w, :4])
    for w in range(3):
        assert torch.equal(f.read(w, slice(0, 10)), full[w])
        assert torch.equal(f.read(w, slice(3, 5)), full[w, 3:5])
    f.close()


def test_bad_spans_shapes_and_pickling_are_refused() -> None:
    f = LogProbFile((2, 4, 5))
    with pytest.raises(SqueezerayError, match="window 2, positions 0:4 out of range"):
        f.read(2, slice(0, 4))
    with pytest.raises(SqueezerayError, match="positions 3:6 out of range"):
        f.read(0, slice(3, 6))
    with pytest.raises(SqueezerayError, match=r"expected \(2, 5\) float32, got \(2, 5\) torch.float64"):
        f.write(0, slice(0, 2), torch.zeros(2, 5, dtype=torch.float64))
    with pytest.raises(SqueezerayError, match="local to its process"):
        pickle.dumps(f)
    with pytest.raises(SqueezerayError, match=r"shape=\(2, 0, 5\)"):
        LogProbFile((2, 0, 5))
