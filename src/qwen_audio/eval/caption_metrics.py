"""Caption metrics: CIDEr-D (implemented here from its definition), SPICE and SPIDEr.

CIDEr-D (Vedantam et al. 2015, §4 and the "-D" variant used by the COCO server) for candidate
c of clip i with references S_i = {s_i1 … s_im}:

    g^n(x)[k]    = h_k(x) · log(|I| / max(1, df_k))      TF-IDF of n-gram k; df_k = number of
                                                          clips whose references contain k
    CIDEr-D_n    = 10/m · Σ_j exp(−(l(c) − l(s_ij))² / 2σ²)
                          · Σ_k min(g^n(c)[k], g^n(s_ij)[k]) · g^n(s_ij)[k] / (‖g^n(c)‖ ‖g^n(s_ij)‖)
    CIDEr-D      = Σ_{n=1..4} CIDEr-D_n / 4,  σ = 6,  l(·) = length in words

and the corpus score is the mean over clips. Document frequencies come from the references of
the scored corpus itself, as in the COCO tool: CIDEr-D of a single clip is therefore 0 (every
n-gram has idf log(1/1) = 0), so always score whole test sets.

Tokenisation: the COCO tool runs Stanford's PTB tokenizer (Java); we lowercase and strip
punctuation, which matches it on plain captions but may differ on hyphens and contractions.

SPICE needs Java and the SPICE jar with Stanford CoreNLP models (pycocoevalcap, then its
``get_stanford_models`` download); `spice` raises MetricUnavailableError when they are absent,
and SPIDEr = (CIDEr-D + SPICE) / 2 is reported only when SPICE is.
"""

from __future__ import annotations

import math
import re
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from qwen_audio.errors import QwenAudioError

SIGMA = 6.0
MAX_N = 4


class MetricUnavailableError(QwenAudioError):
    """A metric needs a dependency (Java, a jar, a tokenizer) that is not installed here."""


def caption_tokens(text: str) -> list[str]:
    """Lowercased words without punctuation (an approximation of the PTB tokenizer)."""
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


def _ngrams(words: list[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def _tfidf(
    words: list[str], df: list[Counter[tuple[str, ...]]], log_clips: float
) -> list[dict[tuple[str, ...], float]]:
    return [
        {k: count * (log_clips - math.log(max(1.0, df[n - 1][k])))
         for k, count in _ngrams(words, n).items()}
        for n in range(1, MAX_N + 1)
    ]


def _norm(vec: dict[tuple[str, ...], float]) -> float:
    return math.sqrt(sum(v * v for v in vec.values()))


def cider_d_per_clip(
    candidates: Sequence[str], references: Sequence[Sequence[str]], *, sigma: float = SIGMA
) -> list[float]:
    """CIDEr-D of each candidate against its references (document frequencies over the corpus)."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference sets")
    refs_tok = [[caption_tokens(r) for r in refs] for refs in references]
    df: list[Counter[tuple[str, ...]]] = [Counter() for _ in range(MAX_N)]
    for refs in refs_tok:
        for n in range(1, MAX_N + 1):
            df[n - 1].update({k for r in refs for k in _ngrams(r, n)})
    log_clips = math.log(float(len(candidates))) if candidates else 0.0
    scores = []
    for cand, refs in zip(candidates, refs_tok):
        c_words = caption_tokens(cand)
        c_vec = _tfidf(c_words, df, log_clips)
        total = 0.0
        for r_words in refs:
            r_vec = _tfidf(r_words, df, log_clips)
            penalty = math.exp(-((len(c_words) - len(r_words)) ** 2) / (2 * sigma**2))
            for n in range(MAX_N):
                denom = _norm(c_vec[n]) * _norm(r_vec[n])
                if denom == 0.0:
                    continue
                dot = sum(min(v, r_vec[n].get(k, 0.0)) * r_vec[n].get(k, 0.0)
                          for k, v in c_vec[n].items())
                total += penalty * dot / denom
        scores.append(10.0 * total / (MAX_N * len(refs)) if refs else 0.0)
    return scores


def cider_d(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus CIDEr-D: the mean of `cider_d_per_clip` (0 for an empty corpus)."""
    per_clip = cider_d_per_clip(candidates, references)
    return sum(per_clip) / len(per_clip) if per_clip else 0.0


def spice(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """SPICE through pycocoevalcap (Java). Raises MetricUnavailableError saying what is missing."""
    if shutil.which("java") is None:
        raise MetricUnavailableError("SPICE needs Java 8+ on PATH (apt-get install default-jre)")
    try:
        from pycocoevalcap.spice.spice import Spice  # type: ignore[import-not-found]
    except ImportError:
        raise MetricUnavailableError(
            "SPICE needs pycocoevalcap (pip install pycocoevalcap) and its Stanford CoreNLP "
            "models; CIDEr-D is available without them") from None
    gts = {i: list(refs) for i, refs in enumerate(references)}
    res = {i: [c] for i, c in enumerate(candidates)}
    try:
        score, _ = Spice().compute_score(gts, res)
    except Exception as e:  # the jar fails in many ways when models are missing
        raise MetricUnavailableError(f"SPICE failed ({e}); run pycocoevalcap's "
                                     "get_stanford_models first") from e
    return float(score)


@dataclass(frozen=True)
class CaptionResult:
    cider_d: float
    spice: float | None  # None when SPICE's Java dependencies are missing (see `note`)
    spider: float | None  # (CIDEr-D + SPICE) / 2
    num_clips: int
    note: str | None = None


def caption_scores(
    candidates: Sequence[str], references: Sequence[Sequence[str]], *, with_spice: bool = True
) -> CaptionResult:
    """CIDEr-D always; SPICE and SPIDEr when their dependencies are installed."""
    cider = cider_d(candidates, references)
    if not with_spice:
        return CaptionResult(cider, None, None, len(candidates), "SPICE not requested")
    try:
        spice_score = spice(candidates, references)
    except MetricUnavailableError as e:
        return CaptionResult(cider, None, None, len(candidates), str(e))
    return CaptionResult(cider, spice_score, (cider + spice_score) / 2, len(candidates))
