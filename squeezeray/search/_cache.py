"""The compressed-layer cache: each (model, layer, steps, calibration) is compressed once.

Keys are content hashes, so a cache directory can be shared by runs, processes
and machines (a Ray sweep points every worker at one directory). Entries live
in memory (bounded, least recently used dropped first) and, with a directory,
on disk as safetensors files whose metadata holds the layer format.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file
from safetensors.torch import save_file

from squeezeray.compress import CompressedLinear
from squeezeray.compress import LayerFormat
from squeezeray.compress._layer_format import FORMAT_VERSION
from squeezeray.spaces import LayerPlan
from squeezeray.techniques import LayerStats
from squeezeray.techniques import StatsMemo
from squeezeray.techniques._versions import CALIBRATION_CODE_VERSION
from squeezeray.techniques._versions import steps_code_versions


DEFAULT_MEMORY_BYTES = 64 << 20  # a miss reads the layer back from disk (a few ms), not a recompression
"""The memory budget of a :class:`LayerCache` (its compressed layers' bytes). Small on purpose: a search's
cache has a disk folder, and a layer evicted from memory is read back from it (a safetensors file, mostly from
the page cache) instead of being recomputed. (With 256 MiB instead of 2 GiB the main job's
resident memory during the sensitivity stage did not fall: that growth is not this cache; see
experiments/main_job/memory-bf16.)"""


def layer_key(model_fingerprint: str, layer: str, plan: LayerPlan, calibration_digest: str) -> str:
    """Content key of one compressed layer: the model, the layer, its steps, the calibration tokens, the
    layer format and the code versions of the steps' techniques and of calibration (a fix bumps one)."""
    payload = json.dumps(
        {"model": model_fingerprint, "layer": layer, "steps": plan.to_list(), "calib": calibration_digest,
         "format": FORMAT_VERSION, "calib_code": CALIBRATION_CODE_VERSION,
         "code": steps_code_versions([s.technique for s in plan.steps])},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclasses.dataclass
class CacheStats:
    """Counters since the cache was made."""

    memory_hits: int = 0
    disk_hits: int = 0
    shared_hits: int = 0  # fetched from another worker through the Ray object store
    misses: int = 0
    compute_seconds: float = 0.0

    @property
    def hits(self) -> int:
        return self.memory_hits + self.disk_hits + self.shared_hits

    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class LayerCache:
    """Memory + optional disk cache of :class:`CompressedLinear` layers.

    Args:
        directory: Where entries persist (None: memory only).
        max_memory_bytes: Memory budget for cached layers.
    """

    def __init__(self, directory: str | Path | None = None, *, max_memory_bytes: int = DEFAULT_MEMORY_BYTES) -> None:
        self.directory = None if directory is None else Path(directory)
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self.max_memory_bytes = max_memory_bytes
        self._memory: collections.OrderedDict[str, CompressedLinear] = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.stats = CacheStats()

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / f"{key}.safetensors"

    def _remember(self, key: str, module: CompressedLinear) -> None:
        with self._lock:
            if key in self._memory:
                return
            self._memory[key] = module
            self._bytes += module.nbytes()
            while self._bytes > self.max_memory_bytes and len(self._memory) > 1:
                _, old = self._memory.popitem(last=False)
                self._bytes -= old.nbytes()

    def get(self, key: str) -> CompressedLinear | None:
        with self._lock:
            module = self._memory.get(key)
            if module is not None:
                self._memory.move_to_end(key)
                self.stats.memory_hits += 1
                return module
        if self.directory is not None and self._path(key).is_file():
            module = load_layer(self._path(key))
            self.stats.disk_hits += 1
            self._remember(key, module)
            return module
        return None

    def put(self, key: str, module: CompressedLinear) -> None:
        self._remember(key, module)
        if self.directory is not None:
            save_layer(module, self._path(key))

    def get_or_compute(self, key: str, compute: Callable[[], CompressedLinear]) -> CompressedLinear:
        """The cached layer (computed and stored on a miss), as a :meth:`~CompressedLinear.view` of its own:
        what a candidate does to its layer (materialize, attach kernels) never reaches another candidate."""
        return self._entry(key, compute).view()

    def _entry(self, key: str, compute: Callable[[], CompressedLinear]) -> CompressedLinear:
        module = self.get(key)
        if module is None:
            import time

            t0 = time.perf_counter()
            module = compute().to("cpu")  # kept on the host (a layer made on a GPU too); a swap moves its view
            self.stats.compute_seconds += time.perf_counter() - t0
            self.stats.misses += 1
            self.put(key, module)
        return module

    def layer_fn(self, model_fingerprint: str, calibration_digest: str) -> Callable[..., CompressedLinear]:
        """A ``layer_fn`` for :func:`squeezeray.compress.apply_plan` that goes through this cache."""
        from squeezeray.compress import compress_layer

        def fn(
            name: str, linear: torch.nn.Linear, plan: LayerPlan, stats: LayerStats, *, memo: StatsMemo | None = None
        ) -> CompressedLinear:
            key = layer_key(model_fingerprint, name, plan, calibration_digest)
            return self.get_or_compute(key, lambda: compress_layer(name, linear, plan, stats, memo=memo))

        return fn


def save_layer(module: CompressedLinear, path: Path) -> None:
    """Write one layer atomically (safetensors + its format in the metadata)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in module.named_buffers(recurse=False)}
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata={"squeezeray.layer_format": json.dumps(module.fmt.to_dict())})
    os.replace(tmp, path)


def load_layer(path: Path) -> CompressedLinear:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "squeezeray.layer_format" not in meta:
        raise ValueError(f"{path}: not a squeezeray compressed layer (no layer format in its metadata)")
    fmt = LayerFormat.from_dict(json.loads(meta["squeezeray.layer_format"]))
    return CompressedLinear(fmt, dict(load_file(str(path))))
