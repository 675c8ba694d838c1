"""Models load in their own precision; a bfloat16 model's candidates compute in bfloat16."""

from __future__ import annotations

import json

import pytest
import torch

from squeezeray._errors import ModelLoadError
from squeezeray._errors import SqueezerayError
from squeezeray.models import LoadedModel
from squeezeray.models import ModelSource
from squeezeray.models import resolve_dtype
from squeezeray.models import resolve_model


def _folder(tmp_path, **cfg) -> ModelSource:  # noqa: ANN001, ANN003
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", **cfg}))
    return ModelSource(str(tmp_path), str(tmp_path), None)


def test_auto_reads_what_the_checkpoint_holds(tmp_path) -> None:  # noqa: ANN001
    assert resolve_dtype("auto", resolve_model(None)) is torch.bfloat16  # GGUF blocks dequantize to bfloat16
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    assert resolve_dtype("auto", _folder(tmp_path / "a", torch_dtype="float16")) is torch.float16
    assert resolve_dtype("auto", _folder(tmp_path / "b", dtype="bfloat16")) is torch.bfloat16
    assert resolve_dtype("auto", _folder(tmp_path / "c")) is torch.float32  # a config that names none
    assert resolve_dtype("float32", resolve_model(None)) is torch.float32
    assert resolve_dtype(torch.float16, resolve_model(None)) is torch.float16


def test_an_unknown_dtype_is_refused_by_name() -> None:
    with pytest.raises(ModelLoadError, match=r"dtype='float64': choose one of auto, bfloat16, float16, float32"):
        resolve_dtype("float64", resolve_model(None))
    from squeezeray.search import SearchConfig

    with pytest.raises(SqueezerayError, match="dtype"):
        SearchConfig(dtype="int8")


def test_a_bfloat16_candidate_computes_in_bfloat16(tokenizer_dir) -> None:  # noqa: ANN001
    import transformers

    from squeezeray.compress import compress_layer
    from squeezeray.workbench import Workbench
    from tests._tiny import TINY_DATA
    from tests._tiny import tiny_model

    tok = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = tiny_model(len(tok)).to(dtype)
        bench = Workbench(LoadedModel(model, tok, ModelSource("tiny", tokenizer_dir, None)), TINY_DATA)
        assert bench.loaded.dtype is dtype
        plan = bench.uniform("gptq-w4g64")
        seen = []

        def layer_fn(name, linear, lp, stats, *, memo):  # noqa: ANN001, ANN202
            m = compress_layer(name, linear, lp, stats, memo=memo)
            m.register_forward_hook(lambda m, i, o: seen.append((None if m._dense is None else m._dense.dtype, o.dtype)))
            return m

        results[dtype] = bench.evaluate_plan(plan, ["kl"], layer_fn=layer_fn)["kl"].value
        assert seen and all(d == dtype and o == dtype for d, o in seen)  # dense weights and outputs in the model's dtype
        assert all(p.dtype is dtype for p in model.parameters())
    assert results[torch.float32] > 0 and results[torch.bfloat16] > 0
    assert results[torch.bfloat16] == pytest.approx(results[torch.float32], rel=0.5)  # same plan, another precision
