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

Tokenisation (the only thing that differs between the two scorers):
- ``"official"``: pycocoevalcap's PTBTokenizer — Stanford CoreNLP's PTB tokenizer (Java, the jar
  ships inside pycocoevalcap) with ``-preserveLines -lowerCase``, then its punctuation list
  removed — run as ``eval_audio/evaluate_caption.py`` runs it: once over all references (clip by
  clip, in order), once over all candidates. It keeps "high-pitched" and "3.5" whole, splits
  "man's" into "man 's", keeps brackets as ``-lrb-``, and reads "x y z." differently at the
  end of its batch than before a line starting with a capital, so the two batches are kept as
  the official script makes them. Without Java or pycocoevalcap this raises MetricUnavailableError.
- ``"lenient"``: lowercase, punctuation stripped (:func:`caption_tokens`): no Java, equal to
  PTB on plain captions, not on hyphens, decimals, contractions or brackets.
The CIDEr-D arithmetic is ours (a few lines from the definition, equal to pycocoevalcap's
``CiderScorer`` on the same tokens) so that the lenient path needs neither Java nor pycocoevalcap.

SPICE needs Java and Stanford CoreNLP 3.6.0 models that pycocoevalcap downloads at run time into
its own folder (``get_stanford_models``); they are not on PyPI, so offline `spice` raises
MetricUnavailableError instead of starting a download, and SPIDEr = (CIDEr-D + SPICE) / 2 is
reported only when SPICE is.
"""

from __future__ import annotations

import importlib.util
import math
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from qwen_audio.errors import MetricUnavailableError  # also importable from here, as before

SIGMA = 6.0
MAX_N = 4
CAPTION_TOKENIZERS = ("official", "lenient")


def caption_tokens(text: str) -> list[str]:
    """The lenient tokenizer: lowercased words without punctuation (PTB on plain captions)."""
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


def _pycocoevalcap_folder() -> Path:
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        raise MetricUnavailableError(
            "the official caption scorer needs pycocoevalcap: pip install 'qwen-audio[bench]' "
            "(pycocoevalcap==1.2)")
    return Path(next(iter(spec.submodule_search_locations)))


def ptb_tokenize(texts: Sequence[str]) -> list[list[str]]:
    """The official tokenizer: pycocoevalcap's PTBTokenizer over ``texts`` as one batch (one
    Java call), each text's tokens with the COCO punctuation list removed."""
    if shutil.which("java") is None:
        raise MetricUnavailableError(
            "the official caption tokenizer (PTB, Stanford CoreNLP) needs Java on PATH: "
            "apt-get install default-jre-headless")
    _pycocoevalcap_folder()
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer  # type: ignore[import-not-found]

    if not texts:
        return []
    try:
        out = PTBTokenizer().tokenize({i: [{"caption": t}] for i, t in enumerate(texts)})
    except (OSError, subprocess.SubprocessError) as e:  # e.g. its jar folder is not writable
        raise MetricUnavailableError(
            f"pycocoevalcap's PTBTokenizer failed ({e.__class__.__name__}: {e}); it writes a "
            "temporary file beside its jar, so that folder must be writable") from e
    if len(out) != len(texts):
        raise MetricUnavailableError(
            f"pycocoevalcap's PTBTokenizer returned {len(out)} lines for {len(texts)} captions; "
            "check that `java -version` works")
    return [out[i][0].split() for i in range(len(texts))]


def tokenize_corpus(
    candidates: Sequence[str], references: Sequence[Sequence[str]], tokenizer: str = "official",
) -> tuple[list[list[str]], list[list[list[str]]]]:
    """Candidates and reference sets as token lists, with the official or the lenient tokenizer
    (the official one in two batches, references first, as ``evaluate_caption.py``)."""
    if tokenizer == "lenient":
        return [caption_tokens(c) for c in candidates], [[caption_tokens(r) for r in refs] for refs in references]
    if tokenizer != "official":
        raise ValueError(f"caption tokenizer must be one of {CAPTION_TOKENIZERS}, got {tokenizer!r}")
    flat = ptb_tokenize([r for refs in references for r in refs])
    ref_tokens, start = [], 0
    for refs in references:
        ref_tokens.append(flat[start : start + len(refs)])
        start += len(refs)
    return ptb_tokenize(list(candidates)), ref_tokens


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


def cider_d_tokens(
    candidates: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]], *,
    sigma: float = SIGMA,
) -> list[float]:
    """CIDEr-D of each tokenised candidate against its tokenised references (document
    frequencies over the corpus)."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference sets")
    df: list[Counter[tuple[str, ...]]] = [Counter() for _ in range(MAX_N)]
    for refs in references:
        for n in range(1, MAX_N + 1):
            df[n - 1].update({k for r in refs for k in _ngrams(list(r), n)})
    log_clips = math.log(float(len(candidates))) if candidates else 0.0
    scores = []
    for cand, refs in zip(candidates, references):
        c_words = list(cand)
        c_vec = _tfidf(c_words, df, log_clips)
        total = 0.0
        for r_words in refs:
            r_vec = _tfidf(list(r_words), df, log_clips)
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


def cider_d_per_clip(
    candidates: Sequence[str], references: Sequence[Sequence[str]], *, tokenizer: str = "official",
    sigma: float = SIGMA,
) -> list[float]:
    """CIDEr-D of each candidate against its references, tokenised by ``tokenizer``."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference sets")
    cand_tokens, ref_tokens = tokenize_corpus(candidates, references, tokenizer)
    return cider_d_tokens(cand_tokens, ref_tokens, sigma=sigma)


def cider_d(
    candidates: Sequence[str], references: Sequence[Sequence[str]], *, tokenizer: str = "official",
) -> float:
    """Corpus CIDEr-D: the mean of `cider_d_per_clip` (0 for an empty corpus)."""
    per_clip = cider_d_per_clip(candidates, references, tokenizer=tokenizer)
    return sum(per_clip) / len(per_clip) if per_clip else 0.0


SPICE_MODELS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")


def spice(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """SPICE through pycocoevalcap (Java) on PTB tokens, as the official script. Raises
    MetricUnavailableError saying what is missing — offline, always the CoreNLP models."""
    if shutil.which("java") is None:
        raise MetricUnavailableError("SPICE needs Java 8+ on PATH (apt-get install default-jre-headless)")
    lib = _pycocoevalcap_folder() / "spice" / "lib"
    missing = [name for name in SPICE_MODELS if not (lib / name).is_file()]
    if missing:
        raise MetricUnavailableError(
            f"SPICE needs Stanford CoreNLP 3.6.0 ({', '.join(missing)}) in {lib}; pycocoevalcap "
            "downloads them from Stanford at run time (not from PyPI), so SPICE and SPIDEr are "
            "unavailable offline. CIDEr-D does not need them")
    from pycocoevalcap.spice.spice import Spice  # type: ignore[import-not-found]

    cand_tokens, ref_tokens = tokenize_corpus(candidates, references, "official")
    gts = {i: [" ".join(r) for r in refs] for i, refs in enumerate(ref_tokens)}
    res = {i: [" ".join(c)] for i, c in enumerate(cand_tokens)}
    try:
        score, _ = Spice().compute_score(gts, res)
    except Exception as e:  # the jar fails in many ways (memory, cache folder, models)
        raise MetricUnavailableError(f"SPICE failed ({e.__class__.__name__}: {e})") from e
    return float(score)


@dataclass(frozen=True)
class CaptionResult:
    cider_d: float
    spice: float | None  # None when SPICE's dependencies are missing (see `note`)
    spider: float | None  # (CIDEr-D + SPICE) / 2
    num_clips: int
    tokenizer: str  # "official" (PTB) or "lenient"
    note: str | None = None


def caption_scores(
    candidates: Sequence[str], references: Sequence[Sequence[str]], *, tokenizer: str = "official",
    with_spice: bool = True,
) -> CaptionResult:
    """CIDEr-D with ``tokenizer`` (MetricUnavailableError when the official one cannot run);
    SPICE and SPIDEr when their dependencies are installed (official tokenizer only)."""
    cider = cider_d(candidates, references, tokenizer=tokenizer)
    if not with_spice or tokenizer != "official":
        return CaptionResult(cider, None, None, len(candidates), tokenizer, "SPICE not requested")
    try:
        spice_score = spice(candidates, references)
    except MetricUnavailableError as e:
        return CaptionResult(cider, None, None, len(candidates), tokenizer, str(e))
    return CaptionResult(cider, spice_score, (cider + spice_score) / 2, len(candidates), tokenizer)
