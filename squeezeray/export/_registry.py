"""The registry: one JSON file listing exported models.

``{"_type": "squeezeray.Registry", "_version": 1, "models": [entry, ...]}``, one
entry per export folder (keyed by its absolute path; exporting to the same path
again replaces the entry). Writes hold an exclusive lock on ``<file>.lock`` and
replace the file atomically, so concurrent exports do not lose entries.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
from collections.abc import Iterator
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from squeezeray._errors import SqueezerayError
from squeezeray._schema import check_header
from squeezeray._schema import load_document
from squeezeray.export._artifact import write_json_atomic
from squeezeray.export._card import ModelCard

REGISTRY_TYPE = "squeezeray.Registry"
REGISTRY_VERSION = 1
DEFAULT_REGISTRY = Path("runs") / "registry.json"


@dataclasses.dataclass(frozen=True)
class RegistryEntry:
    """One exported model as the registry lists it.

    Attributes:
        path: Absolute path of the export folder.
        name: Card name.
        created: Export time (UTC).
        source: Source model reference.
        source_fingerprint: Its weight fingerprint.
        study, trial: The search that found it (None if exported without one).
        objectives: Objective name -> value (the card's).
        model_sha256: SHA-256 of ``model.safetensors`` at export.
        approvals: Number of approvals on the card.
        last_approved_by: Who approved last ("" if nobody).
    """

    path: str
    name: str
    created: str
    source: str
    source_fingerprint: str
    study: str | None
    trial: int | None
    objectives: Mapping[str, float]
    model_sha256: str
    approvals: int = 0
    last_approved_by: str = ""

    @classmethod
    def from_card(cls, path: Path, card: ModelCard, model_sha256: str) -> RegistryEntry:
        return cls(
            path=str(Path(path).resolve()), name=card.name, created=card.created, source=card.source.ref,
            source_fingerprint=card.source.fingerprint,
            study=None if card.search is None else card.search.study,
            trial=None if card.search is None else card.search.trial,
            objectives={o.name: o.value for o in card.objectives}, model_sha256=model_sha256,
            approvals=len(card.approvals), last_approved_by=card.approvals[-1].by if card.approvals else "",
        )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["objectives"] = dict(self.objectives)
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str) -> RegistryEntry:
        if not isinstance(d, Mapping):
            raise SqueezerayError(f"{where}: must be an object")
        fields = {f.name for f in dataclasses.fields(cls)}
        missing = [f for f in ("path", "name", "created", "source", "source_fingerprint", "model_sha256") if f not in d]
        if missing:
            raise SqueezerayError(f"{where}: missing field(s) {', '.join(missing)}")
        return cls(**{k: v for k, v in d.items() if k in fields})


def read_registry(path: str | Path) -> tuple[RegistryEntry, ...]:
    """The entries of the registry file at ``path`` (none if it does not exist yet)."""
    p = Path(path)
    if not p.exists():
        return ()
    data = load_document(p, what="registry")
    if not isinstance(data, Mapping):
        raise SqueezerayError(f"registry={str(p)!r}: must be a JSON object, got {type(data).__name__}")
    check_header(data, type_=REGISTRY_TYPE, version=REGISTRY_VERSION, where=f"registry={str(p)!r}")
    models = data.get("models")
    if not isinstance(models, list):
        raise SqueezerayError(f"registry={str(p)!r}: 'models' must be a list")
    return tuple(RegistryEntry.from_dict(m, f"registry={str(p)!r} models[{i}]") for i, m in enumerate(models))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def upsert_entry(path: str | Path, entry: RegistryEntry) -> None:
    """Add ``entry`` to the registry at ``path``, replacing an entry for the same folder."""
    p = Path(path)
    with _locked(p):
        entries = [e for e in read_registry(p) if e.path != entry.path]
        entries.append(entry)
        write_json_atomic(p, {"_type": REGISTRY_TYPE, "_version": REGISTRY_VERSION,
                              "models": [e.to_dict() for e in entries]})


def find_entry(path: str | Path, folder: str | Path) -> RegistryEntry | None:
    target = str(Path(folder).resolve())
    return next((e for e in read_registry(path) if e.path == target), None)
