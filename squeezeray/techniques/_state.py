"""The working state of one layer while its plan's steps run, and its calibration statistics."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TypeVar

import torch

from squeezeray._device import tensors_on
from squeezeray.techniques._formats import QuantGrid
from squeezeray.techniques._formats import SparsityPattern


@dataclasses.dataclass(frozen=True)
class LayerStats:
    """Calibration statistics of one linear layer's input, from the original model.

    Attributes:
        n_tokens: Number of input rows (tokens) seen.
        sq_mean: (in,) mean of x_j**2 (the diagonal of ``hessian``); Wanda's ||X_j||^2 / n.
        abs_mean: (in,) mean |x_j|; AWQ's activation salience.
        abs_max: (in,) max |x_j|; SmoothQuant's migration statistic.
        hessian: (in, in) X^T X / n in float32, or None when no technique asked for it.
            tr(dW @ hessian @ dW.T) is the mean squared output error of a weight change dW.
    """

    n_tokens: int
    sq_mean: torch.Tensor
    abs_mean: torch.Tensor
    abs_max: torch.Tensor
    hessian: torch.Tensor | None = None

    def require_hessian(self, technique: str) -> torch.Tensor:
        if self.hessian is None:
            raise RuntimeError(f"{technique} needs the calibration Hessian, which was not collected")
        return self.hessian

    @staticmethod
    def synthetic(x: torch.Tensor, *, with_hessian: bool = True) -> LayerStats:
        """Statistics of an explicit (tokens, in) input matrix (tests and small tools)."""
        x = x.reshape(-1, x.shape[-1]).float()
        n = x.shape[0]
        h = (x.T @ x) / n if with_hessian else None
        return LayerStats(n, x.pow(2).mean(0), x.abs().mean(0), x.abs().amax(0), h)


@dataclasses.dataclass
class QuantState:
    """The layer's main weight is ``grid.dequantize(codes)`` (masked where pruned).

    Attributes:
        grid: Scales / zero points per (row, group).
        codes: (out, in) uint8 codes (all positions; pruned ones are not stored).
    """

    grid: QuantGrid
    codes: torch.Tensor


@dataclasses.dataclass
class SparsityState:
    """Which weights are kept.

    Attributes:
        pattern: How the mask is structured (and stored).
        mask: (out, in) bool, True where the weight is kept.
        n, m: For ``NM``: n kept of every m consecutive inputs.
        head_dim: For ``HEADS``: output rows per head.
    """

    pattern: SparsityPattern
    mask: torch.Tensor
    n: int = 0
    m: int = 0
    head_dim: int = 0

    def kept_rows(self) -> torch.Tensor:
        """Indices of output rows with any kept weight (ROWS / HEADS patterns)."""
        return torch.nonzero(self.mask.any(dim=1)).flatten()


@dataclasses.dataclass
class LowRankState:
    """y += (x @ v.T) @ u.T; with ``replaces_main`` the factors are the whole weight.

    Attributes:
        u: (out, rank) float32.
        v: (rank, in) float32.
        replaces_main: True when there is no main weight (plain low-rank factorisation).
    """

    u: torch.Tensor
    v: torch.Tensor
    replaces_main: bool


@dataclasses.dataclass
class ActQuantState:
    """Dynamic per-token activation quantization after SmoothQuant migration.

    The layer computes ``Q(x / smooth) @ W_stored.T`` with ``W_stored = W * smooth``.

    Attributes:
        smooth: (in,) float32 per-input-channel migration scale.
        bits: Activation bits (8).
    """

    smooth: torch.Tensor
    bits: int = 8


T = TypeVar("T")


class StatsMemo:
    """What techniques derive from one statistics tensor alone (GPTQ's Hessian factor), kept while consecutive
    layers read that same tensor.

    A tall layer compresses a block of rows at a time (:func:`squeezeray.compress.compress_layer`), and layers
    that read the same input (q/k/v, gate/up) share one statistics object; a loop that compresses layers in
    order hands one memo to all of them, so an (in, in) factorisation is done once per input, not once per
    layer or row block. An entry is reused only for the very statistics tensor it was computed from (held, so
    its identity stays unique) and the same key (technique and the settings the result depends on). The memo
    holds one tensor's results at a time: the first request for another tensor drops them before computing,
    so a loop keeps one factorisation alive, not one per input.

    Statistics are kept on the host; where layers compute on another device, :meth:`placed` keeps the one device
    copy of the last statistics placed, so consecutive layers reading one input get the same copy (and with it
    the same derived results: a fresh copy per layer would be a new tensor each time).
    """

    def __init__(self) -> None:
        self._source: torch.Tensor | None = None
        self._entries: dict[tuple, object] = {}
        self._host: LayerStats | None = None  # the statistics last placed on a device, and their copy there
        self._placed: LayerStats | None = None
        self._placed_on: torch.device | None = None
        self.computed = 0  # entries computed (a test's count)
        self.copies = 0  # statistics copied to a device (a test's count)

    def get(self, key: tuple, source: torch.Tensor, compute: Callable[[], T]) -> T:
        """The value ``compute()`` gave for ``key`` and this ``source`` tensor, computed now if not yet."""
        if source is not self._source:
            self._source, self._entries = source, {}  # another tensor's results go before this one's are computed
        if key in self._entries:
            return self._entries[key]  # type: ignore[return-value]
        value = compute()
        self._entries[key] = value
        self.computed += 1
        return value

    def placed(self, stats: LayerStats, device: torch.device | str) -> LayerStats:
        """``stats`` with every tensor on ``device``: ``stats`` itself when they are there already, otherwise one
        copy, kept until other statistics are placed (the same copy for the same statistics on the same device)."""
        device = torch.device(device)
        if stats is self._host and device == self._placed_on:
            assert self._placed is not None
            return self._placed
        moved = tensors_on(stats, device)
        if moved is stats:
            return stats
        self.clear()  # the last copy and what was derived from it go first
        self._host, self._placed, self._placed_on = stats, moved, device
        self.copies += 1
        return moved

    def clear(self) -> None:
        """Drop every result, the tensor they came from and the device copy: a loop that is not left when it is done
        (a context manager's, before it yields) calls this; a function's loop lets its memo go on return."""
        self._source, self._entries, self._host, self._placed, self._placed_on = None, {}, None, None, None


@dataclasses.dataclass
class LayerState:
    """A layer between steps. Techniques read and update it in place.

    Invariant: ``weight`` is always the effective dense main-path weight, i.e.
    what ``x @ weight.T`` should compute before activation quantization and the
    low-rank path: the dequantized codes divided by ``act.smooth`` where present,
    times the mask where present.

    Attributes:
        name: Module name in the model (for messages).
        original: (out, in) float32 weight before any step; never modified.
        weight: (out, in) float32 effective main weight.
        bias: (out,) or None; kept in float16 when stored.
        quant, sparsity, lowrank, act: Set by the steps that produce them.
        applied: Labels of the steps applied so far, in order.
        notes: What a step did other than asked (e.g. Hessian damping raised), carried into the stored format.
        memo: Results derived from the statistics alone, shared by the row blocks of one layer (:class:`StatsMemo`).
    """

    name: str
    original: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None
    quant: QuantState | None = None
    sparsity: SparsityState | None = None
    lowrank: LowRankState | None = None
    act: ActQuantState | None = None
    applied: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    memo: StatsMemo = dataclasses.field(default_factory=StatsMemo, repr=False, compare=False)

    @classmethod
    def from_weight(
        cls, name: str, weight: torch.Tensor, bias: torch.Tensor | None = None, *, memo: StatsMemo | None = None
    ) -> LayerState:
        w = weight.detach().to(torch.float32, copy=True)  # one copy, from any dtype
        b = None if bias is None else bias.detach().to(torch.float32, copy=True)
        return cls(name=name, original=w, weight=w.clone(), bias=b, memo=StatsMemo() if memo is None else memo)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.weight.shape[0]), int(self.weight.shape[1]))

    @property
    def mask(self) -> torch.Tensor | None:
        return None if self.sparsity is None else self.sparsity.mask

    def effective_weight(self) -> torch.Tensor:
        """The full (out, in) weight the layer computes with, low-rank path included."""
        w = self.weight
        if self.lowrank is not None:
            lr = self.lowrank.u @ self.lowrank.v
            w = lr if self.lowrank.replaces_main else w + lr
        return w

    def set_quantized(self, grid: QuantGrid, codes: torch.Tensor) -> None:
        """Record quantized codes and refresh ``weight`` (mask and smoothing applied)."""
        self.quant = QuantState(grid, codes)
        self.refresh_weight()

    def refresh_weight(self) -> None:
        """Recompute ``weight`` from codes / smoothing / mask after a step changed them."""
        if self.quant is not None:
            w = self.quant.grid.dequantize(self.quant.codes)
            if self.act is not None:
                w = w / self.act.smooth
        else:
            w = self.weight
        if self.sparsity is not None:
            w = w * self.sparsity.mask
        self.weight = w
