"""Reply text piece by piece while a batch decodes: UTF-8-safe pieces per row, and the streamer that
feeds them from ``fast_generate``. Kept apart from the API so every streamed path (the server's
batched streams, ``QwenAudio.chat(stream=True)``) shares one decoding loop and one piece logic."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import torch
from transformers.generation.streamers import BaseStreamer


class ReplyPieces:
    """A reply's text piece by piece as its tokens arrive. A token may end inside a multi-byte
    UTF-8 character, so text is held back while it ends in a replacement character; the held
    tokens are decoded again with the next one. The pieces join to ``decode(all tokens)``:
    decoding is per byte run, and each piece starts on a character boundary."""

    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self._decode = decode
        self._held: list[int] = []

    def add(self, token: int) -> str:
        self._held.append(token)
        text = self._decode(self._held)
        if text.endswith("\ufffd"):
            return ""
        self._held = []
        return text

    def flush(self) -> str:
        """What is still held (an unfinished character stays a replacement character, as in the full reply)."""
        text = self._decode(self._held) if self._held else ""
        self._held = []
        return text


class BatchReplyStreamer(BaseStreamer):
    """``fast_generate``'s streamer for a batch of replies: each row's text goes to
    ``on_piece(row, text)`` as it grows; a row ends at its first stop token (later steps fill it
    with padding). An exception from ``on_piece`` propagates and stops the generation."""

    def __init__(self, rows: int, stops: Collection[int], decode: Callable[[Sequence[int]], str],
                 on_piece: Callable[[int, str], None]) -> None:
        self.on_piece, self.stops = on_piece, set(stops)
        self.rows = [ReplyPieces(decode) for _ in range(rows)]
        self.done = [False] * rows
        self.seen_prompt = False

    def put(self, value: torch.Tensor) -> None:
        if not self.seen_prompt:  # the prompts come first
            self.seen_prompt = True
            return
        for row, token in enumerate(value.reshape(-1).tolist()):
            if self.done[row]:
                continue
            self.done[row] = token in self.stops
            piece = self.rows[row].flush() if self.done[row] else self.rows[row].add(token)
            if piece:
                self.on_piece(row, piece)

    def end(self) -> None:
        for row, pieces in enumerate(self.rows):
            if piece := pieces.flush():
                self.on_piece(row, piece)
