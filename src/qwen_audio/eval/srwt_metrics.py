"""SRWT (speech recognition with word-level timestamps) metrics.

The decoded text alternates time tokens and text: each segment sits between two consecutive
time tokens, ``<|0.00|><|0.52|>hello<|0.88|><|0.95|> world<|1.40|>`` → ("", 0.00–0.52),
("hello", 0.52–0.88), ("", 0.88–0.95), ("world", 0.95–1.40). Segments with no text (or
``<|sil|>``) are silences. Pass the prompt's leading ``<|0.00|>`` along with the generated text,
or the first word loses its start time.

AAS, the average shift (``eval_audio/evaluate_srwt.py``): align reference and hypothesis
segments by edit distance, keep the pairs whose text is equal, and report
Σ(|start − start'| + |end − end'|) / pairs — per word the *sum* of its two boundary errors, as
the official script computes it. Silence segments take part in the alignment. Two readings:

- **official** (:func:`official_average_shift`), the script's ``AverageShiftCalculator``:
  ``<|startoftranscript|>``, ``<|transcribe|>`` and one of ``<|en|>``/``<|zh|>`` removed; time
  tokens are ``<|d.dd|>`` with one or two integer digits; segments are the raw text between two
  consecutive time tokens, *with* their leading space (" world" is not "world"), joined with tabs
  and split on tabs again; aligned by the ``edit_distance`` package, whose ties go to
  substitution, then insertion, then deletion; an utterance whose equal pairs come out empty (or
  uneven, when a tab adds a segment) is skipped, not counted as zero shift; the corpus value is
  Σ shifts / Σ pairs. Where the script would stop (a hypothesis without time tokens puts its
  two lists out of step and fails its assert) the pair is skipped and counted as unparsable.
- **lenient** (:func:`srwt_scores`' ``aas``): :func:`qwen_audio.formats.srwt.official_segments`,
  words stripped, ``<|sil|>`` read as silence, every parsable utterance scored.

The aligner is ours (a small dynamic programme with the package's tie order), so that scoring
needs no extra dependency; the tests check it against the ``edit_distance`` package itself.
We also report the mean per boundary (AAS / 2), start and end errors apart, and boundary F1:
word boundaries (starts and ends of non-silent segments, shared boundaries counted once)
matched one-to-one within a tolerance.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from qwen_audio.eval.metrics import word_error_rate
from qwen_audio.formats.srwt import official_segments
from qwen_audio.formats.timestamps import Word

SILENCE = ("", "<|sil|>")
# evaluate_srwt.py's reading: its time-token pattern and the tags it removes before splitting.
OFFICIAL_TIME_TOKEN = re.compile(r"<\|\d{1,2}\.\d+\|>")
OFFICIAL_REMOVED_TAGS = ("<|startoftranscript|>", "<|transcribe|>")
OFFICIAL_LANGUAGE_TAGS = ("<|en|>", "<|zh|>")  # only the first one present is removed


def align_equal(ref: Sequence[str], hyp: Sequence[str]) -> list[tuple[int, int]]:
    """Index pairs (i, j) with ref[i] == hyp[j] on a minimum edit-distance alignment. Among
    alignments of equal cost, the official aligner's (the ``edit_distance`` package's): each
    step prefers substitution/match, then insertion, then deletion."""
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
    while i > 0 and j > 0:  # backtrace with the official preference at every cell
        cost = 0 if ref[i - 1] == hyp[j - 1] else 1
        if dist[i][j] == dist[i - 1][j - 1] + cost:
            if cost == 0:
                pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif dist[i][j] == dist[i][j - 1] + 1:  # insertion (a hypothesis word)
            j -= 1
        else:
            i -= 1
    return pairs[::-1]


def official_reading(text: str) -> tuple[list[str], list[tuple[float, float]]] | None:
    """``evaluate_srwt.py``'s reading of one output: the segment texts (leading spaces kept) and
    the (start, end) of each; None when the text holds no time token (its ``pattern_error``)."""
    for tag in OFFICIAL_REMOVED_TAGS:
        text = text.replace(tag, "")
    for tag in OFFICIAL_LANGUAGE_TAGS:
        if tag in text:
            text = text.replace(tag, "")
            break
    times = [float(token[2:-2]) for token in OFFICIAL_TIME_TOKEN.findall(text)]
    if not times:
        return None
    pieces = OFFICIAL_TIME_TOKEN.split(text)[1:-1]
    return "\t".join(pieces).split("\t"), list(zip(times, times[1:]))


@dataclass(frozen=True)
class AverageShift:
    """The official AAS of a corpus; ``value`` is None when no word pair was scored (the
    script divides by zero there)."""

    value: float | None  # Σ(|Δstart| + |Δend|) / aligned_words, seconds
    aligned_words: int
    scored_utterances: int
    skipped_utterances: int  # no equal segment, or uneven pair lists: the script skips them
    unparsable: int  # a side without any time token


def official_average_shift(references: Sequence[str], hypotheses: Sequence[str]) -> AverageShift:
    """AAS as ``evaluate_srwt.py`` computes it (see the module docstring)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    shift = 0.0
    aligned = scored = skipped = unparsable = 0
    for ref_text, hyp_text in zip(references, hypotheses):
        ref, hyp = official_reading(ref_text), official_reading(hyp_text)
        if ref is None or hyp is None:
            unparsable += 1
            continue
        (ref_words, ref_spans), (hyp_words, hyp_spans) = ref, hyp
        pairs = align_equal(ref_words, hyp_words)
        # The script zips its per-word flags with the spans, so words past the last span drop out.
        ref_kept = [ref_spans[i] for i, _ in pairs if i < len(ref_spans)]
        hyp_kept = [hyp_spans[j] for _, j in pairs if j < len(hyp_spans)]
        if not ref_kept or len(ref_kept) != len(hyp_kept):
            skipped += 1
            continue
        shift += sum(abs(r[0] - h[0]) + abs(r[1] - h[1]) for r, h in zip(ref_kept, hyp_kept))
        aligned += len(ref_kept)
        scored += 1
    return AverageShift(shift / aligned if aligned else None, aligned, scored, skipped, unparsable)


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
    :class:`qwen_audio.formats.srwt.SrwtResult`). ``aas`` and the errors after it are the
    lenient reading; ``official`` is the official script's AAS."""

    aas: float  # lenient average shift: mean over aligned words of |Δstart| + |Δend| (s)
    mean_boundary_error: float  # aas / 2: mean absolute error per boundary (s)
    mean_start_error: float
    mean_end_error: float
    aligned_words: int
    unparsable: int  # pairs skipped because a side had no time token
    wer: float  # on the text of the segments, special tokens removed
    boundary: BoundaryF1
    official: AverageShift


def srwt_scores(
    references: Sequence[str], hypotheses: Sequence[str], *, language: str = "en",
    tolerance: float = 0.05,
) -> SrwtScores:
    """AAS (official and lenient), boundary errors, boundary F1 and WER of decoded SRWT outputs
    against references in the same time-token format."""
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
        official=official_average_shift(references, hypotheses),
    )
