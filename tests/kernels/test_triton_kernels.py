"""Triton kernels against their torch references.

Without a GPU they run in Triton's interpreter on small shapes (see conftest.py); with one,
the same checks run compiled on the GPU, and the ``gpu``-marked tests add real LLM shapes
and the kernel selector.
"""

from __future__ import annotations

import pytest
import torch

from squeezeray.kernels import KernelPath
from squeezeray.kernels import error_bound
from squeezeray.kernels import relative_error
from squeezeray.kernels._reference import dequant_matmul_reference
from squeezeray.kernels._reference import quantize_per_token_int8
from squeezeray.kernels._reference import sparse24_matmul_reference
from squeezeray.kernels._reference import w8a8_matmul_reference
from squeezeray.techniques._formats import minmax_grid
from squeezeray.techniques._packing import pack_bits

from tests.kernels._helpers import compressed
from tests.kernels._helpers import HAS_GPU
from tests.kernels._helpers import gpu

pytest.importorskip("triton", reason="Triton kernels need the 'kernels' extra (pip install 'squeezeray[kernels]')")

SMALL = {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32}


def _packed(n: int, k: int, bits: int, group: int, symmetric: bool, seed: int = 0):  # noqa: ANN202
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(seed))
    grid = minmax_grid(w, bits=bits, group_size=group, symmetric=symmetric)
    codes = pack_bits(grid.quantize(w), bits)
    zeros = None if symmetric else pack_bits(grid.zeros.round().to(torch.uint8), bits)
    return codes, grid.scales.half(), zeros


def _on(t: torch.Tensor | None, device: str) -> torch.Tensor | None:
    return None if t is None else t.to(device)


def test_interpreter_is_active_without_gpu() -> None:
    from squeezeray.kernels._triton_common import interpreting

    assert interpreting() or HAS_GPU


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("m", [1, 17])
def test_dequant_matmul_matches_reference(bits: int, symmetric: bool, m: int, device: str) -> None:
    from squeezeray.kernels._triton_dequant import dequant_matmul

    n, k, group = 40, 200, 64  # ragged last group (200 = 3 x 64 + 8), N not a tile multiple
    codes, scales, zeros = _packed(n, k, bits, group, symmetric, seed=bits)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m))
    ref = dequant_matmul_reference(x, codes, scales, zeros, n=n, bits=bits, group_size=group, symmetric=symmetric)
    for dtype in (torch.float32, torch.float16):
        out = torch.full((m, n), float("nan"), dtype=dtype, device=device)
        y = dequant_matmul(
            x.to(device, dtype), codes.to(device), scales.to(device), _on(zeros, device),
            bits=bits, group_size=group, symmetric=symmetric, out=out, config=SMALL,
        )
        assert y is out and bool(torch.isfinite(y).all()), "every output element must be written"
        assert relative_error(ref, y.float().cpu()) <= error_bound(dtype)


def test_dequant_matmul_checks_shapes() -> None:
    from squeezeray.kernels._triton_dequant import dequant_matmul

    codes, scales, zeros = _packed(16, 64, 4, 32, False)
    x = torch.randn(2, 64)
    with pytest.raises(ValueError, match="bits=5"):
        dequant_matmul(x, codes, scales, zeros, bits=5, group_size=32, symmetric=False)
    with pytest.raises(ValueError, match="groups"):
        dequant_matmul(x, codes, scales, zeros, bits=4, group_size=16, symmetric=False)
    with pytest.raises(ValueError, match="codes must be"):
        dequant_matmul(x, codes[:-1], scales, zeros, bits=4, group_size=32, symmetric=False)
    with pytest.raises(ValueError, match="zeros"):
        dequant_matmul(x, codes, scales, None, bits=4, group_size=32, symmetric=False)
    with pytest.raises(ValueError, match=r"\(M, K\)"):
        dequant_matmul(x.to(torch.int32), codes, scales, zeros, bits=4, group_size=32, symmetric=False)


def _sparse24(n: int, k: int, seed: int = 0):  # noqa: ANN202
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g).half()
    keep = torch.stack([torch.randperm(4, generator=g)[:2].sort().values for _ in range(n * k // 4)]).view(n, k // 4, 2)
    values = torch.gather(w.view(n, k // 4, 4), 2, keep).reshape(-1).contiguous()
    return values, pack_bits(keep, 2)


@pytest.mark.parametrize("m", [1, 17])
def test_sparse24_matches_reference(m: int, device: str) -> None:
    from squeezeray.kernels._triton_sparse24 import sparse24_matmul

    n, k = 40, 96
    values, index = _sparse24(n, k)
    x = torch.randn(m, k)
    ref = sparse24_matmul_reference(x, values, index, n=n)
    for dtype in (torch.float32, torch.float16):
        out = torch.full((m, n), float("nan"), dtype=dtype, device=device)
        y = sparse24_matmul(x.to(device, dtype), values.to(device), index.to(device), n=n, out=out, config=SMALL)
        assert bool(torch.isfinite(y).all())
        assert relative_error(ref, y.float().cpu()) <= error_bound(dtype)
    with pytest.raises(ValueError, match="multiple of 4"):
        sparse24_matmul(torch.randn(1, 6, device=device), values.to(device), index.to(device), n=n)


def test_sparse24_kernel_serves_a_pruned_layer_exactly() -> None:
    """The storage the kernel reads is the one CompressedLinear writes for 2:4 pruning."""
    layer = compressed("wanda-2:4", 48, 64)
    x = torch.randn(3, 64)
    ref = sparse24_matmul_reference(x, layer.values, layer.nm_index, n=48)
    y = layer.forward_reference(x) - layer.bias.float()
    assert relative_error(y, ref) < 1e-6


def test_quantize_rows_equals_torch_codes(device: str) -> None:
    from squeezeray.kernels._triton_w8a8 import quantize_rows

    x = torch.randn(6, 300)
    x[1] = 0.0
    x[2, :10] = torch.tensor([127.0, 0.5, 1.5, 2.5, -0.5, -1.5, 3.5, 126.5, -2.5, 4.5])  # scale 1: exact .5 ties
    x[2, 10:] = 0.25
    q, s = quantize_rows(x.to(device), block_k=128)
    q_ref, s_ref = quantize_per_token_int8(x)
    assert torch.equal(q.cpu(), q_ref)
    assert torch.equal(s.cpu(), s_ref.view(-1))


@pytest.mark.parametrize("m", [1, 17])
def test_w8a8_matches_reference(m: int, device: str) -> None:
    from squeezeray.kernels._triton_w8a8 import w8a8_matmul

    n, k = 40, 96
    w = torch.randn(n, k)
    grid = minmax_grid(w, bits=8, group_size=None, symmetric=True)
    codes, scales = pack_bits(grid.quantize(w), 8), grid.scales.half()
    x = torch.randn(m, k)
    ref = w8a8_matmul_reference(x, codes, scales)
    out = torch.full((m, n), float("nan"), device=device)
    y = w8a8_matmul(x.to(device), codes.to(device), scales.to(device), out=out, config=SMALL)
    assert bool(torch.isfinite(y).all())
    assert relative_error(ref, y.cpu()) <= error_bound(torch.float32)
    with pytest.raises(ValueError, match="one scale per row"):
        w8a8_matmul(x.to(device), codes.to(device), scales.repeat(1, 2).to(device))


# ------------------------------------------------------------------ GPU only
LLM_SHAPES = [(4096, 4096), (4096, 14336), (14336, 4096)]  # (in, out): attention, MLP up, MLP down


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("shape", LLM_SHAPES)
@pytest.mark.parametrize("m", [1, 16, 64])
def test_gpu_dequant_real_shapes_autotuned(shape: tuple[int, int], m: int) -> None:
    from squeezeray.kernels._triton_dequant import dequant_matmul

    k, n = shape
    codes, scales, _ = _packed(n, k, 4, 128, True)
    x = torch.randn(m, k)
    ref = dequant_matmul_reference(x, codes, scales, None, n=n, bits=4, group_size=128, symmetric=True)
    y = dequant_matmul(x.cuda().half(), codes.cuda(), scales.cuda(), None, bits=4, group_size=128, symmetric=True)
    assert relative_error(ref, y.float().cpu()) <= error_bound(torch.float16)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize(
    ("preset", "path"),
    [("rtn-w4g64", KernelPath.TRITON_DEQUANT), ("rtn-w3g64-asym", KernelPath.TRITON_DEQUANT),
     ("wanda-2:4", KernelPath.TRITON_SPARSE24), ("w8a8-a0.5", KernelPath.TRITON_W8A8)],
)
def test_gpu_selector_picks_checked_triton_paths(preset: str, path: KernelPath) -> None:
    from squeezeray.kernels import KernelSelector

    layer = compressed(preset, 256, 512).cuda()
    choice = KernelSelector(device="cuda", token_counts=(1, 64), repeats=3).select(layer)
    assert path in choice.errors, choice.rejected.get(path)
