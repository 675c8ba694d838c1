"""Choosing, per layer and device, the fastest *correct* kernel path, and recording the choice.

For each :class:`~squeezeray.compress.CompressedLinear` the :class:`KernelSelector`

1. asks every registered kernel whether it can serve the layer's format on the
   device; a refusal is recorded with its reason (:attr:`PathChoice.rejected`);
2. prepares the others and runs them on a random input beside the torch
   reference; a path whose relative error exceeds the bound of its compute
   dtype (:func:`~squeezeray.kernels.error_bound`), or that writes non-finite
   values, is rejected too;
3. times the survivors and the reference at each token count (e.g. 1 for
   decode, 128 for prefill) and keeps the fastest per token count. Timings are
   cached per (format, device), so the 30 identical ``up_proj`` layers of a model
   are timed once;
4. attaches a :class:`KernelDispatch` to the layer. At run time the layer uses
   the path chosen for the smallest timed token count >= the call's token
   count (the largest one beyond it) and records it in ``layer.last_path``.

Nothing falls back silently: a layer either runs a path that passed the check
for its format or the reference, and :attr:`PathChoice` says which and why.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from collections.abc import Sequence
from typing import TYPE_CHECKING
from typing import Any

import torch
from torch import nn

from squeezeray.kernels._base import KERNELS
from squeezeray.kernels._base import KernelLayer
from squeezeray.kernels._base import PreparedLinear
from squeezeray.kernels._base import error_bound
from squeezeray.kernels._base import get_kernel
from squeezeray.kernels._names import KernelPath
from squeezeray.kernels._timing import time_callable

if TYPE_CHECKING:
    from squeezeray.compress import CompressedLinear


@dataclasses.dataclass(frozen=True)
class PathChoice:
    """The kernel paths one layer runs, and the evidence.

    Attributes:
        device: Device type the choice is for.
        by_tokens: ((token_count, path), ...) ascending: the fastest correct path at each timed count.
        timings_ms: token_count -> path -> median milliseconds of a full layer call.
        errors: path -> relative Frobenius error against the torch reference (paths that passed).
        rejected: path -> why it cannot serve this layer (unsupported, failed, or too inaccurate).
    """

    device: str
    by_tokens: tuple[tuple[int, KernelPath], ...]
    timings_ms: Mapping[int, Mapping[KernelPath, float]]
    errors: Mapping[KernelPath, float]
    rejected: Mapping[KernelPath, str]

    def path_for(self, tokens: int) -> KernelPath:
        """The path used for a call with ``tokens`` rows."""
        for count, path in self.by_tokens:
            if tokens <= count:
                return path
        return self.by_tokens[-1][1]

    def paths(self) -> tuple[KernelPath, ...]:
        return tuple(dict.fromkeys(p for _, p in self.by_tokens))

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "by_tokens": [[t, p.value] for t, p in self.by_tokens],
            "timings_ms": {str(t): {p.value: ms for p, ms in d.items()} for t, d in self.timings_ms.items()},
            "errors": {p.value: e for p, e in self.errors.items()},
            "rejected": {p.value: r for p, r in self.rejected.items()},
        }


class KernelDispatch:
    """What a layer holds at run time: its :class:`PathChoice` and the prepared kernels it uses."""

    def __init__(self, choice: PathChoice, prepared: Mapping[KernelPath, PreparedLinear]) -> None:
        missing = [p for p in choice.paths() if p is not KernelPath.REFERENCE and p not in prepared]
        if missing:
            raise ValueError(f"no prepared kernel for chosen path(s) {[p.value for p in missing]}")
        self.choice = choice
        self.prepared = dict(prepared)

    def pick(self, tokens: int) -> PreparedLinear | None:
        """The prepared kernel for ``tokens`` rows, or None for the torch reference."""
        path = self.choice.path_for(tokens)
        return None if path is KernelPath.REFERENCE else self.prepared[path]

    @property
    def runtime_nbytes(self) -> int:
        return sum(p.runtime_nbytes for p in self.prepared.values())


def relative_error(reference: torch.Tensor, approx: torch.Tensor) -> float:
    """||approx - reference|| / ||reference|| (Frobenius); inf when ``approx`` has non-finite values."""
    if approx.shape != reference.shape or not bool(torch.isfinite(approx).all()):
        return float("inf")
    denom = float(reference.float().norm())
    return float((approx.float() - reference.float()).norm()) / max(denom, 1e-30)


def _format_key(layer: CompressedLinear) -> tuple[Any, ...]:
    d = layer.fmt.to_dict()
    d.pop("steps")
    return tuple(sorted((k, str(v)) for k, v in d.items()))


class KernelSelector:
    """Chooses and attaches kernel paths; holds the timing cache (reuse one selector across candidates).

    Args:
        device: Device the layers run on (their buffers must already be there).
        token_counts: Token counts (rows of the layer input) to time, e.g. (1, 128) for decode and prefill.
        paths: Candidate kernels (default: every registered one); the reference is always a candidate.
        warmup, repeats: Timing settings per candidate and token count.
        seed: Seed of the random test inputs.
    """

    def __init__(
        self,
        *,
        device: str | torch.device = "cpu",
        token_counts: Sequence[int] = (1, 128),
        paths: Sequence[KernelPath] | None = None,
        warmup: int = 2,
        repeats: int = 5,
        seed: int = 0,
    ) -> None:
        counts = tuple(sorted(set(int(t) for t in token_counts)))
        if not counts or counts[0] < 1:
            raise ValueError(f"token_counts={tuple(token_counts)!r}: need positive integers")
        self.device = torch.device(device)
        self.token_counts = counts
        candidates = [KernelPath(p) for p in (paths if paths is not None else [KernelPath(n) for n in KERNELS.names()])]
        self.paths = tuple(p for p in candidates if p is not KernelPath.REFERENCE)
        self.warmup, self.repeats, self.seed = warmup, repeats, seed
        self._timings: dict[tuple[Any, ...], dict[int, dict[KernelPath, float]]] = {}

    # ----------------------------------------------------------------- one layer
    @torch.no_grad()
    def select(self, layer: CompressedLinear) -> PathChoice:
        """Choose ``layer``'s paths, attach them, and return the choice."""
        rejected: dict[KernelPath, str] = {}
        prepared: dict[KernelPath, PreparedLinear] = {}
        for path in self.paths:
            kernel = get_kernel(path)
            reason = kernel.unsupported(layer.fmt, self.device)
            if reason is not None:
                rejected[path] = reason
                continue
            try:
                prepared[path] = kernel.prepare(layer)
            except (RuntimeError, ValueError) as err:
                rejected[path] = f"prepare failed: {str(err).splitlines()[0]}"

        errors: dict[KernelPath, float] = {KernelPath.REFERENCE: 0.0}
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        for path, prep in list(prepared.items()):
            bound = error_bound(get_kernel(path).compute_dtype)
            worst = 0.0
            for count in self.token_counts:
                x = torch.randn(count, layer.in_features, generator=gen).to(self.device)
                ref = layer.forward_reference(x)
                try:
                    out = layer.forward_with(x, prep)
                except (RuntimeError, ValueError) as err:
                    worst = float("inf")
                    rejected[path] = f"failed at {count} tokens: {str(err).splitlines()[0]}"
                    break
                worst = max(worst, relative_error(ref, out))
            if path in rejected:
                del prepared[path]
            elif worst > bound:
                rejected[path] = f"relative error {worst:.2e} exceeds the {get_kernel(path).compute_dtype} bound {bound:.2e}"
                del prepared[path]
            else:
                errors[path] = worst

        key = (_format_key(layer), str(self.device), tuple(sorted(p.value for p in prepared)))
        timings = self._timings.get(key)
        if timings is None:
            timings = {}
            for count in self.token_counts:
                x = torch.randn(count, layer.in_features, generator=gen).to(self.device)
                row: dict[KernelPath, float] = {}
                for path in (KernelPath.REFERENCE, *prepared):
                    prep = prepared.get(path)
                    stats = time_callable(
                        lambda prep=prep: layer.forward_with(x, prep),
                        device=self.device, warmup=self.warmup, repeats=self.repeats,
                    )
                    row[path] = stats.median_ms
                timings[count] = row
            self._timings[key] = timings
        by_tokens = tuple((count, min(row, key=row.__getitem__)) for count, row in sorted(timings.items()))
        choice = PathChoice(str(self.device.type), by_tokens, timings, errors, rejected)
        used = {p: prepared[p] for p in choice.paths() if p is not KernelPath.REFERENCE}
        layer.attach_kernels(KernelDispatch(choice, used))
        return choice

    # ----------------------------------------------------------------- a model
    def select_model(self, model: nn.Module) -> dict[str, PathChoice]:
        """Choose paths for every compressed layer of ``model``; returns name -> choice."""
        return {name: self.select(m) for name, m in model.named_modules() if isinstance(m, KernelLayer)}


def use_reference(model: nn.Module) -> int:
    """Detach all kernels: every compressed layer runs the torch reference. Returns the layer count."""
    layers = [m for m in model.modules() if isinstance(m, KernelLayer)]
    for m in layers:
        m.attach_kernels(None)
    return len(layers)


def path_summary(model: nn.Module) -> dict[str, int]:
    """How many compressed layers last ran each path (``never-run`` before the first call)."""
    out: dict[str, int] = {}
    for m in model.modules():
        if isinstance(m, KernelLayer):
            key = m.last_path or "never-run"
            out[key] = out.get(key, 0) + 1
    return out
