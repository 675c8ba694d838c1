from __future__ import annotations

import pytest
import torch

from squeezeray.techniques._packing import pack_bits
from squeezeray.techniques._packing import packed_nbytes
from squeezeray.techniques._packing import unpack_bits


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("numel", [1, 7, 64, 1001])
def test_round_trip_and_exact_size(bits: int, numel: int) -> None:
    codes = torch.randint(0, 2**bits, (numel,), dtype=torch.uint8)
    packed = pack_bits(codes, bits)
    assert packed.dtype == torch.uint8
    assert packed.numel() == packed_nbytes(numel, bits) == -(-numel * bits // 8)
    assert torch.equal(unpack_bits(packed, bits, numel), codes)


def test_rejects_codes_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="does not fit in 3 bits"):
        pack_bits(torch.tensor([8]), 3)


def test_rejects_wrong_buffer_length() -> None:
    with pytest.raises(ValueError, match="expected"):
        unpack_bits(torch.zeros(3, dtype=torch.uint8), 4, 10)


def _stream_bits(packed: torch.Tensor) -> list[int]:
    return [(int(b) >> k) & 1 for b in packed for k in range(8)]


@pytest.mark.parametrize("bits", [3, 5, 6, 7])
def test_odd_widths_read_the_little_endian_stream_in_chunks(bits: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Code i is stream bits [i*bits, (i+1)*bits), low bit first, across chunks and a short last byte group."""
    import squeezeray.techniques._packing as packing

    monkeypatch.setattr(packing, "_STREAM_CHUNKS", 3)  # several chunks, the last one ragged
    g = torch.Generator().manual_seed(bits)
    for numel in (1, 8, 13, 61):
        codes = torch.randint(0, 2**bits, (numel,), dtype=torch.uint8, generator=g)
        packed = pack_bits(codes, bits)
        stream = _stream_bits(packed)
        expected = [sum(stream[i * bits + k] << k for k in range(bits)) for i in range(numel)]
        assert unpack_bits(packed, bits, numel).tolist() == expected == codes.tolist()
