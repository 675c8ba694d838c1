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
