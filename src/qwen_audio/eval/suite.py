"""Gated suites: the numbers a model card quotes, each beside the quality gate set for it.

- ``default`` (:data:`WORLD_SUITE`): the world-like held-out data of the default model (issue 16),
  built by ``qwen_audio.data.world.build``: real speech (the md5-reserved Asterisk prompts, never
  trained on, by the trained-on speakers and, where built, by other speakers), open-vocabulary TTS speech (a text source and voices never trained on), real
  instrument notes from a sample library never trained on (TimGM6mb) and drum hits from held-out
  kits. WER is Whisper-normalised (the lenient reading): a real transcript's punctuation and
  casing are not what these gates judge.
- ``synthetic`` (:data:`SYNTHETIC_SUITE`): the held-out split of the project's synthetic corpus, for
  models trained on that corpus (the first default model). Regenerated on demand: it is a pure
  function of the corpus seed, and shares no sentence, voice, instrument or sound source with training.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwen_audio.data.chat_manifest import read_chat_manifest
from qwen_audio.data.manifest import ManifestRecord, read_manifest
from qwen_audio.eval import metrics
from qwen_audio.eval.benchmarks import Benchmark, BenchmarkScore
from qwen_audio.eval.runner import EvalSettings, run_benchmark, spread_sample

SUITE_CORPUS = dict(size="small", seed=0)


@dataclass(frozen=True)
class SuiteEntry:
    benchmark: Benchmark
    manifest: str  # file of the test split
    keep: Callable[[ManifestRecord], bool]
    gate: float | None  # the quality gate, in the metric's unit; None: reported, not gated
    higher_is_better: bool
    value_of: Callable[[BenchmarkScore], float] = lambda s: s.value
    from_task: str | None = None  # score records of this task as ``benchmark.task`` (ASR audio → language ID)
    kind: str = "benchmark"  # "benchmark", or "names_source": the caption names the record's label

    def records(self, manifest: Path) -> list[ManifestRecord]:
        task = self.from_task or self.benchmark.task
        chosen = [r for r in read_manifest(manifest) if r.task == task and self.keep(r)]
        if self.from_task:
            chosen = [dataclasses.replace(r, id=f"{r.id}-as-{self.benchmark.task}", task=self.benchmark.task,
                                          text=r.audio_language or "", text_language=None, words=None) for r in chosen]
        return chosen


def _bench(name: str, task: str, metric: str, language: str | None = "unknown") -> Benchmark:
    # The gates were set on the official WER and on the lenient accuracy and AAS (no paper number
    # to compare with here); both figures still reach the predictions' report.
    scorer = "official" if metric == "wer" else "lenient"
    return Benchmark(f"synthetic-{name}", "", "test", task, metric, language, "en", scorer=scorer)


SYNTHETIC_SUITE: tuple[SuiteEntry, ...] = (
    SuiteEntry(_bench("asr-en", "asr", "wer", "en"), "speech.jsonl",
               lambda r: r.audio_language == "en", 10.0, False),
    SuiteEntry(_bench("srwt-en", "srwt", "srwt", "en"), "speech.jsonl",
               lambda r: r.audio_language == "en", 0.080, False,
               value_of=lambda s: s.details.mean_boundary_error),
    SuiteEntry(_bench("language-id", "language_id", "accuracy", None), "speech.jsonl", lambda r: True, 0.95, True),
    SuiteEntry(_bench("instrument", "instrument", "accuracy"), "music.jsonl", lambda r: True, 0.90, True),
    SuiteEntry(_bench("pitch", "pitch", "accuracy"), "music.jsonl", lambda r: True, 0.90, True),
    SuiteEntry(_bench("sound-event", "sound_event", "accuracy"), "sounds.jsonl", lambda r: True, 0.90, True),
    SuiteEntry(_bench("scene", "scene", "accuracy"), "scenes.jsonl", lambda r: True, 0.90, True),
)
CHAT_GATE = 0.80
WORLD_CHAT_GATE = 0.70  # issue 16: chat on audio and text-only questions


def _world(name: str, task: str, metric: str, language: str | None = "unknown") -> Benchmark:
    return Benchmark(f"world-{name}", "", "test", task, metric, language, "en", scorer="lenient")


def _language(code: str) -> Callable[[ManifestRecord], bool]:
    return lambda r: r.audio_language == code


# Issue 16's gates; the languages it does not gate are reported beside them.
WORLD_SUITE: tuple[SuiteEntry, ...] = (
    *(SuiteEntry(_world(f"real-asr-{code}", "asr", "wer", code), "asterisk/validation.jsonl", _language(code),
                 gate, False) for code, gate in (("en", 8.0), ("es", 15.0), ("fr", 15.0), ("it", 15.0))),
    SuiteEntry(_world("real-language-id", "language_id", "accuracy", None), "asterisk/validation.jsonl",
               lambda r: True, 0.95, True, from_task="asr"),
    # Other speakers over an 8 kHz telephone channel (asterisk-prompt-es-co / -fr-armelle, reserved names
    # only): reported, not gated: their references are the core sets' texts, whose wording these
    # voices do not always follow (Whisper base scores 77 % / 91 % WER on them), so compare models on it.
    *(SuiteEntry(_world(f"other-voice-asr-{code}", "asr", "wer", code), "asterisk/other-voices.jsonl", _language(code),
                 None, False) for code in ("es", "fr")),
    # Other real voices on other microphones, everyday words: Tux Paint's read stamp descriptions
    # (world.tuxpaint; a game package, never trained on). Reported, not gated; Whisper base's figures
    # stand beside them in the model card.
    *(SuiteEntry(_world(f"tuxpaint-asr-{code}", "asr", "wer", code), "tuxpaint/voices.jsonl", _language(code),
                 None, False) for code in ("es", "fr")),
    *(SuiteEntry(_world(f"open-asr-{code}", "asr", "wer", code), "tts/test.jsonl", _language(code),
                 10.0 if code == "en" else None, False) for code in ("en", "de", "es", "it")),
    SuiteEntry(_world("srwt-en", "srwt", "srwt", "en"), "tts/test.jsonl", _language("en"), 0.080, False,
               value_of=lambda s: s.details.mean_boundary_error),
    # No speech (held-out sounds, noise, tones; world.nospeech): how often language ID says <|unknown|>,
    # so transcription says nothing. Reported, not gated (the issue names no figure).
    SuiteEntry(_world("no-speech", "language_id", "accuracy", None), "nospeech/test.jsonl", lambda r: True, None, True,
               from_task="language_id"),
    SuiteEntry(_world("instrument", "instrument", "accuracy"), "sounds/test.jsonl", lambda r: True, 0.80, True),
    SuiteEntry(_world("sound-event", "sound_event", "accuracy"), "sounds/test.jsonl", lambda r: True, 0.80, True),
    SuiteEntry(_world("caption-names-source", "caption", "cider_d"), "sounds/test.jsonl", lambda r: True, 0.80, True,
               kind="names_source"),
)
SUITES: dict[str, tuple[SuiteEntry, ...]] = {"default": WORLD_SUITE, "synthetic": SYNTHETIC_SUITE}


def names_source(caption: str, labels: Sequence[str]) -> bool:
    """Whether a caption names one of the sources: every word of a label, as a whole word
    ("a snare drum is hit" names "snare drum"; "a drum is hit" does not)."""
    words = set(re.findall(r"[a-z]+", caption.lower().replace("-", " ")))
    return any(set(re.findall(r"[a-z]+", label.lower().replace("-", " "))) <= words for label in labels)


@dataclass(frozen=True)
class GateResult:
    name: str
    value: float
    gate: float | None
    higher_is_better: bool
    examples: int

    @property
    def passed(self) -> bool | None:
        if self.gate is None:
            return None
        return self.value >= self.gate if self.higher_is_better else self.value <= self.gate


def ensure_world_split(folder: Path) -> Path:
    """The world suite's held-out data in ``folder`` (built once, then reused): every Asterisk prompt
    (the suite reads the reserved ones), other real voices (Tux Paint's), the TTS test split, the sounds' test split, the no-speech clips
    made of it and the chat conversations over them. Needs the
    Debian packages named by :mod:`qwen_audio.data.world.build` (its errors say which)."""
    have = [folder / "asterisk" / "validation.jsonl", folder / "tts" / "test.jsonl", folder / "sounds" / "test.jsonl"]
    later = {"tuxpaint": folder / "tuxpaint" / "voices.jsonl", "nospeech": folder / "nospeech" / "test.jsonl",
             "chat": folder / "chat" / "test.jsonl"}
    if all(path.is_file() for path in [*have, *later.values()]):
        return folder
    from qwen_audio.data.world.build import STAGES, BuildConfig, TtsCounts, build

    default = BuildConfig(folder)
    tts = {key: counts if key[1] == "test" else TtsCounts(0) for key, counts in default.tts.items()}
    # a split built before the later stages existed gains them alone
    stages = tuple(s for s, p in later.items() if not p.is_file()) if all(p.is_file() for p in have) else STAGES
    build(BuildConfig(folder.resolve(), stages=stages, tts=tts, sound_splits=("test",)))
    return folder


def ensure_test_split(folder: Path, progress: bool = True) -> Path:
    """The synthetic test split in ``folder`` (generated once, then reused)."""
    split = folder / "test"
    if (split / "speech.jsonl").is_file() and (split / "chat.jsonl").is_file():
        return split
    from qwen_audio.data.synth import CorpusConfig, make_corpus

    make_corpus(folder, CorpusConfig(splits=("test",), workers=2, **SUITE_CORPUS), progress=progress)  # type: ignore[arg-type]
    return split


def run_suite(api: Any, split: Path, out_dir: Path, settings: EvalSettings = EvalSettings(),
              entries: Sequence[SuiteEntry] = SYNTHETIC_SUITE) -> list[GateResult]:
    """Every entry whose manifest under ``split`` has records; the synthetic suite adds its chat."""
    results = []
    for entry in entries:
        manifest = split / entry.manifest
        records = entry.records(manifest) if manifest.is_file() else []
        if not records:
            continue
        score = run_benchmark(api, entry.benchmark, records, out_dir, settings, root=manifest.parent)
        if entry.kind == "names_source":
            chosen = spread_sample(records, settings.limit)  # the records run_benchmark scored, in its order
            named = [names_source(p, r.labels or (r.text,)) for r, p in zip(chosen, score.predictions, strict=True)]
            value = sum(named) / len(named)
        else:
            value = entry.value_of(score)
        results.append(GateResult(entry.benchmark.name, value, entry.gate, entry.higher_is_better, score.num_examples))
    if entries is SYNTHETIC_SUITE:
        results.append(chat_accuracy(api, split / "chat.jsonl", settings, out_dir))
    elif entries is WORLD_SUITE and (split / "chat" / "test.jsonl").is_file():
        results.append(chat_accuracy(api, split / "chat" / "test.jsonl", settings, out_dir, name="world-chat",
                                     gate=WORLD_CHAT_GATE))
    return results


def chat_accuracy(api: Any, manifest: Path, settings: EvalSettings, out_dir: Path | None = None, *,
                  name: str = "synthetic-chat", gate: float = CHAT_GATE) -> GateResult:
    """Qwen-Audio-Chat on held-out conversations: the last reply, given the turns before it.

    A conversation whose ``meta`` holds its ``answer`` (the world chats) is scored by its kind
    (:func:`qwen_audio.data.world.chat.score_reply`: the transcript within a WER, or the key words);
    others by lenient exact match. With ``out_dir``, every reply is written to
    ``<name>.predictions.jsonl`` beside the reference and the conversation's kind, so misses can be read."""
    from qwen_audio.data.world.chat import score_reply
    from qwen_audio.formats.chatml import DEFAULT_SYSTEM
    from qwen_audio.data.examples import chat_turns
    from qwen_audio.infer.engine import ChatRequest, GenerationOptions

    requests, records = [], []
    for record in spread_sample(list(read_chat_manifest(manifest)), settings.limit):
        *context, last = record.messages
        if last.role != "assistant":
            continue
        system, turns, audios = chat_turns(context, manifest.parent)
        waves = {audio.key: audio.load() for audio in audios}
        requests.append(ChatRequest(tuple(turns), waves, system or DEFAULT_SYSTEM, GenerationOptions(max_new_tokens=48)))
        records.append(record)
    references = [record.messages[-1].text for record in records]
    predictions: list[str] = []
    for start in range(0, len(requests), settings.batch_size):
        predictions += [reply.text for reply in api.chat_batch(requests[start : start + settings.batch_size])]
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        rows = [{"id": r.id, "kind": (r.meta or {}).get("kind"), "reference": ref, "prediction": pred}
                for r, ref, pred in zip(records, references, predictions)]
        (out_dir / f"{name}.predictions.jsonl").write_text(
            "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    if records and all("answer" in (r.meta or {}) for r in records):
        right = [score_reply(r.meta["kind"], r.meta["answer"], p) for r, p in zip(records, predictions)]
        return GateResult(name, sum(right) / len(right), gate, True, len(right))
    score = metrics.lenient_accuracy(references, predictions)  # the gate's own reading
    return GateResult(name, score.accuracy, gate, True, len(references))


def gate_table(results: Sequence[GateResult]) -> list[dict[str, Any]]:
    return [
        {"benchmark": r.name, "value": round(r.value, 4),
         "gate": "reported" if r.gate is None else ("≥ " if r.higher_is_better else "≤ ") + f"{r.gate:g}",
         "passed": r.passed, "examples": r.examples}
        for r in results
    ]
