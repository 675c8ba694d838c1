"""The memory estimate: read from the config alone, and a run that cannot fit is refused before it loads weights."""

from __future__ import annotations

import pytest
import torch

from squeezeray._errors import SqueezerayError
from squeezeray.data import DataConfig
from squeezeray.models import compressible_layers
from squeezeray.models import resolve_model
from squeezeray.search import SearchConfig
from squeezeray.search import run_search
from squeezeray.search._footprint import ResourceError
from squeezeray.search._footprint import estimate
from squeezeray.search._footprint import model_shape
from squeezeray.search._footprint import preflight
from squeezeray.search._footprint import shape_of
from tests._tiny import TINY_DATA
from tests._tiny import tiny_model


@pytest.fixture
def tiny_folder(tmp_path, tokenizer_dir) -> str:  # noqa: ANN001
    import transformers

    model = tiny_model(len(transformers.AutoTokenizer.from_pretrained(tokenizer_dir))).to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    model.save_pretrained(tmp_path / "tiny")
    transformers.AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(tmp_path / "tiny")
    return str(tmp_path / "tiny")


def test_the_shape_from_the_config_is_the_real_models(tiny_folder) -> None:  # noqa: ANN001
    import transformers

    real = transformers.AutoModelForCausalLM.from_pretrained(tiny_folder)
    shape = model_shape(resolve_model(tiny_folder))
    assert shape.params == sum(p.numel() for p in real.parameters())
    assert dict(shape.layers) == compressible_layers(real)
    assert [len(b) for b in shape.blocks] == [7, 7]  # q k v o gate up down in each of the two blocks
    assert shape.vocab == real.config.vocab_size and shape.hidden == 128 and not shape.gguf
    assert shape == shape_of(real)


def test_the_estimate_scales_with_the_dtype_and_the_data(tiny_folder) -> None:  # noqa: ANN001
    shape = model_shape(resolve_model(tiny_folder))
    bf16 = estimate(shape, torch.bfloat16, TINY_DATA)
    f32 = estimate(shape, torch.float32, TINY_DATA)
    assert bf16.model == 2 * shape.params and f32.model == 4 * shape.params
    assert f32.peak > bf16.peak
    longer = estimate(shape, torch.bfloat16, DataConfig(calib_seqs=64, calib_len=512, proxy_seqs=8))
    assert longer.calibration > bf16.calibration
    assert longer.evaluation == bf16.evaluation  # the original's proxy log-probs live in a file, read a chunk at a time
    assert bf16.stages["evaluation"] == bf16.runtime + bf16.model + bf16.evaluation
    assert bf16.to_dict()["peak"] == bf16.peak and "GiB" in bf16.describe()


def test_a_run_that_cannot_fit_is_refused_before_it_loads_weights(tiny_folder, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    import squeezeray.workbench as workbench

    def no_load(*_a: object, **_k: object) -> None:
        raise AssertionError("the weights were loaded")

    monkeypatch.setattr(workbench, "load_model", no_load)
    config = SearchConfig(model=tiny_folder, data=TINY_DATA, n_trials=2, workdir=tmp_path / "runs",
                          memory_limit_gib=0.05)
    with pytest.raises(ResourceError, match=r"would need about [0-9.]+ GiB at its peak \(\w+ stage\) but 0\.05 GiB is available \(memory_limit\)"):
        run_search(config, progress=False)
    assert not (tmp_path / "runs").exists()  # nothing was written either
    fits = preflight(tiny_folder, "auto", TINY_DATA, limit_bytes=64 << 30)
    assert fits.dtype == "bfloat16" and fits.peak < 64 << 30


def test_a_bad_memory_limit_names_the_field() -> None:
    with pytest.raises(SqueezerayError, match=r"memory_limit_gib=-1: must be a positive number"):
        SearchConfig(memory_limit_gib=-1)


def test_re_measuring_latency_counts_the_kernels_copies_of_the_compressed_layers() -> None:
    from tests._tiny import small_llama

    with torch.device("meta"):
        shape = shape_of(small_llama(seed=0, layers=2))
    plain = estimate(shape, torch.bfloat16, DataConfig())
    timed = estimate(shape, torch.bfloat16, DataConfig(), timed=True)
    weights = sum(o * i for o, i in shape.layers.values())
    assert plain.kernels == 0 and plain.stages["final"] == plain.stages["evaluation"]
    assert timed.stages["final"] == timed.stages["evaluation"] + weights  # one byte per compressed weight


def test_a_tall_layer_counts_one_row_blocks_working_set() -> None:
    from squeezeray.search._footprint import ModelShape

    def compression(vocab: int) -> int:
        shape = ModelShape(params=vocab * 2048, layers={"lm_head": (vocab, 2048)}, blocks=(), vocab=vocab, hidden=2048)
        return estimate(shape, torch.bfloat16, DataConfig()).compression

    small, table = compression(4096), compression(49152)  # 32 MiB of float32: compressed whole; 384 MiB: in blocks
    whole_solve = 49152 * 2048 * (2 * 8 + 4 + 1)  # GPTQ's float64/float32/uint8 copies of the whole table: 1.97 GiB
    assert table < whole_solve / 2
    assert table - small >= 2 * (49152 - 4096) * 2048  # what still grows with the rows: codes held and joined


def test_solves_are_counted_in_float64_only_where_an_option_asks_for_it() -> None:
    from squeezeray.search._footprint import ModelShape
    from squeezeray.search._footprint import solves_in_float64
    from squeezeray.spaces import GroupSpec
    from squeezeray.spaces import SearchSpace
    from squeezeray.spaces import load_space
    from squeezeray.spaces import parse_steps

    assert not solves_in_float64(parse_steps("sparsegpt-s50+gptq-w4g128").steps)
    assert solves_in_float64(parse_steps("gptq-w4g128-f64").steps)
    assert solves_in_float64(parse_steps("sparsegpt-2:4-f64+rtn-w4g128").steps)
    for name in ("per-layer", "per-layer-prune", "by-role"):
        assert not solves_in_float64(load_space(name).steps()), name
    space = SearchSpace("s", (GroupSpec("a", ("*",), quantize=("none", "gptq-w4g128", "gptq-w4g128-f64")),
                              GroupSpec("b", ("*",), quantize=("gptq-w4g128",), prune=("sparsegpt-s50",))))
    assert [s.label() for s in space.steps()] == ["gptq-w4g128", "gptq-w4g128-f64", "sparsegpt-s50"]
    assert solves_in_float64(space.steps())

    shape = ModelShape(params=3 * 8192 * 3072, layers={"up": (8192, 3072), "down": (3072, 8192)}, blocks=(),
                       vocab=0, hidden=3072)
    f64 = estimate(shape, torch.bfloat16, DataConfig())
    f32 = estimate(shape, torch.bfloat16, DataConfig(), float64_solve=False)
    assert f64.float64_solve and not f32.float64_solve and "solves in float32" in f32.describe()
    # down's working set is the largest: a 64 MiB block of its float32 rows (2048 of 8192) in two copies and two
    # 8192-wide Hessians, 4 bytes less an element each
    assert f64.compression - f32.compression == 2048 * 8192 * 2 * 4 + 2 * 8192 * 8192 * 4
    assert f32.to_dict()["float64_solve"] is False
    assert (f32.calibration, f32.evaluation) == (f64.calibration, f64.evaluation)
