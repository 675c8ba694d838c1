"""The stored form: exact sizes, masks and metadata, and that it computes what the state says."""

from __future__ import annotations

import json
import math

import pytest
import torch

from squeezeray.compress import CompressedLinear
from squeezeray.compress import LayerFormat
from squeezeray.compress import compress_layer
from squeezeray.spaces import parse_steps
from squeezeray.techniques import LayerStats
from tests.conftest import correlated_inputs

OUT, IN = 40, 96


@pytest.fixture(scope="module")
def lin_x() -> tuple[torch.nn.Linear, torch.Tensor]:
    torch.manual_seed(3)
    return torch.nn.Linear(IN, OUT), correlated_inputs(300, IN)


def _header(m: CompressedLinear) -> int:
    return len(json.dumps(m.fmt.to_dict(), separators=(",", ":")))


def test_packed_size_equals_formula(lin_x) -> None:  # noqa: ANN001
    lin, x = lin_x
    m = compress_layer("l", lin, parse_steps("rtn-w3g64-asym"), LayerStats.synthetic(x))
    n_groups = math.ceil(IN / 64)  # ragged last group of 32
    expected = (
        math.ceil(OUT * IN * 3 / 8)  # codes
        + OUT * n_groups * 2  # fp16 scales
        + math.ceil(OUT * n_groups * 3 / 8)  # zero points at 3 bits
        + OUT * 2  # fp16 bias
        + _header(m)
    )
    assert m.nbytes() == expected


def test_two_four_metadata_and_size(lin_x) -> None:  # noqa: ANN001
    lin, x = lin_x
    m = compress_layer("l", lin, parse_steps("wanda-2:4+rtn-w4g32"), LayerStats.synthetic(x))
    mask = m.effective_weight() != 0
    assert (mask.view(OUT, IN // 4, 4).sum(-1) <= 2).all()
    kept = OUT * IN // 2
    assert m.fmt.n_kept == kept
    expected = kept * 4 // 8 + kept * 2 // 8 + OUT * (IN // 32) * 2 + OUT * 2 + _header(m)  # codes + 2-bit idx
    assert m.nbytes() == expected


def test_unstructured_mask_is_a_bitmap(lin_x) -> None:  # noqa: ANN001
    lin, x = lin_x
    m = compress_layer("l", lin, parse_steps("magnitude-s50"), LayerStats.synthetic(x))
    assert m.mask_bits.numel() == OUT * IN // 8
    assert m.values.numel() == OUT * IN // 2
    assert int((m.effective_weight() != 0).sum()) == OUT * IN // 2


def test_rows_store_only_kept_rows(lin_x) -> None:  # noqa: ANN001
    lin, x = lin_x
    m = compress_layer("l", lin, parse_steps("magnitude-s25-rows+rtn-w8"), LayerStats.synthetic(x))
    assert m.row_index.numel() == OUT - 10
    assert m.scales.shape == (OUT - 10, 1)
    w = m.effective_weight()
    assert int((w.abs().sum(1) == 0).sum()) == 10
    y = m(x)
    assert y.shape == (300, OUT)


def test_forward_matches_effective_weight_and_materialize(lin_x) -> None:  # noqa: ANN001
    lin, x = lin_x
    for spec in ["gptq-w4g32", "awq-w4g32", "sparsegpt-2:4+rtn-w4g32", "rtn-w3g32+svd-r8-res", "svd-r16"]:
        m = compress_layer("l", lin, parse_steps(spec), LayerStats.synthetic(x))
        expected = x @ m.effective_weight().T + m.bias.float()
        torch.testing.assert_close(m(x), expected, rtol=1e-4, atol=1e-4)
        m.materialize()
        torch.testing.assert_close(m(x), expected, rtol=1e-4, atol=1e-4)
        m.release()


def test_w8a8_quantizes_activations(lin_x) -> None:  # noqa: ANN001
    lin, x = lin_x
    m = compress_layer("l", lin, parse_steps("w8a8"), LayerStats.synthetic(x))
    no_act_quant = x @ m.effective_weight().T + m.bias.float()
    y = m(x)
    assert not torch.equal(y, no_act_quant)  # activation rounding happened
    rel = float((y - no_act_quant).pow(2).mean() / no_act_quant.pow(2).mean())
    assert rel < 1e-3


def test_format_round_trips_and_checks_version(lin_x) -> None:  # noqa: ANN001
    lin, x = lin_x
    m = compress_layer("l", lin, parse_steps("wanda-2:4+gptq-w4g32"), LayerStats.synthetic(x))
    assert LayerFormat.from_dict(json.loads(json.dumps(m.fmt.to_dict()))) == m.fmt
    bad = m.fmt.to_dict() | {"version": 99}
    with pytest.raises(ValueError, match="version 99"):
        LayerFormat.from_dict(bad)
