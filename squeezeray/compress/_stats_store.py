"""Calibration statistics on disk, one file per distinct layer input, loaded when a layer needs them.

A block-wise calibration (:func:`~squeezeray.compress.collect_stats_blockwise`) hands each block's
statistics to :meth:`StatsStore.add`, which writes them and keeps nothing; :meth:`StatsStore.finish`
writes the index that marks the folder complete. Reading, the store is a mapping from layer name to
:class:`~squeezeray.techniques.LayerStats` that loads a layer's file on first use and keeps a bounded
number of bytes in memory (least recently used dropped first), so a compression of a model with
hundreds of layers holds a few layers' Hessians, not all of them. Layers that read the same input
(q/k/v, gate/up) share one file and, while it is in memory, one object.

This module owns the folder's layout and its index keys.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from collections.abc import Iterator
from collections.abc import Mapping
from pathlib import Path

import torch

from squeezeray._errors import SqueezerayError
from squeezeray._schema import check_header
from squeezeray.techniques import LayerStats

_INDEX = "index.json"
_TYPE = "squeezeray.calibration_stats"
_VERSION = 1
DEFAULT_MEMORY_BYTES = 64 << 20  # loaded statistics a store keeps by default (a miss reads one file back)


def stats_nbytes(st: LayerStats) -> int:
    """Bytes of one layer's statistics in memory."""
    tensors = (st.sq_mean, st.abs_mean, st.abs_max, st.hessian)
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


class StatsStore(Mapping[str, LayerStats]):
    """A folder of per-layer statistics (see the module docstring).

    Args:
        folder: Where the files and the index live.
        max_memory_bytes: Loaded statistics kept in memory (at least the last one loaded is always kept).
    """

    def __init__(self, folder: str | Path, *, max_memory_bytes: int = DEFAULT_MEMORY_BYTES) -> None:
        self.folder = Path(folder)
        self.max_memory_bytes = max_memory_bytes
        self._files: dict[str, str] = {}  # layer -> file name
        self.hessian: bool | None = None
        self._loaded: collections.OrderedDict[str, LayerStats] = collections.OrderedDict()  # file -> stats
        self._bytes = 0
        self._n_files = 0
        self.loads = 0  # files read from disk since the store was opened (tests and progress reports)

    # ------------------------------------------------------------------ write
    def add(self, stats: Mapping[str, LayerStats]) -> None:
        """Write one block's statistics (layers sharing an input share one file); nothing stays in memory."""
        self.folder.mkdir(parents=True, exist_ok=True)
        written: dict[int, str] = {}
        for name, st in stats.items():
            if name in self._files:
                raise SqueezerayError(f"statistics store {self.folder}: layer {name!r} written twice")
            has_h = st.hessian is not None
            if self.hessian is None:
                self.hessian = has_h
            elif self.hessian != has_h:
                raise SqueezerayError(f"statistics store {self.folder}: layer {name!r} has_hessian={has_h}, "
                                      f"the others {self.hessian}")
            if id(st) not in written:
                file = f"{self._n_files:05d}.pt"
                self._n_files += 1
                tmp = self.folder / f"{file}.tmp{os.getpid()}"
                torch.save(dataclasses.asdict(st), tmp)
                os.replace(tmp, self.folder / file)
                written[id(st)] = file
            self._files[name] = written[id(st)]

    def finish(self) -> StatsStore:
        """Write the index: the folder is complete and other processes may open it."""
        index = {"_type": _TYPE, "_version": _VERSION, "hessian": bool(self.hessian), "layers": self._files}
        tmp = self.folder / f"{_INDEX}.tmp{os.getpid()}"
        tmp.write_text(json.dumps(index, indent=0, sort_keys=True))
        os.replace(tmp, self.folder / _INDEX)
        return self

    @classmethod
    def write(cls, folder: str | Path, stats: Mapping[str, LayerStats]) -> StatsStore:
        """A complete store holding ``stats`` (already gathered in memory)."""
        store = cls(folder)
        store.add(stats)
        return store.finish()

    # ------------------------------------------------------------------- read
    @classmethod
    def open(cls, folder: str | Path, *, max_memory_bytes: int = DEFAULT_MEMORY_BYTES) -> StatsStore | None:
        """The complete store in ``folder``, or None when it has no index (absent or still being written)."""
        path = Path(folder) / _INDEX
        if not path.is_file():
            return None
        try:
            index = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise SqueezerayError(f"{path}: unreadable statistics index ({err})") from None
        check_header(index, type_=_TYPE, version=_VERSION, where=str(path))
        store = cls(folder, max_memory_bytes=max_memory_bytes)
        store._files = {str(k): str(v) for k, v in index["layers"].items()}
        store._n_files = len(set(store._files.values()))
        store.hessian = bool(index["hessian"])
        return store

    def __getitem__(self, name: str) -> LayerStats:
        file = self._files.get(name)
        if file is None:
            raise KeyError(name)
        st = self._loaded.get(file)
        if st is not None:
            self._loaded.move_to_end(file)
            return st
        try:
            # Mapped, not read into fresh memory: the file's pages come in as a technique reads them (an 8192-wide
            # Hessian loaded and gathered in 0.12 s instead of 0.26-0.6 on a 2-vCPU EPYC VM), private to this
            # process (a write would copy the page, never reach the file).
            payload = torch.load(self.folder / file, weights_only=True, mmap=True)
        except (OSError, RuntimeError) as err:
            raise SqueezerayError(f"statistics store {self.folder}: layer {name!r} ({file}) unreadable: {err}") from None
        st = LayerStats(**payload)
        self.loads += 1
        self._loaded[file] = st
        self._bytes += stats_nbytes(st)
        while self._bytes > self.max_memory_bytes and len(self._loaded) > 1:
            _, old = self._loaded.popitem(last=False)
            self._bytes -= stats_nbytes(old)
        return st

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)

    def as_dict(self) -> dict[str, LayerStats]:
        """Every layer's statistics in memory, each file read once (layers sharing an input share one object):
        for a receiver that may not see this folder (a Ray worker on another node)."""
        by_file: dict[str, LayerStats] = {}
        for name, file in self._files.items():
            if file not in by_file:
                by_file[file] = self[name]
        return {name: by_file[file] for name, file in self._files.items()}

    def __getstate__(self) -> dict[str, object]:
        """Pickled (sent to a Ray worker) without the statistics it holds in memory: the worker reads the files."""
        state = dict(self.__dict__)
        state["_loaded"], state["_bytes"] = collections.OrderedDict(), 0
        return state

    @property
    def memory_bytes(self) -> int:
        """Bytes of statistics held in memory now."""
        return self._bytes
