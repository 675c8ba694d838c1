"""Kernel tests: without a GPU, Triton runs in its CPU interpreter.

``TRITON_INTERPRET`` must be set before the Triton kernels are decorated, i.e. before
``squeezeray.kernels._triton_*`` is imported; the tests import those modules inside the
test functions, after this conftest ran.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"



@pytest.fixture
def device() -> str:
    """Where Triton kernels run in these tests: the GPU when there is one, else the interpreter on CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"
