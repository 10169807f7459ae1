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

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from qwen_audio.generation.ctc_prefix import CtcPrefix, CtcPrefixScorer
from qwen_audio.generation.kv import KVBackend
from qwen_audio.generation.loop import LoopGuard, prefill
from qwen_audio.llm import position_ids_from_attention_mask


@dataclass(frozen=True)
class Hypothesis:
    """One continuation: its new tokens (the stop token not included), the sum of their
    log-probabilities (the stop's included), and the stop token it ended on (None: cut by the
    length limit or the loop guard). A search steered by a CTC (``ctc`` of :func:`beam_search`) also
    records the CTC's log-probability of the tokens (of the whole transcript once finished, of the
    transcript beginning with them else) and the CTC's share of the joint score it ranked by."""

    ids: tuple[int, ...]
    log_prob: float
    stop: int | None = None
    ctc_log_prob: float | None = None
    ctc_weight: float = 0.0

    @property
    def finished(self) -> bool:
        return self.stop is not None

    @property
    def joint(self) -> float:
        """(1 - w) · log P_decoder + w · log P_ctc; the decoder's alone without a CTC."""
        if self.ctc_log_prob is None:
            return self.log_prob
        return (1 - self.ctc_weight) * self.log_prob + self.ctc_weight * self.ctc_log_prob

    @property
    def score(self) -> float:
        """The rank of a hypothesis: its joint log-probability per token said (the stop counted)."""
        return self.joint / max(len(self.ids) + self.finished, 1)


@dataclass(frozen=True)
class _Beam:
    """A running beam: the hypothesis so far and (in a CTC-steered search) its CTC prefix."""

    hypothesis: Hypothesis
    prefix: CtcPrefix | None = None


def _candidates(group: int, live: list[_Beam], log_probs: Tensor, width: int, take: int, stops: set[int],
                scorer: CtcPrefixScorer | None, weight: float) -> list[tuple[float, Hypothesis, int, CtcPrefix | None]]:
    """One prompt's next hypotheses, best first: the rank the search keeps them by (the joint
    log-probability), the hypothesis, the beam it continues and its CTC prefix. Without a scorer the
    ``take`` best of all beams' tokens, with one the ``take`` best tokens of each beam by the decoder."""
    rows = log_probs[group * width:(group + 1) * width]
    sums = torch.tensor([beam.hypothesis.log_prob for beam in live], dtype=torch.float32)
    if scorer is None:  # one ranking over all beams' tokens at once: the decoder's sums
        best, where = (sums[:, None] + rows).view(-1).topk(min(take, rows.numel()))
        found = []
        for total, index in zip(best.tolist(), where.tolist()):
            beam, token = divmod(index, rows.shape[-1])
            said = live[beam].hypothesis.ids
            ids = said + (token,) if token not in stops else said
            found.append((total, Hypothesis(ids, total, token if token in stops else None), beam, None))
        return found
    best, where = (sums[:, None] + rows).topk(min(take, rows.shape[-1]), dim=-1)
    ending = sorted(stops)  # every beam may end: whether the audio is all said is the CTC's to judge
    picks = [(beam, token, total) for beam in range(len(live)) if live[beam].hypothesis.log_prob > float("-inf")
             for total, token in zip(best[beam].tolist() + (sums[beam] + rows[beam, ending]).tolist(),
                                     where[beam].tolist() + ending)]
    picks = list({(beam, token): (beam, token, total) for beam, token, total in picks}.values())
    spoken = [(beam, token) for beam, token, _ in picks if token not in stops and scorer.said(token)]
    extended = dict(zip(spoken, scorer.extend([live[b].prefix for b, _ in spoken], [t for _, t in spoken])))  # type: ignore[misc]
    found = []
    for beam, token, total in picks:
        parent, said = live[beam].prefix, live[beam].hypothesis.ids
        assert parent is not None
        if token in stops:
            hypothesis = Hypothesis(said, total, token, scorer.final(parent), weight)
            prefix = None
        else:
            prefix = extended.get((beam, token), parent)  # a tag leaves the CTC where it was
            hypothesis = Hypothesis(said + (token,), total, None, prefix.score, weight)
        found.append((hypothesis.joint, hypothesis, beam, prefix))
    return sorted(found, key=lambda item: item[0], reverse=True)


def beam_search(
    backend: KVBackend, embed_tokens: Callable[[Tensor], Tensor], prompt_embeds: Tensor, attention_mask: Tensor, *,
    beams: int, max_new_tokens: int, stops: Collection[int], loop_guard: LoopGuard | None = None,
    ctc: Sequence[CtcPrefixScorer] | None = None, ctc_weight: float = 0.3,
) -> list[list[Hypothesis]]:
    """The ``beams`` best continuations of each left-padded prompt [batch, length, hidden], best
    first. ``backend`` is opened for the prompts' rows with room for ``length + max_new_tokens``
    columns; it follows the beams from the first step on. A beam whose tokens fall into a loop
    (``loop_guard``) ends there, unfinished. With ``ctc`` (one scorer per prompt), beams are ranked by
    (1 - ``ctc_weight``) · log P_decoder + ``ctc_weight`` · the CTC prefix score, over each beam's
    ``2 · beams + len(stops)`` best tokens by the decoder and its stop tokens (ESPnet's joint decoding)."""
    if beams < 1:
        raise ValueError(f"beams must be ≥ 1, got {beams}")
    if ctc is not None and len(ctc) != prompt_embeds.shape[0]:
        raise ValueError(f"{len(ctc)} CTC scorers for {prompt_embeds.shape[0]} prompts")
    stops = set(stops)
    take = 2 * beams + len(stops)
    batch = prompt_embeds.shape[0]
    done: list[list[Hypothesis]] = [[] for _ in range(batch)]
    closed = [False] * batch
    with torch.inference_mode():
        log_probs = prefill(backend, prompt_embeds, attention_mask).float().log_softmax(-1)
        positions = position_ids_from_attention_mask(attention_mask, 1)  # [batch, 1]: each prompt's last
        live = [[_Beam(Hypothesis((), 0.0), None) if ctc is None else
                 _Beam(Hypothesis((), 0.0, None, 0.0, ctc_weight), ctc[group].empty())] for group in range(batch)]
        for step in range(max_new_tokens):
            width = len(live[0])
            rows: list[int] = []
            tokens: list[int] = []
            following: list[list[_Beam]] = []
            for group in range(batch):
                kept: list[_Beam] = []
                found = [] if closed[group] else _candidates(group, live[group], log_probs, width, take, stops,
                                                            None if ctc is None else ctc[group], ctc_weight)
                for rank, hypothesis, parent, prefix in found:
                    if rank == float("-inf"):
                        break
                    if hypothesis.finished:
                        done[group].append(hypothesis)
                    elif loop_guard is not None and loop_guard.loop(hypothesis.ids) is not None:
                        done[group].append(hypothesis)
                    elif len(kept) < beams:
                        kept.append(_Beam(hypothesis, prefix))
                        rows.append(group * width + parent)
                        tokens.append(hypothesis.ids[-1])
                    if len(kept) == beams:
                        break
                while len(kept) < beams:  # too few survivors (a closed prompt, or stops everywhere): hold a dead beam
                    kept.append(_Beam(Hypothesis((), float("-inf"))))
                    rows.append(group * width)
                    tokens.append(0)
                following.append(kept)
                finished = sorted((h for h in done[group] if h.finished), key=lambda h: h.score, reverse=True)
                if len(finished) >= beams:
                    running = max(beam.hypothesis.joint for beam in kept) / (step + 2)  # its best possible rank from here
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
        hypotheses = done[group] + ([] if closed[group] else [
            beam.hypothesis for beam in live[group] if beam.hypothesis.log_prob > float("-inf")])
        results.append(sorted(hypotheses, key=lambda h: h.score, reverse=True)[:beams])
    return results


__all__ = ["Hypothesis", "beam_search"]
