"""Calibration statistics: block-wise equals whole-model, and the on-disk store loads layers lazily."""

from __future__ import annotations

import pickle

import pytest
import torch

from squeezeray._errors import SqueezerayError
from squeezeray.compress import StatsStore
from squeezeray.compress import collect_stats
from squeezeray.compress import collect_stats_blockwise
from squeezeray.compress import decoder_parts
from squeezeray.models import compressible_layers
from tests._tiny import small_gemma3
from tests._tiny import small_llama

FIELDS = ("sq_mean", "abs_mean", "abs_max", "hessian")


def _llama() -> torch.nn.Module:
    return small_llama(seed=3, layers=3)


def _gemma3() -> torch.nn.Module:
    return small_gemma3(seed=4, layers=4)


@pytest.mark.parametrize("make", [_llama, _gemma3], ids=["llama", "gemma3-sliding-and-global"])
def test_blockwise_statistics_equal_whole_model_statistics(make) -> None:  # noqa: ANN001
    model = make()
    tokens = torch.randint(0, 300, (5, 32), generator=torch.Generator().manual_seed(0))  # last batch is short
    names = list(compressible_layers(model))
    whole = collect_stats(model, names, tokens, hessian=True, batch_size=2)
    blocks = collect_stats_blockwise(model, names, tokens, hessian=True, batch_size=2)
    assert set(blocks) == set(names)
    for n in names:
        assert blocks[n].n_tokens == whole[n].n_tokens == 5 * 32
        for f in FIELDS:
            assert torch.equal(getattr(blocks[n], f), getattr(whole[n], f)), (n, f)
    assert all((whole[a] is whole[b]) == (blocks[a] is blocks[b]) for a in names for b in names)
    q, k = (n for n in names if n.endswith((".0.self_attn.q_proj", ".0.self_attn.k_proj")))
    assert blocks[q] is blocks[k]
    for p in model.parameters():  # the blocks were put back
        assert p.device.type == "cpu"
    assert all(type(b).__name__.endswith("DecoderLayer") for b in decoder_parts(model)[1])


def test_blockwise_hands_each_block_to_the_sink_and_keeps_nothing() -> None:
    model = _llama()
    tokens = torch.randint(0, 300, (4, 16), generator=torch.Generator().manual_seed(1))
    names = list(compressible_layers(model))
    handed: list[list[str]] = []
    kept = collect_stats_blockwise(model, names, tokens, hessian=False, sink=lambda s: handed.append(sorted(s)))
    assert kept == {}
    assert len(handed) == 3 + 1  # three blocks, then the head on the final norm's output
    assert all(n.startswith(f"model.layers.{i}.") for i, block in enumerate(handed[:3]) for n in block)
    assert handed[-1] == ["lm_head"]


def test_a_model_without_decoder_blocks_is_refused_by_name() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(SqueezerayError, match="Sequential: no decoder with .layers and .norm"):
        decoder_parts(model)


def test_the_store_loads_layers_lazily_within_its_memory_budget(tmp_path) -> None:  # noqa: ANN001
    model = _llama()
    tokens = torch.randint(0, 300, (4, 16), generator=torch.Generator().manual_seed(2))
    names = list(compressible_layers(model))
    writer = StatsStore(tmp_path / "s")
    collect_stats_blockwise(model, names, tokens, hessian=True, sink=writer.add)
    assert StatsStore.open(tmp_path / "s") is None  # no index yet: another process must not read a partial store
    writer.finish()
    reference = collect_stats(model, names, tokens, hessian=True)
    one = max(reference[n].hessian.numel() * 4 for n in names)
    store = StatsStore.open(tmp_path / "s", max_memory_bytes=one)
    assert store is not None and store.hessian is True and set(store) == set(names) and store.loads == 0
    for n in names:
        for f in FIELDS:
            assert torch.equal(getattr(store[n], f), getattr(reference[n], f))
        assert store.memory_bytes <= one or len(store._loaded) == 1  # the budget holds, or one entry is kept
    distinct = len({id(reference[n]) for n in names})
    assert store.loads == distinct  # each distinct input read once, in order
    store[names[0]]
    assert store.loads == distinct + 1  # the first one had to go: the budget holds about one entry
    q, k = "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj"
    assert store[q] is store[k]  # shared inputs share one file and one object
    whole = store.as_dict()
    assert set(whole) == set(names) and whole[q] is whole[k]
    assert all(torch.equal(whole[n].sq_mean, reference[n].sq_mean) for n in names)
    copy = pickle.loads(pickle.dumps(store))
    assert copy.memory_bytes == 0 and torch.equal(copy[q].hessian, reference[q].hessian)
    with pytest.raises(KeyError):
        store["model.layers.9.mlp.up_proj"]


def test_a_store_with_another_header_is_refused(tmp_path) -> None:  # noqa: ANN001
    (tmp_path / "index.json").write_text('{"_type": "squeezeray.calibration_stats", "_version": 99, "layers": {}}')
    with pytest.raises(SqueezerayError, match="_version=99"):
        StatsStore.open(tmp_path)


def test_mixed_hessian_presence_is_refused(tmp_path) -> None:  # noqa: ANN001
    from squeezeray.techniques import LayerStats

    x = torch.randn(8, 4)
    store = StatsStore(tmp_path)
    store.add({"a": LayerStats.synthetic(x)})
    with pytest.raises(SqueezerayError, match="'b' has_hessian=False"):
        store.add({"b": LayerStats.synthetic(x, with_hessian=False)})
