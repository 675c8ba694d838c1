"""Swapping compressed layers into one working model in place, and putting the originals back.

A candidate is the original model with some of its linear layers replaced. Instead of a deep
copy per candidate, :func:`swapped` replaces the planned modules of the one model the caller
holds, yields it, and restores the very same original module objects afterwards (also when the
body raises), so the original's weights are kept once and stay bit-identical however many
candidates pass through it. Only one swap may be active on a model at a time.

While a candidate is swapped in, the originals it replaced are not read: where their weights are pages of a
memory-mapped checkpoint (a Hugging Face folder's safetensors), those pages are taken out of the resident set
(:func:`squeezeray._memory.page_out`) and come back from the page cache when next read, so a candidate's
compressed layers do not sit in memory beside the dense layers they replace.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping

from torch import nn

from squeezeray._errors import SqueezerayError
from squeezeray._memory import page_out
from squeezeray.compress._embedding import mark_tied
from squeezeray.compress._embedding import replace_module
from squeezeray.compress._embedding import with_tied

_ACTIVE = "_squeezeray_swap_active"


def is_swapped(model: nn.Module) -> bool:
    """Whether a :func:`swapped` block is active on ``model`` (its modules are not all its own)."""
    return bool(getattr(model, _ACTIVE, False))


@contextlib.contextmanager
def swapped(model: nn.Module, replacements: Mapping[str, nn.Module], *, page_out_originals: bool = True
            ) -> Iterator[nn.Module]:
    """``model`` with ``replacements`` (module name -> new module) in place, restored on exit.

    A compressed head of a tied table brings the input embedding that gathers from it
    (:func:`~squeezeray.compress.with_tied`); both are restored. The originals' file-backed pages are advised out
    of the resident set (:func:`page_out_modules`) unless ``page_out_originals`` is False (a caller that did it
    as it compressed each one).

    Raises:
        SqueezerayError: a swap is already active on ``model`` (nested swaps would restore the
            wrong modules), or a name is not a submodule of it.
    """
    if is_swapped(model):
        raise SqueezerayError("swapped(): a swap is already active on this model; finish it first")
    originals: dict[str, nn.Module] = {}
    replacements = with_tied(model, replacements)  # a compressed tied head brings its embedding along
    setattr(model, _ACTIVE, True)
    try:
        for name, new in replacements.items():
            try:
                originals[name] = model.get_submodule(name)
            except AttributeError:
                raise SqueezerayError(f"swapped(): the model has no module {name!r}") from None
            replace_module(model, name, new)
        mark_tied(model)
        if page_out_originals:
            page_out_modules(originals.values())
        yield model
    finally:
        for name, old in originals.items():
            replace_module(model, name, old)
        mark_tied(model)
        setattr(model, _ACTIVE, False)


def page_out_modules(modules: Iterable[nn.Module]) -> int:
    """Advise the file-backed host pages of ``modules``' parameters and buffers out of the resident set; returns the
    bytes advised (see :func:`squeezeray._memory.page_out`)."""
    spans = {(t.data_ptr(), t.numel() * t.element_size()) for m in modules
             for t in (*m.parameters(), *m.buffers()) if t.device.type == "cpu" and t.numel()}
    return page_out(sorted(spans))
