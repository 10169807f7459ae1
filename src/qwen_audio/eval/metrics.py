"""Text metrics as the field computes them: WER/CER (jiwer), BLEU (sacrebleu), accuracy.

Caption metrics (CIDEr-D, SPICE, SPIDEr) live in `caption_metrics` and are re-exported here; SRWT
timestamp metrics, which score their text with this module's WER, live in `srwt_metrics`.

Two scorers, never mixed (`scoring` puts them side by side in reports):
- **official**: what Qwen-Audio's ``eval_audio/evaluate_*.py`` compute — the ``official``
  normaliser for WER, sacrebleu with ``evaluate_st.py``'s tokenizer choice (``ja-mecab`` for
  Japanese, ``zh`` for Chinese, ``13a`` otherwise) for BLEU, and sklearn's ``accuracy_score``
  (exact string equality) for every classification. A missing dependency (MeCab for Japanese)
  raises :class:`MetricUnavailableError`; nothing is computed another way.
- **lenient**: the Whisper normalisers for WER, sacrebleu's ``char`` tokenizer for Japanese
  BLEU, :func:`lenient_accuracy` (case, punctuation and ``_ - /`` ignored, alternatives
  accepted). Useful for reading a model; never comparable with the paper.

Normalisers (applied to references and hypotheses alike):
- ``"official"``: Qwen-Audio's scorer (``eval_audio/evaluate_asr.py``): special tokens removed,
  whitespace folded, space before ``!,.?;:`` removed, lowercased; punctuation kept. The paper's
  WERs were computed this way.
- ``"whisper_english"``: Whisper's EnglishTextNormalizer (numbers, contractions, and the
  British→American spelling map that the ``whisper-normalizer`` dependency ships).
- ``"whisper_basic"``: Whisper's BasicTextNormalizer (lowercase, symbols/punctuation removed).
- ``"auto"``: whisper_english for English, whisper_basic otherwise.
- ``"none"``: text as given.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import jiwer
import sacrebleu

from qwen_audio.errors import ConfigError, MetricUnavailableError
from qwen_audio.formats.languages import UNSPACED_LANGUAGES


SPECIAL_TOKEN = re.compile(r"<\|[^|]*\|>")
_OFFICIAL_PUNCT = "!,.?;:"
# Languages written without spaces between words: scored by character (the paper does so for
# Chinese; CER is the norm for Japanese too).
CHARACTER_LANGUAGES = UNSPACED_LANGUAGES
NORMALIZERS = ("official", "whisper_english", "whisper_basic", "auto", "none")


def official_normalize(text: str, language: str = "en") -> str:
    """Qwen-Audio's ``remove_sp`` + the lowercasing of its EvaluationTokenizer."""
    text = SPECIAL_TOKEN.sub(" ", text)
    text = re.sub(r"\s+", " ", text)
    text = re.sub(f" ?([{re.escape(_OFFICIAL_PUNCT)}])", r"\1", text).strip()
    if language in CHARACTER_LANGUAGES:
        text = re.sub(r"\s+", "", text)
    return text.lower()


@functools.lru_cache(maxsize=4)
def english_spelling_mapping(path: str | None = None) -> dict[str, str]:
    """British→American spellings for Whisper's EnglishTextNormalizer.

    The mapping is data, not code, and transformers does not ship it. Looked up in order:
    ``path``; the ``whisper-normalizer`` dependency's ``normalizers/english.json`` (the file
    openai-whisper ships, 1,739 entries); openai-whisper's own copy if that is installed. With
    none of them the Whisper English normaliser is unavailable (MetricUnavailableError): without
    its spellings it would score "colour" against "color" as an error and call it Whisper's.
    """
    candidates: list[Path] = [Path(path)] if path else []
    for package, relative in (("whisper_normalizer", "normalizers/english.json"),
                              ("whisper", "normalizers/english.json")):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin:
            candidates.append(Path(spec.origin).parent / relative)
    for candidate in candidates:
        if candidate.is_file():
            return json.loads(candidate.read_text(encoding="utf-8"))
    raise MetricUnavailableError(
        "Whisper's English spelling map (english.json) was not found: reinstall qwen-audio "
        "(it depends on whisper-normalizer) or pass the path of a normalizer.json")


@functools.lru_cache(maxsize=8)
def get_normalizer(name: str, language: str = "en") -> Callable[[str], str]:
    """The text normaliser ``name`` (see module docstring) for ``language``."""
    from transformers.models.whisper.english_normalizer import (
        BasicTextNormalizer,
        EnglishTextNormalizer,
    )

    if name == "auto":
        name = "whisper_english" if language == "en" else "whisper_basic"
    if name == "official":
        return functools.partial(official_normalize, language=language)
    if name == "whisper_english":
        english = EnglishTextNormalizer(english_spelling_mapping())
        return lambda s: english(SPECIAL_TOKEN.sub(" ", s))
    if name == "whisper_basic":
        basic = BasicTextNormalizer()
        return lambda s: basic(SPECIAL_TOKEN.sub(" ", s))
    if name == "none":
        return lambda s: s
    raise ConfigError(f"unknown normalizer {name!r}; use one of {', '.join(NORMALIZERS)}")


@dataclass(frozen=True)
class ErrorRate:
    """Corpus-level edit distance: ``value`` = (S + D + I) / N over all utterances pooled."""

    value: float
    substitutions: int
    deletions: int
    insertions: int
    reference_length: int  # N: reference words (or characters)
    num_utterances: int
    unit: str  # "word" or "char"
    normalizer: str

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions


def _units(text: str, unit: str) -> list[str]:
    if unit == "char":
        return [c for c in text if not c.isspace()]
    return text.split()


def error_rate(
    references: Sequence[str], hypotheses: Sequence[str], *, unit: str = "word",
    language: str = "en", normalizer: str = "auto",
) -> ErrorRate:
    """WER (``unit="word"``) or CER (``unit="char"``, whitespace ignored) pooled over a corpus.

    Utterances whose normalised reference is empty add their hypothesis units as insertions
    (jiwer refuses empty references; dropping them would hide hallucinations)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if unit not in ("word", "char"):
        raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")
    normalize = get_normalizer(normalizer, language)
    subs = dels = ins = length = 0
    for ref, hyp in zip(references, hypotheses):
        ref_units, hyp_units = _units(normalize(ref), unit), _units(normalize(hyp), unit)
        if not ref_units:
            ins += len(hyp_units)
            continue
        out = jiwer.process_words(" ".join(ref_units), " ".join(hyp_units) or "")
        subs, dels, ins = subs + out.substitutions, dels + out.deletions, ins + out.insertions
        length += len(ref_units)
    value = (subs + dels + ins) / length if length else float(ins > 0)
    return ErrorRate(value, subs, dels, ins, length, len(references), unit, normalizer)


def word_error_rate(
    references: Sequence[str], hypotheses: Sequence[str], *, language: str = "en",
    normalizer: str = "auto",
) -> ErrorRate:
    """WER; for languages written without spaces (zh, ja) this is CER, as the paper scores them."""
    unit = "char" if language in CHARACTER_LANGUAGES else "word"
    return error_rate(references, hypotheses, unit=unit, language=language, normalizer=normalizer)


def character_error_rate(
    references: Sequence[str], hypotheses: Sequence[str], *, language: str = "en",
    normalizer: str = "auto",
) -> ErrorRate:
    return error_rate(references, hypotheses, unit="char", language=language,
                      normalizer=normalizer)


@dataclass(frozen=True)
class BleuResult:
    score: float  # 0-100, sacrebleu's scale
    tokenize: str  # the sacrebleu tokenizer used
    signature: str
    num_segments: int


# The official S2TT scorer's choice (eval_audio/evaluate_st.py): ja-mecab, zh, else 13a.
BLEU_TOKENIZERS = {"zh": "zh", "ja": "ja-mecab"}


def bleu_tokenizer(language: str) -> str:
    """The tokenizer ``evaluate_st.py`` gives sacrebleu for a target language."""
    return BLEU_TOKENIZERS.get(language, "13a")


def corpus_bleu(
    hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]], *,
    target_language: str = "en", tokenize: str | None = None,
) -> BleuResult:
    """Corpus BLEU (sacrebleu), by default with the official tokenizer of the target language.

    ``references`` is one reference per hypothesis, or a list of reference streams (multi-ref).
    ``ja-mecab`` needs ``pip install sacrebleu[ja]`` (MeCab + IPAdic); without it this raises
    MetricUnavailableError instead of falling back: a score with another tokenizer is not the
    official one (ask for ``tokenize="char"`` to get the lenient figure on purpose)."""
    streams: list[list[str]]
    if references and isinstance(references[0], str):
        streams = [list(references)]  # type: ignore[arg-type]
    else:
        streams = [list(s) for s in references]  # type: ignore[union-attr]
    if any(len(s) != len(hypotheses) for s in streams):
        raise ValueError("every reference stream must have one line per hypothesis")
    tok = tokenize or bleu_tokenizer(target_language)
    try:
        metric = sacrebleu.BLEU(tokenize=tok)
    except (ImportError, RuntimeError, AssertionError) as e:  # MeCab missing, or not IPAdic
        raise MetricUnavailableError(
            f"BLEU tokenizer {tok!r} needs MeCab and its dictionary: pip install "
            f"'qwen-audio[bench]' or 'sacrebleu[{tok[:2]}]' ({e.__class__.__name__}: {e})") from e
    result = metric.corpus_score(list(hypotheses), streams)
    return BleuResult(result.score, tok, str(metric.get_signature()), len(hypotheses))


@dataclass(frozen=True)
class AccuracyResult:
    accuracy: float
    correct: int
    total: int
    match: str  # "exact" (official) or "lenient"


def exact_accuracy(references: Sequence[str], predictions: Sequence[str]) -> AccuracyResult:
    """The official accuracy: the share of predictions equal, character for character, to their
    reference — ``sklearn.metrics.accuracy_score(references, predictions)``, which every official
    classification scorer calls on the stripped decoded output. ``"Yes."`` is not ``"yes"``."""
    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} references but {len(predictions)} predictions")
    if not all(isinstance(x, str) for x in (*references, *predictions)):
        raise TypeError("exact accuracy compares one string with one string (the official gt)")
    correct = sum(ref == pred for ref, pred in zip(references, predictions))
    total = len(references)
    return AccuracyResult(correct / total if total else 0.0, correct, total, "exact")


def normalize_label(text: str) -> str:
    """The lenient label comparison: ignores case, special tokens, ``_``/``-``/``/`` vs spaces
    and trailing punctuation, so ``"City_center."`` matches ``"city center"``."""
    text = SPECIAL_TOKEN.sub(" ", text).lower()
    text = re.sub(r"[_\-/]", " ", text)
    text = re.sub(r"[^\w\s']", "", text)
    return " ".join(text.split())


def lenient_accuracy(
    references: Sequence[str | Sequence[str]], predictions: Sequence[str | Sequence[str]],
) -> AccuracyResult:
    """Top-1 accuracy under :func:`normalize_label`. A reference may be a list of acceptable
    labels (any one counts); a prediction may be a ranked list (only its first item counts).
    At least the official (exact) figure, so never print it beside the paper's as comparable."""
    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} references but {len(predictions)} predictions")
    correct = 0
    for ref, pred in zip(references, predictions):
        accepted = {normalize_label(r) for r in ([ref] if isinstance(ref, str) else ref)}
        top1 = pred if isinstance(pred, str) else (pred[0] if pred else "")
        correct += normalize_label(top1) in accepted
    total = len(references)
    return AccuracyResult(correct / total if total else 0.0, correct, total, "lenient")


def binary_accuracy(
    references: Sequence[str], predictions: Sequence[str], *, lenient: bool = False,
) -> AccuracyResult:
    """Accuracy over the yes/no questions only (Clotho-AQA's "ACC (binary)" column). Official:
    questions whose answer lowercased is "yes" or "no", compared exactly (``evaluate_aqa.py``);
    lenient: both sides through :func:`normalize_label`."""
    if lenient:
        pairs = [(r, p) for r, p in zip(references, predictions) if normalize_label(r) in ("yes", "no")]
        return lenient_accuracy([r for r, _ in pairs], [p for _, p in pairs])
    pairs = [(r, p) for r, p in zip(references, predictions) if r.lower() in ("yes", "no")]
    return exact_accuracy([r for r, _ in pairs], [p for _, p in pairs])


from qwen_audio.eval.caption_metrics import (  # noqa: E402  (re-exported entry point)
    CaptionResult,
    caption_scores,
    cider_d,
    spice,
)

__all__ = [
    "AccuracyResult", "BleuResult", "CaptionResult", "ErrorRate", "MetricUnavailableError",
    "binary_accuracy", "bleu_tokenizer", "caption_scores", "character_error_rate", "cider_d",
    "corpus_bleu", "english_spelling_mapping", "error_rate", "exact_accuracy", "get_normalizer",
    "lenient_accuracy", "normalize_label", "official_normalize", "spice", "word_error_rate",
]
