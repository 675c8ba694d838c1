"""The original model's next-token log-probabilities on the proxy windows, in a file, read a chunk at a time.

KL and the token-loyalty objectives compare every candidate with the original's full next-token
distribution at each proxy position. Held in memory those are ``windows x tokens x vocab`` float32: 0.2 GB for
the default proxy (4 x 256 positions) of the embedded SmolLM2's 49,152-token vocabulary, 0.5 GB for a Llama 3
vocabulary, held for the whole search. :class:`LogProbFile` writes them once to an unnamed temporary file (deleted when the
object is closed or collected) and reads back one :data:`~squeezeray.objectives._logits.CHUNK`-position
span at a time, which the operating system serves from its page cache: the resident set holds one chunk.

This module owns the file's layout: ``(window, position, vocab)`` float32, C order.
"""

from __future__ import annotations

import tempfile
import threading

import torch
import torch.nn.functional as F

from squeezeray._errors import SqueezerayError
from squeezeray.objectives._logits import LogitChunks

_FLOAT = 4  # bytes per float32


class LogProbFile:
    """``(windows, tokens, vocab)`` float32 log-probabilities in a temporary file.

    Args:
        shape: ``(windows, tokens, vocab)``.
        folder: Where the unnamed file lives (None: the system's temporary directory).
    """

    def __init__(self, shape: tuple[int, int, int], *, folder: str | None = None) -> None:
        if len(shape) != 3 or any(int(d) < 1 for d in shape):
            raise SqueezerayError(f"log-prob file shape={shape!r}: needs (windows, tokens, vocab), each at least 1")
        self.shape = tuple(int(d) for d in shape)
        self._file = tempfile.TemporaryFile(prefix="squeezeray-logprobs-", dir=folder)
        self._file.truncate(self.shape[0] * self.shape[1] * self.shape[2] * _FLOAT)
        self._lock = threading.Lock()  # seek + read/write pairs of concurrent readers do not interleave

    def _offset(self, window: int, at: slice) -> tuple[int, int]:
        n, t, _ = self.shape
        start, stop = at.start or 0, t if at.stop is None else at.stop
        if not (0 <= window < n and 0 <= start < stop <= t):
            raise SqueezerayError(f"log-prob file of shape {self.shape}: window {window}, positions "
                                  f"{start}:{stop} out of range")
        return (window * t + start) * self.shape[2] * _FLOAT, stop - start

    def write(self, window: int, at: slice, logp: torch.Tensor) -> None:
        """Store ``logp`` (positions, vocab) float32 at ``window``'s positions ``at``."""
        offset, count = self._offset(window, at)
        if tuple(logp.shape) != (count, self.shape[2]) or logp.dtype != torch.float32:
            raise SqueezerayError(f"log-prob file: expected ({count}, {self.shape[2]}) float32, got "
                                  f"{tuple(logp.shape)} {logp.dtype}")
        data = logp.detach().cpu().contiguous().numpy()
        with self._lock:
            self._file.seek(offset)
            self._file.write(memoryview(data).cast("B"))

    def read(self, window: int, at: slice) -> torch.Tensor:
        """``window``'s log-probs at positions ``at``: (positions, vocab) float32, a fresh tensor."""
        offset, count = self._offset(window, at)
        out = torch.empty(count, self.shape[2], dtype=torch.float32, device="cpu")  # on the host, read from the file
        view = memoryview(out.numpy()).cast("B")
        with self._lock:
            self._file.seek(offset)
            got = self._file.readinto(view)
        if got != len(view):
            raise SqueezerayError(f"log-prob file: read {got} of {len(view)} bytes at window {window}")
        return out

    def close(self) -> None:
        """Delete the file now (it is deleted anyway when the object is collected)."""
        self._file.close()

    def __getstate__(self) -> dict[str, object]:
        raise SqueezerayError("a LogProbFile is local to its process (an unnamed temporary file): compute the "
                              "reference where it is used")


@torch.no_grad()
def reference_log_probs(stream: LogitChunks, windows: torch.Tensor, *, batch_size: int | None = None,
                        folder: str | None = None) -> LogProbFile:
    """The next-token log-probabilities of ``stream``'s model on ``windows`` (N, T), written chunk by chunk.

    Args:
        stream: The model's logits, a few positions at a time.
        windows: (N, T) token ids.
        batch_size: Windows per decoder pass (None: all of them in one).
        folder: Where the file lives (None: the system's temporary directory).
    """
    batch_size = batch_size or windows.shape[0]
    out: LogProbFile | None = None
    for start in range(0, windows.shape[0], batch_size):
        for row, at, logits in stream(windows[start : start + batch_size]):
            if out is None:
                out = LogProbFile((windows.shape[0], windows.shape[1], logits.shape[-1]), folder=folder)
            out.write(start + row, at, F.log_softmax(logits, dim=-1))
    if out is None:
        raise SqueezerayError("reference log-probs of no windows: the proxy is empty")
    return out
