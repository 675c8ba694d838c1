"""A tied token table stored compressed: the output head's matmul and the input embedding's gather.

When a model ties its input embedding to its output head (SmolLM2, Gemma 3, most small LMs), one
table serves two uses. Compressing it is one plan entry, under the head's name (``lm_head``; see
:func:`squeezeray.models.tied_table`): the head becomes a :class:`CompressedLinear` over the table
(the same kernel paths as every linear layer), and the input embedding becomes a
:class:`CompressedEmbedding` that gathers its rows from that same object, dequantizing only the rows
it looks up. The table is stored once: the embedding holds no tensor of its own and does not
register the table as a submodule, so sizes, state dicts and exports see it once, under the head.

:func:`with_tied` is where every replacement of layers (compression, the in-place swap, loading an
export) learns that replacing the tied head also replaces the embedding.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from squeezeray._device import model_device
from squeezeray._errors import PlanError
from squeezeray.compress._module import CompressedLinear


class CompressedEmbedding(nn.Module):
    """The input embedding of a tied model whose table is a :class:`CompressedLinear`.

    ``forward(ids)`` = the table's effective rows ``ids`` (what :meth:`CompressedLinear.rows` gives),
    times the original's ``embed_scale`` where it had one (Gemma scales by sqrt(hidden)), in the
    original embedding's dtype.
    """

    def __init__(self, table: CompressedLinear, *, dtype: torch.dtype, scale: torch.Tensor | None = None,
                 padding_idx: int | None = None) -> None:
        super().__init__()
        self._tied = (table,)  # a tuple: not a submodule, so the table is counted and stored once (as the head)
        self.num_embeddings = table.out_features
        self.embedding_dim = table.in_features
        self.padding_idx = padding_idx
        self.out_dtype = dtype
        if scale is not None:
            self.register_buffer("embed_scale", scale.detach().clone(), persistent=False)
        else:
            self.embed_scale = None

    @property
    def table(self) -> CompressedLinear:
        return self._tied[0]

    @classmethod
    def like(cls, original: nn.Module, table: CompressedLinear) -> CompressedEmbedding:
        """The compressed stand-in for ``original`` (an ``nn.Embedding``, or one that only scales its output
        by ``embed_scale``) over ``table``.

        Raises:
            PlanError: ``original`` is an embedding squeezeray cannot reproduce, or ``table`` has another shape.
        """
        if not isinstance(original, nn.Embedding):
            raise PlanError(f"the input embedding is a {type(original).__name__}, not an nn.Embedding: its table "
                            "cannot be shared with a compressed head")
        scale = getattr(original, "embed_scale", None)
        plain = type(original).forward is nn.Embedding.forward
        if not plain and not isinstance(scale, torch.Tensor):
            raise PlanError(f"the input embedding {type(original).__name__} overrides forward without an embed_scale: "
                            "squeezeray reproduces plain and scaled embeddings only, so the tied table stays dense")
        if original.max_norm is not None:
            raise PlanError(f"the input embedding renormalises rows (max_norm={original.max_norm}): the tied table "
                            "stays dense")
        if (original.num_embeddings, original.embedding_dim) != (table.out_features, table.in_features):
            raise PlanError(f"the input embedding is {original.num_embeddings}x{original.embedding_dim}, the "
                            f"compressed table {table.out_features}x{table.in_features}")
        return cls(table, dtype=original.weight.dtype, scale=scale if not plain else None,
                   padding_idx=original.padding_idx)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = self.table.rows(input_ids).to(self.out_dtype)
        if self.embed_scale is not None:
            out = out * self.embed_scale.to(self.out_dtype)
        return out

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, tied to a compressed table ({'+'.join(self.table.fmt.steps)})"


def with_tied(model: nn.Module, replacements: Mapping[str, nn.Module]) -> dict[str, nn.Module]:
    """``replacements`` plus the input embedding's when they replace the head of a tied table.

    A compressed head brings a :class:`CompressedEmbedding` over the same table; the original head
    (restoring) brings nothing (the caller restores the embedding it recorded).

    Raises:
        PlanError: The tied head would be replaced by a module the embedding cannot gather from.
    """
    from squeezeray.models import tied_table

    out = dict(replacements)
    table = tied_table(model)
    if table is None or table.head not in out or table.embedding in out:
        return out
    new = out[table.head]
    if not isinstance(new, CompressedLinear):
        raise PlanError(f"layer {table.head!r} is tied to the input embedding {table.embedding!r}; a "
                        f"{type(new).__name__} in its place would untie them")
    out[table.embedding] = CompressedEmbedding.like(model.get_submodule(table.embedding), new)
    return out


def _tied_by_construction(*args: object, **kwargs: object) -> None:  # noqa: ARG001 - tie_weights' signature
    """Stands in for ``tie_weights`` on a model whose table is compressed: the embedding gathers from the head's
    table, so they are tied by construction, and transformers' tie_weights (which lm-eval calls) would look for
    ``embed_tokens.weight`` and fail."""


def mark_tied(model: nn.Module) -> None:
    """Give ``model`` the no-op ``tie_weights`` while its input embedding is a :class:`CompressedEmbedding`, and
    take it away once it is not (the class's own method applies again)."""
    compressed = any(isinstance(m, CompressedEmbedding) for m in model.modules())
    if compressed:
        model.__dict__["tie_weights"] = _tied_by_construction
    else:
        model.__dict__.pop("tie_weights", None)


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Set submodule ``name`` of ``model`` to ``new`` (nothing else follows; see :func:`replace_layers`).

    ``new`` is moved (in place, as ``Module.to`` does) to the device of the module it replaces when it is elsewhere:
    a layer read from the host-side cache runs where the model does."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    device = model_device(getattr(parent, child))
    if any(t.device != device for t in (*new.parameters(), *new.buffers())):
        new.to(device)
    setattr(parent, child, new)


def replace_layers(model: nn.Module, replacements: Mapping[str, nn.Module]) -> None:
    """Put ``replacements`` (module name -> module) into ``model``, the tied embedding following its head."""
    full = with_tied(model, replacements)
    for name, module in full.items():
        replace_module(model, name, module)
    if len(full) > len(replacements):  # the embedding came along: tie_weights must leave it be
        mark_tied(model)
