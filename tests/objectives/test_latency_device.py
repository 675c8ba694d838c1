"""Latency says which device it ran on and waits for CUDA kernels before reading the clock."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from squeezeray.objectives import latency as lat


class _Counting(nn.Module):
    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids: torch.Tensor, **_: object) -> None:
        self.log.append("forward")


def test_a_cuda_timing_synchronises_around_every_timed_call(monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[str] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: log.append(f"sync {device}"))
    lat.time_forward(_Counting(log), torch.zeros(1, 4, dtype=torch.long), warmup=1, repeats=2,
                     device=torch.device("cuda", 0))
    assert log == ["forward", "sync cuda:0", "forward", "sync cuda:0", "sync cuda:0", "forward", "sync cuda:0"]
    log.clear()
    lat.time_forward(_Counting(log), torch.zeros(1, 4, dtype=torch.long), warmup=0, repeats=1)  # CPU: no sync
    assert log == ["forward"]


def test_the_label_names_the_gpu_on_cuda_and_the_host_cpu_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    label = lat.device_description(torch.device("cuda", 0))
    assert label.startswith("GPU NVIDIA H200 (cuda:0)") and "host CPU" not in label
    assert lat.device_description(torch.device("cpu")).startswith("host CPU")
    assert lat.model_device(nn.Linear(2, 2)) == torch.device("cpu")


@pytest.mark.gpu
def test_latency_on_a_gpu_is_labelled_with_it() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    label = lat.device_description(torch.device("cuda", 0))
    assert label.startswith(f"GPU {torch.cuda.get_device_name(0)}")
