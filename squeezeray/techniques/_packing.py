"""Bit-packing of integer codes into bytes (pure functions).

Codes of ``bits`` bits (1..8) are written as one little-endian bit stream, so a
tensor of ``n`` codes takes exactly ``ceil(n * bits / 8)`` bytes. 8-bit codes
are stored as they are.
"""

from __future__ import annotations

import math

import torch


def packed_nbytes(numel: int, bits: int) -> int:
    """Bytes that :func:`pack_bits` uses for ``numel`` codes of ``bits`` bits."""
    return math.ceil(numel * bits / 8)


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer codes in ``[0, 2**bits)`` into a 1-D uint8 tensor.

    Args:
        codes: Any shape, integer dtype, values in ``[0, 2**bits)``.
        bits: Bits per code, 1..8.

    Returns:
        uint8 tensor of shape ``(ceil(numel * bits / 8),)``.
    """
    if not 1 <= bits <= 8:
        raise ValueError(f"bits={bits}: must be in 1..8")
    flat = codes.reshape(-1).to(torch.uint8)
    if bits == 8:
        return flat.clone()
    if flat.numel() and int(flat.max()) >= (1 << bits):
        raise ValueError(f"code {int(flat.max())} does not fit in {bits} bits")
    if 8 % bits == 0:  # 1, 2, 4 bits: whole codes per byte
        per = 8 // bits
        pad = (-flat.numel()) % per
        flat = torch.cat([flat, flat.new_zeros(pad)]).view(-1, per)
        shifts = torch.arange(0, 8, bits, dtype=torch.uint8, device=flat.device)
        return (flat << shifts).sum(dim=1, dtype=torch.uint8)
    # general bit stream: (n, bits) bit matrix, then 8 bits per byte
    bit_idx = torch.arange(bits, dtype=torch.uint8, device=flat.device)
    stream = ((flat.unsqueeze(1) >> bit_idx) & 1).reshape(-1)
    pad = (-stream.numel()) % 8
    stream = torch.cat([stream, stream.new_zeros(pad)]).view(-1, 8)
    return (stream << torch.arange(8, dtype=torch.uint8, device=flat.device)).sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: the first ``numel`` codes as a 1-D uint8 tensor."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits={bits}: must be in 1..8")
    if packed.numel() != packed_nbytes(numel, bits):
        raise ValueError(
            f"packed buffer has {packed.numel()} bytes, {packed_nbytes(numel, bits)} expected "
            f"for {numel} codes of {bits} bits"
        )
    if bits == 8:
        return packed.reshape(-1)[:numel]
    mask = (1 << bits) - 1
    if 8 % bits == 0:
        shifts = torch.arange(0, 8, bits, dtype=torch.uint8, device=packed.device)
        return ((packed.unsqueeze(1) >> shifts) & mask).reshape(-1)[:numel]
    return _unpack_stream(packed.reshape(-1), bits, numel)


_STREAM_CHUNKS = 1 << 16
"""Groups of whole bytes a 3/5/6/7-bit stream is unpacked at a time (bounded, in-cache temporaries)."""


def _unpack_stream(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """3, 5, 6 or 7-bit codes: every ``lcm(8, bits) / 8`` bytes hold ``lcm(8, bits) / bits`` whole codes, so each such
    group of bytes is read as one little-endian integer and its codes shifted out of it (the stream's order)."""
    group = bits // math.gcd(8, bits)  # bytes per group: 3 (3 and 6 bits), 5, 7
    per = 8 * group // bits  # codes per group
    wide = torch.int32 if group <= 3 else torch.int64
    dev = packed.device
    byte_shift = (8 * torch.arange(group, device=dev)).to(wide)
    code_shift = (bits * torch.arange(per, device=dev)).to(wide)
    n_groups = -(-packed.numel() // group)
    out = torch.empty(n_groups * per, dtype=torch.uint8, device=dev)
    for g0 in range(0, n_groups, _STREAM_CHUNKS):
        g1 = min(g0 + _STREAM_CHUNKS, n_groups)
        chunk = packed[g0 * group : g1 * group]
        if chunk.numel() < (g1 - g0) * group:  # the stream's last group is short: zero bits after its end
            chunk = torch.cat([chunk, chunk.new_zeros((g1 - g0) * group - chunk.numel())])
        value = (chunk.view(-1, group).to(wide) << byte_shift).sum(dim=1, dtype=wide)  # (groups,)
        out[g0 * per : g1 * per] = ((value.unsqueeze(1) >> code_shift) & ((1 << bits) - 1)).reshape(-1)
    return out[:numel]
