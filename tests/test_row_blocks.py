"""A tall layer compressed a block of rows at a time stores what the whole layer compressed at once stores."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from squeezeray.compress import compress_layer
from squeezeray.compress._apply import splits_by_rows
from squeezeray.compress._rows import ROW_ALIGN
from squeezeray.compress._row_blocks import join_rows
from squeezeray.compress._rows import row_blocks
from squeezeray.spaces import parse_steps
from squeezeray.techniques import LayerStats
from squeezeray.techniques import StatsMemo
from tests.conftest import correlated_inputs

ROWS, WIDTH = 203, 256  # 203 rows: a ragged last block; 256 inputs fit the K-quants' super-blocks
SMALL = 4 * WIDTH * 24  # 24 rows of float32 a block: 9 blocks


def _buffers(m: nn.Module) -> dict[str, torch.Tensor]:
    return dict(m.named_buffers(recurse=False))


@pytest.fixture(scope="module")
def layer_stats() -> tuple[nn.Linear, LayerStats]:
    torch.manual_seed(11)
    return nn.Linear(WIDTH, ROWS), LayerStats.synthetic(correlated_inputs(400, WIDTH))


def test_row_blocks_cover_the_rows_within_the_budget() -> None:
    blocks = row_blocks(ROWS, WIDTH, SMALL)
    assert blocks[0] == (0, 24) and blocks[-1] == (192, ROWS)
    assert [b[0] for b in blocks[1:]] == [b[1] for b in blocks[:-1]]  # contiguous, in order
    assert all((b - a) % ROW_ALIGN == 0 and (b - a) * WIDTH * 4 <= SMALL for a, b in blocks[:-1])
    assert row_blocks(ROWS, WIDTH, 4 * WIDTH * ROWS) == [(0, ROWS)]  # fits: one block
    assert row_blocks(ROWS, WIDTH, 1) == [(r, min(r + ROW_ALIGN, ROWS)) for r in range(0, ROWS, ROW_ALIGN)]
    with pytest.raises(ValueError, match="budget_bytes=0"):
        row_blocks(ROWS, WIDTH, 0)
    with pytest.raises(ValueError, match=r"shape \(0, 256\)"):
        row_blocks(0, WIDTH)


@pytest.mark.parametrize("steps", [
    "rtn-w8", "rtn-w3g64-asym", "rtn-w4g32", "rtn-q4_1", "rtn-q4_k", "nf4-g64", "fp8",
    "gptq-w3g128", "gptq-w2g64-asym-clip", "gptq-w4g32-asym", "gptq-q5_k", "gptq-q4_1",
])
def test_row_blocks_store_exactly_the_whole_layer(layer_stats, steps: str) -> None:  # noqa: ANN001
    linear, stats = layer_stats
    plan = parse_steps(steps)
    assert splits_by_rows(plan)
    whole = compress_layer("t", linear, plan, stats)
    blocked = compress_layer("t", linear, plan, stats, row_block_bytes=SMALL)
    assert blocked.fmt == whole.fmt
    a, b = _buffers(whole), _buffers(blocked)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name]), name
    assert blocked.nbytes() == whole.nbytes()
    ids = torch.tensor([0, 23, 24, 25, 150, ROWS - 1])
    assert torch.equal(blocked.rows(ids), whole.effective_weight()[ids])


def test_gptq_factorises_a_tall_layers_hessian_once(layer_stats, monkeypatch) -> None:  # noqa: ANN001
    """The (in, in) Hessian factor depends on the statistics alone: the row blocks of one layer share it (9 blocks,
    one factorisation), and each layer computes its own."""
    import squeezeray.techniques.gptq as gptq

    calls: list[tuple[bool, float]] = []
    real = gptq.gptq_factor

    def counting(hessian, *, act_order, damp, device=None, dtype=torch.float32):  # noqa: ANN001, ANN202
        calls.append((act_order, damp))
        return real(hessian, act_order=act_order, damp=damp, device=device, dtype=dtype)

    monkeypatch.setattr(gptq, "gptq_factor", counting)
    linear, stats = layer_stats
    assert len(row_blocks(ROWS, WIDTH, SMALL)) == 9
    compress_layer("t", linear, parse_steps("gptq-w4g32-asym"), stats, row_block_bytes=SMALL)
    assert calls == [(True, 0.01)]
    compress_layer("t", linear, parse_steps("gptq-w4g32-asym"), stats, row_block_bytes=SMALL)
    assert len(calls) == 2  # a memo lives for one compress_layer call: nothing held between layers


@pytest.mark.parametrize("steps", ["awq-w4g64", "w8a8-a0.5", "wanda-s50+rtn-w4g64", "svd-r8", "magnitude-s30",
                                   "rtn-w4g64+svd-r4-res"])
def test_a_step_that_looks_across_rows_compresses_the_layer_whole(layer_stats, steps: str) -> None:  # noqa: ANN001
    linear, stats = layer_stats
    plan = parse_steps(steps)
    assert not splits_by_rows(plan)
    whole = compress_layer("t", linear, plan, stats)
    small_budget = compress_layer("t", linear, plan, stats, row_block_bytes=SMALL)
    for name, t in _buffers(whole).items():
        assert torch.equal(t, _buffers(small_budget)[name]), name


def test_join_rows_refuses_parts_it_cannot_join(layer_stats) -> None:  # noqa: ANN001
    linear, stats = layer_stats
    top, bottom = nn.Linear(WIDTH, 16), nn.Linear(WIDTH, 16)
    with torch.no_grad():
        top.weight.copy_(linear.weight[:16])
        bottom.weight.copy_(linear.weight[16:32])
    w4 = compress_layer("t", top, parse_steps("rtn-w4g64"), stats)
    w8 = compress_layer("t", bottom, parse_steps("rtn-w8"), stats)
    with pytest.raises(ValueError, match="part 1's format"):
        join_rows([w4, w8])
    pruned = compress_layer("t", top, parse_steps("magnitude-s50+rtn-w4g64"), stats)
    with pytest.raises(ValueError, match=r"part 0 stores \['mask_bits'\]"):
        join_rows([pruned, pruned])
    odd = compress_layer("t", nn.Linear(WIDTH, 13), parse_steps("rtn-w3g64"), stats)
    with pytest.raises(ValueError, match="part 0 has 13 rows"):
        join_rows([odd, w4])
    with pytest.raises(ValueError, match="no parts"):
        join_rows([])
    joined = join_rows([w4, w4])
    assert joined.fmt.out_features == 32 and torch.equal(joined.effective_weight()[16:], w4.effective_weight())


@pytest.mark.parametrize("steps", [
    "rtn-w8", "rtn-w3g64-asym", "rtn-w4g32", "rtn-w5g128", "rtn-q4_1", "rtn-q4_k", "nf4-g64", "fp8",
    "gptq-w2g64-asym-clip", "awq-w4g128", "wanda-s50", "rtn-w4g128+svd-r8-res",
])
def test_blockwise_unpacking_gives_the_whole_layers_values(layer_stats, steps: str, monkeypatch) -> None:  # noqa: ANN001
    """Dequantizing a few rows at a time (in-cache temporaries) gives the values of unpacking the layer whole, in
    float32 and rounded once to bfloat16; sparse and low-rank layers take the whole path."""
    import squeezeray.compress._module as module

    linear, stats = layer_stats
    m = compress_layer("t", linear, parse_steps(steps), stats)
    whole = m._whole_effective()
    monkeypatch.setattr(module, "DEQUANT_BLOCK_BYTES", SMALL)  # 9 blocks, the last ragged
    assert torch.equal(m.effective_weight(), whole)
    m.materialize(torch.bfloat16)
    assert m._dense.dtype == torch.bfloat16 and torch.equal(m._dense, whole.to(torch.bfloat16))
    m.release()


def test_rows_that_do_not_start_on_a_byte_are_refused() -> None:
    torch.manual_seed(3)
    m = compress_layer("t", nn.Linear(20, 16), parse_steps("rtn-w3g20"), LayerStats.synthetic(torch.randn(64, 20)))
    assert torch.equal(m.effective_weight(), m._whole_effective())  # 8-row blocks: 480 bits, on a byte
    with pytest.raises(ValueError, match="row 3 starts at bit 180"):
        m._dense_rows(m.stored_grid(), 3, 5)


@pytest.mark.parametrize("steps", ["gptq-w4g32", "gptq-w3g64-asym-noact", "sparsegpt-s50", "sparsegpt-2:4"])
def test_layers_reading_one_input_share_its_factorisation_and_store_what_they_store_alone(
    layer_stats, steps: str  # noqa: ANN001
) -> None:
    """q/k/v (or gate/up) read one input: their statistics are one object, and a loop's memo factorises its
    Hessian once for all of them (a tall layer's row blocks too) without changing a stored bit."""
    _, stats = layer_stats
    torch.manual_seed(12)
    layers = [nn.Linear(WIDTH, rows) for rows in (203, 64, 64)]
    plan = parse_steps(steps)
    memo = StatsMemo()
    shared = [compress_layer(f"l{i}", lin, plan, stats, memo=memo, row_block_bytes=SMALL) for i, lin in enumerate(layers)]
    assert memo.computed == 1
    for lin, got in zip(layers, shared):
        alone = compress_layer("l", lin, plan, stats)
        a, b = _buffers(alone), _buffers(got)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    other = LayerStats.synthetic(correlated_inputs(300, WIDTH))
    compress_layer("o", layers[1], plan, other, memo=memo)  # another input: the first one's factor is dropped
    assert memo.computed == 2


@pytest.mark.gpu
@pytest.mark.parametrize("steps", ["gptq-w4g32", "sparsegpt-s50"])
def test_layers_on_cuda_share_one_device_copy_of_their_statistics_and_its_factorisation(
    layer_stats, steps: str  # noqa: ANN001
) -> None:
    """Statistics stay on the host: one copy on the GPU serves every layer reading that input, so the factor is
    computed once there too, and the stored result is the one each layer gets alone."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    _, stats = layer_stats
    torch.manual_seed(13)
    layers = [nn.Linear(WIDTH, rows).cuda() for rows in (203, 64, 64)]
    plan, memo = parse_steps(steps), StatsMemo()
    shared = [compress_layer(f"l{i}", lin, plan, stats, memo=memo, row_block_bytes=SMALL) for i, lin in enumerate(layers)]
    assert memo.computed == 1 and memo.copies == 1
    for lin, got in zip(layers, shared):
        a, b = _buffers(compress_layer("l", lin, plan, stats)), _buffers(got)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
