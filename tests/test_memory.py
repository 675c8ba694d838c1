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
    got = _memory.kib_fields("/proc/self/status", ("VmRSS", "RssAnon", "NoSuchKey"))
    assert set(got) == {"VmRSS", "RssAnon"} and 0 < got["RssAnon"] <= got["VmRSS"]
    assert _memory.kib_fields("/proc/0/no-such-file", ("VmRSS",)) == {}


def _rss_file() -> int:
    return _memory._kib_field(_memory._STATUS, "RssFile") or 0  # noqa: SLF001


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc, madvise")
def test_page_out_drops_file_backed_pages_and_keeps_their_contents(tmp_path) -> None:  # noqa: ANN001
    import torch

    n = 16 << 20  # 64 MiB of float32
    path = tmp_path / "weights.bin"
    torch.arange(n, dtype=torch.float32).numpy().tofile(path)
    mapped = torch.from_file(str(path), shared=False, size=n, dtype=torch.float32)  # pages of the file
    total = float(mapped.double().sum())  # every page read: resident
    assert any(s <= mapped.data_ptr() < e for s, e in _memory.file_backed_ranges())
    before = _rss_file()
    advised = _memory.page_out([(mapped.data_ptr(), n * 4)])
    if advised == 0:
        pytest.skip("this kernel has no MADV_PAGEOUT (Linux 5.4+)")
    assert n * 4 - 2 * 4096 <= advised <= n * 4  # whole pages inside the tensor
    assert _rss_file() <= before - (48 << 20)
    assert float(mapped.double().sum()) == total  # read back from the page cache, the same values
    anon = torch.arange(n, dtype=torch.float32)  # not file-backed: never advised, never changed
    assert _memory.page_out([(anon.data_ptr(), n * 4)]) == 0
    assert float(anon.double().sum()) == total


def test_a_swapped_out_checkpoint_layer_leaves_the_resident_set(tmp_path) -> None:  # noqa: ANN001
    import safetensors.torch
    import torch
    from torch import nn

    from squeezeray.compress import compress_layer
    from squeezeray.compress import swapped
    from squeezeray.compress._swap import page_out_modules
    from squeezeray.spaces import parse_steps
    from squeezeray.techniques import LayerStats

    torch.manual_seed(0)
    safetensors.torch.save_file({"w": torch.randn(4096, 2048)}, tmp_path / "m.safetensors")
    model = nn.Sequential(nn.Linear(2048, 4096, bias=False))
    weight = safetensors.torch.load_file(tmp_path / "m.safetensors")["w"]  # memory-mapped, as a checkpoint loads
    model[0].weight = nn.Parameter(weight, requires_grad=False)
    expected = model[0].weight.clone()
    if not any(s <= weight.data_ptr() < e for s, e in _memory.file_backed_ranges()):
        pytest.skip("this safetensors copies on load: nothing is file-backed")
    if _memory.page_out([(weight.data_ptr(), weight.numel() * 4)]) == 0:
        pytest.skip("this kernel has no MADV_PAGEOUT (Linux 5.4+)")
    small = compress_layer("0", model[0], parse_steps("rtn-w8"), LayerStats.synthetic(torch.randn(16, 2048)))
    float(model[0].weight.sum())  # every page resident again
    before = _rss_file()
    with swapped(model, {"0": small}) as candidate:
        during = _rss_file()
        assert candidate[0] is small
    assert during <= before - (24 << 20)  # the 32 MiB original is out of the resident set while the candidate runs
    float(model[0].weight.sum())
    with swapped(model, {"0": small}, page_out_originals=False):  # a caller that paged each one out already
        assert _rss_file() >= before - (4 << 20)
    assert page_out_modules([nn.Linear(4, 4)]) == 0  # anonymous weights: nothing advised
    assert torch.equal(model[0].weight, expected)  # restored, bit for bit
