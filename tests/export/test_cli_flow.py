"""The command line from search to registry on the tiny model saved as a Hugging Face folder:
``search`` (writes the static report) -> ``export`` (the recommended trial) -> ``approve`` -> ``registry``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import squeezeray
from squeezeray.cli import main

DATA = ["--calib-seqs", "4", "--calib-len", "64", "--eval-tokens", "512"]


@pytest.fixture(scope="module")
def tiny_folder(tiny, tmp_path_factory) -> Path:  # noqa: ANN001
    folder = tmp_path_factory.mktemp("tiny-hf")
    tiny.original.save_pretrained(folder)
    tiny.loaded.tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.slow  # a search, an export and two model loads through the CLI (about a minute on two cores)
def test_search_export_approve_registry(tiny_folder, tmp_path, capsys) -> None:  # noqa: ANN001
    runs = tmp_path / "runs"
    registry = runs / "registry.json"
    assert main([
        "search", "--model", str(tiny_folder), "--trials", "3", "--sampler", "random", "--rerank", "3",
        "--hardware", "epyc-9654", "--final-objectives", "size,kl,perplexity", "--workdir", str(runs),
        "--study-name", "cli", "--no-progress", *DATA,
    ]) == 0
    out = capsys.readouterr().out
    report = runs / "cli" / "report.html"
    assert f"report: {report}" in out and report.is_file()

    assert main(["export", str(runs / "cli"), "--model", str(tiny_folder), "--out-dir", str(runs / "exports"),
                 "--registry", str(registry), "--max-size-mb", "1000", *DATA]) == 0
    out = capsys.readouterr().out
    (folder,) = (runs / "exports").iterdir()
    assert f"written: {folder}" in out
    loaded = squeezeray.load(folder)
    selected = json.loads((runs / "cli" / "selected_plan.json").read_text())
    assert loaded.card.plan["layers"] == selected["layers"]  # the same pick as the search, with a loose constraint
    assert loaded.card.search is not None and loaded.card.search.study == "cli"
    assert loaded.card.search.constraints == {"max_size_bytes": 1000 * 2**20}

    assert main(["approve", str(folder), "--by", "carol", "--note", "ok for staging", "--registry", str(registry)]) == 0
    assert main(["registry", "--registry", str(registry), "--json"]) == 0
    capsys.readouterr()
    assert main(["registry", "--registry", str(registry), "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["path"] == str(folder.resolve()) and entry["approvals"] == 1 and entry["trial"] == loaded.card.search.trial

    # a workbench on other calibration data cannot reproduce the study's plans: refused before compressing
    assert main(["export", str(runs / "cli"), "--model", str(tiny_folder), "--registry", str(registry),
                 "--calib-seqs", "5", "--calib-len", "64", "--eval-tokens", "512"]) == 2
    assert "calibration: the study used" in capsys.readouterr().err
