"""Test helpers: a network guard and a slightly damaged copy of a model."""

from __future__ import annotations

import contextlib
import copy
import socket
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

_LOCAL = {"localhost", "127.0.0.1", "::1", "0.0.0.0", ""}


def _is_local(address: Any) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = address[0] if isinstance(address, tuple) and address else address
    return str(host) in _LOCAL or str(host).startswith("127.")


@contextlib.contextmanager
def forbid_network() -> Iterator[list[str]]:
    """Refuse (and record) every non-loopback connect and name lookup in the body.

    Yields the list of attempts, so a test can assert it stayed empty even when a
    library swallows the refusal.
    """
    attempts: list[str] = []
    real_connect, real_connect_ex, real_getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> Any:
        if not _is_local(address):
            attempts.append(f"connect {address!r}")
            raise OSError(f"network access attempted in an offline test: connect {address!r}")
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> Any:
        if not _is_local(address):
            attempts.append(f"connect_ex {address!r}")
            raise OSError(f"network access attempted in an offline test: connect_ex {address!r}")
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _is_local((host,)):
            attempts.append(f"getaddrinfo {host!r}")
            raise socket.gaierror(f"network access attempted in an offline test: lookup {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
    try:
        yield attempts
    finally:
        socket.socket.connect = real_connect  # type: ignore[method-assign]
        socket.socket.connect_ex = real_connect_ex  # type: ignore[method-assign]
        socket.getaddrinfo = real_getaddrinfo  # type: ignore[assignment]


@torch.no_grad()
def damaged_copy(model: nn.Module, *, noise: float, seed: int = 0) -> nn.Module:
    """A copy of ``model`` with Gaussian noise of ``noise`` x (weight std) added to every linear layer."""
    out = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    for mod in out.modules():
        if isinstance(mod, nn.Linear):
            w = mod.weight
            w.add_(torch.randn(w.shape, generator=g) * float(w.std()) * noise)
    return out
