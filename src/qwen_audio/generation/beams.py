"""Beam search over a ``KVBackend``: each prompt's ``beams`` best continuations, as finished texts
with their log-probabilities (an N-best list for rescoring), on the same fast backends as the
decoding loop.

Why our own and not transformers' ``generate(num_beams=…)``: that runs the decoder's modules with
its per-step overhead, 5–6× the time of the greedy loop on the default model; here a step is one
batched call of the folded decoder over all beams (the cache rows follow their beams,
``KVBackend.select``), and the N-best come back with their exact sums of log-probabilities.
Hypotheses are ranked as transformers ranks them (length penalty 1: the sum over the tokens said,
the stop token counted), and a prompt is done once it has ``beams`` finished ones that no running
beam can still beat at its current length, transformers' default stopping rule.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

import torch
from torch import Tensor

from qwen_audio.generation.kv import KVBackend
from qwen_audio.generation.loop import LoopGuard, prefill
from qwen_audio.llm import position_ids_from_attention_mask


@dataclass(frozen=True)
class Hypothesis:
    """One continuation: its new tokens (the stop token not included), the sum of their
    log-probabilities (the stop's included), and the stop token it ended on (None: cut by the
    length limit or the loop guard)."""

    ids: tuple[int, ...]
    log_prob: float
    stop: int | None = None

    @property
    def finished(self) -> bool:
        return self.stop is not None

    @property
    def score(self) -> float:
        """The rank of a hypothesis: its log-probability per token said (the stop counted)."""
        return self.log_prob / max(len(self.ids) + self.finished, 1)


def beam_search(
    backend: KVBackend, embed_tokens: Callable[[Tensor], Tensor], prompt_embeds: Tensor, attention_mask: Tensor, *,
    beams: int, max_new_tokens: int, stops: Collection[int], loop_guard: LoopGuard | None = None,
) -> list[list[Hypothesis]]:
    """The ``beams`` best continuations of each left-padded prompt [batch, length, hidden], best
    first. ``backend`` is opened for the prompts' rows with room for ``length + max_new_tokens``
    columns; it follows the beams from the first step on. A beam whose tokens fall into a loop
    (``loop_guard``) ends there, unfinished."""
    if beams < 1:
        raise ValueError(f"beams must be ≥ 1, got {beams}")
    stops = set(stops)
    batch = prompt_embeds.shape[0]
    done: list[list[Hypothesis]] = [[] for _ in range(batch)]
    closed = [False] * batch
    with torch.inference_mode():
        log_probs = prefill(backend, prompt_embeds, attention_mask).float().log_softmax(-1)
        positions = position_ids_from_attention_mask(attention_mask, 1)  # [batch, 1]: each prompt's last
        live: list[list[tuple[tuple[int, ...], float]]] = [[((), 0.0)] for _ in range(batch)]
        for step in range(max_new_tokens):
            width = len(live[0])
            sums = torch.tensor([[total for _, total in group] for group in live], dtype=torch.float32)
            totals = (sums.view(-1, 1) + log_probs).view(batch, -1)  # [batch, width × vocab]
            vocab = log_probs.shape[-1]
            best, where = totals.topk(min(2 * beams + len(stops), totals.shape[-1]), dim=-1)
            rows: list[int] = []
            tokens: list[int] = []
            following: list[list[tuple[tuple[int, ...], float]]] = []
            for group in range(batch):
                kept: list[tuple[tuple[int, ...], float]] = []
                for total, index in zip(best[group].tolist(), where[group].tolist()):
                    if closed[group] or total == float("-inf"):
                        break
                    beam, token = divmod(index, vocab)
                    said = live[group][beam][0]
                    if token in stops:
                        done[group].append(Hypothesis(said, total, token))
                    elif loop_guard is not None and loop_guard.loop(said + (token,)) is not None:
                        done[group].append(Hypothesis(said + (token,), total))
                    elif len(kept) < beams:
                        kept.append((said + (token,), total))
                        rows.append(group * width + beam)
                        tokens.append(token)
                    if len(kept) == beams:
                        break
                while len(kept) < beams:  # too few survivors (a closed prompt, or stops everywhere): hold a dead beam
                    kept.append(((), float("-inf")))
                    rows.append(group * width)
                    tokens.append(0)
                following.append(kept)
                finished = sorted((h for h in done[group] if h.finished), key=lambda h: h.score, reverse=True)
                if len(finished) >= beams:
                    running = max(total for _, total in kept) / (step + 2)  # its best possible rank from here
                    closed[group] = closed[group] or running <= finished[beams - 1].score
            live = following
            if step == max_new_tokens - 1 or all(closed):
                break
            backend.select(torch.tensor(rows, device=prompt_embeds.device))
            positions = positions[rows] + 1  # the rows' last positions, one on
            new = torch.tensor(tokens, device=prompt_embeds.device)[:, None]
            log_probs = backend.step(embed_tokens(new), positions).float().log_softmax(-1)
    results = []
    for group in range(batch):
        hypotheses = done[group] + ([] if closed[group] else [Hypothesis(said, total)
                                                              for said, total in live[group] if total > float("-inf")])
        results.append(sorted(hypotheses, key=lambda h: h.score, reverse=True)[:beams])
    return results


__all__ = ["Hypothesis", "beam_search"]
