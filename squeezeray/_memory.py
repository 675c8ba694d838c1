"""The process's memory: what it holds at most, what the machine has free, and giving memory back.

A compression allocates and frees many float32 temporaries of a few MB each (one layer's weight, its
Hessian, GPTQ's working copies). glibc keeps such freed chunks in its heap rather than returning them,
so without :func:`trim` the resident set of a 135M-parameter compression grows by about three times the
model's bytes and stays there. Off Linux/glibc every function here does nothing or returns None.

A checkpoint folder's weights are memory-mapped from its safetensors files (and the layer cache's files
likewise): their pages are the file's, resident while they were read lately. :func:`page_out` tells the kernel
that a range of such pages will not be read for a while (``MADV_PAGEOUT``): it drops them from the process's
resident set at once instead of when memory runs short, and a later read maps them back from the page cache
(or the file). The contents never change; memory that is not file-backed is never advised.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from pathlib import Path

_STATUS = Path("/proc/self/status")
_MAPS = Path("/proc/self/maps")
MADV_PAGEOUT = 21  # Linux 5.4+: reclaim these pages now (a clean file-backed page is dropped, its contents kept)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return lib if lib is not None and hasattr(lib, "malloc_trim") else None


def trim() -> bool:
    """Return the heap's free pages to the operating system (glibc ``malloc_trim``); False where there is none."""
    lib = _libc()
    if lib is None:
        return False
    lib.malloc_trim(0)
    return True


def kib_fields(path: Path | str, keys: tuple[str, ...]) -> dict[str, int]:
    """Bytes of the ``key:  N kB`` lines of a /proc file (``/proc/<pid>/status``, ``/proc/meminfo``) for ``keys``
    it has, read once; empty where the file cannot be read (a process that has gone, no /proc)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        key, _, rest = line.partition(":")
        if key in keys:
            out[key] = int(rest.split()[0]) * 1024
    return out


def _kib_field(path: Path, key: str) -> int | None:
    """Bytes of a ``key:  N kB`` line of a /proc file, or None where the file or the line is missing."""
    return kib_fields(path, (key,)).get(key)


def resident_bytes() -> int | None:
    """This process's resident set now (``VmRSS``)."""
    return _kib_field(_STATUS, "VmRSS")


def peak_resident_bytes() -> int | None:
    """The most this process has held resident (``VmHWM``) since it started or since :func:`reset_peak`."""
    return _kib_field(_STATUS, "VmHWM")


def reset_peak() -> bool:
    """Start :func:`peak_resident_bytes` again from the resident set now (Linux ``clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def available_bytes() -> int | None:
    """Memory the machine can give a new allocation without swapping (``MemAvailable``), or None off Linux."""
    return _kib_field(Path("/proc/meminfo"), "MemAvailable")


def file_backed_ranges() -> list[tuple[int, int]]:
    """``[start, end)`` addresses of this process's mappings of regular files (``/proc/self/maps``), sorted."""
    try:
        lines = _MAPS.read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[4] != "0" and fields[5].startswith("/"):
            start, end = (int(v, 16) for v in fields[0].split("-"))
            out.append((start, end))
    return sorted(out)


def page_out(spans: list[tuple[int, int]]) -> int:
    """Advise the kernel to take the file-backed pages of ``spans`` (``(address, nbytes)`` of host memory) out of
    the resident set now (:data:`MADV_PAGEOUT`); returns the bytes advised (0 where nothing is file-backed, off
    Linux, or on a kernel without ``MADV_PAGEOUT``). Only whole pages inside a span and inside a file mapping are
    advised, so no neighbouring memory is touched and anonymous memory never is.
    """
    if _libc() is None or not spans:
        return 0
    page = _page_size()
    files = file_backed_ranges()
    advised = 0
    madvise = _madvise()
    for addr, nbytes in spans:
        for start, end in files:
            lo = max(addr, start)
            hi = min(addr + nbytes, end)
            lo = -(-lo // page) * page  # whole pages inside both
            hi = hi // page * page
            if hi <= lo:
                continue
            if madvise(lo, hi - lo, MADV_PAGEOUT) != 0:
                return advised  # EINVAL: a kernel before 5.4; nothing more will take
            advised += hi - lo
    return advised


@functools.cache
def _madvise() -> ctypes._CFuncPtr:
    """libc's ``madvise(addr, length, advice)``, typed once (call only where :func:`_libc` is not None)."""
    lib = _libc()
    assert lib is not None
    fn = lib.madvise
    fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    fn.restype = ctypes.c_int
    return fn


@functools.cache
def _page_size() -> int:
    import mmap

    return mmap.PAGESIZE
