"""What text calibration, the search proxy and held-out evaluation use, and how much of it."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from squeezeray._errors import DataError
from squeezeray._schema import check_int
from squeezeray.data._sources import BUILTIN
from squeezeray.data._sources import DataSource

SourcesLike = DataSource | str | Mapping[str, Any] | Sequence[DataSource | str | Mapping[str, Any]]
_SIZES = ("calib_seqs", "calib_len", "eval_tokens", "eval_len", "proxy_seqs", "seed")
_SOURCES = ("calib_data", "proxy_data", "eval_data")


def sources_of(value: SourcesLike, what: str) -> tuple[DataSource, ...]:
    """One source or a mixture, from strings (``file.jsonl:field=text:weight=0.7``), mappings or sources."""
    items = [value] if isinstance(value, (DataSource, str, Mapping)) else list(value)
    if not items:
        raise DataError(f"{what}: no source given")
    return tuple(DataSource.of(v) for v in items)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Sources and sizes of the data calibration, the KL proxy and held-out perplexity use.

    Attributes:
        calib_seqs, calib_len: Calibration sequences and their length in tokens.
        eval_tokens, eval_len: Held-out perplexity tokens and window length.
        proxy_seqs: Sequences (of ``calib_len`` tokens) the KL proxy scores on.
        seed: Order in which documents are drawn (the split itself is by content hash).
        calib_data: Calibration source, or a weighted mixture (default the packaged BoolQ passages).
        proxy_data: Source or mixture of the KL proxy; None: drawn like the calibration (the same
            documents, so the proxy is the first ``proxy_seqs`` calibration sequences).
        eval_data: The one held-out source (perplexity).

    Calibration and the proxy never share a document with the held-out text: the packaged
    passages are split one in five by content hash; a user source given for both roles is split
    the same way; otherwise calibration documents that also occur in the held-out text are dropped
    (and :func:`~squeezeray.data.prepare_data` says how many).
    """

    calib_seqs: int = 32
    calib_len: int = 256
    eval_tokens: int = 4096
    eval_len: int = 512
    proxy_seqs: int = 4
    seed: int = 0
    calib_data: tuple[DataSource, ...] = (DataSource(BUILTIN),)
    proxy_data: tuple[DataSource, ...] | None = None
    eval_data: tuple[DataSource, ...] = (DataSource(BUILTIN),)

    VERSION = 1

    def __post_init__(self) -> None:
        for name in _SIZES:
            check_int(getattr(self, name), field=name, minimum=0 if name == "seed" else 1, error=DataError)
        if self.proxy_data is None and self.proxy_seqs > self.calib_seqs:
            raise DataError(f"proxy_seqs={self.proxy_seqs}: cannot exceed calib_seqs={self.calib_seqs} "
                            "(the proxy is drawn from the calibration sequences unless proxy_data is given)")
        object.__setattr__(self, "calib_data", sources_of(self.calib_data, "calib_data"))
        if self.proxy_data is not None:
            object.__setattr__(self, "proxy_data", sources_of(self.proxy_data, "proxy_data"))
        evals = sources_of(self.eval_data, "eval_data")
        if len(evals) != 1 or evals[0].weight != 1.0:
            raise DataError(f"eval_data={[s.label for s in evals]}: held-out evaluation takes one source, unweighted")
        object.__setattr__(self, "eval_data", evals)

    @property
    def default_sources(self) -> bool:
        """True when every role uses the packaged passages (today's data)."""
        return (self.proxy_data is None and self.calib_data == (DataSource(BUILTIN),)
                and self.eval_data == (DataSource(BUILTIN),))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": self.VERSION, **{k: getattr(self, k) for k in _SIZES}}
        for key in _SOURCES:
            value = getattr(self, key)
            out[key] = None if value is None else [s.to_dict() for s in value]
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DataConfig:
        """From :meth:`to_dict` or a study config's ``data`` section (sources as strings or mappings)."""
        unknown = sorted(set(d) - {"version", *_SIZES, *_SOURCES})
        if unknown:
            raise DataError(f"data: unknown keys {unknown}; known: {', '.join((*_SIZES, *_SOURCES))}")
        version = d.get("version", cls.VERSION)
        if version != cls.VERSION:
            raise DataError(f"data version={version!r}: this squeezeray reads version {cls.VERSION}")
        return cls(**{k: v for k, v in d.items() if k != "version" and v is not None})
