"""CPU fast paths: format conversion, numerical equivalence with the torch reference, and path selection."""

from __future__ import annotations

import pytest
import torch

from squeezeray.kernels import KernelPath
from squeezeray.kernels import KernelSelector
from squeezeray.kernels import PathChoice
from squeezeray.kernels import PreparedLinear
from squeezeray.kernels import error_bound
from squeezeray.kernels import get_kernel
from squeezeray.kernels import path_summary
from squeezeray.kernels import relative_error
from squeezeray.kernels import use_reference
from squeezeray.kernels._cpu import int4_kernel_group
from squeezeray.kernels._cpu import int4pack_operands
from squeezeray.kernels._reference import dequantize_packed
from squeezeray.kernels._reference import quantize_per_token_int8
from squeezeray.techniques._actquant import fake_quant_per_token

from tests.kernels._helpers import compressed

CPU = torch.device("cpu")


def _selector(**kw: object) -> KernelSelector:
    return KernelSelector(device="cpu", token_counts=(1, 16), warmup=0, repeats=1, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("preset", "in_f"),
    [("rtn-w4g64", 192), ("rtn-w4g64-asym", 192), ("rtn-w3g64", 192), ("rtn-w2g128-asym", 256), ("rtn-w4g64", 96), ("rtn-w4", 96)],
)
def test_int4pack_operands_are_exact(preset: str, in_f: int) -> None:
    layer = compressed(preset, 32, in_f)
    f = layer.fmt
    kg = int4_kernel_group(f.group_size, f.in_features)
    assert kg is not None and f.group_size % kg == 0 and f.in_features % kg == 0
    q, sz = int4pack_operands(
        layer.codes, layer.scales, getattr(layer, "zeros", None), n=f.out_features, k=f.in_features,
        bits=f.bits, group_size=f.group_size, symmetric=f.symmetric, kernel_group=kg,
    )
    assert int(q.min()) >= 0 and int(q.max()) <= 15
    s = sz[..., 0].t().repeat_interleave(kg, dim=1).double()  # (n, k)
    z = sz[..., 1].t().repeat_interleave(kg, dim=1).double()
    w = (q.double() - 8) * s + z
    ref = dequantize_packed(layer.codes, layer.scales, getattr(layer, "zeros", None), n=f.out_features, k=f.in_features,
                            bits=f.bits, group_size=f.group_size, symmetric=f.symmetric)
    torch.testing.assert_close(w.float(), ref, rtol=1e-6, atol=1e-7)


def test_quantize_per_token_int8_matches_fake_quant() -> None:
    x = torch.randn(5, 33)
    x[2] = 0
    x[3] = torch.arange(33).float() - 16.0  # a row with many equal-magnitude values
    q, s = quantize_per_token_int8(x)
    assert q.dtype == torch.int8 and int(q.abs().max()) <= 127
    assert torch.equal(q.float() * s, fake_quant_per_token(x, 8))


@pytest.mark.parametrize(
    ("preset", "fast"),
    [
        ("rtn-w4g64", KernelPath.CPU_INT4),
        ("rtn-w4g64-asym", KernelPath.CPU_INT4),
        ("rtn-w3g64", KernelPath.CPU_INT4),
        ("rtn-w2g64", KernelPath.CPU_INT4),
        ("awq-w4g64", KernelPath.CPU_INT4),
        ("rtn-w8", KernelPath.CPU_INT8_WEIGHT),
        ("w8a8-a0.5", KernelPath.CPU_INT8_DYNAMIC),
        ("rtn-w4g64+svd-r4-res", KernelPath.CPU_INT4),
    ],
)
def test_fast_paths_pass_the_reference_check(preset: str, fast: KernelPath) -> None:
    layer = compressed(preset)
    choice = _selector().select(layer)
    assert fast in choice.errors, choice.rejected.get(fast)
    bound = error_bound(get_kernel(fast).compute_dtype)
    assert choice.errors[fast] <= bound
    # the prepared kernel, run through the layer, matches the reference on new inputs too
    prepared = get_kernel(fast).prepare(layer)
    x = torch.randn(3, 7, layer.in_features)
    y = layer.forward_with(x, prepared)
    assert layer.last_path == fast.value
    ref = layer.forward_reference(x)
    assert layer.last_path == KernelPath.REFERENCE.value
    assert y.shape == ref.shape and relative_error(ref, y) <= bound
    # the attached dispatch runs a recorded path, and the output is that of a checked path
    out = layer(x[:, :1])
    assert layer.last_path == choice.path_for(3).value
    assert relative_error(layer.forward_reference(x[:, :1]), out) <= bound


@pytest.mark.parametrize(
    ("preset", "path", "reason"),
    [
        ("nf4-g64", KernelPath.CPU_INT4, "needs integer codes"),
        ("rtn-w8g64", KernelPath.CPU_INT8_WEIGHT, "one scale per row"),
        ("rtn-w5g64", KernelPath.CPU_INT4, "<= 4-bit"),
        ("wanda-2:4", KernelPath.CPU_INT4, "float16 values"),
        ("magnitude-s50+rtn-w4g64", KernelPath.CPU_INT4, "pruned"),
        ("rtn-w8", KernelPath.CPU_INT8_DYNAMIC, "act_bits=8"),
        ("w8a8-a0.5", KernelPath.CPU_INT8_WEIGHT, "W8A8"),
        ("rtn-w4g64", KernelPath.TRITON_DEQUANT, "runs on cuda"),
    ],
)
def test_paths_that_cannot_serve_are_rejected_with_the_reason(preset: str, path: KernelPath, reason: str) -> None:
    layer = compressed(preset)
    choice = _selector().select(layer)
    assert path not in choice.paths()
    assert reason in choice.rejected[path]


def test_int4_needs_rows_in_sixteens() -> None:
    layer = compressed("rtn-w4g64", out_f=40)
    choice = _selector().select(layer)
    assert "% 16" in choice.rejected[KernelPath.CPU_INT4]
    assert choice.paths() == (KernelPath.REFERENCE,)


class _Wrong(PreparedLinear):
    path = KernelPath.CPU_INT4

    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, xs: torch.Tensor) -> torch.Tensor:
        return torch.zeros(xs.shape[0], self.n)  # fast and wrong

    @property
    def runtime_nbytes(self) -> int:
        return 0


def test_an_inaccurate_kernel_is_never_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    import squeezeray.kernels._select as sel

    real = sel.get_kernel

    class WrongInt4(type(real(KernelPath.CPU_INT4))):  # type: ignore[misc]
        def prepare(self, layer):  # noqa: ANN001, ANN202
            return _Wrong(layer.out_features)

    monkeypatch.setattr(sel, "get_kernel", lambda p: WrongInt4() if KernelPath(p) is KernelPath.CPU_INT4 else real(p))
    layer = compressed("rtn-w4g64")
    choice = _selector().select(layer)
    assert "relative error" in choice.rejected[KernelPath.CPU_INT4]
    assert choice.paths() == (KernelPath.REFERENCE,)
    layer(torch.randn(2, layer.in_features))
    assert layer.last_path == KernelPath.REFERENCE.value


def test_path_for_uses_the_smallest_timed_count_at_or_above() -> None:
    choice = PathChoice("cpu", ((1, KernelPath.CPU_INT4), (128, KernelPath.REFERENCE)), {}, {}, {})
    assert choice.path_for(1) is KernelPath.CPU_INT4
    assert choice.path_for(2) is KernelPath.REFERENCE
    assert choice.path_for(4096) is KernelPath.REFERENCE
    assert choice.paths() == (KernelPath.CPU_INT4, KernelPath.REFERENCE)
    d = choice.to_dict()
    assert d["by_tokens"] == [[1, "cpu-int4pack"], [128, "torch-reference"]]


def test_select_model_use_reference_and_summary() -> None:
    model = torch.nn.Sequential(compressed("rtn-w4g64"), torch.nn.ReLU(), compressed("w8a8-a0.5", 48, 48, seed=1))
    sel = _selector()
    choices = sel.select_model(model)
    assert set(choices) == {"0", "2"}
    model(torch.randn(1, 192))
    summary = path_summary(model)
    # which path wins is timed on this machine (a small int8 layer may run faster on the reference): the summary
    # must report what each layer's choice says for a one-token call, and every layer must have run
    expected: dict[str, int] = {}
    for choice in choices.values():
        key = choice.path_for(1).value
        expected[key] = expected.get(key, 0) + 1
    assert summary == expected and "never-run" not in summary
    assert model[0].kernel_choice is choices["0"]
    assert use_reference(model) == 2 and model[0].kernel_choice is None
    model(torch.randn(1, 192))
    assert path_summary(model) == {"torch-reference": 2}


def test_timings_are_cached_per_format() -> None:
    sel = _selector()
    a, b = compressed("rtn-w4g64", seed=1), compressed("rtn-w4g64", seed=2)
    ca, cb = sel.select(a), sel.select(b)
    assert ca.timings_ms is cb.timings_ms  # same format and shape: timed once
    assert ca.errors[KernelPath.CPU_INT4] != cb.errors[KernelPath.CPU_INT4]  # but checked per layer
    other = sel.select(compressed("rtn-w4g64", 32, 192))
    assert other.timings_ms is not ca.timings_ms  # another shape is timed again


def test_materialized_layer_uses_the_dense_cache() -> None:
    layer = compressed("rtn-w4g64")
    _selector().select(layer)
    layer.materialize()
    layer(torch.randn(2, layer.in_features))
    assert layer.last_path == "materialized"
    layer.release()


def test_error_bounds() -> None:
    assert error_bound(torch.float32) < 1e-4 < error_bound(torch.float16) < error_bound(torch.bfloat16) < 0.02
    with pytest.raises(ValueError):
        error_bound(torch.int8)
