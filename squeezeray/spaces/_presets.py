"""The packaged search spaces (``weights-int``, ``per-layer``, ``gguf``, ``by-role`` ...) and
:func:`load_space`, which takes a preset name, a YAML file or a space."""

from __future__ import annotations

from pathlib import Path
from typing import Any


from squeezeray._errors import SqueezerayError
from squeezeray._schema import did_you_mean
from squeezeray.spaces._space import GroupSpec
from squeezeray.spaces._space import NONE
from squeezeray.spaces._space import Order
from squeezeray.spaces._space import SearchSpace
from squeezeray.spaces._space import Tie


ATTN_QKV = ("*.self_attn.q_proj", "*.self_attn.k_proj", "*.self_attn.v_proj")


ATTN_O = ("*.self_attn.o_proj",)


MLP_GATE_UP = ("*.mlp.gate_proj", "*.mlp.up_proj")


MLP_DOWN = ("*.mlp.down_proj",)


HEAD = ("lm_head", "*.lm_head", "embed_out", "*.embed_out")


HEAD_QUANT = ("rtn-w8", "gptq-w6g64", "gptq-w5g64", "gptq-w4g64", NONE)


def _head_group() -> GroupSpec:
    """The output head / tied token table: a group (and one unit) of its own in every preset, first so no
    catch-all group claims it."""
    return GroupSpec("head", HEAD, quantize=HEAD_QUANT)


ROLES = (("attn_qkv", ATTN_QKV), ("attn_o", ATTN_O), ("mlp_gate_up", MLP_GATE_UP), ("mlp_down", MLP_DOWN))


def _role_groups(**choices: Any) -> tuple[GroupSpec, ...]:
    return tuple(GroupSpec(name, match, **choices) for name, match in ROLES)


def _four_groups(**choices: Any) -> tuple[GroupSpec, ...]:
    return _role_groups(**choices) + (GroupSpec("other", ("*",), **{k: v for k, v in choices.items() if k == "tie"},
                                                quantize=("rtn-w8", NONE)),)


def _by_role() -> tuple[GroupSpec, ...]:
    """Six tied groups: the first two blocks, the last two, then q/k/v, o, gate/up and down elsewhere."""
    options = {"quantize": ("rtn-w8", "gptq-w4g128", "gptq-w3g128"), "tie": Tie.ALL}
    return (
        GroupSpec("first_blocks", ("*",), blocks=(0, 1), **options),
        GroupSpec("last_blocks", ("*",), blocks=(-2, -1), **options),
        *_role_groups(**options),
    )


PER_LAYER_QUANT = ("gptq-w2g64-asym-clip", "gptq-w2g32-asym-clip", "gptq-w3g128-asym-clip", "gptq-w3g64-asym-clip",
                   "gptq-w3g32-asym-clip", "gptq-w4g128-asym-clip", "gptq-w4g64-asym-clip", "gptq-w5g128-asym-clip",
                   "rtn-w8")
"""Options of every unit in ``per-layer``: GPTQ with zero points and the clipping search (on SmolLM2-135M,
uniform 3-bit g128: held-out perplexity 39.6 against 87.0 for the symmetric min/max grid at 0.026 more bits;
experiments/search_quality), 2-5 bits, and RTN 8-bit per row."""


PER_LAYER_PRUNE_QUANT = ("gptq-w4g128-asym-clip", "gptq-w4g64-asym-clip", "gptq-w3g128-asym-clip", "rtn-w8")
PER_LAYER_PRUNE = (NONE, "wanda-s25", "wanda-s50", "wanda-2:4", "sparsegpt-s25", "sparsegpt-s50", "sparsegpt-2:4")
"""``per-layer-prune``: every unit free among these quantizers, alone or with Wanda/SparseGPT at 25%, 50% and
2:4, pruned before or after quantizing."""


GGUF_QUANT = ("gptq-q4_0", "gptq-q4_1", "gptq-q5_0", "gptq-q5_1", "gptq-q8_0", "gptq-q2_k", "gptq-q3_k", "gptq-q4_k",
              "gptq-q5_k", "gptq-q6_k")
"""llama.cpp's block-32 types and its K-quants, each solved by GPTQ on that type's own grid (the "_1" types: an
fp16 minimum per block; K-quants: two-level scales on super-blocks of 256 inputs, so the expert rules remove them
from groups whose layers' rows are not whole super-blocks: on SmolLM2-135M all but down_proj)."""


GGUF_HEAD = ("rtn-q8_0", "gptq-q5_1", "gptq-q5_0", "gptq-q4_1", "gptq-q4_0", NONE)


def per_layer_full_quant() -> tuple[str, ...]:
    """GPTQ (act-order) and AWQ at 2/3/4/5/6/8 bits with groups of 32/64/128, and RTN 8-bit per row."""
    return tuple(f"{t}-w{b}g{g}" for t in ("gptq", "awq") for b in (2, 3, 4, 5, 6, 8) for g in (32, 64, 128)) + (
        "rtn-w8",)


def preset_space(name: str) -> SearchSpace:
    """Built-in spaces: ``per-layer``, ``per-layer-full``, ``per-layer-prune``, ``gguf``, ``weights-int``,
    ``by-role``, ``prune+quant``, ``full``.

    Every preset starts with the group ``head``: the output head, which on a tied model is the token
    table the input embedding shares (:data:`HEAD_QUANT`).

    ``per-layer``, ``per-layer-full`` and ``per-layer-prune`` (:data:`PER_LAYER_PRUNE`) give every unit (a
    block's q/k/v, o, gate/up, down) its own choice, for the ``evo`` sampler: their per-unit option counts are what its sensitivity stage measures.
    ``gguf`` does the same with llama.cpp's block types only (:data:`GGUF_QUANT`; the head: Q8_0, Q5_1, Q5_0, Q4_1, Q4_0
    or dense), so every plan it finds is a GGUF file.
    """
    if name == "per-layer":
        groups = _role_groups(quantize=PER_LAYER_QUANT)
    elif name == "per-layer-full":
        groups = _role_groups(quantize=per_layer_full_quant())
    elif name == "gguf":
        return SearchSpace(name, (GroupSpec("head", HEAD, quantize=GGUF_HEAD), *_role_groups(quantize=GGUF_QUANT)))
    elif name == "by-role":
        groups = _by_role()
    elif name == "weights-int":
        groups = _four_groups(quantize=("rtn-w8", "gptq-w4g128", "gptq-w3g128"))
    elif name == "per-layer-prune":
        groups = _role_groups(quantize=PER_LAYER_PRUNE_QUANT, prune=PER_LAYER_PRUNE,
                              orders=(Order.PRUNE_FIRST, Order.QUANT_FIRST))
    elif name == "prune+quant":
        groups = _four_groups(
            quantize=("rtn-w8", "gptq-w4g128", "gptq-w3g128", NONE),
            prune=(NONE, "wanda-s25", "wanda-s50", "wanda-2:4"),
            orders=(Order.PRUNE_FIRST, Order.QUANT_FIRST),
        )
    elif name == "full":
        groups = _four_groups(
            quantize=("rtn-w8", "gptq-w4g128", "gptq-w3g128", "awq-w4g128", "rtn-w4g128", "nf4-g64", "fp8",
                      "w8a8-a0.5", NONE),
            prune=(NONE, "wanda-s25", "wanda-s50", "wanda-2:4", "sparsegpt-s50", "sparsegpt-2:4", "magnitude-s10-rows"),
            orders=(Order.PRUNE_FIRST, Order.QUANT_FIRST),
            lowrank=(NONE, "svd-r16-res"),
        )
    else:
        
        hint = did_you_mean(name, PRESET_SPACES, n=1, cutoff=0.6)
        raise SqueezerayError(f"unknown search space {name!r}.{hint} Presets: {', '.join(PRESET_SPACES)}")
    return SearchSpace(name, (_head_group(), *groups))


PRESET_SPACES = ("per-layer", "per-layer-full", "per-layer-prune", "gguf", "weights-int", "by-role", "prune+quant", "full")


def load_space(ref: str | SearchSpace) -> SearchSpace:
    """A preset name, a YAML file path, or a SearchSpace."""
    if isinstance(ref, SearchSpace):
        return ref
    if ref.endswith((".yaml", ".yml")) or Path(ref).is_file():
        return SearchSpace.from_yaml(ref)
    return preset_space(ref)
