"""eval/runner.py + eval CLI: prediction strings per task, resumable runs, reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from qwen_audio.data.manifest import ManifestRecord
from qwen_audio.eval.benchmarks import get_benchmark
from qwen_audio.eval.runner import EvalSettings, prediction_text, run_benchmark, write_report
from qwen_audio.formats.tags import Task


@pytest.mark.parametrize(
    ("task", "raw", "expected"),
    [
        (Task.NOTE_PITCH, "<|midi_pitch_60|>", "60"),
        (Task.NOTE_VELOCITY, "<|midi_velocity_100|><|endoftext|>", "100"),
        (Task.NOTE_INSTRUMENT, "keyboard", "keyboard"),
        (Task.NOTE_INSTRUMENT, "<|instrument|>organ", "organ"),
        (Task.ACOUSTIC_SCENE, "park", "park"),
        (Task.SOUND_EVENT, "siren, bell", "siren, bell"),
        (Task.LANGUAGE_ID, "<|de|>", "de"),
        (Task.ASR, "hello world<|endoftext|>", "hello world"),
        (Task.SRWT, "<|0.10|>hi<|0.30|>", "<|0.10|>hi<|0.30|>"),
    ],
)
def test_prediction_text(task: Task, raw: str, expected: str) -> None:
    assert prediction_text(task, raw) == expected


class CountingApi:
    """Wraps a real QwenAudio and counts generate calls (to prove resumption skips done work)."""

    def __init__(self, api) -> None:
        self.api, self.calls = api, 0

    def generate(self, *args, **kwargs):
        self.calls += 1
        return self.api.generate(*args, **kwargs)


@pytest.fixture(scope="module")
def api(tiny_model_dir: Path):
    from qwen_audio.api import QwenAudio

    return QwenAudio.from_pretrained(tiny_model_dir)


def test_run_is_resumable_and_reports(api, tmp_path: Path) -> None:
    t = np.arange(16_000) / 16_000
    records = []
    for i in range(3):
        sf.write(tmp_path / f"{i}.wav", (0.1 * np.sin(2 * np.pi * (200 + 100 * i) * t)).astype(np.float32), 16_000)
        records.append(ManifestRecord(id=f"u{i}", audio=f"{i}.wav", task="asr", audio_language="en",
                                      text_language="en", text="hello world"))
    bench = get_benchmark("librispeech-test-clean")
    counting = CountingApi(api)
    out = tmp_path / "out"
    # Stop after the first batch (as a kill would), then resume: only the rest is decoded.
    first = run_benchmark(counting, bench, records[:2], out, EvalSettings(batch_size=2, progress=False, max_new_tokens=8), root=tmp_path)
    assert counting.calls == 1 and first.num_examples == 2
    lines = (out / "librispeech-test-clean.predictions.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["u0", "u1"]
    score = run_benchmark(counting, bench, records, out, EvalSettings(batch_size=2, progress=False, max_new_tokens=8), root=tmp_path)
    assert counting.calls == 2 and score.num_examples == 3
    assert score.metric == "wer" and score.value >= 0 and score.paper_value == 2.0
    report = write_report([score], out).read_text()
    official, lenient = score.official.value, score.lenient.value
    assert f"| librispeech-test-clean | wer | {official:.4f} | {lenient:.4f} | 2.0 | 3 |" in report
    assert "| official | lenient (not comparable with the paper) | paper |" in report
    assert "- librispeech-test-clean, official: WER, evaluate_asr.py normaliser" in report
    assert "- librispeech-test-clean, lenient: WER, Whisper EnglishTextNormalizer with its spelling map" in report
    [row] = json.loads((out / "report.json").read_text())
    assert row["scorer"] == "official" and row["ours"] == row["official"]["value"] == round(official, 4)
    assert row["lenient"]["value"] == round(lenient, 4) and row["official"]["unavailable"] is None


def test_eval_cli_needs_exactly_one_mode() -> None:
    from qwen_audio.cli import app

    result = CliRunner().invoke(app, ["eval"])
    assert result.exit_code == 1 and "exactly one" in result.output
    result = CliRunner().invoke(app, ["eval", "--task", "nope", "--data", "."])
    assert result.exit_code == 1 and "unknown benchmark" in result.output


def test_limit_takes_a_spread_subset_that_does_not_alias_periodic_data() -> None:
    from collections import Counter

    from qwen_audio.eval.runner import spread_sample

    picked = spread_sample(list(range(100)), 10)
    assert len(picked) == 10 and picked == sorted(picked)
    assert [p // 10 for p in picked] == list(range(10))  # one from each tenth of the list
    assert picked == spread_sample(list(range(100)), 10)  # the same items every run
    assert spread_sample(list(range(3)), 5) == [0, 1, 2]
    assert spread_sample(list(range(7)), None) == list(range(7))
    # A generator cycling through 4 kinds: a stride of 2 would see only 2 of them.
    kinds = Counter(k % 4 for k in spread_sample(list(range(300)), 150))
    assert set(kinds) == {0, 1, 2, 3} and min(kinds.values()) >= 20


def test_chat_accuracy_scores_the_last_reply_with_sliced_audio(api, tmp_path: Path) -> None:
    from qwen_audio.eval.metrics import normalize_label
    from qwen_audio.eval.suite import chat_accuracy

    t = np.arange(32_000) / 16_000
    sf.write(tmp_path / "a.wav", (0.1 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 16_000)
    conversation = {"id": "c0", "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": [{"type": "audio", "audio": "a.wav", "offset": 0.5, "duration": 1.0},
                                     {"type": "text", "text": "what is it?"}]},
        {"role": "assistant", "content": "a tone"}]}
    (tmp_path / "chat.jsonl").write_text(json.dumps(conversation) + "\n")
    result = chat_accuracy(api, tmp_path / "chat.jsonl", EvalSettings(batch_size=2, progress=False), tmp_path / "out")
    assert result.name == "synthetic-chat" and result.examples == 1 and result.value in (0.0, 1.0)
    [row] = [json.loads(line) for line in (tmp_path / "out" / "synthetic-chat.predictions.jsonl").read_text().splitlines()]
    assert row["id"] == "c0" and row["reference"] == "a tone" and row["kind"] is None
    assert result.value == float(normalize_label(row["prediction"]) == "a tone")  # the gate's lenient comparison


def test_suite_gates_keep_the_readings_they_were_set_on() -> None:
    """Official WER, lenient accuracy and lenient boundary error: the synthetic suite has no
    paper number, and its gates were set on these readings."""
    from qwen_audio.eval.benchmarks import score_benchmark
    from qwen_audio.eval.suite import SYNTHETIC_SUITE as SUITE
    from qwen_audio.formats.srwt import Word

    entries = {e.benchmark.name: e for e in SUITE}
    scene = entries["synthetic-scene"]
    records = [ManifestRecord(id="s", audio="a.wav", task="scene", text="city_center", labels=("city_center",))]
    score = score_benchmark(scene.benchmark, records, ["City center."])
    assert scene.value_of(score) == 1.0 and score.official.value == 0.0  # lenient headline
    asr = entries["synthetic-asr-en"]
    records = [ManifestRecord(id="a", audio="a.wav", task="asr", audio_language="en", text="Hello, world.")]
    score = score_benchmark(asr.benchmark, records, ["hello world"])
    assert asr.value_of(score) == 100.0 == score.official.value  # official: punctuation kept → 2/2
    srwt = entries["synthetic-srwt-en"]
    records = [ManifestRecord(id="w", audio="a.wav", task="srwt", audio_language="en", text="hi there",
                              words=(Word("hi", 0.2, 0.5), Word("there", 0.5, 0.9)))]
    score = score_benchmark(srwt.benchmark, records, ["<|0.20|>hi<|0.50|><|0.50|> there<|0.94|>"])
    assert srwt.value_of(score) == pytest.approx(score.details.aas / 2)


@pytest.mark.slow
def test_eval_cli_prints_the_official_figure_and_the_lenient_one_labelled(tiny_model_dir: Path, tmp_path: Path) -> None:
    from qwen_audio.cli import app
    from qwen_audio.data.manifest import write_manifest

    t = np.arange(8_000) / 16_000
    sf.write(tmp_path / "a.wav", (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16_000)
    write_manifest([ManifestRecord(id="1", audio="a.wav", task="scene", text="Bus", labels=("Bus",))],
                   tmp_path / "m.jsonl")
    result = CliRunner().invoke(app, ["eval", "--task", "cochlscene", "--data", str(tmp_path / "m.jsonl"),
                                      "--model", str(tiny_model_dir), "--output", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "cochlscene: accuracy official = " in result.output and "(paper: 0.795)" in result.output
    assert "lenient, not comparable with the paper: " in result.output
    [row] = json.loads((tmp_path / "out" / "report.json").read_text())
    assert row["official"]["method"] == "exact string match (sklearn accuracy_score)"


def test_a_caption_names_its_source_only_with_every_word_of_a_label() -> None:
    from qwen_audio.eval.suite import names_source

    assert names_source("A snare drum is hit once.", ["snare drum"])
    assert names_source("someone strikes a tom-tom drum", ["tom-tom drum"])
    assert not names_source("a drum is hit", ["snare drum"])
    assert not names_source("a snarer drumming", ["snare drum"])  # whole words only
    assert names_source("a single soft note played on a keyboard instrument", ["guitar", "keyboard"])


def test_world_suite_scores_asr_audio_as_language_id_and_gates_only_what_the_issue_gates(tmp_path: Path) -> None:
    from qwen_audio.data.manifest import write_manifest
    from qwen_audio.eval.suite import WORLD_SUITE, GateResult, gate_table

    entries = {e.benchmark.name: e for e in WORLD_SUITE}
    write_manifest([ManifestRecord(id="p", audio="a.wav", task="asr", audio_language="fr", text_language="fr", text="Bonjour.")],
                   tmp_path / "m.jsonl")
    [record] = entries["world-real-language-id"].records(tmp_path / "m.jsonl")
    assert (record.task, record.text, record.audio_language, record.id) == ("language_id", "fr", "fr", "p-as-language_id")
    assert entries["world-real-asr-en"].gate == 8.0 and entries["world-real-asr-it"].gate == 15.0
    assert entries["world-open-asr-en"].gate == 10.0 and entries["world-open-asr-de"].gate is None
    assert entries["world-other-voice-asr-fr"].gate is None  # other speakers: reported (approximate references)
    rows = gate_table([GateResult("reported", 12.0, None, False, 3), GateResult("gated", 12.0, 15.0, False, 3)])
    assert [(r["gate"], r["passed"]) for r in rows] == [("reported", None), ("≤ 15", True)]


class PiecingApi:
    """A model that learned single utterances (``utterance_plan``): records what each path decoded."""

    def __init__(self) -> None:
        from qwen_audio.infer.longform import PausePlan

        self.utterance_plan, self.generated, self.transcribed = PausePlan(max_seconds=2.0), [], []
        self.speech_beams, self.beams = 3, set()

    def generate(self, prompts, audios, options):  # noqa: ANN001, ANN201
        from qwen_audio.api import Generated

        self.generated += [a[0].size for a in audios]
        return [Generated("whole", 1, 1, True, (1,)) for _ in prompts]

    def transcribe_waves(self, waves, language, word_timestamps, options):  # noqa: ANN001, ANN201
        from qwen_audio.infer.engine import Transcript

        self.transcribed += [(w.size, language) for w in waves]
        self.beams.add(options.num_beams)
        return [Transcript("pieced", language, w.size / 16_000) for w in waves]

    def detect_language(self, audios):  # noqa: ANN001, ANN201
        self.detected = [(wave.size, rate) for wave, rate in audios]
        return ["it" for _ in audios]


def test_speech_is_transcribed_as_users_get_it(tmp_path: Path) -> None:
    """A model with ``utterance_seconds`` has its speech records transcribed by the API's transcribe
    (long audio in pieces, a length-bound budget, loops decoded again, the model's beams), batched by language; other
    tasks decode whole with the benchmark's prompt."""
    records = []
    for i, (seconds, task) in enumerate([(1.0, "asr"), (3.0, "asr"), (3.0, "sound_event"), (2.0, "asr")]):
        sf.write(tmp_path / f"{i}.wav", np.zeros(int(16_000 * seconds), np.float32), 16_000)
        records.append(ManifestRecord(id=f"u{i}", audio=f"{i}.wav", task=task, audio_language="es" if task == "asr" else "unknown",
                                      text_language="es", text="x"))
    api = PiecingApi()
    run_benchmark(api, get_benchmark("librispeech-test-clean"), records, tmp_path / "out",
                  EvalSettings(batch_size=4, progress=False, max_new_tokens=8), root=tmp_path)
    assert api.transcribed == [(16_000, "es"), (48_000, "es"), (32_000, "es")] and api.generated == [48_000]
    assert api.beams == {3}  # the model's own speech decode, as `qwen-audio transcribe` runs it
    lines = [json.loads(line) for line in (tmp_path / "out" / "librispeech-test-clean.predictions.jsonl").read_text().splitlines()]
    assert [(row["id"], row["raw"]) for row in lines] == [("u0", "pieced"), ("u1", "pieced"), ("u2", "whole"), ("u3", "pieced")]


def test_language_is_identified_as_users_get_it(tmp_path: Path) -> None:
    """Such a model's language-ID records are scored through ``detect_language``, which ``transcribe``
    without a language uses; the benchmark's one decode of the LID prompt would miss its checks."""
    sf.write(tmp_path / "a.wav", np.zeros(16_000, np.float32), 16_000)
    records = [ManifestRecord(id="l0", audio="a.wav", task="language_id", audio_language="it", text="it")]
    api = PiecingApi()
    score = run_benchmark(api, get_benchmark("librispeech-test-clean"), records, tmp_path / "out",
                          EvalSettings(progress=False), root=tmp_path)
    assert api.detected == [(16_000, 16_000)] and api.generated == [] and api.transcribed == []
    lines = [json.loads(line) for line in (tmp_path / "out" / "librispeech-test-clean.predictions.jsonl").read_text().splitlines()]
    assert [(row["id"], row["raw"], row["prediction"]) for row in lines] == [("l0", "<|it|>", "it")]
    assert score.num_examples == 1
