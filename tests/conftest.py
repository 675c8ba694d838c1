"""Shared fixtures: seeds, tiny layers, and one embedded-model workbench per test session."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def correlated_inputs(n: int, width: int, *, outliers: int = 3, seed: int = 0) -> torch.Tensor:
    """(n, width) inputs with correlated channels and a few large-magnitude channels."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, width, generator=g)
    x = z @ torch.randn(width, width, generator=g) / width**0.5 + 0.3 * z
    x[:, :outliers] *= 20
    return x


@pytest.fixture(scope="session")
def bench():  # noqa: ANN201
    """The embedded SmolLM2-135M with small calibration/eval sets (loaded once, ~30 s)."""
    from squeezeray.workbench import DataConfig
    from squeezeray.workbench import Workbench

    return Workbench.load(None, DataConfig(calib_seqs=16, calib_len=256, eval_tokens=2048, proxy_seqs=2), dtype="float32")


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> str:  # noqa: ANN001
    """The embedded model's tokenizer saved as a plain folder (fast to load in subprocesses)."""
    import transformers

    from squeezeray.models import resolve_model

    src = resolve_model(None)
    tok = transformers.AutoTokenizer.from_pretrained(src.path, gguf_file=src.gguf_file)
    path = tmp_path_factory.mktemp("tokenizer")
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny(tokenizer_dir: str):  # noqa: ANN201
    from tests._tiny import tiny_bench

    return tiny_bench(tokenizer_dir)
