"""The exported model folder: packed weights, config, tokenizer, and a manifest of hashes.

Layout of an export folder::

    config.json (+ generation_config.json)   the source model's transformers config
    tokenizer files                          ``tokenizer.save_pretrained``
    model.safetensors                        every tensor once (see below)
    card.json, card.md                       the model card (squeezeray.export._card)
    manifest.json                            SHA-256 and size of every other file

``model.safetensors`` holds the uncompressed tensors (embeddings, norms, layers the
plan left alone) in ``dense_dtype``, and each :class:`CompressedLinear`'s buffers,
exactly as the search measured them, under ``<layer>.<buffer>`` (``codes``,
``scales``, ``mask_bits``, ...; see :mod:`squeezeray.compress._module`). Its
metadata (strings only) carries:

===========================  ==========================================================
key                          value
===========================  ==========================================================
``squeezeray.format``        ``squeezeray.Artifact``
``squeezeray.format_version`` ``1``
``squeezeray.layers``        JSON ``{layer: LayerFormat.to_dict()}``
``squeezeray.aliases``       JSON ``{state-dict key: key it shares storage with}``
                             (tied input/output embeddings are stored once)
``squeezeray.dense_dtype``   ``float16`` / ``bfloat16`` / ``float32``
``squeezeray.architecture``  the source model's class name (e.g. ``LlamaForCausalLM``)
===========================  ==========================================================

Loading (:func:`build_model`) rebuilds the architecture from ``config.json``
(``AutoModelForCausalLM.from_config``), swaps every listed layer for a
:class:`CompressedLinear` over its stored buffers (a compressed tied head also gives the input
embedding a :class:`~squeezeray.compress.CompressedEmbedding` over the same table), loads the dense tensors and
checks that the tied tensors are tied again.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from squeezeray._errors import SqueezerayError
from squeezeray._schema import check_header
from squeezeray._schema import load_document

ARTIFACT_FORMAT = "squeezeray.Artifact"
ARTIFACT_VERSION = 1
MANIFEST_TYPE = "squeezeray.Manifest"
MANIFEST_VERSION = 1

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_JSON = "card.json"
CARD_MD = "card.md"
MANIFEST_FILE = "manifest.json"
REQUIRED_FILES = (WEIGHTS_FILE, CONFIG_FILE, CARD_JSON)

_META_FORMAT = "squeezeray.format"
_META_VERSION = "squeezeray.format_version"
_META_LAYERS = "squeezeray.layers"
_META_ALIASES = "squeezeray.aliases"
_META_DTYPE = "squeezeray.dense_dtype"
_META_ARCH = "squeezeray.architecture"


class DenseDtype(str, enum.Enum):
    """Storage dtype of the tensors a plan left uncompressed.

    ``float16`` is what the ``size`` objective counts (2 bytes per element);
    ``float32`` keeps a float32 source bit-exact.
    """

    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"
    FLOAT32 = "float32"

    @property
    def torch(self) -> torch.dtype:
        return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[self.value]


def dense_dtype(value: object, field: str = "dense_dtype") -> DenseDtype:
    try:
        return DenseDtype(value)
    except ValueError:
        raise SqueezerayError(f"{field}={value!r}: must be one of {', '.join(d.value for d in DenseDtype)}") from None


# ------------------------------------------------------------------ write
def _storage_key(t: torch.Tensor) -> tuple[Any, ...]:
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)


def split_tensors(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Every persistent tensor of ``model`` once, and the aliases of shared ones.

    Returns:
        (tensors by state-dict key, {alias key: stored key}); a key that shares its
        storage with an earlier key (tied embeddings) is an alias.
    """
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[Any, ...], str] = {}
    for key, t in model.state_dict().items():
        ident = _storage_key(t)
        if ident in seen:
            aliases[key] = seen[ident]
            continue
        seen[ident] = key
        tensors[key] = t
    return tensors, aliases


def write_weights(model: nn.Module, folder: Path, dtype: DenseDtype) -> dict[str, Any]:
    """Write ``model.safetensors`` (compressed buffers as stored, the rest in ``dtype``).

    Returns:
        What the folder holds: number of compressed layers, tensors, aliases and bytes.
    """
    from safetensors.torch import save_file

    from squeezeray.compress import CompressedLinear

    compressed = {name: m for name, m in model.named_modules() if isinstance(m, CompressedLinear)}
    tensors, aliases = split_tensors(model)
    out: dict[str, torch.Tensor] = {}
    for key, t in tensors.items():
        owner = key.rpartition(".")[0]
        if owner in compressed:
            out[key] = t.detach().contiguous().clone()  # packed codes, fp16 scales: as measured
        elif t.is_floating_point():
            out[key] = t.detach().to(dtype.torch, copy=True).contiguous()
        else:
            out[key] = t.detach().contiguous().clone()
    metadata = {
        _META_FORMAT: ARTIFACT_FORMAT,
        _META_VERSION: str(ARTIFACT_VERSION),
        _META_LAYERS: json.dumps({name: m.fmt.to_dict() for name, m in compressed.items()}, sort_keys=True),
        _META_ALIASES: json.dumps(aliases, sort_keys=True),
        _META_DTYPE: dtype.value,
        _META_ARCH: type(model).__name__,
    }
    path = folder / WEIGHTS_FILE
    save_file(out, str(path), metadata=metadata)
    return {
        "compressed_layers": len(compressed),
        "tensors": len(out),
        "aliases": dict(aliases),
        "dense_dtype": dtype.value,
        "weights_bytes": path.stat().st_size,
    }


def write_model_files(model: nn.Module, tokenizer: object, folder: Path, dtype: DenseDtype) -> dict[str, Any]:
    """Config, tokenizer and weights of a compressed transformers model into ``folder``."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "save_pretrained"):
        raise SqueezerayError(
            f"model: a {type(model).__name__} has no transformers config; only transformers causal LMs can be exported"
        )
    if tokenizer is None or not hasattr(tokenizer, "save_pretrained"):
        raise SqueezerayError(f"tokenizer={tokenizer!r}: needs save_pretrained (a transformers tokenizer)")
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(folder)
    gen = getattr(model, "generation_config", None)
    if gen is not None and hasattr(gen, "save_pretrained"):
        gen.save_pretrained(folder)
    tokenizer.save_pretrained(folder)  # type: ignore[attr-defined]
    return write_weights(model, folder, dtype)


# ------------------------------------------------------------------- read
def read_weights_metadata(folder: Path) -> dict[str, str]:
    from safetensors import safe_open

    path = folder / WEIGHTS_FILE
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except (OSError, ValueError) as err:  # safetensors raises its own error types derived from these
        raise SqueezerayError(f"{path}: not a readable safetensors file ({err})") from None
    except Exception as err:  # noqa: BLE001 - SafetensorError is not importable under a stable name
        raise SqueezerayError(f"{path}: not a readable safetensors file ({type(err).__name__}: {err})") from None
    if meta.get(_META_FORMAT) != ARTIFACT_FORMAT:
        raise SqueezerayError(f"{path}: metadata {_META_FORMAT}={meta.get(_META_FORMAT)!r}, not {ARTIFACT_FORMAT!r}")
    if meta.get(_META_VERSION) != str(ARTIFACT_VERSION):
        raise SqueezerayError(
            f"{path}: {_META_VERSION}={meta.get(_META_VERSION)!r}; this squeezeray reads version {ARTIFACT_VERSION}"
        )
    for key in (_META_LAYERS, _META_ALIASES, _META_DTYPE, _META_ARCH):
        if key not in meta:
            raise SqueezerayError(f"{path}: metadata has no {key!r}")
    return meta


def _tensor_at(model: nn.Module, key: str) -> torch.Tensor:
    owner, _, attr = key.rpartition(".")
    module = model.get_submodule(owner) if owner else model
    t = getattr(module, attr)
    assert isinstance(t, torch.Tensor)
    return t


def build_model(folder: Path, *, dtype: torch.dtype = torch.float32) -> nn.Module:
    """Rebuild a runnable model from an export folder (hashes are checked by the caller).

    Args:
        folder: The export folder.
        dtype: dtype of the dense parameters in memory (compressed layers keep their
            stored buffers and compute in float32, returning the input's dtype).
    """
    import transformers
    from safetensors.torch import load_file

    from squeezeray.compress import CompressedLinear
    from squeezeray.compress import LayerFormat
    from squeezeray.compress import replace_layers

    meta = read_weights_metadata(folder)
    layers = json.loads(meta[_META_LAYERS])
    aliases: dict[str, str] = json.loads(meta[_META_ALIASES])
    transformers.logging.set_verbosity_error()
    try:
        config = transformers.AutoConfig.from_pretrained(str(folder))
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    except (OSError, ValueError) as err:
        raise SqueezerayError(f"{folder / CONFIG_FILE}: cannot rebuild the model ({err})") from None
    if type(model).__name__ != meta[_META_ARCH]:
        raise SqueezerayError(
            f"{folder / CONFIG_FILE}: builds a {type(model).__name__}, the weights are for {meta[_META_ARCH]}"
        )
    tensors = load_file(str(folder / WEIGHTS_FILE))
    for name, fmt_dict in layers.items():
        try:
            fmt = LayerFormat.from_dict(fmt_dict)
        except (ValueError, KeyError, TypeError) as err:
            raise SqueezerayError(f"{folder / WEIGHTS_FILE}: layer {name!r}: bad layer format ({err})") from None
        try:
            old = model.get_submodule(name)
        except AttributeError:
            raise SqueezerayError(f"{folder / WEIGHTS_FILE}: layer {name!r} is not in the rebuilt model") from None
        if not isinstance(old, nn.Linear) or (old.out_features, old.in_features) != (fmt.out_features, fmt.in_features):
            raise SqueezerayError(
                f"{folder / WEIGHTS_FILE}: layer {name!r} is {old!r} in the rebuilt model, "
                f"the stored layer is {fmt.out_features}x{fmt.in_features}"
            )
        prefix = f"{name}."
        buffers = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if not buffers:
            raise SqueezerayError(f"{folder / WEIGHTS_FILE}: layer {name!r} has no stored buffers")
        replace_layers(model, {name: CompressedLinear(fmt, buffers)})  # a tied head brings its embedding
    state = {k: (v.to(dtype) if v.is_floating_point() and k.rpartition(".")[0] not in layers else v)
             for k, v in tensors.items()}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k not in aliases]
    if missing or result.unexpected_keys:
        raise SqueezerayError(
            f"{folder / WEIGHTS_FILE}: does not match the rebuilt {type(model).__name__}: "
            f"missing {missing[:5]}, unexpected {list(result.unexpected_keys)[:5]}"
        )
    for alias, target in aliases.items():
        if _tensor_at(model, alias) is not _tensor_at(model, target):
            raise SqueezerayError(
                f"{folder / WEIGHTS_FILE}: {alias!r} was tied to {target!r} in the source model, but the rebuilt "
                f"model does not tie them (check tie_word_embeddings in {CONFIG_FILE})"
            )
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# --------------------------------------------------------------- manifest
def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _files(folder: Path) -> list[str]:
    return sorted(
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_FILE
    )


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_manifest(folder: Path) -> dict[str, Any]:
    """Hash every file of ``folder`` (but the manifest) into ``manifest.json``."""
    files = {rel: {"sha256": file_sha256(folder / rel), "bytes": (folder / rel).stat().st_size} for rel in _files(folder)}
    manifest = {"_type": MANIFEST_TYPE, "_version": MANIFEST_VERSION, "files": files}
    write_json_atomic(folder / MANIFEST_FILE, manifest)
    return manifest


def verify_folder(folder: str | Path) -> dict[str, Any]:
    """Check an export folder against its manifest; return the manifest.

    Raises:
        SqueezerayError: No folder or manifest; a required file missing from it; a
            listed file missing, resized or with another SHA-256 (named); a file that
            the manifest does not list.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SqueezerayError(f"path={str(folder)!r}: no such export folder")
    mpath = folder / MANIFEST_FILE
    if not mpath.is_file():
        raise SqueezerayError(f"path={str(folder)!r}: not a squeezeray export (no {MANIFEST_FILE})")
    manifest = load_document(mpath, what="manifest")
    if not isinstance(manifest, dict):
        raise SqueezerayError(f"{mpath}: must be a JSON object, got {type(manifest).__name__}")
    check_header(manifest, type_=MANIFEST_TYPE, version=MANIFEST_VERSION, where=str(mpath))
    files = manifest.get("files")
    if not isinstance(files, Mapping):
        raise SqueezerayError(f"{mpath}: 'files' must map file names to their hashes")
    for rel in REQUIRED_FILES:
        if rel not in files:
            raise SqueezerayError(f"{mpath}: does not list the required file {rel!r}")
    for rel, entry in files.items():
        path = folder / rel
        if not path.is_file():
            raise SqueezerayError(f"{path}: listed in the manifest but missing")
        expected = entry.get("sha256") if isinstance(entry, Mapping) else None
        got = file_sha256(path)
        if got != expected:
            raise SqueezerayError(
                f"{path}: SHA-256 {got[:16]}... does not match the manifest ({str(expected)[:16]}...); "
                "the file was modified or corrupted after export"
            )
    extra = [rel for rel in _files(folder) if rel not in files]
    if extra:
        raise SqueezerayError(f"{folder / extra[0]}: not listed in the manifest (added after export?)")
    return manifest
