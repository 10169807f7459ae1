"""Text metrics as the field computes them: WER/CER (jiwer), BLEU (sacrebleu), accuracy.

Caption metrics (CIDEr-D, SPICE, SPIDEr) live in `caption_metrics` and are re-exported here; SRWT
timestamp metrics, which score their text with this module's WER, live in `srwt_metrics`.

Normalisers (applied to references and hypotheses alike):
- ``"official"``: Qwen-Audio's scorer (``eval_audio/evaluate_asr.py``): special tokens removed,
  whitespace folded, space before ``!,.?;:`` removed, lowercased; punctuation kept. The paper's
  WERs were computed this way.
- ``"whisper_english"``: Whisper's EnglishTextNormalizer (numbers, contractions, spellings).
- ``"whisper_basic"``: Whisper's BasicTextNormalizer (lowercase, symbols/punctuation removed).
- ``"auto"``: whisper_english for English, whisper_basic otherwise.
- ``"none"``: text as given.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import jiwer
import sacrebleu

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

    The mapping is data, not code, and transformers does not ship it (it comes with a Whisper
    tokenizer's ``normalizer.json``). Looked up in order: ``path``; openai-whisper's
    ``whisper/normalizers/english.json`` if that package is installed. Otherwise an empty
    mapping, with a warning: scores then differ from Whisper's on words like "colour".
    """
    candidates: list[Path] = [Path(path)] if path else []
    spec = importlib.util.find_spec("whisper")
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / "normalizers" / "english.json")
    for candidate in candidates:
        if candidate.is_file():
            return json.loads(candidate.read_text(encoding="utf-8"))
    warnings.warn("no English spelling mapping found (install openai-whisper or pass a "
                  "normalizer.json path); British spellings will not be standardised",
                  stacklevel=2)
    return {}


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
    raise ValueError(f"unknown normalizer {name!r}; use one of {', '.join(NORMALIZERS)}")


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
    tokenize: str  # the tokenizer actually used
    signature: str
    num_segments: int
    note: str | None = None  # set when the language's proper tokenizer was unavailable


# The official S2TT scorer's choice (eval_audio/evaluate_st.py): ja-mecab, zh, else 13a.
BLEU_TOKENIZERS = {"zh": "zh", "zh_tr": "zh", "ja": "ja-mecab", "ko": "ko-mecab"}


def bleu_tokenizer(language: str) -> str:
    return BLEU_TOKENIZERS.get(language, "13a")


def corpus_bleu(
    hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]], *,
    target_language: str = "en", tokenize: str | None = None,
) -> BleuResult:
    """Corpus BLEU with the tokenisation the target language needs.

    ``references`` is one reference per hypothesis, or a list of reference streams (multi-ref).
    ``ja-mecab``/``ko-mecab`` need ``pip install sacrebleu[ja]`` / ``sacrebleu[ko]``; without
    them we fall back to sacrebleu's ``char`` tokenizer and say so in ``note`` (and a warning):
    such a score is not comparable with published numbers."""
    streams: list[list[str]]
    if references and isinstance(references[0], str):
        streams = [list(references)]  # type: ignore[arg-type]
    else:
        streams = [list(s) for s in references]  # type: ignore[union-attr]
    if any(len(s) != len(hypotheses) for s in streams):
        raise ValueError("every reference stream must have one line per hypothesis")
    tok = tokenize or bleu_tokenizer(target_language)
    note = None
    try:
        metric = sacrebleu.BLEU(tokenize=tok)
        result = metric.corpus_score(list(hypotheses), streams)
    except (ImportError, RuntimeError, ModuleNotFoundError) as e:
        if not tok.endswith("mecab"):
            raise
        note = (f"tokenizer {tok!r} unavailable ({e.__class__.__name__}); fell back to 'char'. "
                f"Install sacrebleu[{tok[:2]}] for a comparable score")
        warnings.warn(note, stacklevel=2)
        tok = "char"
        metric = sacrebleu.BLEU(tokenize=tok)
        result = metric.corpus_score(list(hypotheses), streams)
    return BleuResult(result.score, tok, str(metric.get_signature()), len(hypotheses), note)


@dataclass(frozen=True)
class AccuracyResult:
    accuracy: float
    correct: int
    total: int


def normalize_label(text: str) -> str:
    """Label comparison that ignores case, special tokens, ``_``/``-``/``/`` vs spaces and
    trailing punctuation: ``"City_center."`` matches ``"city center"``."""
    text = SPECIAL_TOKEN.sub(" ", text).lower()
    text = re.sub(r"[_\-/]", " ", text)
    text = re.sub(r"[^\w\s']", "", text)
    return " ".join(text.split())


def accuracy(
    references: Sequence[str | Sequence[str]], predictions: Sequence[str | Sequence[str]], *,
    normalize: bool = True,
) -> AccuracyResult:
    """Top-1 accuracy. A reference may be a list of acceptable labels (any one counts); a
    prediction may be a ranked list (only its first item counts)."""
    if len(references) != len(predictions):
        raise ValueError(f"{len(references)} references but {len(predictions)} predictions")
    norm = normalize_label if normalize else (lambda s: s)
    correct = 0
    for ref, pred in zip(references, predictions):
        accepted = {norm(r) for r in ([ref] if isinstance(ref, str) else ref)}
        top1 = pred if isinstance(pred, str) else (pred[0] if pred else "")
        correct += norm(top1) in accepted
    total = len(references)
    return AccuracyResult(correct / total if total else 0.0, correct, total)


def binary_accuracy(references: Sequence[str], predictions: Sequence[str]) -> AccuracyResult:
    """Accuracy over the yes/no questions only (Clotho-AQA's "ACC (binary)" column)."""
    pairs = [(r, p) for r, p in zip(references, predictions)
             if normalize_label(r) in ("yes", "no")]
    return accuracy([r for r, _ in pairs], [p for _, p in pairs])


from qwen_audio.eval.caption_metrics import (  # noqa: E402  (re-exported entry point)
    CaptionResult,
    MetricUnavailableError,
    caption_scores,
    cider_d,
    spice,
)

__all__ = [
    "AccuracyResult", "BleuResult", "CaptionResult", "ErrorRate", "MetricUnavailableError",
    "accuracy", "binary_accuracy", "bleu_tokenizer",
    "caption_scores", "character_error_rate", "cider_d", "corpus_bleu", "english_spelling_mapping",
    "error_rate", "get_normalizer", "normalize_label", "official_normalize",
    "spice", "word_error_rate",
]
