"""Export round trip on the tiny model: same logits after reload, hash checks, card validation, approvals, registry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import squeezeray
from squeezeray._errors import SqueezerayError
from squeezeray.cli import main
from squeezeray.compress import CompressedLinear
from squeezeray.export import CardError
from squeezeray.export import ExportConfig
from squeezeray.export import ModelCard
from squeezeray.export import export_model
from squeezeray.export import read_card
from squeezeray.export import read_registry
from squeezeray.export._artifact import write_manifest
from squeezeray.spaces import CompressionPlan
from squeezeray.spaces import parse_steps

# one layer kind per stored form: packed int codes, asymmetric zeros + n:m index, row index,
# low-rank residual, int8 activations + smoothing, NF4, FP8
MIXED = {
    "q_proj": "gptq-w4g128",
    "k_proj": "wanda-2:4+rtn-w3g64-asym",
    "v_proj": "magnitude-s25-rows",
    "o_proj": "rtn-w3g128+svd-r8-res",
    "gate_proj": "w8a8-a0.5",
    "up_proj": "nf4-g64",
    "down_proj": "fp8",
}


def _mixed_plan(layers) -> CompressionPlan:  # noqa: ANN001
    return CompressionPlan(
        {name: parse_steps(MIXED[leaf]) for name in layers if (leaf := name.rsplit(".", 1)[-1]) in MIXED},
        name="mixed",
    )


def _ids(tiny) -> torch.Tensor:  # noqa: ANN001
    return tiny.held_out.ids[:2, :48]


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory) -> Path:  # noqa: ANN001
    """The tiny model under the mixed plan, exported with float16 dense tensors and a registry."""
    root = tmp_path_factory.mktemp("export")
    plan = _mixed_plan(tiny.layers)
    cfg = ExportConfig(measure=("size", "perplexity"), registry=root / "registry.json")
    export_model(tiny, plan, root / "mixed", config=cfg, hardware="epyc-9654")
    return root / "mixed"


@pytest.fixture
def copy(exported, tmp_path) -> Path:  # noqa: ANN001
    dst = tmp_path / "copy"
    shutil.copytree(exported, dst)
    return dst


def test_float32_export_reloads_to_the_same_logits(tiny, tmp_path) -> None:  # noqa: ANN001
    plan = _mixed_plan(tiny.layers)
    candidate, _ = tiny.compress(plan)
    export_model(tiny, plan, tmp_path / "m", config=ExportConfig(dense_dtype="float32", measure=("size",)),
                 hardware="epyc-9654")
    loaded = squeezeray.load(tmp_path / "m")
    assert sum(isinstance(m, CompressedLinear) for m in loaded.model.modules()) == len(plan.layers)
    assert loaded.model.lm_head.weight is loaded.model.model.embed_tokens.weight  # tied as in the source
    with torch.no_grad():
        expected = candidate(input_ids=_ids(tiny)).logits
        got = loaded.model(input_ids=_ids(tiny)).logits
    assert torch.equal(got, expected)


def test_float16_export_is_the_compressed_model_with_float16_dense_tensors(tiny, exported) -> None:  # noqa: ANN001
    candidate, _ = tiny.compress(_mixed_plan(tiny.layers))
    for module in candidate.modules():
        if not isinstance(module, CompressedLinear):
            for p in module.parameters(recurse=False):
                p.data = p.data.half().float()
    loaded = squeezeray.load(exported)
    with torch.no_grad():
        assert torch.equal(loaded.model(input_ids=_ids(tiny)).logits, candidate(input_ids=_ids(tiny)).logits)
    # the tokenizer travels with the model
    assert loaded.tokenizer("hello world")["input_ids"] == tiny.loaded.tokenizer("hello world")["input_ids"]


def test_card_records_source_plan_hardware_objectives_and_data(tiny, exported) -> None:  # noqa: ANN001
    card = read_card(exported)
    assert card.source.fingerprint == tiny.loaded.fingerprint()
    assert card.source.ref == "tiny-llama"
    assert CompressionPlan.from_dict(dict(card.plan)) == _mixed_plan(tiny.layers)
    assert card.hardware["ref"] == "epyc-9654" and card.hardware["profile"]["name"] == "epyc-9654"
    size, ppl = card.objective("size"), card.objective("perplexity")
    assert size.value < size.baseline and size.unit == "bytes"
    assert ppl.where == tiny.held_out.source and ppl.provenance.value == "computed"
    assert card.evaluation["held_out"].digest == tiny.held_out.digest
    assert card.evaluation["calibration"].digest == tiny.calibration.digest
    assert card.search is None and card.approvals == ()
    md = (exported / "card.md").read_text()
    assert card.source.fingerprint in md and "perplexity" in md


def test_a_tampered_file_fails_its_hash_check(copy) -> None:  # noqa: ANN001
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(SqueezerayError, match=r"model\.safetensors: SHA-256 .* does not match the manifest"):
        squeezeray.load(copy)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: (d / "config.json").write_text((d / "config.json").read_text().replace("128", "64")),
         r"config\.json: SHA-256"),
        (lambda d: (d / "tokenizer.json").unlink(), r"tokenizer\.json: listed in the manifest but missing"),
        (lambda d: (d / "extra.bin").write_bytes(b"x"), r"extra\.bin: not listed in the manifest"),
        (lambda d: (d / "manifest.json").unlink(), r"not a squeezeray export \(no manifest\.json\)"),
    ],
    ids=["edited-config", "missing-file", "added-file", "no-manifest"],
)
def test_other_tampering_is_named(copy, change, message) -> None:  # noqa: ANN001
    change(copy)
    with pytest.raises(SqueezerayError, match=message):
        squeezeray.load(copy)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.pop("source"), r"missing required field 'source'"),
        (lambda c: c["source"].pop("fingerprint"), r"missing required field 'source\.fingerprint'"),
        (lambda c: c.pop("plan"), r"missing required field 'plan'"),
        (lambda c: c.pop("hardware"), r"missing required field 'hardware'"),
        (lambda c: c["objectives"][0].pop("where"), r"missing required field 'objectives\[0\]\.where'"),
        (lambda c: c["evaluation"].pop("held_out"), r"missing required field 'evaluation\.held_out'"),
        (lambda c: c.pop("search"), r"missing required field 'search'"),
        (lambda c: c.pop("approvals"), r"missing required field 'approvals'"),
        (lambda c: c.update(objectives=[]), r"objectives must list at least one"),
        (lambda c: c["objectives"][0].update(provenance="guessed"), r"provenance='guessed'"),
        (lambda c: c["source"].update(fingerprint="abc"), r"source\.fingerprint='abc': must be a SHA-256"),
        (lambda c: c.update(_version=99), r"_version=99"),
    ],
    ids=["source", "fingerprint", "plan", "hardware", "objective-how", "eval-data", "search", "approvals",
         "no-objectives", "provenance", "bad-hash", "version"],
)
def test_a_card_without_the_required_fields_is_refused(exported, edit, message) -> None:  # noqa: ANN001
    data = json.loads((exported / "card.json").read_text())
    ModelCard.from_dict(data)  # the written card is valid
    edit(data)
    with pytest.raises(CardError, match=message):
        ModelCard.from_dict(data)


def test_load_refuses_a_rehashed_folder_whose_card_lacks_fields(copy) -> None:  # noqa: ANN001
    card = json.loads((copy / "card.json").read_text())
    del card["source"]
    (copy / "card.json").write_text(json.dumps(card))
    write_manifest(copy)  # hashes agree again; the card itself is still refused
    with pytest.raises(CardError, match="missing required field 'source'"):
        squeezeray.load(copy)


def test_export_refuses_an_existing_folder(tiny, exported) -> None:  # noqa: ANN001
    with pytest.raises(SqueezerayError, match="already exists"):
        export_model(tiny, _mixed_plan(tiny.layers), exported, hardware="epyc-9654")


def test_approve_appends_to_the_card_and_registry_lists_it(copy, exported, tmp_path, capsys) -> None:  # noqa: ANN001
    registry = tmp_path / "registry.json"
    shutil.copy(exported.parent / "registry.json", registry)
    # the copied registry lists the original folder; point it at the copy
    data = json.loads(registry.read_text())
    data["models"][0]["path"] = str(copy.resolve())
    registry.write_text(json.dumps(data))

    assert main(["approve", str(copy), "--by", "alice", "--note", "perplexity checked on held-out", "--registry",
                 str(registry)]) == 0
    assert main(["approve", str(copy), "--by", "bob", "--note", "size fits the device", "--registry", str(registry)]) == 0
    loaded = squeezeray.load(copy)  # the manifest covers the new card
    assert [(a.by, a.note) for a in loaded.card.approvals] == [
        ("alice", "perplexity checked on held-out"), ("bob", "size fits the device")]
    weights_sha = json.loads((copy / "manifest.json").read_text())["files"]["model.safetensors"]["sha256"]
    assert all(a.model_sha256 == weights_sha for a in loaded.card.approvals)
    assert "**bob**: size fits the device" in (copy / "card.md").read_text()
    (entry,) = read_registry(registry)
    assert entry.approvals == 2 and entry.last_approved_by == "bob"

    capsys.readouterr()
    assert main(["registry", "--registry", str(registry), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "mixed" in out and str(copy.resolve()) in out and "bob" in out and " ok" in out

    assert main(["approve", str(copy), "--by", " ", "--note", "x"]) == 2
    assert "error: approval by=' '" in capsys.readouterr().err


def test_approve_refuses_a_tampered_folder(copy, capsys) -> None:  # noqa: ANN001
    (copy / "config.json").write_text("{}")
    assert main(["approve", str(copy), "--by", "alice", "--note", "ok"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "config.json: SHA-256" in err and "\n" not in err
