"""llama.cpp loads and runs squeezeray's GGUF export: its perplexity agrees with squeezeray's, its speed is measured."""

from __future__ import annotations

import importlib.util
import math
import os

import pytest

from squeezeray.objectives import Provenance
from squeezeray.spaces import CompressionPlan
from squeezeray.spaces import parse_steps


@pytest.fixture(scope="module", autouse=True)
def _needs_llama_cpp() -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        if os.environ.get("CI"):
            pytest.fail("llama-cpp-python is not installed, and CI must run these tests (scripts/setup.sh installs it)")
        pytest.skip("llama-cpp-python is not installed (scripts/setup.sh builds it)")


@pytest.mark.slow
def test_llamacpp_perplexity_agrees_with_squeezerays(bench) -> None:  # noqa: ANN001
    kinds = {"lm_head": "rtn-q8_0", "down_proj": "rtn-q6_k", "gate_proj": "rtn-q4_1", "up_proj": "rtn-q5_1"}
    plan = CompressionPlan({n: parse_steps(kinds.get(n.rsplit(".", 1)[-1], "rtn-q4_0")) for n in bench.layers})
    candidate, _ = bench.compress(plan)
    ours = bench.evaluate(candidate, ["perplexity"])["perplexity"].value
    m = bench.evaluate(candidate, ["llamacpp_perplexity"])["llamacpp_perplexity"]
    assert m.provenance is Provenance.MEASURED and "llama.cpp" in m.where and "threads" in m.where
    assert m.details["tokens"] == bench.held_out.ids.numel() - bench.held_out.ids.shape[0]
    assert abs(m.value / ours - 1) < 0.02  # llama.cpp quantizes activations in its matmuls
    f16 = bench.evaluate(bench.original, ["llamacpp_perplexity", "perplexity"])
    assert abs(f16["llamacpp_perplexity"].value / f16["perplexity"].value - 1) < 0.02  # the runtime's own offset
    assert m.details["file_bytes"] < f16["llamacpp_perplexity"].details["file_bytes"] / 2.5


@pytest.mark.slow
def test_llamacpp_latency_is_measured_in_tokens_per_second(bench) -> None:  # noqa: ANN001
    obj = bench.objective("llamacpp_latency")
    obj.seq_len, obj.new_tokens, obj.repeats = 64, 8, 1
    m = bench.context(bench.original).measure(obj)
    assert m.unit == "ms" and m.provenance is Provenance.MEASURED and math.isfinite(m.value) and m.value > 0
    assert m.details["prefill_tokens_per_s"] > 0 and m.details["decode_tokens_per_s"] > 0
    assert m.value == pytest.approx(1000 / m.details["decode_tokens_per_s"])


def _die() -> None:
    import signal

    os.kill(os.getpid(), signal.SIGSEGV)  # what a native runtime crash does to its process


def test_a_runtime_crash_fails_the_measurement_not_the_process() -> None:
    from squeezeray.objectives.llamacpp import isolated

    assert isolated(math.fsum, [0.5, 0.25]) == 0.75
    with pytest.raises(RuntimeError, match=r"llama.cpp's process died while running _die \(exit codes \[-11\]"):
        isolated(_die)


def _crashes_when_repacking(value: float, *, repack: bool) -> float:
    if repack:
        _die()
    return value


def test_a_crash_with_weight_repacking_reruns_without_it_and_says_so() -> None:
    from squeezeray.objectives.llamacpp import LlamaCppPerplexity
    from squeezeray.objectives.llamacpp import RuntimeCrash

    auto = LlamaCppPerplexity(n_threads=1)
    value, how = auto._run(_crashes_when_repacking, 2.5)
    assert value == 2.5 and how["weight_repacking"] is False and "exit code -11" in how["repacking_note"]
    assert auto._run(_crashes_when_repacking, 1.5)[0] == 1.5  # remembered: no second crash
    forced = LlamaCppPerplexity(n_threads=1, repack=True)
    with pytest.raises(RuntimeCrash, match="_crashes_when_repacking"):
        forced._run(_crashes_when_repacking, 2.5)
    assert LlamaCppPerplexity(n_threads=1, repack=False)._run(_crashes_when_repacking, 3.0)[1]["repacking_note"] \
        == "weight repacking off"
