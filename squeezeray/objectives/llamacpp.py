"""llama.cpp as the runtime that measures: the candidate exported to GGUF, then loaded and run by llama.cpp.

``llamacpp_perplexity`` scores the held-out windows from llama.cpp's own logits (its quantized matmuls
quantize activations too, so it differs a little from squeezeray's float computation of the same
weights; the original's F16 file shows the runtime's own offset). ``llamacpp_latency`` times prefill
and decode with a stated thread count, warm-up and repeats, and reports tokens per second.

llama.cpp runs in a child process (:func:`isolated`): a crash of the native runtime (a segmentation fault in
a build that does not suit the CPU) fails that one measurement with the signal named, and the search, the
study and the test run around it go on.

Weight repacking: llama.cpp's CPU backend copies quantized weights into "extra" buffers laid out for the host's
fastest kernels (AMX tiles on Xeons that have them, interleaved Q4_0 blocks for AVX2/NEON). On some virtual
machines the AMX path crashes (SIGSEGV in ``ggml_backend_amx_mul_mat``: seen on the project's Sapphire Rapids
VMs). The objectives take ``repack``: ``True`` or ``False`` forces it; ``None`` (the default) runs with
llama.cpp's default (on) and, if the runtime's process is killed by a signal, once more with repacking off, and
says so in the measurement's ``where`` and ``details["weight_repacking"]``; the objective then keeps it off.

Both need ``llama-cpp-python`` (``scripts/setup.sh`` builds it) and a model loaded from a GGUF file
(its metadata and tokenizer are copied into every candidate's file; see ``squeezeray.export._gguf``).
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from squeezeray._errors import SqueezerayError
from squeezeray.objectives._base import BaseObjective
from squeezeray.objectives._base import Direction
from squeezeray.objectives._base import EvalContext
from squeezeray.objectives._base import Measurement
from squeezeray.objectives._base import Need
from squeezeray.objectives._base import Provenance


def _llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError:
        raise SqueezerayError(
            "llama.cpp objectives need llama-cpp-python (pip install llama-cpp-python; it builds from source, "
            "several minutes on 2 cores; scripts/setup.sh installs it)"
        ) from None
    return llama_cpp


def _child(conn: Any, fn: Any, args: tuple, kwargs: dict) -> None:
    try:
        conn.send((True, fn(*args, **kwargs)))
    except BaseException as err:  # handed to the parent, which raises it there
        conn.send((False, err))
    finally:
        conn.close()


class RuntimeCrash(RuntimeError):
    """llama.cpp's process died (a native crash) instead of returning or raising."""

    def __init__(self, message: str, exitcode: int | None) -> None:
        super().__init__(message)
        self.exitcode = exitcode


def isolated(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` in a fresh child process (spawned: no forked torch state), its result returned and
    its exception raised here.

    Raises:
        RuntimeCrash: the child died (the native runtime crashed); the message names the exit code or signal.
    """
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, fn, args, kwargs))
    proc.start()
    send.close()  # the child holds the only sending end: its death ends the pipe
    try:
        ok, value = receive.recv()
    except EOFError:
        proc.join()
        raise RuntimeCrash(f"llama.cpp's process died while running {getattr(fn, '__name__', fn)} (exit codes "
                           f"[{proc.exitcode}]; a negative code is the signal that killed it)", proc.exitcode) from None
    finally:
        receive.close()
    proc.join()
    if not ok:
        raise value
    return value


def with_repacking(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, RuntimeCrash | None]:
    """``fn(*args, repack=True, **kwargs)`` in :func:`isolated`, rerun with ``repack=False`` when that crashes (llama.cpp's
    weight repacking does on some CPUs): its result, and the crash or None."""
    try:
        return isolated(fn, *args, repack=True, **kwargs), None
    except RuntimeCrash as crash:
        return isolated(fn, *args, repack=False, **kwargs), crash


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@contextlib.contextmanager
def _model_params(*, repack: bool) -> Iterator[None]:
    """llama-cpp-python's ``Llama`` takes no ``use_extra_bufts`` argument but builds its model parameters from
    ``llama_model_default_params()`` while it loads: for the duration of one load, that function hands out
    parameters with ``use_extra_bufts`` set as asked (restored afterwards; it runs in :func:`isolated`'s child)."""
    import llama_cpp.llama_cpp as capi

    default = capi.llama_model_default_params

    def params() -> Any:
        p = default()
        p.use_extra_bufts = repack
        return p

    capi.llama_model_default_params = params
    try:
        yield
    finally:
        capi.llama_model_default_params = default


def load_gguf(path: str | Path, *, n_ctx: int, n_threads: int, repack: bool = True) -> Any:
    """A llama.cpp model on this host's CPU with every position's logits kept; ``repack=False`` keeps the weights
    in the file's layout (no extra buffer types: no AMX, no interleaved repacking)."""
    llama_cpp = _llama_cpp()
    with _model_params(repack=repack):
        llm = llama_cpp.Llama(
            model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, n_threads=n_threads,
            n_threads_batch=n_threads, logits_all=True, verbose=False, n_gpu_layers=0,
        )
    if bool(llm.model_params.use_extra_bufts) != repack:
        raise SqueezerayError(f"llama.cpp loaded {path} with use_extra_bufts={llm.model_params.use_extra_bufts}, "
                              f"asked repack={repack}")
    return llm


def llamacpp_perplexity(
    path: str | Path, windows: torch.Tensor, *, n_threads: int, repack: bool = True
) -> tuple[float, int]:
    """exp(mean next-token NLL) from llama.cpp's logits, each (seq_len) window scored on its own
    (the definition :func:`squeezeray.objectives.perplexity.perplexity` uses)."""
    seq_len = int(windows.shape[1])
    llm = load_gguf(path, n_ctx=seq_len, n_threads=n_threads, repack=repack)
    nll, count = 0.0, 0
    try:
        for row in windows.tolist():
            llm.reset()
            llm.eval(row)
            logits = np.asarray(llm.scores[: seq_len - 1], dtype=np.float64)  # (T-1, V)
            top = logits.max(axis=1, keepdims=True)
            logz = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
            target = np.asarray(row[1:])
            nll += float((logz - logits[np.arange(seq_len - 1), target]).sum())
            count += seq_len - 1
    finally:
        llm.close()
    return math.exp(nll / count), count


def llamacpp_speed(
    path: str | Path, prompt: Sequence[int], *, new_tokens: int, n_threads: int, warmup: int, repeats: int,
    repack: bool = True,
) -> dict[str, float]:
    """Prefill tokens/s (the whole prompt in one batch) and decode tokens/s (greedy, one token per step),
    medians over ``repeats`` after ``warmup`` untimed runs."""
    llm = load_gguf(path, n_ctx=len(prompt) + new_tokens, n_threads=n_threads, repack=repack)
    prefill: list[float] = []
    decode: list[float] = []
    try:
        for i in range(warmup + repeats):
            llm.reset()
            t0 = time.perf_counter()
            llm.eval(list(prompt))
            t1 = time.perf_counter()
            token = int(np.argmax(llm.scores[len(prompt) - 1]))
            for _ in range(new_tokens):
                llm.eval([token])
                token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            t2 = time.perf_counter()
            if i >= warmup:
                prefill.append(len(prompt) / (t1 - t0))
                decode.append(new_tokens / (t2 - t1))
    finally:
        llm.close()
    return {"prefill_tokens_per_s": statistics.median(prefill), "decode_tokens_per_s": statistics.median(decode),
            "prefill_spread": max(prefill) - min(prefill), "decode_spread": max(decode) - min(decode)}


class _Runtime(BaseObjective, needs={Need.SOURCE_GGUF}):
    """Exports the candidate to a temporary GGUF (or takes a given file) and hands it to llama.cpp."""

    swap_safe = True  # reads the candidate's layers only

    def __init__(
        self, *, source_gguf: str | Path | None = None, n_threads: int | None = None, repack: bool | None = None
    ) -> None:
        self.source_gguf = None if source_gguf is None else Path(source_gguf)
        self.n_threads = n_threads or default_threads()
        self.repack = repack
        self._repack_crash: int | None = None  # the exit code of the run with repacking on, once one crashed

    def _run(self, fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """``fn`` in :func:`isolated` with weight repacking as configured (see the module's docstring); returns
        its result and the details that say how it ran."""
        if self.repack is not None or self._repack_crash is not None:
            repack = bool(self.repack)
            return isolated(fn, *args, repack=repack, **kwargs), self._repacking(repack)
        value, crash = with_repacking(fn, *args, **kwargs)
        if crash is not None:
            self._repack_crash = crash.exitcode
        return value, self._repacking(crash is None)

    def _repacking(self, on: bool) -> dict[str, Any]:
        why = "" if self._repack_crash is None else f" (with it on llama.cpp crashed: exit code {self._repack_crash})"
        return {"weight_repacking": on, "repacking_note": f"weight repacking {'on' if on else 'off'}{why}"}

    @contextlib.contextmanager
    def _file(self, ctx: EvalContext) -> Iterator[Path]:
        from squeezeray.export._gguf import write_gguf

        with tempfile.TemporaryDirectory(prefix="squeezeray-gguf-") as tmp:
            path = Path(tmp) / "candidate.gguf"
            write_gguf(ctx.candidate, ctx.original, self.source_gguf, path)
            yield path

    def where(self) -> str:
        import platform

        version = getattr(_llama_cpp(), "__version__", "?")
        return f"llama.cpp (llama-cpp-python {version}) on {platform.processor() or platform.machine()}, " \
               f"{self.n_threads} threads"


class LlamaCppPerplexity(_Runtime):
    """Held-out perplexity computed from llama.cpp's logits on the candidate's GGUF file."""

    name = "llamacpp_perplexity"
    direction = Direction.MINIMIZE
    unit = "ppl"

    def measure(self, ctx: EvalContext) -> Measurement:
        with self._file(ctx) as path:
            (ppl, n), how = self._run(llamacpp_perplexity, str(path), ctx.eval_data.ids, n_threads=self.n_threads)
            size = path.stat().st_size
        return Measurement(self.name, ppl, self.unit, Provenance.MEASURED,
                           f"{self.where()}, {how['repacking_note']}; {ctx.eval_data.source}",
                           {"tokens": n, "file_bytes": size, "weight_repacking": how["weight_repacking"]})


class LlamaCppLatency(_Runtime):
    """Decode milliseconds per token measured by llama.cpp (details: prefill and decode tokens/s)."""

    name = "llamacpp_latency"
    direction = Direction.MINIMIZE
    unit = "ms"

    def __init__(self, *, source_gguf: str | Path | None = None, n_threads: int | None = None, seq_len: int = 128,
                 new_tokens: int = 32, warmup: int = 1, repeats: int = 3, repack: bool | None = None) -> None:
        super().__init__(source_gguf=source_gguf, n_threads=n_threads, repack=repack)
        self.seq_len, self.new_tokens, self.warmup, self.repeats = seq_len, new_tokens, warmup, repeats

    def measure(self, ctx: EvalContext) -> Measurement:
        prompt = ctx.eval_data.ids.reshape(-1)[: self.seq_len].tolist()
        with self._file(ctx) as path:
            speed, how = self._run(llamacpp_speed, str(path), prompt, new_tokens=self.new_tokens,
                                   n_threads=self.n_threads, warmup=self.warmup, repeats=self.repeats)
        ms = 1000.0 / speed["decode_tokens_per_s"]
        where = (f"{self.where()}, {how['repacking_note']}; prompt {len(prompt)} tokens, {self.new_tokens} decoded, "
                 f"{self.warmup} warm-up + {self.repeats} timed, median")
        return Measurement(self.name, ms, self.unit, Provenance.MEASURED, where,
                           {**speed, "weight_repacking": how["weight_repacking"]})
