"""CTC prefix scores: log P_ctc(the transcript begins with this prefix | audio), for steering a beam
search with a CTC head (Watanabe et al. 2017, "Hybrid CTC/Attention Architecture for End-to-End
Speech Recognition", §3.2; ESPnet's joint decoding).

Why: the decoder is a language model reading the audio; where the audio is unclear it continues with
a fluent phrase it knows ("the fool you fell to get" for "the things you failed to get"), and a beam
search over its scores alone keeps only such phrases, so rescoring the finished beams with the CTC
(``QwenAudio._ctc_rescored``) can only choose among them. Scoring every candidate token by the CTC as
the beams grow keeps the hypotheses whose sounds are in the audio.

Why our own: ESPnet is not a dependency (its ``CTCPrefixScore`` comes with its whole toolkit) and
torchaudio has no build for this torch (2.13). The recursions are written over all frames at once:
each is a linear recurrence in probability space, so in log space it is one ``logcumsumexp``, and a
candidate costs a few tensor operations instead of a loop over frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

FLOOR = -1e4
"""Log-probabilities are clamped to this: a -inf would turn the cumulative sums' differences into NaN."""
LOGZERO = -1e10
"""The score of a prefix the frames cannot say (more labels than frames allow): finite, as ESPnet's
``logzero``, so that such beams stay ranked by the decoder instead of all tying at -inf."""


@dataclass(frozen=True, eq=False)
class CtcPrefix:
    """One prefix's forward variables over the audio's frames: ``nonblank[t]`` / ``blank[t]``, the
    log-probability that frames 0..t say the prefix, ending in its last label / in a blank.
    ``last``: its last CTC class (-1: the empty prefix). ``score``: log P(prefix, then anything)."""

    nonblank: Tensor  # [frames] float64
    blank: Tensor  # [frames] float64
    last: int
    score: float


class CtcPrefixScorer:
    """Prefix scores over one audio's CTC log-probabilities ``log_probs`` [frames, classes] (class 0 the
    blank, class ``token + 1`` token ``token``, as ``train.ctc.EmbeddingCtc`` scores them); tokens at or
    past ``labels`` are not CTC classes (tags, time tokens) and leave a prefix's score as it is."""

    def __init__(self, log_probs: Tensor, labels: int) -> None:
        # Kept as given (float32 from the aligner): the recursions need float64, but only over the few
        # columns a step scores. A float64 copy of every class was 2x the memory of the frames
        # themselves: 16 pieces of 10 s held 1.6 GB for it, the peak of a long transcription.
        self.log_probs = log_probs.detach()
        self.labels = labels
        self._blank_sums = torch.cumsum(self._columns(torch.zeros(1, dtype=torch.long))[0], 0)

    def _columns(self, classes: Tensor) -> Tensor:
        """The frames' log-probabilities of ``classes``, [n, frames] float64, clamped at ``FLOOR``."""
        return self.log_probs[:, classes].T.to(torch.float64).clamp_min(FLOOR)

    def empty(self) -> CtcPrefix:
        """The empty prefix: every frame a blank so far."""
        frames = self.log_probs.shape[0]
        return CtcPrefix(torch.full((frames,), float("-inf"), dtype=torch.float64), self._blank_sums, -1, 0.0)

    def said(self, token: int) -> bool:
        """Whether ``token`` is a CTC class (a plain-text token) rather than a tag."""
        return 0 <= token < self.labels

    def extend(self, prefixes: Sequence[CtcPrefix], tokens: Sequence[int]) -> list[CtcPrefix]:
        """Each ``prefixes[i]`` followed by ``tokens[i]`` (all CTC classes: :meth:`said`), at once."""
        if not prefixes:
            return []
        classes = torch.tensor([t + 1 for t in tokens])
        nonblank = torch.stack([p.nonblank for p in prefixes])  # [n, frames]
        blank = torch.stack([p.blank for p in prefixes])
        repeat = torch.tensor([p.last for p in prefixes]) == classes
        said = self._columns(classes)  # [n, frames]: each candidate's own label per frame
        # phi[t]: the prefix said by frame t, and ready for the new label at t + 1 (a repeat needs a blank between)
        phi = torch.where(repeat[:, None], blank, torch.logaddexp(blank, nonblank))
        starts = torch.tensor([0.0 if p.last == -1 else float("-inf") for p in prefixes], dtype=torch.float64)
        label_sums = torch.cumsum(said, 1)
        # nonblank'[t] = said[t] + logaddexp(nonblank'[t-1], phi[t-1]); nonblank'[0] = said[0] if the prefix is empty
        steps = torch.cat([starts[:, None], phi[:, :-1] - label_sums[:, :-1]], 1)
        new_nonblank = label_sums + torch.logcumsumexp(steps, 1)
        # blank'[t] = blank_t + logaddexp(blank'[t-1], nonblank'[t-1]); blank'[0] = -inf
        floor = torch.full((len(prefixes), 1), float("-inf"), dtype=torch.float64)
        steps = torch.cat([floor, new_nonblank[:, :-1] - self._blank_sums[None, :-1]], 1)
        new_blank = self._blank_sums[None] + torch.logcumsumexp(steps, 1)
        # the new label's first frame anywhere: frame 0 (an empty prefix) or right after phi
        firsts = torch.cat([new_nonblank[:, :1], phi[:, :-1] + said[:, 1:]], 1)
        scores = torch.logsumexp(firsts, 1).clamp_min(LOGZERO).tolist()
        return [CtcPrefix(new_nonblank[i], new_blank[i], int(classes[i]), scores[i]) for i in range(len(prefixes))]

    def final(self, prefix: CtcPrefix) -> float:
        """log P_ctc(the transcript is exactly ``prefix``): all frames spent, ending in its last label or a blank."""
        return max(float(torch.logaddexp(prefix.nonblank[-1], prefix.blank[-1])), LOGZERO)


__all__ = ["LOGZERO", "CtcPrefix", "CtcPrefixScorer"]
