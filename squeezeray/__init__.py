"""squeezeray: automated per-layer compression search for large language models.

``squeezeray.search(model=..., hardware=..., objectives=[...], space=..., n_trials=...,
constraints={...})`` runs a search (the ``squeezeray.search`` subpackage is itself callable);
``squeezeray.load(path)`` loads an exported model.
Subpackages load lazily so that ``import squeezeray`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from squeezeray._version import __version__  # noqa: F401 - the package version, re-exported

_SUBPACKAGES = {
    "search", "spaces", "objectives", "hwprofiles", "kernels", "techniques", "compress", "models", "data", "export", "ui",
}


def load(path: Any, **kwargs: Any) -> Any:
    """Load an exported model folder (hashes checked): see :func:`squeezeray.export.load`.

    Returns an :class:`~squeezeray.export.ExportedModel` with ``.model`` (runnable),
    ``.tokenizer``, ``.card`` and ``.path``.
    """
    from squeezeray.export import load as _load

    return _load(path, **kwargs)


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"squeezeray.{name}")
    raise AttributeError(f"module 'squeezeray' has no attribute {name!r}")
