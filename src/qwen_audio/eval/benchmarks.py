"""The paper's benchmarks: which data (converter + split), which task, which metric, and the
number Qwen-Audio reported, so a report can print ours beside it.

Reported numbers: Chu et al. 2023, "Qwen-Audio" (arXiv:2311.07919), main results, as listed in
the "Evaluation" section of the official README (github.com/QwenLM/Qwen-Audio). Units as
published: WER in %, BLEU 0–100, CIDEr-D as the COCO tool prints it, accuracies 0–1. ``None``
where the paper gives no number for that exact benchmark. Prompts are not here: the tag
registry (`qwen_audio.formats.tags`) turns ``task`` + languages into the official prompt.

Every score carries the official and the lenient figure (`qwen_audio.eval.scoring`); a
benchmark's ``scorer`` says which one is its headline ``value``: the official one, unless a
caller (the synthetic suite, whose gates were set on lenient accuracy) asks otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qwen_audio.data.converters import get_converter
from qwen_audio.data.manifest import ManifestRecord, read_manifest
from qwen_audio.errors import ConfigError, ManifestError
from qwen_audio.eval.scoring import SCORERS, Figure
from qwen_audio.formats.languages import word_separator
from qwen_audio.formats.srwt import srwt_reference_text

PAPER = "Chu et al. 2023 (arXiv:2311.07919), results as in the QwenLM/Qwen-Audio README"
METRICS = ("wer", "bleu", "cider_d", "accuracy", "aqa_accuracy", "srwt")


@dataclass(frozen=True)
class Benchmark:
    name: str
    converter: str  # key of qwen_audio.data.converters.CONVERTERS ("" for any manifest)
    split: str
    task: str  # task registry name; the prompt comes from tags
    metric: str  # one of METRICS
    audio_language: str | None = None
    text_language: str | None = None
    options: tuple[tuple[str, Any], ...] = ()  # extra converter keyword arguments
    paper_value: float | None = None
    higher_is_better: bool = True
    note: str = ""
    source: str = field(default=PAPER, repr=False)
    scorer: str = "official"  # which figure is the headline `value` (both are always computed)

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"benchmark {self.name}: metric {self.metric!r} not in {METRICS}")
        if self.scorer not in SCORERS:
            raise ValueError(f"benchmark {self.name}: scorer {self.scorer!r} not in {SCORERS}")

    def records(self, data: str | Path) -> Iterator[ManifestRecord]:
        """The benchmark's examples: from a manifest file (``.jsonl``/``.jsonl.gz``, keeping
        records of this task) or by converting the dataset folder ``data``."""
        data = Path(data)
        if data.is_file():
            return (r for r in read_manifest(data) if r.task == self.task)
        if not self.converter:
            raise ManifestError(f"benchmark {self.name} needs a manifest file, got folder {data}")
        return get_converter(self.converter)(data, self.split, **dict(self.options))


def _asr(name: str, converter: str, split: str, lang: str, paper: float | None) -> Benchmark:
    return Benchmark(name, converter, split, "asr", "wer", lang, lang, paper_value=paper,
                     higher_is_better=False, note="WER % (CER for Chinese), official normaliser")


def _st(src: str, tgt: str, paper: float | None) -> Benchmark:
    return Benchmark(f"covost2-{src}-{tgt}", "covost2", "test", "s2tt", "bleu",
                     src.split("-")[0], tgt.split("-")[0],
                     options=(("source", src), ("target", tgt)), paper_value=paper,
                     note="BLEU, sacrebleu 13a / zh / ja-mecab by target language (evaluate_st.py)")


_ALL = [
    _asr("librispeech-dev-clean", "librispeech", "dev-clean", "en", 1.8),
    _asr("librispeech-dev-other", "librispeech", "dev-other", "en", 4.0),
    _asr("librispeech-test-clean", "librispeech", "test-clean", "en", 2.0),
    _asr("librispeech-test-other", "librispeech", "test-other", "en", 4.2),
    _asr("aishell1-dev", "aishell1", "dev", "zh", 1.2),
    _asr("aishell1-test", "aishell1", "test", "zh", 1.3),
    _asr("aishell2-mic-test", "aishell2", "mic-test", "zh", 3.3),
    _asr("aishell2-ios-test", "aishell2", "ios-test", "zh", 3.1),
    _asr("aishell2-android-test", "aishell2", "android-test", "zh", 3.3),
    _st("en", "de", 25.1), _st("de", "en", 33.9), _st("en", "zh-CN", 41.5),
    _st("zh-CN", "en", 15.7), _st("es", "en", 39.7), _st("fr", "en", 38.5), _st("it", "en", 36.0),
    Benchmark("clotho", "clotho", "evaluation", "caption", "cider_d", "unknown", "en",
              paper_value=0.441,
              note="CIDEr-D; paper also gives SPICE 0.136 and SPIDEr 0.288 (need Stanford "
                   "CoreNLP models downloaded at run time: unavailable offline)"),
    Benchmark("clotho-aqa", "clotho_aqa", "test", "aqa", "aqa_accuracy", "unknown", "en",
              paper_value=0.579, note="accuracy; paper's yes/no-only accuracy: 0.749"),
    Benchmark("cochlscene", "cochlscene", "test", "scene", "accuracy", "unknown", "en",
              paper_value=0.795),
    Benchmark("tut2017", "tut2017", "evaluate", "scene", "accuracy", "unknown", "en",
              paper_value=0.649, note="evaluation package's evaluation_setup/evaluate.txt"),
    Benchmark("vocalsound", "vocalsound", "test", "vocal_sound", "accuracy", "unknown", "en",
              paper_value=0.9289),
    Benchmark("meld", "meld", "test", "emotion", "accuracy", "en", "en", paper_value=0.557),
    Benchmark("nsynth-instrument", "nsynth", "test", "instrument", "accuracy", "unknown", "en",
              options=(("target", "instrument"),), paper_value=0.7882,
              note="instrument family accuracy; paper's qualities mAP 0.4742 is not scored here"),
    Benchmark("nsynth-pitch", "nsynth", "test", "pitch", "accuracy", "unknown", "en",
              options=(("target", "pitch"),), paper_value=None,
              note="no pitch number in the paper"),
    Benchmark("nsynth-velocity", "nsynth", "test", "velocity", "accuracy", "unknown", "en",
              options=(("target", "velocity"),), paper_value=None,
              note="no velocity number in the paper"),
    Benchmark("srwt", "", "", "srwt", "srwt", paper_value=None, higher_is_better=False,
              note="AAS (s) on any manifest with word alignments; the paper's 51.5 ms is on "
                   "closed industrial data, not comparable"),
]
BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in _ALL}


def get_benchmark(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise ConfigError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}") from None


@dataclass(frozen=True)
class BenchmarkScore:
    benchmark: str
    metric: str
    official: Figure
    lenient: Figure | None  # None where the metric has no second reading (BLEU but Japanese)
    paper_value: float | None
    num_examples: int
    scorer: str = "official"  # the headline figure
    predictions: tuple[str, ...] = ()  # what was scored, in the order of the records

    @property
    def figure(self) -> Figure:
        """The headline figure (the official one unless the benchmark asks for the lenient)."""
        return self.lenient if self.scorer == "lenient" and self.lenient is not None else self.official

    @property
    def value(self) -> float | None:
        """The headline figure's value, in the paper's unit; None when it is unavailable."""
        return self.figure.value

    @property
    def details(self) -> Any:
        """The headline figure's own result dataclass."""
        return self.figure.details


def srwt_reference(record: ManifestRecord) -> str:
    """A record's word alignments in the decoded SRWT format (times to 0.01 s): a leading
    ``<|0.00|>`` when speech starts later (the prompt's token), one shared token where a word
    ends as the next starts, a pair of tokens around each pause, a space before every word but
    the first in spaced languages (the official scorer compares words with it)."""
    if not record.words:
        raise ManifestError(f"record {record.id} has no word alignments for SRWT")
    separator = word_separator(record.text_language or record.audio_language)
    return srwt_reference_text(record.words, separator=separator)


def score_benchmark(
    benchmark: Benchmark, records: Sequence[ManifestRecord], predictions: Sequence[str]
) -> BenchmarkScore:
    """Score decoded predictions (special tokens may remain) against the records' targets,
    with both scorers."""
    from qwen_audio.eval import metrics, scoring

    if len(records) != len(predictions):
        raise ValueError(f"{len(records)} records but {len(predictions)} predictions")
    refs = [r.text for r in records]
    lenient: Figure | None
    if benchmark.metric == "wer":
        official, lenient = scoring.wer_figures(refs, predictions, benchmark.audio_language or "en")
    elif benchmark.metric == "bleu":
        clean = [metrics.SPECIAL_TOKEN.sub("", p).strip() for p in predictions]
        official, lenient = scoring.bleu_figures(clean, refs, benchmark.text_language or "en")
    elif benchmark.metric == "cider_d":
        clean = [metrics.SPECIAL_TOKEN.sub("", p).strip() for p in predictions]
        official, lenient = scoring.caption_figures(clean, [r.labels or (r.text,) for r in records])
    elif benchmark.metric in ("accuracy", "aqa_accuracy"):
        # The official scripts compare with one answer (Clotho-AQA's: the majority one); the
        # lenient reading accepts any of a record's labels, except for AQA's minority answers.
        accepted = refs if benchmark.metric == "aqa_accuracy" else [r.labels or r.text for r in records]
        official, lenient = scoring.accuracy_figures(refs, accepted, list(predictions))
    else:  # srwt
        language = (records[0].audio_language or "en") if records else "en"
        official, lenient = scoring.srwt_figures([srwt_reference(r) for r in records], predictions, language)
    return BenchmarkScore(benchmark.name, benchmark.metric, official, lenient, benchmark.paper_value,
                          len(records), benchmark.scorer, tuple(predictions))
