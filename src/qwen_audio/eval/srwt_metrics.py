"""SRWT (speech recognition with word-level timestamps) metrics.

The decoded text alternates time tokens and text: each segment sits between two consecutive
time tokens, ``<|0.00|><|0.52|>hello<|0.88|><|0.95|> world<|1.40|>`` → ("", 0.00–0.52),
("hello", 0.52–0.88), ("", 0.88–0.95), ("world", 0.95–1.40). Segments with no text (or
``<|sil|>``) are silences. Pass the prompt's leading ``<|0.00|>`` along with the generated text,
or the first word loses its start time.

AAS, the official average shift (``eval_audio/evaluate_srwt.py``): align reference and
hypothesis segments by edit distance, keep the pairs whose text is equal, and report
Σ(|start − start'| + |end − end'|) / pairs — per word the *sum* of its two boundary errors, as
the official script computes it. Like it, silence segments take part in the alignment.
We also report the mean per boundary (AAS / 2), start and end errors apart, and boundary F1:
word boundaries (starts and ends of non-silent segments, shared boundaries counted once)
matched one-to-one within a tolerance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from qwen_audio.eval.metrics import word_error_rate
from qwen_audio.formats.srwt import official_segments
from qwen_audio.formats.timestamps import Word

SILENCE = ("", "<|sil|>")


def align_equal(ref: Sequence[str], hyp: Sequence[str]) -> list[tuple[int, int]]:
    """Index pairs (i, j) with ref[i] == hyp[j] on a minimum edit-distance alignment."""
    rows, cols = len(ref), len(hyp)
    dist = [[0] * (cols + 1) for _ in range(rows + 1)]
    for i in range(rows + 1):
        dist[i][0] = i
    for j in range(cols + 1):
        dist[0][j] = j
    for i in range(1, rows + 1):
        for j in range(1, cols + 1):
            cost = 0 if ref[i - 1] == hyp[j - 1] else 1
            dist[i][j] = min(dist[i - 1][j - 1] + cost, dist[i - 1][j] + 1, dist[i][j - 1] + 1)
    pairs = []
    i, j = rows, cols
    while i > 0 and j > 0:  # backtrace, preferring the diagonal
        cost = 0 if ref[i - 1] == hyp[j - 1] else 1
        if dist[i][j] == dist[i - 1][j - 1] + cost:
            if cost == 0:
                pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif dist[i][j] == dist[i - 1][j] + 1:
            i -= 1
        else:
            j -= 1
    return pairs[::-1]


def _boundaries(words: Sequence[Word]) -> list[float]:
    times = {round(t, 6) for w in words if w.word not in SILENCE for t in (w.start, w.end)}
    return sorted(times)


def boundary_matches(ref: Sequence[float], hyp: Sequence[float], tolerance: float) -> int:
    """Largest one-to-one matching of sorted boundary times within ``tolerance`` seconds
    (greedy two-pointer sweep, which is optimal on a line)."""
    i = j = matched = 0
    while i < len(ref) and j < len(hyp):
        if abs(ref[i] - hyp[j]) <= tolerance + 1e-9:
            matched, i, j = matched + 1, i + 1, j + 1
        elif hyp[j] < ref[i]:
            j += 1
        else:
            i += 1
    return matched


@dataclass(frozen=True)
class BoundaryF1:
    precision: float
    recall: float
    f1: float
    matched: int
    reference_boundaries: int
    hypothesis_boundaries: int
    tolerance: float


def boundary_f1(
    references: Sequence[Sequence[Word]], hypotheses: Sequence[Sequence[Word]], *,
    tolerance: float = 0.05,
) -> BoundaryF1:
    """Word-boundary precision/recall/F1 pooled over utterances."""
    matched = n_ref = n_hyp = 0
    for ref, hyp in zip(references, hypotheses):
        rb, hb = _boundaries(ref), _boundaries(hyp)
        matched += boundary_matches(rb, hb, tolerance)
        n_ref, n_hyp = n_ref + len(rb), n_hyp + len(hb)
    precision = matched / n_hyp if n_hyp else 0.0
    recall = matched / n_ref if n_ref else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return BoundaryF1(precision, recall, f1, matched, n_ref, n_hyp, tolerance)


@dataclass(frozen=True)
class SrwtScores:
    """SRWT timestamp and text scores of a corpus (not one parsed output: that is
    :class:`qwen_audio.formats.srwt.SrwtResult`)."""

    aas: float  # official average shift: mean over aligned words of |Δstart| + |Δend| (s)
    mean_boundary_error: float  # aas / 2: mean absolute error per boundary (s)
    mean_start_error: float
    mean_end_error: float
    aligned_words: int
    unparsable: int  # pairs skipped because a side had no time token
    wer: float  # on the text of the segments, special tokens removed
    boundary: BoundaryF1


def srwt_scores(
    references: Sequence[str], hypotheses: Sequence[str], *, language: str = "en",
    tolerance: float = 0.05,
) -> SrwtScores:
    """AAS, boundary errors, boundary F1 and WER of decoded SRWT outputs against references
    in the same time-token format."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    start_err = end_err = 0.0
    aligned = unparsable = 0
    parsed_refs: list[list[Word]] = []
    parsed_hyps: list[list[Word]] = []
    for ref_text, hyp_text in zip(references, hypotheses):
        ref, hyp = official_segments(ref_text), official_segments(hyp_text)
        if ref is None or hyp is None:
            unparsable += 1
            continue
        parsed_refs.append(ref)
        parsed_hyps.append(hyp)
        for i, j in align_equal([w.word for w in ref], [w.word for w in hyp]):
            start_err += abs(ref[i].start - hyp[j].start)
            end_err += abs(ref[i].end - hyp[j].end)
            aligned += 1
    wer = word_error_rate(references, hypotheses, language=language, normalizer="official")
    n = aligned or 1
    return SrwtScores(
        aas=(start_err + end_err) / n, mean_boundary_error=(start_err + end_err) / (2 * n),
        mean_start_error=start_err / n, mean_end_error=end_err / n, aligned_words=aligned,
        unparsable=unparsable, wer=wer.value,
        boundary=boundary_f1(parsed_refs, parsed_hyps, tolerance=tolerance),
    )
