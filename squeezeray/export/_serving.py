"""Serving formats: the same compressed model in a layout a serving engine reads.

Only what maps *exactly* is written; a plan that does not fit is refused with every
reason (never written approximately):

``compressed-tensors`` (vLLM, and transformers with the ``compressed-tensors`` package)
    ``pack-quantized`` weight-only integer quantization (W4A16 / W8A16): every compressed
    layer must be one RTN or GPTQ step of 4 or 8 bits, symmetric or asymmetric, one
    scale per output row or per group of inputs that divides the input width, with no
    pruning, low-rank path or activation smoothing (AWQ and W8A8 keep a per-channel
    ``smooth`` scale that would have to be folded into the previous layer). vLLM fuses
    q/k/v and gate/up, so the layers of one fused matrix must share one scheme
    (squeezeray's spaces tie them by default). Layers the plan left alone go in
    ``ignore``.

    Our symmetric integer grid (``w = scale * (code - 2^(b-1))``, ``code`` in ``[0, 2^b)``)
    is compressed-tensors' (``w = scale * q``, ``q`` in ``[-2^(b-1), 2^(b-1))``) with
    ``q = code - 2^(b-1)``, so codes and scales are copied, not re-quantized. Tensors per
    layer: ``weight_packed`` (int32, 32/b codes per word, lowest bits first),
    ``weight_scale`` (out, groups) and ``weight_shape`` (int64).

    Asymmetric grids map too (vLLM reads ``weight_zero_point`` packed along the output
    dimension) but are refused: the reader we can check against here (transformers with
    compressed-tensors 0.20) fails on packed zero points, so the output could not be verified.
"""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from squeezeray._errors import SqueezerayError
from squeezeray.export._artifact import DenseDtype
from squeezeray.export._artifact import split_tensors

CT_FOLDER = "compressed-tensors"
_CT_BITS = (4, 8)  # what vLLM's WNA16 kernels take
_FUSED = {"q_proj": "qkv_proj", "k_proj": "qkv_proj", "v_proj": "qkv_proj", "gate_proj": "gate_up_proj",
          "up_proj": "gate_up_proj"}


class ServingFormat(str, enum.Enum):
    """Serving layouts an export can add beside squeezeray's own."""

    COMPRESSED_TENSORS = "compressed-tensors"
    GGUF = "gguf"  # llama.cpp: one model.gguf, each tensor in its block type (see squeezeray.export._gguf)


def serving_formats(values: Any) -> tuple[ServingFormat, ...]:
    items = (values,) if isinstance(values, (str, ServingFormat)) else tuple(values)
    out = []
    for v in items:
        try:
            out.append(ServingFormat(v))
        except ValueError:
            raise SqueezerayError(
                f"serving={v!r}: must be one of {', '.join(f.value for f in ServingFormat)}"
            ) from None
    return tuple(dict.fromkeys(out))


# ------------------------------------------------------------------ schemes
def non_integer_form(fmt: Any) -> str:
    """What a layer format that holds no integer codes stores, for a refusal: ``not quantized`` or ``<format> codes``."""
    return "not quantized" if fmt.quant_format is None else f"{fmt.quant_format.value} codes"


def _ct_weights(module: Any) -> tuple[dict[str, Any] | None, str]:
    """compressed-tensors weight args of one CompressedLinear, or None and why it does not map."""
    from squeezeray.techniques._formats import QuantFormat

    f = module.fmt
    if f.quant_format is not QuantFormat.INT:
        return None, f"{non_integer_form(f)} (needs integer codes)"
    if f.bits not in _CT_BITS:
        return None, f"{f.bits}-bit (vLLM's weight-only kernels take {' or '.join(map(str, _CT_BITS))} bits)"
    if f.pattern is not None:
        return None, f"pruned ({f.pattern.value}); weight-only pack-quantized has no sparsity"
    if f.rank or f.lowrank_only:
        return None, f"has a low-rank path"
    if f.act_bits:
        return None, f"has a per-channel smoothing scale (AWQ/W8A8); fold it into the previous layer first"
    if not f.symmetric:
        return None, (f"asymmetric (zero points); not written: the reference reader, transformers with "
                      "compressed-tensors 0.20, does not load packed zero points, so we cannot check a reader takes it")
    if f.group_size == f.in_features:
        strategy, group = "channel", None
    elif f.in_features % f.group_size == 0:
        strategy, group = "group", f.group_size
    else:
        return None, f"group size {f.group_size} does not divide the input width {f.in_features}"
    return {
        "num_bits": f.bits, "type": "int", "symmetric": f.symmetric, "strategy": strategy, "group_size": group,
        "dynamic": False, "actorder": None,
    }, ""


def compressed_tensors_plan(model: nn.Module) -> tuple[dict[str, Any], list[str]]:
    """The ``quantization_config`` for ``model``, and every reason it does not map (empty: it maps).

    Each reason names the layers it applies to (the first three, then a count).
    """
    from squeezeray.compress import CompressedEmbedding
    from squeezeray.compress import CompressedLinear

    schemes: dict[str, dict[str, Any]] = {}
    misfits: dict[str, list[str]] = {}
    reasons: list[str] = []
    ignore: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, CompressedEmbedding):
            reasons.append(
                f"{name}: the tied token table is compressed, and compressed-tensors stores the input embedding "
                "dense (vLLM gathers from an unquantized embed_tokens); keep the head's table dense for this export"
            )
        elif isinstance(module, CompressedLinear):
            args, why = _ct_weights(module)
            if args is None:
                misfits.setdefault(why, []).append(name)
            else:
                schemes[name] = args
        elif isinstance(module, nn.Linear):
            ignore.append(name)
    for why, names in misfits.items():
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        reasons.append(f"{', '.join(names[:3])}{more}: {why}")
    fused: dict[str, tuple[str, str]] = {}
    for name in list(schemes) + ignore:
        parent, _, leaf = name.rpartition(".")
        if leaf not in _FUSED:
            continue
        key = f"{parent}.{_FUSED[leaf]}"
        label = json.dumps(schemes.get(name), sort_keys=True)
        if key in fused and fused[key][1] != label:
            reasons.append(f"{fused[key][0]} and {name}: vLLM fuses them into {key}, but their schemes differ")
        fused.setdefault(key, (name, label))
    if not schemes and not reasons:
        reasons.append("no layer is compressed")
    groups: dict[str, dict[str, Any]] = {}
    by_label: dict[str, str] = {}
    for name, args in schemes.items():
        label = json.dumps(args, sort_keys=True)
        if label not in by_label:
            by_label[label] = f"group_{len(by_label)}"
            groups[by_label[label]] = {"targets": [], "weights": args, "input_activations": None,
                                       "output_activations": None, "format": "pack-quantized"}
        groups[by_label[label]]["targets"].append(name)
    config = {
        "quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
        "config_groups": groups, "ignore": ignore, "kv_cache_scheme": None,
    }
    return config, reasons


# ------------------------------------------------------------------ tensors
def pack_int32(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """(rows, cols) unsigned codes -> (rows, cols * bits / 32) int32, code j at bits ``bits * (j % (32 / bits))``.

    This is compressed-tensors' ``pack_to_int32`` of ``q = code - 2^(bits-1)`` for 4 and 8 bits.
    """
    per = 32 // bits
    rows, cols = codes.shape
    if cols % per:
        raise ValueError(f"{cols} columns do not fill whole int32 words of {per} codes")
    c = codes.to("cpu", torch.int64).numpy().astype(np.uint64).reshape(rows, cols // per, per)
    shifts = (np.arange(per, dtype=np.uint64) * np.uint64(bits))
    words = np.bitwise_or.reduce(c << shifts, axis=-1).astype(np.uint32)
    return torch.from_numpy(words.view(np.int32).copy())


def _ct_layer_tensors(name: str, module: Any) -> dict[str, torch.Tensor]:
    from squeezeray.techniques._packing import unpack_bits

    f = module.fmt
    codes = unpack_bits(module.codes, f.bits, f.n_kept).view(f.out_features, f.in_features)
    out = {
        f"{name}.weight_packed": pack_int32(codes, f.bits),
        f"{name}.weight_scale": module.scales.detach().to(torch.float16).contiguous().clone(),
        f"{name}.weight_shape": torch.tensor([f.out_features, f.in_features], dtype=torch.int64),
    }
    if f.has_bias:
        out[f"{name}.bias"] = module.bias.detach().contiguous().clone()
    return out


def write_compressed_tensors(
    model: nn.Module, tokenizer: Any, folder: Path, dtype: DenseDtype
) -> dict[str, Any]:
    """Write ``model`` as a compressed-tensors checkpoint into ``folder`` (config, tokenizer, weights).

    Raises:
        SqueezerayError: The plan does not map (every reason listed).
    """
    from safetensors.torch import save_file

    from squeezeray.compress import CompressedLinear

    qconfig, reasons = compressed_tensors_plan(model)
    if reasons:
        raise SqueezerayError(f"serving=compressed-tensors: this plan does not map exactly: {'; '.join(reasons)}")
    if dtype is DenseDtype.FLOAT32:
        raise SqueezerayError("serving=compressed-tensors: needs dense_dtype float16 or bfloat16 (vLLM runs W4A16/W8A16)")
    compressed = {n: m for n, m in model.named_modules() if isinstance(m, CompressedLinear)}
    tensors, aliases = split_tensors(model)
    out: dict[str, torch.Tensor] = {}
    for key, t in tensors.items():
        if key.rpartition(".")[0] in compressed:
            continue
        out[key] = t.detach().to(dtype.torch, copy=True).contiguous() if t.is_floating_point() else t.detach().clone()
    for name, module in compressed.items():
        layer = _ct_layer_tensors(name, module)
        if dtype is DenseDtype.BFLOAT16:
            layer[f"{name}.weight_scale"] = layer[f"{name}.weight_scale"].to(torch.bfloat16)
        out.update(layer)
    folder.mkdir(parents=True, exist_ok=True)
    config = model.config  # type: ignore[union-attr]
    config_dict = config.to_dict()
    config_dict["quantization_config"] = qconfig
    config_dict["torch_dtype"] = dtype.value
    config_dict["dtype"] = dtype.value
    (folder / "config.json").write_text(json.dumps(config_dict, indent=1, sort_keys=True) + "\n")
    gen = getattr(model, "generation_config", None)
    if gen is not None and hasattr(gen, "save_pretrained"):
        gen.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    save_file(out, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return {
        "format": ServingFormat.COMPRESSED_TENSORS.value, "path": CT_FOLDER, "runtime": "vLLM (compressed-tensors)",
        "groups": {g: {"layers": len(v["targets"]), "weights": v["weights"]} for g, v in qconfig["config_groups"].items()},
        "ignore": list(qconfig["ignore"]), "tied": dict(aliases),
    }

