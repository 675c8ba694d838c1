"""A causal LM's logits a few positions at a time, so no (batch, tokens, vocab) tensor is ever held.

With a 49k-262k-token vocabulary the logits dominate an evaluation's memory: four 512-token windows of
SmolLM2 are 0.4 GB in float32, more than the model. :func:`logit_chunks` runs the decoder once over a batch,
then applies the output head to ``chunk`` positions of one sequence at a time (and the final logit
soft-capping where the config has one, as Gemma's forward does), yielding float32 logits of at most
``chunk x vocab``.

The split is checked, not assumed: on the first 16 positions of the first sequence the chunked logits
must match the model's own forward (up to bf16 rounding); a model whose forward does more to its logits
(a scale, another head) fails the check and is run whole, and :attr:`LogitChunks.path` says which ran.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from squeezeray._device import model_device

CHUNK = 128  # positions per head application: 128 x 49,152 float32 logits = 25 MB
_CHECK_TOKENS = 16
WHOLE = "whole forward"


def _parts(model: nn.Module) -> tuple[nn.Module, nn.Module] | str:
    """(decoder, head) of a Hugging Face causal LM, or why it has none."""
    get_decoder = getattr(model, "get_decoder", None)
    get_head = getattr(model, "get_output_embeddings", None)
    if get_decoder is None or get_head is None:
        return "the model has no get_decoder/get_output_embeddings"
    decoder, head = get_decoder(), get_head()
    if decoder is None or head is None or decoder is model:
        return "the model exposes no separate decoder and output head"
    return decoder, head


class LogitChunks:
    """How one model's logits are computed: in chunks when its forward is decoder + head, else whole.

    The decoder and head are looked up on every call, so a stream checked on a model keeps serving it while
    layers are swapped into it in place (the sensitivity probe's candidates, replayed blocks included).
    """

    def __init__(self, model: nn.Module, probe_ids: torch.Tensor, *, chunk: int = CHUNK) -> None:
        self.model = model
        self.chunk = chunk
        cfg = getattr(model, "config", None)
        self.softcap = getattr(cfg, "final_logit_softcapping", None) or getattr(
            getattr(cfg, "text_config", None), "final_logit_softcapping", None)
        self.split = False
        why = _parts(model)
        if isinstance(why, str):
            self.path = f"{WHOLE} ({why})"
            return
        ids = probe_ids[:1, :_CHECK_TOKENS].to(model_device(model))
        with torch.no_grad():
            full = model(input_ids=ids, use_cache=False).logits[0].float()
            mine = torch.cat([c for _, _, c in self._chunked(ids)])
        if mine.shape != full.shape or not torch.allclose(mine, full, rtol=2e-2, atol=2e-2):
            self.path = f"{WHOLE} (its forward's logits are not decoder + head on {_CHECK_TOKENS} test tokens)"
            return
        self.split = True
        self.path = f"decoder once, head on {chunk} positions at a time"

    def _spans(self, ids: torch.Tensor) -> Iterator[tuple[int, slice]]:
        for row in range(ids.shape[0]):
            for start in range(0, ids.shape[1], self.chunk):
                yield row, slice(start, min(start + self.chunk, ids.shape[1]))

    def _chunked(self, ids: torch.Tensor) -> Iterator[tuple[int, slice, torch.Tensor]]:
        parts = _parts(self.model)  # the modules in place now
        assert not isinstance(parts, str)
        decoder, head = parts
        ids = ids.to(model_device(self.model))  # token ids are drawn on the host
        hidden = decoder(input_ids=ids, use_cache=False).last_hidden_state  # (B, T, H)
        for row, at in self._spans(ids):
            logits = head(hidden[row, at]).float()  # (n, V)
            if self.softcap:
                logits = torch.tanh(logits / self.softcap) * self.softcap
            yield row, at, logits

    @torch.no_grad()
    def __call__(self, ids: torch.Tensor) -> Iterator[tuple[int, slice, torch.Tensor]]:
        """(row, positions, float32 logits (n, V)) for every sequence of ``ids`` (B, T), in order, on the
        model's device (``ids`` may be on the host)."""
        if self.split:
            yield from self._chunked(ids)
            return
        logits = self.model(input_ids=ids.to(model_device(self.model)), use_cache=False).logits  # (B, T, V)
        for row, at in self._spans(ids):
            yield row, at, logits[row, at].float()
