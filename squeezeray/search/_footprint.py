"""What a search will hold in memory, estimated from the model's config before its weights load.

:func:`model_shape` builds the model on PyTorch's ``meta`` device (no weight bytes), so a 70B
config costs what a 135M one does; :func:`estimate` turns the shape, the dtype and the data sizes
into a :class:`Footprint` of the stages a search runs one after another, and
:meth:`Footprint.check` refuses, with the numbers, a run that would not fit. The figures are
upper-bound estimates of the pipeline as built (block-wise calibration with its statistics on disk,
candidates swapped into the one model, one decoder block's dense weights at a time when the
candidate's would exceed 512 MiB); ``experiments/scaling`` has what was measured.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

import torch

from squeezeray._errors import ModelLoadError
from squeezeray._errors import SqueezerayError
from squeezeray._memory import available_bytes
from squeezeray.compress._rows import row_blocks
from squeezeray.compress._stats_store import DEFAULT_MEMORY_BYTES as STATS_MEMORY_BYTES
from squeezeray.data import DataConfig
from squeezeray.models import ModelSource
from squeezeray.models._load import _first_line
from squeezeray.models import dtype_name
from squeezeray.models import resolve_dtype
from squeezeray.models import resolve_model
from squeezeray.objectives._base import MATERIALIZE_WHOLE_BYTES
from squeezeray.objectives._logits import CHUNK as LOGIT_CHUNK
from squeezeray.search._cache import DEFAULT_MEMORY_BYTES as LAYER_CACHE_BYTES
from squeezeray.techniques import TechniqueConfig

GIB = 1 << 30
RUNTIME_BYTES = 512 << 20
"""Python, torch and transformers imported, with the tokenizer and the token sets (0.31 GiB measured on the
development VM, rounded up)."""


MARGIN_BYTES = 640 << 20
"""What calibration and evaluation hold beyond the parts :func:`estimate` counts (activations, allocator slack): the
largest excess measured in ``experiments/scaling`` (0.55 GiB, 135M-3.2B), rounded up."""


class ResourceError(SqueezerayError):
    """A run that cannot fit the memory it is given."""


@dataclasses.dataclass(frozen=True)
class ModelShape:
    """What a model's config says about its size, without its weights.

    Attributes:
        params: Parameters (a tied table counted once).
        layers: Compressible linear layers, name -> (out, in) features.
        blocks: The compressible layers of each decoder block (empty when the model has no decoder blocks).
        vocab: Output vocabulary (the logits' width).
        hidden: Width of the hidden states.
        gguf: The weights are a GGUF file (dequantized in float32 while they load).
    """

    params: int
    layers: Mapping[str, tuple[int, int]]
    blocks: tuple[tuple[str, ...], ...]
    vocab: int
    hidden: int
    gguf: bool = False


def shape_of(model: torch.nn.Module, *, gguf: bool = False) -> ModelShape:
    """The :class:`ModelShape` of a built model (real or on the ``meta`` device)."""
    from squeezeray.compress import decoder_parts
    from squeezeray.models import compressible_layers

    layers = compressible_layers(model)
    try:
        prefix, decoder_blocks, _ = decoder_parts(model)
        blocks = tuple(tuple(n for n in layers if n.startswith(f"{prefix}.{i}.")) for i in range(len(decoder_blocks)))
    except SqueezerayError:
        blocks = ()
    out = model.get_output_embeddings()
    vocab = int(out.weight.shape[0]) if out is not None else 0
    hidden = int(out.weight.shape[1]) if out is not None else max((i for _, i in layers.values()), default=0)
    params = sum(p.numel() for p in model.parameters())  # parameters() yields a tied table once
    return ModelShape(params, layers, blocks, vocab, hidden, gguf)


def model_shape(src: ModelSource) -> ModelShape:
    """The shape of the model at ``src`` from its config alone."""
    import transformers

    kwargs = {"gguf_file": src.gguf_file} if src.gguf_file else {}
    try:
        config = transformers.AutoConfig.from_pretrained(src.path, **kwargs)
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(config)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"model {src.ref!r}: config could not be read to estimate memory: "
                             f"{_first_line(err)}") from None
    return shape_of(model, gguf=bool(src.gguf_file))


@dataclasses.dataclass(frozen=True)
class Footprint:
    """Estimated peak bytes of each stage of a search; every stage holds the runtime and the model.

    Attributes:
        params, dtype: The model and the dtype its weights load in.
        runtime: The interpreter, libraries, tokenizer and token sets.
        model: The weights, once.
        load: Extra while loading (a GGUF file dequantizes through float32).
        calibration: One block's statistics with Hessians (float32) and activations.
        compression: The largest working set of a layer (GPTQ's weight, on one block of a tall layer's rows, and
            Hessian copies, in float64 where ``float64_solve``), the loaded statistics, the layers compressed so far
            (at 8 bits) and those the cache keeps.
        evaluation: One chunk of logits and of the original's log-probs (kept in a file,
            :mod:`squeezeray.objectives._reference`), a candidate's dense weights (whole, or one block's), its
            compressed layers (at 8 bits) and those the cache keeps.
        device: Where the weights and the stages' tensors live (``cpu``, ``cuda:N``); on a GPU the stages are
            checked against its free memory and the host holds the runtime and the weights while they load.
        kernels: Re-measuring the front's latency (or energy): the kernels' prepared copies of a candidate's compressed
            layers (``cpu-int8-weight`` repacks 8-bit codes, one byte per weight, beside them), on top of ``evaluation``.
        host: With the decoder blocks offloaded (:mod:`squeezeray._offload`): what stays on the host instead of the
            device, the blocks' weights and the compressed layers (``model`` then counts the weights outside the
            blocks and one block's copy on the device). 0 when nothing is offloaded.
        float64_solve: The Hessian solves were counted in float64 (some option asks for it, ``-f64``, or the options
            were not known), not float32.
    """

    params: int
    dtype: str
    runtime: int
    model: int
    load: int
    calibration: int
    compression: int
    evaluation: int
    device: str = "cpu"
    host: int = 0
    kernels: int = 0
    float64_solve: bool = True

    VERSION = 7  # 5: a tall layer's working set is one row block's; 6: GPTQ holds no float32 quantized weight;
    # 7: solves in float32 unless an option asks for float64

    @property
    def stages(self) -> dict[str, int]:
        """Each stage's estimated peak (bytes)."""
        base = self.runtime + self.model
        return {"load": base + self.load, "calibration": base + self.calibration,
                "compression": base + self.compression, "evaluation": base + self.evaluation,
                "final": base + self.evaluation + self.kernels}

    @property
    def peak(self) -> int:
        return max(self.stages.values())

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.VERSION, **dataclasses.asdict(self), "peak": self.peak}

    def describe(self) -> str:
        """One line: the peak and what it is made of (GiB)."""
        return f"memory estimate: peak {self.peak / GIB:.2f} GiB ({self._parts()})"

    def _parts(self) -> str:
        stages = ", ".join(f"{k} {v / GIB:.2f}" for k, v in self.stages.items())
        where = f", {self.host / GIB:.2f} GiB offloaded to the host" if self.host else ""
        return (f"{self.params / 1e9:.2f}B parameters in {self.dtype} on {self.device}, weights {self.model / GIB:.2f} GiB"
                f"{where}, solves in {'float64' if self.float64_solve else 'float32'}; stages: {stages} GiB")

    def check(self, limit_bytes: int | None, *, source: str) -> None:
        """Refuse (:class:`ResourceError`, before any weight loads) when the peak exceeds ``limit_bytes``.

        Args:
            limit_bytes: What the run may use (None: unknown, nothing is refused).
            source: Where the limit came from (``--memory-limit``, the machine's available memory), for the message.
        """
        if limit_bytes is None or self.peak <= limit_bytes:
            return
        worst = max(self.stages, key=self.stages.__getitem__)
        raise ResourceError(
            f"this run would need about {self.peak / GIB:.2f} GiB at its peak ({worst} stage) but "
            f"{limit_bytes / GIB:.2f} GiB is available ({source}); {self._parts()}. "
            + ("Load in bfloat16 (--dtype bfloat16), " if self.dtype == "float32" else "")
            + "calibrate on fewer or shorter sequences, use a machine with more memory, or raise --memory-limit "
            "if the estimate is too cautious")


def estimate(shape: ModelShape, dtype: torch.dtype, data: DataConfig, *,
             layer_cache_bytes: int = LAYER_CACHE_BYTES, offload: bool = False, timed: bool = False,
             float64_solve: bool = True) -> Footprint:
    """The :class:`Footprint` of a search on a model of ``shape`` held in ``dtype``, with ``data``'s sizes; ``offload``:
    its decoder blocks kept on the host, one at a time on the device; ``timed``: its front is re-measured on latency or
    energy (on prepared kernels); ``float64_solve``: some option solves its Hessian in float64
    (:func:`solves_in_float64`; True when the options are not known)."""
    item = dtype.itemsize
    f32 = 4
    model = shape.params * item
    load = shape.params * f32 if shape.gguf else 0
    runtime = RUNTIME_BYTES + (shape.params * 2 if shape.gguf else 0)  # a GGUF load leaves ~2 B/param resident
    hidden_states = data.calib_seqs * data.calib_len * shape.hidden * item  # one block boundary, every sequence
    block_stats = max((sum(_layer_stats_bytes(shape.layers[n][1]) for n in b) for b in shape.blocks),
                      default=sum(_layer_stats_bytes(i) for _, i in shape.layers.values()))
    calibration = 2 * hidden_states + 3 * block_stats + MARGIN_BYTES  # accumulators, their matmuls, the copy written
    working = max((_working_bytes(o, i, 8 if float64_solve else f32) for o, i in shape.layers.values()), default=0)
    # a candidate's compressed layers, all swapped in at once (and, compressing, all made so far): at most one
    # byte per weight, the 8 bits of the densest option the packaged spaces offer (RTN 8-bit)
    held = sum(o * i for o, i in shape.layers.values())
    cached = min(layer_cache_bytes, held)
    compression = working + max(STATS_MEMORY_BYTES, max((i * i * f32 for _, i in shape.layers.values()), default=0)) \
        + held + cached
    dense = sum(o * i for o, i in shape.layers.values()) * item
    if dense > MATERIALIZE_WHOLE_BYTES and shape.blocks:
        dense = max(sum(shape.layers[n][0] * shape.layers[n][1] for n in b) for b in shape.blocks) * item
    # one chunk's logits, log-softmax and product (LogitChunks) and the reference's chunk read back from its file
    logits = 4 * LOGIT_CHUNK * shape.vocab * f32
    evaluation = logits + dense + held + cached + MARGIN_BYTES
    host = 0
    if offload and shape.blocks:
        per_block = [sum(shape.layers[n][0] * shape.layers[n][1] for n in b) * item for b in shape.blocks]
        host = sum(per_block) + held + cached  # the blocks' weights and every compressed layer stay on the host
        model = model - sum(per_block) + max(per_block)
        compression -= held + cached
        evaluation -= held + cached
    kernels = held if timed else 0  # at most one byte per weight, as the candidate's own 8-bit codes
    return Footprint(shape.params, dtype_name(dtype), runtime, model, load, calibration, compression, evaluation,
                     host=host, kernels=kernels, float64_solve=float64_solve)


def solves_in_float64(steps: Iterable[TechniqueConfig]) -> bool:
    """Whether any of ``steps`` solves its Hessian in float64 (GPTQ's and SparseGPT's ``float64_solve``, ``-f64``)."""
    return any(getattr(step, "float64_solve", False) for step in steps)


def _working_bytes(out_features: int, in_features: int, width: int) -> int:
    """A layer's compression working set: GPTQ's on one block of rows (the packaged spaces' options on a tall layer,
    the token table above all, are row-independent: :mod:`squeezeray.compress._row_blocks`), solving in ``width``-byte
    floats (4, or 8 with ``float64_solve``), and the blocks' packed results joined into the layer (a second copy of its
    codes, at most one byte per weight)."""
    rows = max(b - a for a, b in row_blocks(out_features, in_features))
    # GPTQ: the weight and its permuted copy, then the targets and the weights they start from, and uint8 codes; two
    # (in, in) matrices at a time (H's gathered rows and its permuted copy, then that and the factor it becomes;
    # SparseGPT's Hessian copy and factor the same)
    solve = rows * in_features * (2 * width + 1) + 2 * in_features * in_features * width
    joined = out_features * in_features if rows < out_features else 0
    return solve + joined


def _layer_stats_bytes(in_features: int) -> int:
    """One layer's statistics with the Hessian (float32), as calibration holds them (shared inputs counted apart)."""
    return (in_features * in_features + 3 * in_features) * 4


def preflight(ref: str | None, dtype: str, data: DataConfig, *, limit_bytes: int | None = None,
              device: torch.device | None = None, offload: bool = False, timed: bool = False,
              float64_solve: bool = True) -> Footprint:
    """Estimate the footprint of a search on model ``ref`` in ``dtype`` on ``device`` (None: the CPU) and refuse
    it when it cannot fit.

    Reads the config alone; no weight is loaded. ``limit_bytes`` None: the machine's available memory, or on a
    CUDA device its free memory (and the host's available memory for the load, which reads the weights there, and
    with ``offload`` for the decoder blocks and compressed layers it keeps).

    Raises:
        ResourceError: the estimated peak exceeds the limit (the message gives both and the stages).
    """
    src = resolve_model(ref)
    device = device or torch.device("cpu")
    fp = dataclasses.replace(estimate(model_shape(src), resolve_dtype(dtype, src), data, offload=offload, timed=timed,
                                      float64_solve=float64_solve), device=str(device))
    if limit_bytes is not None:
        fp.check(limit_bytes, source="memory_limit")
    elif device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        fp.check(free, source=f"free memory of {device} ({torch.cuda.get_device_name(device)})")
        host = dataclasses.replace(fp, model=fp.model + fp.host, host=0, calibration=0, compression=0, evaluation=0,
                                   kernels=0)
        host.check(available_bytes(), source="this machine's available memory, for the load"
                   + (" and the offloaded blocks" if fp.host else ""))  # the host reads every weight, keeps offloaded ones
    else:
        fp.check(available_bytes(), source="this machine's available memory")
    return fp
