"""The process's memory: what it holds at most, what the machine has free, and giving freed heap back.

A compression allocates and frees many float32 temporaries of a few MB each (one layer's weight, its
Hessian, GPTQ's working copies). glibc keeps such freed chunks in its heap rather than returning them,
so without :func:`trim` the resident set of a 135M-parameter compression grows by about three times the
model's bytes and stays there. Off Linux/glibc every function here does nothing or returns None.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from pathlib import Path

_STATUS = Path("/proc/self/status")


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


def _kib_field(path: Path, key: str) -> int | None:
    """Bytes of a ``key:  N kB`` line of a /proc file, or None where the file or the line is missing."""
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return None


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
