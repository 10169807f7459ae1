"""The one decoding loop: prefill the prompts, then one step per new token, greedy or sampled, each
row ending at its first stop token; a streamer sees the prompts, then each step's tokens.

Every decode of this package that is not a beam search runs here, over a ``KVBackend``:
``fast_generate`` and ``fast_generate_steps`` of ``runtime.AudioTextDecoding`` (both model classes; through them the API's tasks,
chat, streamed chat and the server) and its ``next_token_logits`` (the prefill alone: language
detection). Beam search is ``beams.py``'s; only beam sampling stays on transformers' ``generate``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Generator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers.generation.streamers import BaseStreamer

from qwen_audio.generation.kv import KVBackend
from qwen_audio.generation.timed import TimedText, restrict_rows
from qwen_audio.llm import position_ids_from_attention_mask


@dataclass(frozen=True)
class Sampling:
    """How a next token is chosen: the argmax (``do_sample=False``), or a draw after temperature,
    top-k (0: off) and nucleus top-p (1.0: off) filtering, in transformers' order."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def choose(self, logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One token per row of ``logits`` [batch, vocab]."""
        if not self.do_sample:
            return logits.argmax(-1)
        logits = logits.float() / max(self.temperature, 1e-5)
        if self.top_k > 0:
            kth = logits.topk(min(self.top_k, logits.shape[-1])).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.top_p < 1.0:
            ordered, order = logits.sort(dim=-1)
            drop = ordered.softmax(-1).cumsum(-1) <= 1 - self.top_p
            drop[:, -1] = False
            logits = logits.scatter(1, order, ordered.masked_fill(drop, float("-inf")))
        return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


@dataclass(frozen=True)
class LoopGuard:
    """Ends a row whose new tokens have fallen into a loop: a block of 1 … ``max_block`` tokens said
    ``min_repeats`` times in a row at the tail, ``min_span`` tokens at least in all.

    Why: a greedy decoder that mis-hears a word often repeats a phrase until ``max_new_tokens``
    ("e la sedia è blu e la sedia è blu …"): one slip becomes a WER of several hundred percent and
    the user waits for every step. Whisper re-decodes such outputs at a higher temperature; stopping
    the row costs nothing and keeps the text said before the loop. Speech repeats words ("no no
    no"), hence the span: 12 tokens three times over is a loop, not a speaker.
    """

    min_repeats: int = 3
    min_span: int = 12
    max_block: int = 32

    def loop(self, ids: Sequence[int]) -> tuple[int, int] | None:
        """(block length, repeats) of the loop that ``ids`` end in, the shortest block; None: no loop."""
        ids = list(ids)
        for block in range(1, self.max_block + 1):
            repeats = max(self.min_repeats, -(-self.min_span // block))
            if repeats * block > len(ids):
                break
            tail = ids[-block:]
            if all(ids[len(ids) - k * block: len(ids) - (k - 1) * block] == tail for k in range(2, repeats + 1)):
                while (repeats + 1) * block <= len(ids) and ids[len(ids) - (repeats + 1) * block: len(ids) - repeats * block] == tail:
                    repeats += 1
                return block, repeats
        return None

    def collapse(self, ids: Sequence[int]) -> list[int]:
        """``ids`` with a tail loop said once: what was heard, without the repeats."""
        found = self.loop(ids)
        return list(ids) if found is None else list(ids[: len(ids) - (found[1] - 1) * found[0]])

    def end(self, ids: Sequence[int], stops: Collection[int] = (), checked: int = 0) -> int | None:
        """How many of ``ids`` a guarded :func:`decode_steps` keeps: the shortest prefix longer than ``checked``
        (tokens already seen) and before the first stop that ends in a loop; None: the guard never fires.

        For a decoder that has no guard of its own (vLLM), to end its rows where ours end."""
        said = before_stop(ids, stops)
        return next((end for end in range(max(checked, 0) + 1, len(said) + 1) if self.loop(said[:end]) is not None), None)

    def read(self, ids: Sequence[int], stops: Collection[int], *, collapse: bool = False) -> tuple[list[int], bool]:
        """A decoded row → (its tokens before the first stop, whether the guard ended it).

        A row the guard ended is padded while the others go on, and the pad may be a stop token: it
        ended in a loop, not at a stop. ``collapse`` says the loop once."""
        kept = before_stop(ids, stops)
        looped = self.loop(kept) is not None
        return (self.collapse(kept) if collapse and looped else kept), looped


def before_stop(ids: Sequence[int], stops: Collection[int]) -> list[int]:
    """``ids`` up to (not including) the first stop token."""
    ids = list(ids)
    return ids[: next((i for i, t in enumerate(ids) if t in stops), len(ids))]


def prefill(backend: KVBackend, embeds: Tensor, attention_mask: Tensor) -> Tensor:
    """Run left-padded prompts [batch, length, hidden] through ``backend``: logits [batch, vocab] of each
    row's next token. Positions count real tokens only, so a padded row gets its batch-of-one logits."""
    positions = position_ids_from_attention_mask(attention_mask, embeds.shape[1])
    return backend.prefill(embeds, positions, attention_mask.bool())


def decode_steps(
    backend: KVBackend, embed_tokens: Callable[[Tensor], Tensor], input_ids: Tensor, prompt_embeds: Tensor,
    attention_mask: Tensor, *, max_new_tokens: int, sampling: Sampling = Sampling(), stops: Collection[int] = (),
    pad_id: int, generator: torch.Generator | None = None, loop_guard: LoopGuard | None = None,
    constraints: Sequence[TimedText | None] | None = None,
) -> Generator[Tensor, None, Tensor]:
    """The decoding loop one step at a time: yields each step's tokens [batch] as they are chosen and
    returns the prompts + new tokens, [batch, length + new]; rows that stopped are filled with
    ``pad_id``, and decoding ends when every row has stopped. Closing it stops the decoding there.

    Why a generator: a reply streamed to the caller is decoded on the caller's own thread (PyTorch ran a
    second thread's ops at one core's speed: ``serve.batching.EngineThread``), between its reads.

    ``prompt_embeds`` are the embeddings of ``input_ids`` (audio spliced in); ``embed_tokens`` embeds
    the new ones. ``backend`` must have room for ``length + max_new_tokens`` columns. ``loop_guard``
    ends a row whose new tokens end in a loop (its tokens so far are kept; :meth:`LoopGuard.collapse`
    says them once). ``constraints[row]`` (None: free) limits what that row may say
    (:class:`~qwen_audio.generation.TimedText`); a constrained row says forced text, so the loop guard
    leaves it alone. Inference mode (no version counters or autograd metadata on the ~100 small ops of a
    step) is on inside each step, never while the caller holds a yielded step.
    """
    stops = set(stops)
    batch, _ = input_ids.shape
    pieces = [input_ids]
    with torch.inference_mode():
        logits = prefill(backend, prompt_embeds, attention_mask)
        last = position_ids_from_attention_mask(attention_mask, 1)
        next_positions = last + torch.arange(1, max_new_tokens + 1, device=last.device)
    finished = [False] * batch  # bookkeeping of a few ids in Python: each tensor op costs a cold step
    said: list[list[int]] = [[] for _ in range(batch)]
    for step in range(max_new_tokens):
        with torch.inference_mode():
            if constraints is not None:
                logits = restrict_rows(logits, said, constraints)
            tokens = sampling.choose(logits, generator)
            if any(finished):
                tokens = tokens.masked_fill(torch.tensor(finished, device=tokens.device), pad_id)
        pieces.append(tokens[:, None])
        yield tokens
        finished = [done or token in stops for done, token in zip(finished, tokens.tolist())]
        if loop_guard is not None or constraints is not None:
            for row, token in enumerate(tokens.tolist()):
                if not finished[row]:
                    said[row].append(token)
                    free = constraints is None or constraints[row] is None
                    finished[row] = loop_guard is not None and free and loop_guard.loop(said[row]) is not None
        if step == max_new_tokens - 1 or all(finished):
            break
        with torch.inference_mode():
            logits = backend.step(embed_tokens(tokens[:, None]), next_positions[:, step : step + 1])
    return torch.cat(pieces, dim=1)  # outside inference mode: callers get an ordinary tensor


def streamed(steps: Generator[Tensor, None, Tensor], input_ids: Tensor, streamer: BaseStreamer | None) -> Tensor:
    """Run ``steps`` (:func:`decode_steps`) to the end; ``streamer`` sees the prompts, then each step's
    tokens, then its end. An exception from the streamer stops decoding (``streamer.end`` is then not called)."""
    if streamer is not None:
        streamer.put(input_ids.cpu())
    while True:
        try:
            tokens = next(steps)
        except StopIteration as done:
            if streamer is not None:
                streamer.end()
            return done.value
        if streamer is not None:
            streamer.put(tokens.cpu())


__all__ = ["LoopGuard", "Sampling", "decode_steps", "prefill", "streamed"]
