"""The stored form of a compressed linear layer and the module that runs it.

A :class:`CompressedLinear` holds exactly the tensors a deployment would store,
so its :meth:`~CompressedLinear.nbytes` is the real size:

========================  =====================================================
buffer                    contents
========================  =====================================================
``codes``                 quantized codes of the kept weights, bit-packed (uint8)
``values``                float16 kept weights when the layer is not quantized
``scales`` / ``zeros``    float16 scales per (kept row, group); asymmetric zero
                          points bit-packed at the code width
``mins``                  float16 minimum per (row, group) instead of ``zeros``
                          (GGUF's Q4_1/Q5_1: ``w = scale * code + min``)
``sb_d`` / ``sb_sc``      two-level scales instead of ``scales`` (GGUF K-quants):
``sb_dmin`` / ``sb_mq``   float16 per (row, super-block), integer multipliers per
                          (row, group) bit-packed at ``scale_bits`` (signed ones
                          offset by 2**(scale_bits-1)); the minimums likewise
``mask_bits``             unstructured sparsity: 1 bit per weight
``nm_index``              n:m sparsity: ceil(log2 m) bits per kept weight
``row_index``             rows/heads sparsity: int32 index of each kept row
``lr_u`` / ``lr_v``       float16 low-rank factors (out, r) and (r, in)
``smooth``                float16 per-input-channel scale (AWQ / SmoothQuant)
``bias``                  float16
========================  =====================================================

Kept weights are stored in row-major order of the mask. The forward pass
dequantizes on the fly (``materialize`` caches the dense weight for
accuracy evaluation, where only the numbers matter, not the speed).
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from squeezeray.compress._layer_format import LayerFormat
from squeezeray.compress._rows import row_blocks
from squeezeray.techniques._formats import QuantGrid
from squeezeray.techniques._formats import SparsityPattern
from squeezeray.techniques._formats import SuperScales
from squeezeray.techniques._packing import pack_bits
from squeezeray.techniques._packing import unpack_bits
from squeezeray.techniques._state import LayerState

if TYPE_CHECKING:
    from squeezeray.kernels import KernelDispatch
    from squeezeray.kernels import PathChoice
    from squeezeray.kernels import PreparedLinear

_REFERENCE_PATH = "torch-reference"  # squeezeray.kernels.KernelPath.REFERENCE

DEQUANT_BLOCK_BYTES = 2 << 20
"""Float32 bytes of weight dequantized at once when a dense layer is unpacked whole (:meth:`CompressedLinear.
effective_weight`, :meth:`~CompressedLinear.materialize`), so that a block's temporaries stay in the CPU's caches.
Measured on a 2-vCPU EPYC VM, RTN 4-bit g128 to bfloat16: an 8192 x 3072 layer unpacked in one piece costs 7.5 ns
a weight (its 100 MB float32 temporaries stream through memory), in blocks 1.9-2.8, as a 1536 x 576 layer does
either way (1.8); 8-bit 5.3 -> 0.7."""


def _f16(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float16).contiguous()


def _gather(t: torch.Tensor, kept: torch.Tensor | None) -> torch.Tensor:
    """The kept entries of ``t`` in row-major order (all of them, flattened, when ``kept`` is None)."""
    return t.reshape(-1) if kept is None else t[kept]


def _multiplier_offset(scale_bits: int, symmetric: bool) -> int:
    """What a stored scale multiplier is offset by: a symmetric grid's are signed, stored as unsigned codes."""
    return 1 << (scale_bits - 1) if symmetric else 0


def _superblock_buffers(sb: SuperScales, symmetric: bool) -> dict[str, torch.Tensor]:
    """The stored tensors of two-level scales."""
    offset = _multiplier_offset(sb.scale_bits, symmetric)
    out = {"sb_d": _f16(sb.d), "sb_sc": pack_bits((sb.sc + offset).to(torch.uint8), sb.scale_bits)}
    if sb.dmin is not None and sb.mq is not None:
        out["sb_dmin"] = _f16(sb.dmin)
        out["sb_mq"] = pack_bits(sb.mq.to(torch.uint8), sb.scale_bits)
    return out


class CompressedLinear(nn.Module):
    """A linear layer stored compressed; computes ``y = x W^T + b`` from its buffers."""

    def __init__(self, fmt: LayerFormat, buffers: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.fmt = fmt
        self.in_features = fmt.in_features
        self.out_features = fmt.out_features
        for name, tensor in buffers.items():
            self.register_buffer(name, tensor)
        self._dense: torch.Tensor | None = None
        self._kernels: KernelDispatch | None = None
        self.last_path: str | None = None  # which path the last forward ran (see squeezeray.kernels)

    def view(self) -> CompressedLinear:
        """A layer of its own over the same stored tensors: its materialized weight, kernel choice and
        last path are its own, so one cached layer can serve many candidates (the tensors are never
        written after packing)."""
        return CompressedLinear(self.fmt, dict(self.named_buffers(recurse=False)))

    # ----------------------------------------------------------------- build
    @classmethod
    def from_state(cls, state: LayerState) -> CompressedLinear:
        """Pack a finished :class:`LayerState` into its stored form."""
        out_f, in_f = state.shape
        buffers: dict[str, torch.Tensor] = {}
        lowrank_only = state.lowrank is not None and state.lowrank.replaces_main
        sp = state.sparsity
        quant = state.quant
        n_kept = 0
        if not lowrank_only:
            if sp is None:
                kept: torch.Tensor | None = None  # every weight, stored in row-major order (no mask to gather by)
            elif sp.pattern is SparsityPattern.UNSTRUCTURED:
                kept = sp.mask
                buffers["mask_bits"] = pack_bits(sp.mask, 1)
            elif sp.pattern is SparsityPattern.NM:
                kept = sp.mask
                per_group = sp.mask.view(out_f, in_f // sp.m, sp.m)
                counts = per_group.sum(-1)
                if not bool((counts == sp.n).all()):
                    raise ValueError(f"{state.name}: mask is not {sp.n}:{sp.m} in every group")
                # positions (0..m-1) of the n kept weights of each group, ascending
                idx = torch.argsort((~per_group).to(torch.int8), dim=-1, stable=True)[..., : sp.n]
                bits = max(1, math.ceil(math.log2(sp.m)))
                buffers["nm_index"] = pack_bits(idx, bits)
            else:  # rows / heads: whole rows removed
                rows = sp.kept_rows()
                kept = torch.zeros(out_f, in_f, dtype=torch.bool, device=state.weight.device)
                kept[rows] = True
                buffers["row_index"] = rows.to(torch.int32)
            n_kept = out_f * in_f if kept is None else int(kept.sum())
            row_sel = buffers.get("row_index")
            if quant is not None:
                buffers["codes"] = pack_bits(_gather(quant.codes, kept), quant.grid.bits)
                grid = quant.grid if row_sel is None else quant.grid.select_rows(row_sel.long())
                if grid.superblock is not None:
                    buffers.update(_superblock_buffers(grid.superblock, grid.symmetric))
                else:
                    buffers["scales"] = _f16(grid.scales)
                    if grid.zeros is not None:
                        buffers["zeros"] = pack_bits(grid.zeros.round().to(torch.uint8), grid.bits)
                    if grid.mins is not None:
                        buffers["mins"] = _f16(grid.mins)
            else:
                buffers["values"] = _f16(_gather(state.weight, kept))
        rank = 0
        if state.lowrank is not None:
            rank = int(state.lowrank.u.shape[1])
            buffers["lr_u"] = _f16(state.lowrank.u)
            buffers["lr_v"] = _f16(state.lowrank.v)
        act_bits = 0
        if state.act is not None:
            act_bits = state.act.bits
            buffers["smooth"] = _f16(state.act.smooth)
        if state.bias is not None:
            buffers["bias"] = _f16(state.bias)
        grid = None if quant is None else quant.grid
        fmt = LayerFormat(
            out_features=out_f,
            in_features=in_f,
            quant_format=None if grid is None else grid.fmt,
            bits=16 if grid is None else grid.bits,
            group_size=0 if grid is None else grid.group_size,
            symmetric=True if grid is None else grid.symmetric,
            pattern=None if (sp is None or lowrank_only) else sp.pattern,
            n=0 if sp is None else sp.n,
            m=0 if sp is None else sp.m,
            n_kept=n_kept,
            rank=rank,
            lowrank_only=lowrank_only,
            act_bits=act_bits,
            has_bias=state.bias is not None,
            steps=tuple(state.applied),
            notes=tuple(state.notes),
            float_min=grid is not None and grid.float_min,
            superblock=0 if grid is None or grid.superblock is None else grid.superblock.block,
            scale_bits=0 if grid is None or grid.superblock is None else grid.superblock.scale_bits,
        )
        return cls(fmt, buffers)

    # ------------------------------------------------------------------ size
    def nbytes(self) -> int:
        """Bytes of every stored tensor plus the JSON header that describes them."""
        tensors = sum(b.numel() * b.element_size() for b in self.buffers(recurse=False))
        return tensors + len(json.dumps(self.fmt.to_dict(), separators=(",", ":")))

    # --------------------------------------------------------------- unpack
    def _kept_mask(self) -> torch.Tensor | None:
        f = self.fmt
        if f.pattern is SparsityPattern.UNSTRUCTURED:
            return unpack_bits(self.mask_bits, 1, f.out_features * f.in_features).bool().view(
                f.out_features, f.in_features
            )
        if f.pattern is SparsityPattern.NM:
            groups = f.in_features // f.m
            idx = unpack_bits(self.nm_index, f.nm_bits, f.out_features * groups * f.n).view(
                f.out_features, groups, f.n
            )
            mask = torch.zeros(f.out_features, groups, f.m, dtype=torch.bool, device=idx.device)
            mask.scatter_(2, idx.long(), True)
            return mask.view(f.out_features, f.in_features)
        return None

    def _grid(self, n_rows: int) -> QuantGrid:
        f = self.fmt
        assert f.quant_format is not None
        if f.superblock:
            n_groups = -(-f.in_features // f.group_size)
            offset = _multiplier_offset(f.scale_bits, f.symmetric)
            sc = unpack_bits(self.sb_sc, f.scale_bits, n_rows * n_groups).view(n_rows, n_groups).long() - offset
            dmin = mq = None
            if not f.symmetric:
                dmin = self.sb_dmin.float()
                mq = unpack_bits(self.sb_mq, f.scale_bits, n_rows * n_groups).view(n_rows, n_groups).long()
            sb = SuperScales(f.superblock, f.scale_bits, self.sb_d.float(), sc, dmin, mq)
            return QuantGrid(f.quant_format, f.bits, f.group_size, f.symmetric, sb.scales(), None, mins=sb.mins(),
                             superblock=sb)
        if f.float_min:
            return QuantGrid(f.quant_format, f.bits, f.group_size, False, self.scales.float(), None, mins=self.mins.float())
        zeros = None
        if not f.symmetric:
            n_groups = self.scales.shape[1]
            zeros = unpack_bits(self.zeros, f.bits, n_rows * n_groups).view(n_rows, n_groups).float()
        return QuantGrid(f.quant_format, f.bits, f.group_size, f.symmetric, self.scales.float(), zeros)

    def stored_grid(self) -> QuantGrid:
        """The grid of a quantized layer whose every row is stored (not row-pruned), as stored."""
        return self._grid(self.fmt.out_features)

    def main_weight(self) -> torch.Tensor | None:
        """The stored main weight as dense float32 (out, in), as stored (smoothing not undone)."""
        f = self.fmt
        if f.lowrank_only:
            return None
        rows = None if f.pattern not in (SparsityPattern.ROWS, SparsityPattern.HEADS) else self.row_index.long()
        n_rows = f.out_features if rows is None else int(rows.numel())
        mask = self._kept_mask()
        if f.quant_format is not None:
            codes = unpack_bits(self.codes, f.bits, f.n_kept)
            if mask is not None:
                dense_codes = torch.zeros(f.out_features, f.in_features, dtype=torch.uint8, device=codes.device)
                dense_codes[mask] = codes
                w = self._grid(n_rows).dequantize(dense_codes) * mask
            else:
                w = self._grid(n_rows).dequantize(codes.view(n_rows, f.in_features))
        else:
            if mask is not None:
                w = torch.zeros(f.out_features, f.in_features, device=self.values.device)
                w[mask] = self.values.float()
            else:
                w = self.values.float().view(n_rows, f.in_features)
        if rows is not None:
            full = torch.zeros(f.out_features, f.in_features, device=w.device)
            full[rows] = w
            w = full
        return w

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows ``ids`` of the effective weight, float32 ``(*ids.shape, in)``: exactly
        ``effective_weight()[ids]``, unpacking only those rows when the main weight is dense (a token
        table's gather: an embedding reads a few rows of a large table per forward).

        Args:
            ids: Integer row indices, any shape, in ``[0, out_features)``.
        """
        f = self.fmt
        flat = ids.reshape(-1).long()
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= f.out_features):
            raise IndexError(f"row index out of range for a table of {f.out_features} rows")
        if self._dense is not None and f.act_bits != 8:  # materialized: already the effective weight
            return self._dense[flat].reshape(*ids.shape, f.in_features)
        main: torch.Tensor | None
        if f.lowrank_only:
            main = None
        elif self._dense is not None:  # act_bits 8 caches the main weight, smoothing not undone
            main = self._dense[flat]
        elif f.pattern is None:
            main = self._main_rows(flat)
        else:  # sparse layouts store kept weights only: rows have no fixed offsets
            main = self.main_weight()[flat]  # type: ignore[index]
        if main is not None and f.act_bits:
            main = main / self.smooth.float()
        if f.rank:
            lr = self.lr_u.float()[flat] @ self.lr_v.float()
            main = lr if main is None else main + lr
        assert main is not None
        return main.reshape(*ids.shape, f.in_features)

    def _main_rows(self, flat: torch.Tensor) -> torch.Tensor:
        """Rows of a dense (unpruned) main weight, unpacked alone."""
        f = self.fmt
        n = f.in_features
        if f.quant_format is None:
            return self.values.view(f.out_features, n)[flat].float()
        b = f.bits
        if b == 8:
            codes = self.codes.view(f.out_features, n)[flat]
        elif (n * b) % 8 == 0:  # every row starts on a byte: its bytes are a stream of its own
            per_row = n * b // 8
            raw = self.codes.view(f.out_features, per_row)[flat].reshape(-1)
            codes = unpack_bits(raw, b, flat.numel() * n).view(-1, n)
        else:  # rows share bytes: read each code's bits where they lie in the stream
            at = flat.device
            pos = (flat.unsqueeze(1) * n + torch.arange(n, device=at)).unsqueeze(-1) * b + torch.arange(b, device=at)  # (k, n, b)
            bits = (self.codes[pos // 8].to(torch.int64) >> (pos % 8)) & 1
            codes = (bits << torch.arange(b, device=at)).sum(-1).to(torch.uint8)
        return self._grid(f.out_features).select_rows(flat).dequantize(codes)

    def _dense_rows(self, grid: QuantGrid | None, start: int, stop: int) -> torch.Tensor:
        """Rows ``[start, stop)`` of a dense main weight (no sparsity: every row stored in order), float32, as
        stored; ``start * in * bits`` must fall on a byte of the code stream (a multiple of 8 rows does)."""
        f = self.fmt
        n = f.in_features
        if grid is None:
            return self.values.view(f.out_features, n)[start:stop].float()
        lo, hi = start * n * f.bits, stop * n * f.bits
        if lo % 8:
            raise ValueError(f"_dense_rows: row {start} starts at bit {lo} of the code stream, not on a byte")
        codes = unpack_bits(self.codes[lo // 8 : -(-hi // 8)], f.bits, (stop - start) * n)
        rows = torch.arange(start, stop, device=codes.device)
        return grid.select_rows(rows).dequantize(codes.view(stop - start, n))

    def _effective(self, dtype: torch.dtype) -> torch.Tensor:
        """:meth:`effective_weight` in ``dtype`` (each value rounded once, from the float32 one). A dense main weight
        without low-rank factors is unpacked :data:`DEQUANT_BLOCK_BYTES` at a time into the result: the same values
        (every step is elementwise by row), without the whole layer's float32 temporaries."""
        f = self.fmt
        if f.pattern is not None or f.rank or f.lowrank_only:
            return self._whole_effective().to(dtype)
        grid = None if f.quant_format is None else self._grid(f.out_features)
        smooth = self.smooth.float() if f.act_bits else None
        source = self.values if grid is None else self.codes
        out = torch.empty(f.out_features, f.in_features, dtype=dtype, device=source.device)
        for start, stop in row_blocks(f.out_features, f.in_features, DEQUANT_BLOCK_BYTES):
            w = self._dense_rows(grid, start, stop)
            out[start:stop] = w if smooth is None else w / smooth
        return out

    def effective_weight(self) -> torch.Tensor:
        """The dense (out, in) float32 weight this layer is equivalent to (before activation quantization)."""
        return self._effective(torch.float32)

    def _whole_effective(self) -> torch.Tensor:
        w = self.main_weight()
        if w is not None and self.fmt.act_bits:
            w = w / self.smooth.float()
        if self.fmt.rank:
            lr = self.lr_u.float() @ self.lr_v.float()
            w = lr if w is None else w + lr
        assert w is not None
        return w

    def materialize(self, dtype: torch.dtype = torch.float32) -> None:
        """Cache the dense effective weight (fast evaluation; not for latency) in ``dtype``: the model's own
        (a bfloat16 model's candidate holds bfloat16 weights, as that model's runtime would). A layer with 8-bit
        activations keeps float32: its fake-quantized inputs are matched against float32 weights."""
        if self.fmt.act_bits == 8:
            self._dense = self.main_weight()
        else:
            self._dense = self._effective(dtype)

    def release(self) -> None:
        self._dense = None

    @property
    def is_materialized(self) -> bool:
        return self._dense is not None

    # --------------------------------------------------------------- kernels
    def attach_kernels(self, dispatch: KernelDispatch | None) -> None:
        """Use the kernel paths chosen by :class:`squeezeray.kernels.KernelSelector` (None: the reference)."""
        self._kernels = dispatch

    @property
    def kernel_choice(self) -> PathChoice | None:
        """The recorded path choice, or None when the layer runs the torch reference."""
        return None if self._kernels is None else self._kernels.choice

    # --------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``y = x W^T + b``; on the attached kernel path for this token count, else the torch reference."""
        if self._dense is not None or self._kernels is None:
            return self.forward_reference(x)
        return self.forward_with(x, self._kernels.pick(x.numel() // max(x.shape[-1], 1)))

    def forward_with(self, x: torch.Tensor, kernel: PreparedLinear | None) -> torch.Tensor:
        """Run the main path on ``kernel`` (None: the torch reference); low-rank and bias as the reference.

        Args:
            x: (..., in) input of any float dtype.
            kernel: Prepared main-path kernel of this layer.

        Returns:
            (..., out) in the dtype of ``x``.
        """
        if kernel is None:
            return self.forward_reference(x)
        f = self.fmt
        x2 = x.reshape(-1, f.in_features).float()  # (M, in)
        xs = x2 / self.smooth.float() if f.act_bits else x2
        y = kernel(xs)  # (M, out) float32
        if f.rank:
            y = y + (x2 @ self.lr_v.float().t()) @ self.lr_u.float().t()
        if f.has_bias:
            y = y + self.bias.float()
        self.last_path = kernel.path.value
        return y.reshape(*x.shape[:-1], f.out_features).to(x.dtype)

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The torch reference: unpack, dequantize to float32 and matmul (or the materialized weight)."""
        self.last_path = "materialized" if self._dense is not None else _REFERENCE_PATH
        f = self.fmt
        dtype = x.dtype
        x = x.float()
        if f.act_bits == 8:
            from squeezeray.techniques._actquant import fake_quant_per_token

            w = self._dense if self._dense is not None else self.main_weight()
            xs = fake_quant_per_token(x / self.smooth.float(), 8)
            y = xs @ w.t() if w is not None else torch.zeros(*x.shape[:-1], f.out_features, device=x.device)
            if f.rank:
                y = y + (x @ self.lr_v.float().t()) @ self.lr_u.float().t()
        elif self._dense is not None:
            y = (x.to(self._dense.dtype) @ self._dense.t()).float()
        else:
            y = None
            w = self.main_weight()
            if w is not None:
                xs = x / self.smooth.float() if f.act_bits == 16 else x
                y = xs @ w.t()
            if f.rank:
                lr = (x @ self.lr_v.float().t()) @ self.lr_u.float().t()  # (..., r) -> (..., out)
                y = lr if y is None else y + lr
            assert y is not None
        if f.has_bias:
            y = y + self.bias.float()
        return y.to(dtype)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, steps={'+'.join(self.fmt.steps) or 'none'}"
