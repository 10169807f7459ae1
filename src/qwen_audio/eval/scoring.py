"""Two figures for every benchmark, side by side and never mixed: official and lenient.

- **official**: the number Qwen-Audio's ``eval_audio/evaluate_*.py`` scripts would print for the
  same predictions — the one to read beside the paper's. WER with ``evaluate_asr.py``'s
  normaliser; BLEU with sacrebleu and ``evaluate_st.py``'s tokenizer (``ja-mecab`` needs
  ``sacrebleu[ja]``); CIDEr-D on pycocoevalcap's PTB tokens (Java); exact-match accuracy
  (sklearn's ``accuracy_score``); AAS with ``evaluate_srwt.py``'s reading and aligner.
- **lenient**: a reading that forgives what the official one does not — Whisper-normalised WER,
  character BLEU for Japanese, CIDEr-D on lowercased punctuation-free words, accuracy ignoring
  case/punctuation/``_ - /``, AAS on stripped words. Useful to read a model; not the paper's.

A figure whose official dependency is missing is *unavailable* (``value`` None, ``unavailable``
saying what to install), never computed another way. Each figure names its ``method``, so a
report says which scorer produced which number. Units are the paper's: WER in %, BLEU 0–100,
CIDEr-D as the COCO tool prints it, accuracy 0–1, AAS in seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from qwen_audio.errors import MetricUnavailableError
from qwen_audio.eval import caption_metrics, metrics, srwt_metrics

SCORERS = ("official", "lenient")


@dataclass(frozen=True)
class Figure:
    """One number of one scorer: ``value`` None when ``unavailable`` says why."""

    scorer: str  # "official" or "lenient"
    method: str  # how it was computed, for the report
    value: float | None = None
    unavailable: str | None = None
    details: Any = None  # the metric's own result dataclass

    def __post_init__(self) -> None:
        if self.scorer not in SCORERS:
            raise ValueError(f"scorer must be one of {SCORERS}, got {self.scorer!r}")
        if (self.value is None) == (self.unavailable is None):
            raise ValueError("a figure has either a value or the reason it is unavailable")


def _figure(scorer: str, method: str, compute: Callable[[], tuple[float | None, Any]],
            undefined: str = "no example to score") -> Figure:
    try:
        value, details = compute()
    except MetricUnavailableError as e:
        return Figure(scorer, method, unavailable=str(e))
    if value is None:
        return Figure(scorer, method, unavailable=undefined, details=details)
    return Figure(scorer, method, value, details=details)


def wer_figures(references: Sequence[str], hypotheses: Sequence[str], language: str) -> tuple[Figure, Figure]:
    """WER % (CER for languages written without spaces) under both scorers."""
    unit = "CER" if language in metrics.CHARACTER_LANGUAGES else "WER"

    def rate(normalizer: str) -> Callable[[], tuple[float, Any]]:
        def compute() -> tuple[float, Any]:
            result = metrics.word_error_rate(references, hypotheses, language=language, normalizer=normalizer)
            return 100 * result.value, result
        return compute

    whisper = "EnglishTextNormalizer with its spelling map" if language == "en" else "BasicTextNormalizer"
    return (
        _figure("official", f"{unit}, evaluate_asr.py normaliser (tags removed, lowercased, punctuation kept)",
                rate("official")),
        _figure("lenient", f"{unit}, Whisper {whisper}", rate("auto")),
    )


def bleu_figures(hypotheses: Sequence[str], references: Sequence[str], target_language: str) -> tuple[Figure, Figure | None]:
    """BLEU with the official tokenizer; a lenient figure only for Japanese (``char``), where the
    official one needs MeCab. Elsewhere there is no second reading."""
    tok = metrics.bleu_tokenizer(target_language)

    def bleu(tokenize: str) -> Callable[[], tuple[float, Any]]:
        def compute() -> tuple[float, Any]:
            result = metrics.corpus_bleu(hypotheses, references, target_language=target_language, tokenize=tokenize)
            return result.score, result
        return compute

    official = _figure("official", f"sacrebleu corpus BLEU, tokenizer {tok} (evaluate_st.py)", bleu(tok))
    if tok != "ja-mecab":
        return official, None
    return official, _figure("lenient", "sacrebleu corpus BLEU, tokenizer char", bleu("char"))


def caption_figures(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[Figure, Figure]:
    """CIDEr-D on PTB tokens (official; SPICE/SPIDEr in its details when they can run) and on
    the lenient tokens."""
    def cider(tokenizer: str) -> Callable[[], tuple[float, Any]]:
        def compute() -> tuple[float, Any]:
            result = caption_metrics.caption_scores(candidates, references, tokenizer=tokenizer,
                                                    with_spice=tokenizer == "official")
            return result.cider_d, result
        return compute

    return (
        _figure("official", "CIDEr-D on pycocoevalcap PTBTokenizer tokens (Java)", cider("official")),
        _figure("lenient", "CIDEr-D on lowercased words without punctuation", cider("lenient")),
    )


def accuracy_figures(
    references: Sequence[str], accepted: Sequence[str | Sequence[str]], predictions: Sequence[str],
) -> tuple[Figure, Figure]:
    """Exact-match accuracy against the one official answer (``references``), and lenient
    accuracy against the ``accepted`` labels of each example."""
    def exact() -> tuple[float, Any]:
        result = metrics.exact_accuracy(references, predictions)
        return result.accuracy, result

    def lenient() -> tuple[float, Any]:
        result = metrics.lenient_accuracy(accepted, predictions)
        return result.accuracy, result

    return (
        _figure("official", "exact string match (sklearn accuracy_score)", exact),
        _figure("lenient", "case, punctuation and _ - / ignored; any accepted label", lenient),
    )


def srwt_figures(references: Sequence[str], hypotheses: Sequence[str], language: str) -> tuple[Figure, Figure]:
    """AAS in seconds: the official script's reading and the lenient one (one scoring pass)."""
    scores = srwt_metrics.srwt_scores(references, hypotheses, language=language)
    official = scores.official
    return (
        _figure("official", "AAS, evaluate_srwt.py reading (words with their leading space, "
                "edit_distance tie order, utterances without an equal word skipped)",
                lambda: (official.value, official),
                undefined="no equal word pair to measure (the official script divides by zero)"),
        _figure("lenient", "AAS on stripped words, every parsable utterance", lambda: (scores.aas, scores)),
    )
