"""GGUF for llama.cpp: each tensor in its planned block type, metadata and tokenizer from the source file.

What maps exactly: a compressed layer stored as symmetric integer codes on blocks of 32 inputs with one
fp16 scale per block — 8, 5 or 4 bits — is GGUF's Q8_0, Q5_0 or Q4_0 (``w = d * (q - z)``), whatever
technique chose its codes (``rtn-q4_0``/``gptq-q4_0`` pick llama.cpp's own scales; ``gptq-w4g32``'s
min/max scales map as well); one stored with an fp16 minimum per block of 32 (``rtn-q4_1``,
``gptq-q5_1``) is Q4_1 or Q5_1 (``w = d * q + m``); one with two-level scales (``gptq-q6_k`` ... ``gptq-q2_k``,
rows of whole 256-input super-blocks) is that K-quant. Asymmetric grids with integer zero points do not map. Its codes and scales are packed into the block layout, not re-quantized,
so llama.cpp holds bit for bit the weights squeezeray measured. Layers the plan leaves dense are written
in F16, norms in F32. Anything else (other bit widths or group sizes, pruning, low-rank, activation
smoothing) is refused with the layer and the reason.

The metadata (architecture, hyper-parameters, tokenizer, chat template) is copied from the source model's
own GGUF file, so only models loaded from a GGUF file export (the embedded ones do); llama-architecture
query/key rows are permuted back into llama.cpp's order, as its converter does.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from squeezeray._device import tensors_on
from squeezeray._errors import SqueezerayError
from squeezeray.export._serving import non_integer_form
from squeezeray.techniques import GGUFType
from squeezeray.techniques import QuantFormat
from squeezeray.techniques import pack_blocks
from squeezeray.techniques._packing import unpack_bits

GGUF_FILE = "model.gguf"
ARCHITECTURES = ("llama",)  # whose tensor layout (the q/k row order) this writer knows
_BY_FORM = {(t.bits, t.group, t.has_min, t.is_k): t for t in GGUFType}


def layer_gguf_type(module: Any) -> tuple[GGUFType | None, str]:
    """The GGUF block type a CompressedLinear's stored form is, or None and why it is none."""
    f = module.fmt
    if f.quant_format is not QuantFormat.INT:
        return None, f"{non_integer_form(f)} (GGUF's Q8_0/Q5_x/Q4_x hold integer codes)"
    if f.pattern is not None:
        return None, f"pruned ({f.pattern.value}); GGUF blocks are dense"
    if f.rank or f.lowrank_only:
        return None, "has a low-rank path"
    if f.act_bits:
        return None, "has activation smoothing (W8A8)"
    if not f.symmetric and not f.float_min:
        return None, "asymmetric codes with integer zero points (Q4_1/Q5_1 store a float minimum: gptq-q4_1)"
    t = _BY_FORM.get((f.bits, f.group_size, f.float_min, bool(f.superblock)))
    if t is None or (t.is_k and (f.superblock, f.scale_bits) != (t.block, t.scale_bits)):
        kind = "asymmetric " if f.float_min else ""
        return None, (f"{f.bits}-bit {kind}in groups of {f.group_size} (GGUF's exact types: a gguf step's grid, "
                      f"e.g. gptq-q4_0, gptq-q4_1, gptq-q5_0, gptq-q5_1, rtn-q8_0, gptq-q4_k, gptq-q6_k)")
    return t, ""


def _permute_rows(t: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's order of a query/key projection's rows (its converter's ``permute``), for any row data."""
    rows = t.shape[0]
    return t.reshape(n_head, 2, rows // n_head // 2, *t.shape[1:]).swapaxes(1, 2).reshape(t.shape)


def _hf_names(original: nn.Module, arch: str) -> dict[str, str]:
    """GGUF tensor name -> Hugging Face parameter name (gguf-py's standard name map)."""
    import gguf

    arch_id = next((k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch), None)
    if arch_id is None:
        raise SqueezerayError(f"serving=gguf: gguf-py does not know architecture {arch!r}")
    n_layers = int(original.config.num_hidden_layers)  # type: ignore[union-attr]
    name_map = gguf.get_tensor_name_map(arch_id, n_layers)
    out: dict[str, str] = {}
    for hf_name in original.state_dict():
        base, _, suffix = hf_name.rpartition(".")
        mapped = name_map.get_name(base)
        if mapped is not None:
            out.setdefault(f"{mapped}.{suffix}", hf_name)
    return out


def _copy_metadata(reader: Any, writer: Any) -> None:
    import gguf

    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF.") \
                or field.name == gguf.Keys.General.FILE_TYPE:
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)


def _compressed_of(candidate: nn.Module, hf_module: str) -> Any:
    from squeezeray.compress import CompressedLinear
    from squeezeray.compress._embedding import CompressedEmbedding

    try:
        module = candidate.get_submodule(hf_module)
    except AttributeError:
        return None
    if isinstance(module, CompressedEmbedding):
        return module.table
    return module if isinstance(module, CompressedLinear) else None


def gguf_refusals(candidate: nn.Module, original: nn.Module, source_gguf: Path | None) -> list[str]:
    """Every reason the model cannot be written as GGUF (empty: it can; each layer's type is
    :func:`layer_gguf_type`, read again where the tensor is written)."""
    from squeezeray.compress import CompressedLinear

    reasons: list[str] = []
    if source_gguf is None:
        reasons.append("the source model was not loaded from a GGUF file, which the metadata and tokenizer are "
                       "copied from (convert it with llama.cpp's convert_hf_to_gguf.py and load that .gguf)")
    arch = str(getattr(getattr(original, "config", None), "model_type", ""))
    if arch not in ARCHITECTURES:
        reasons.append(f"architecture {arch!r}: this writer knows the tensor layout of {', '.join(ARCHITECTURES)}")
    for name, module in candidate.named_modules():
        if isinstance(module, CompressedLinear):
            t, why = layer_gguf_type(module)
            if t is None:
                reasons.append(f"{name}: {why}")
    return reasons


def write_gguf(candidate: nn.Module, original: nn.Module, source_gguf: Path | None, path: Path) -> dict[str, Any]:
    """Write ``candidate`` as one GGUF file at ``path``; returns the card's record of it.

    Raises:
        SqueezerayError: The model does not map (every reason listed).
    """
    import gguf

    reasons = gguf_refusals(candidate, original, source_gguf)
    if reasons:
        raise SqueezerayError(f"serving=gguf: this plan does not map exactly: {'; '.join(reasons)}")
    assert source_gguf is not None
    reader = gguf.GGUFReader(str(source_gguf))
    arch = str(original.config.model_type)  # type: ignore[union-attr]
    cfg = original.config  # type: ignore[union-attr]
    heads = {"attn_q": int(cfg.num_attention_heads), "attn_k": int(cfg.num_key_value_heads)}
    names = _hf_names(original, arch)
    dense = {k: v.detach() for k, v in candidate.state_dict().items()}
    writer = gguf.GGUFWriter(str(path), arch)
    _copy_metadata(reader, writer)
    tensor_types: dict[str, str] = {}
    counts: dict[str, int] = {}
    for rt in reader.tensors:
        hf = names.get(rt.name)
        if hf is None:
            raise SqueezerayError(f"serving=gguf: source tensor {rt.name!r} has no counterpart in the model")
        module_name, _, suffix = hf.rpartition(".")
        role = rt.name.split(".")[-2] if rt.name.count(".") >= 2 else ""
        packed = _compressed_of(candidate, module_name) if suffix == "weight" else None
        if packed is not None:
            qtype, _ = layer_gguf_type(packed)
            assert qtype is not None
            f = packed.fmt
            codes = unpack_bits(packed.codes, f.bits, f.out_features * f.in_features).view(f.out_features, f.in_features)
            grid = packed.stored_grid()
            if role in heads:
                order = _permute_rows(torch.arange(f.out_features), heads[role])
                codes, grid = codes[order], grid.select_rows(order)
            codes, grid = codes.cpu(), tensors_on(grid, "cpu")  # blocks are packed on the host (numpy)
            writer.add_tensor(rt.name, pack_blocks(codes, grid, qtype), raw_dtype=gguf.GGMLQuantizationType(qtype.ggml_type))
            kind = qtype.name
        else:
            t = dense[hf].float().cpu()
            if role in heads:
                t = _permute_rows(t, heads[role])
            if t.dim() == 1:
                writer.add_tensor(rt.name, t.numpy().astype(np.float32))
                kind = "F32"
            else:
                writer.add_tensor(rt.name, t.numpy().astype(np.float16))
                kind = "F16"
        tensor_types[rt.name] = kind
        counts[kind] = counts.get(kind, 0) + 1
    main = max((k for k in counts if k.startswith("Q")), key=lambda k: counts[k], default="F16")
    writer.add_file_type(int(getattr(gguf.LlamaFileType, "MOSTLY_" + main if main != "F16" else "MOSTLY_F16")))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {
        "format": "gguf", "path": path.name, "runtime": "llama.cpp (GGUF)", "sha256": digest,
        "bytes": path.stat().st_size, "tensor_types": tensor_types, "type_counts": dict(sorted(counts.items())),
    }
