"""A scoped offline environment for lm-eval and ``datasets``.

``datasets`` and ``huggingface_hub`` read their offline switches and cache
folder once, at import; setting the environment variables afterwards changes
nothing for an already imported library. :func:`offline` therefore imports
them, sets both the environment variables and the libraries' module-level
settings, and restores everything on exit, so a task that names hub data fails
at once instead of waiting on the network, and ``datasets`` writes its Arrow
cache inside the run folder.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_DATASETS_CACHE")


def _settings(cache_dir: Path) -> tuple[tuple[str, str, Any], ...]:
    """(module, attribute, value) of the settings libraries read from the environment at import."""
    return (
        ("datasets.config", "HF_HUB_OFFLINE", True),
        ("datasets.config", "HF_DATASETS_OFFLINE", True),
        ("datasets.config", "HF_DATASETS_CACHE", cache_dir),
        ("huggingface_hub.constants", "HF_HUB_OFFLINE", True),
    )


@contextlib.contextmanager
def offline(cache_dir: Path) -> Iterator[None]:
    """Run the body with the hub switched off and the ``datasets`` cache in ``cache_dir``.

    Args:
        cache_dir: Folder for ``datasets``' Arrow cache (created if missing).
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    saved_env = {k: os.environ.get(k) for k in ENV}
    saved: list[tuple[object, str, object]] = []
    for module_name, attr, value in _settings(cache_dir):
        module = importlib.import_module(module_name)
        if hasattr(module, attr):
            saved.append((module, attr, getattr(module, attr)))
            setattr(module, attr, value)
    os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(cache_dir)})
    try:
        yield
    finally:
        for module, attr, old in reversed(saved):
            setattr(module, attr, old)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
