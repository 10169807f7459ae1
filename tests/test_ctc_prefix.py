"""CTC prefix scores (generation.ctc_prefix) against PyTorch's CTC loss and against brute force."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from qwen_audio.generation.ctc_prefix import CtcPrefixScorer


def random_log_probs(frames: int, classes: int, seed: int) -> torch.Tensor:
    return torch.randn(frames, classes, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).log_softmax(-1)


def said(scorer: CtcPrefixScorer, tokens: list[int]):
    prefix = scorer.empty()
    for token in tokens:
        (prefix,) = scorer.extend([prefix], [token])
    return prefix


@pytest.mark.parametrize("tokens", [[2], [0, 3, 1], [1, 1, 2], [3, 3, 3]])
def test_the_full_score_is_the_ctc_likelihood(tokens: list[int]) -> None:
    log_probs = random_log_probs(9, 5, seed=len(tokens))
    scorer = CtcPrefixScorer(log_probs, labels=4)
    loss = torch.nn.functional.ctc_loss(log_probs[:, None], torch.tensor([[t + 1 for t in tokens]]),
                                        torch.tensor([9]), torch.tensor([len(tokens)]), blank=0, reduction="sum")
    assert scorer.final(said(scorer, tokens)) == pytest.approx(-float(loss), abs=1e-9)


def test_the_prefix_score_sums_every_transcript_that_begins_with_it() -> None:
    frames, labels = 5, 2
    log_probs = random_log_probs(frames, labels + 1, seed=7)
    scorer = CtcPrefixScorer(log_probs, labels=labels)
    everything = {}  # each frame path's transcript, summed: P(transcript | audio)
    for path in itertools.product(range(labels + 1), repeat=frames):
        collapsed = tuple(c - 1 for c, _ in itertools.groupby(path) if c)
        everything[collapsed] = everything.get(collapsed, 0.0) + float(log_probs[range(frames), list(path)].sum().exp())
    for prefix in [(0,), (1,), (0, 1), (1, 1), (0, 0, 1)]:
        brute = sum(p for text, p in everything.items() if text[:len(prefix)] == prefix)
        assert said(scorer, list(prefix)).score == pytest.approx(math.log(brute), abs=1e-9)
    assert sum(everything.values()) == pytest.approx(1.0)


def test_extending_many_prefixes_at_once_equals_one_by_one() -> None:
    scorer = CtcPrefixScorer(random_log_probs(12, 6, seed=3), labels=5)
    parents = [scorer.empty(), said(scorer, [2]), said(scorer, [2, 4])]
    tokens = [4, 4, 1]
    together = scorer.extend(parents, tokens)
    for parent, token, joint in zip(parents, tokens, together):
        (alone,) = scorer.extend([parent], [token])
        assert joint.score == pytest.approx(alone.score) and torch.allclose(joint.blank, alone.blank)


def test_tags_are_not_ctc_classes_and_scores_stay_finite_on_impossible_prefixes() -> None:
    log_probs = random_log_probs(3, 4, seed=1)
    log_probs[:, 2] = float("-inf")  # a label the audio never says
    scorer = CtcPrefixScorer(log_probs, labels=3)
    assert scorer.said(2) and not scorer.said(3) and not scorer.said(-1)
    impossible = said(scorer, [1])
    assert impossible.score < -1e3 and torch.isfinite(torch.tensor(impossible.score))
    assert said(scorer, [0, 0, 0, 0]).score < said(scorer, [0]).score  # four labels need 7 frames: far below
