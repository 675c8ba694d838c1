"""Bad input on the command line: one clear line, exit status 2, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from squeezeray.cli import main


def _run(capsys, *argv: str) -> tuple[int, str]:  # noqa: ANN001
    code = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


def test_bad_preset(capsys) -> None:  # noqa: ANN001
    code, line = _run(capsys, "compress", "--plan", "gptq-w9g128")
    assert code == 2
    assert line == "error: gptq.bits=9: must be one of 2, 3, 4, 5, 6, 7, 8"


def test_unknown_technique(capsys) -> None:  # noqa: ANN001
    code, line = _run(capsys, "compress", "--plan", "gtpq-w4g128")
    assert code == 2
    assert line.startswith("error: unknown technique 'gtpq'. Did you mean: gptq?")


def test_missing_plan_file(capsys, tmp_path) -> None:  # noqa: ANN001
    code, line = _run(capsys, "compress", "--plan", str(tmp_path / "missing.json"))
    assert code == 2
    assert line.startswith("error: plan file") and "does not exist" in line


def test_corrupted_plan_file(capsys, tmp_path) -> None:  # noqa: ANN001
    bad = tmp_path / "plan.json"
    bad.write_text('{"_type": "squeezeray.CompressionPlan", "_version": 1, "layers": {"x": [{"technique": "rtn", "bits": 11}]}}')
    code, line = _run(capsys, "compress", "--plan", str(bad), "--model", str(tmp_path / "nowhere"))
    assert code == 2
    assert line.startswith("error: ")


def test_model_path_that_does_not_exist(capsys, tmp_path) -> None:  # noqa: ANN001
    code, line = _run(capsys, "compress", "--plan", "rtn-w8", "--model", str(tmp_path / "no-such-model"))
    assert code == 2
    assert line.startswith("error: model") and "no such file or folder" in line


def test_unknown_objective(capsys) -> None:  # noqa: ANN001
    code, line = _run(capsys, "compress", "--plan", "rtn-w8", "--objectives", "size,perplexty")
    assert code == 2
    assert "Did you mean: perplexity" in line


def test_bad_data_setting(capsys) -> None:  # noqa: ANN001
    code, line = _run(capsys, "compress", "--plan", "rtn-w8", "--calib-seqs", "0")
    assert code == 2
    assert line == "error: calib_seqs=0: must be a positive integer"


def test_a_search_that_cannot_fit_is_refused_with_the_numbers(capsys, tmp_path) -> None:  # noqa: ANN001
    code, line = _run(capsys, "search", "--memory-limit", "0.2", "--workdir", str(tmp_path / "runs"), "--no-progress")
    assert code == 2
    assert line.startswith("error: this run would need about ") and "but 0.20 GiB is available (memory_limit)" in line
    assert "0.13B parameters in bfloat16" in line  # the embedded model's config, read without its weights
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_plan_naming_a_missing_layer_in_a_subprocess(tmp_path) -> None:  # noqa: ANN001
    plan = tmp_path / "plan.json"
    plan.write_text(
        '{"_type": "squeezeray.CompressionPlan", "_version": 1, "name": "x", '
        '"layers": {"model.layers.0.self_attn.q_prj": [{"technique": "rtn", "bits": 8, "group_size": null}]}}'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "squeezeray.cli", "compress", "--plan", str(plan), "--no-progress"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: layer 'model.layers.0.self_attn.q_prj' is not a compressible linear layer")
    assert "Did you mean: model.layers.0.self_attn.q_proj" in last
    assert "Traceback" not in proc.stderr
