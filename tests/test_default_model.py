"""The bundled default model: small, loads, and really hears held-out synthetic speech and sounds."""

from __future__ import annotations

import random
import shutil

import numpy as np
import pytest

from qwen_audio.api import default_model_path

MODEL = default_model_path()
pytestmark = pytest.mark.skipif(
    not (MODEL / "config.json").is_file(), reason="the bundled default model is not in this checkout"
)
needs_tts = pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng is not installed (bash scripts/install-system-packages.sh installs it)",
)


@pytest.fixture(scope="module")
def api():
    from qwen_audio.api import QwenAudio

    return QwenAudio.from_pretrained()


def fresh_test_sentences(count: int, language: str = "en") -> list[tuple[str, np.ndarray]]:
    """New utterances of held-out (test split) sentences, spoken by held-out voices, clean."""
    from qwen_audio.data.synth import splits
    from qwen_audio.data.synth.plan import _voice
    from qwen_audio.data.synth.sentences import sample_sentence
    from qwen_audio.data.synth.speech import SpeechSpec, render_speech

    rng = random.Random(20261125)  # not a corpus seed: these utterances were never rendered before
    out = []
    while len(out) < count:
        sentence = sample_sentence(language, rng)
        if splits.split_of_text(sentence.text) != "test":
            continue
        spec = SpeechSpec(sentence, _voice(language, "test", rng), rng.getrandbits(32), augment=False)
        out.append((sentence.text, render_speech(spec).samples))
    return out


def test_the_shipped_weights_are_small_and_half_precision() -> None:
    from safetensors import safe_open

    size = sum(p.stat().st_size for p in MODEL.iterdir())
    assert size <= 60 * 2**20, f"{size / 2**20:.1f} MiB"
    with safe_open(str(MODEL / "model.safetensors"), "pt") as f:
        assert {str(f.get_slice(k).get_dtype()) for k in f.keys()} == {"F16"}
    assert (MODEL / "MODEL_CARD.md").is_file() and (MODEL / "qwen.tiktoken").is_file()


@needs_tts
def test_identifies_the_language_of_fresh_held_out_speech(api) -> None:
    """It hears speech: two new test-split utterances per language, far above chance (2 of 16).

    14 of 16 for this release (0.93 on the noisier held-out suite; the gate, 95 %, is missed and
    reported in the model card)."""
    from qwen_audio.tokenizer import LANGUAGES

    results = {lang: [api.detect_language((wave, 16_000)) for _, wave in fresh_test_sentences(2, lang)] for lang in LANGUAGES}
    correct = sum(got == lang for lang, answers in results.items() for got in answers)
    assert correct >= 12, results


@needs_tts
def test_transcribes_fresh_held_out_english_sentences(api) -> None:
    """Twelve new test-split sentences, new utterances by held-out voices, no language given (it
    detects English itself, as `qwen-audio transcribe FILE` does). Most come out word for word
    (7 of 12 for this release, WER 0.15: one short sentence is taken for German); a model deaf to
    the audio has a WER of 0.8–1.0."""
    from qwen_audio.eval.metrics import normalize_label, word_error_rate

    items = fresh_test_sentences(12)
    hypotheses = [api.transcribe((wave, 16_000)).text for _, wave in items]
    references = [text for text, _ in items]
    pairs = list(zip(references, hypotheses))
    assert sum(normalize_label(r) == normalize_label(h) for r, h in pairs) >= 6, pairs
    assert word_error_rate(references, hypotheses).value <= 0.25, pairs


def test_names_the_bundled_held_out_bell() -> None:
    from qwen_audio.api import QwenAudio
    from qwen_audio.cli import bundled_samples

    api = QwenAudio.from_pretrained()
    bell = next(p for p in bundled_samples() if p.name == "bell.flac")
    assert api.classify(str(bell), task="sound_event").labels == ("bell",)


@needs_tts
def test_word_timestamps_of_a_held_out_sentence_are_ordered_and_inside_the_audio(api) -> None:
    (text, wave), = fresh_test_sentences(1)
    result = api.transcribe((wave, 16_000), language="en", word_timestamps=True)
    assert result.words and result.text == " ".join(w.word for w in result.words)
    assert all(0 <= w.start <= w.end <= wave.size / 16_000 + 0.05 for w in result.words)
    assert all(a.start <= b.start for a, b in zip(result.words, result.words[1:]))


def test_demo_prints_a_transcript_with_word_times_and_a_caption() -> None:
    from typer.testing import CliRunner

    from qwen_audio.cli import app

    result = CliRunner().invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    assert "transcript:" in result.output and "caption:" in result.output and "→" in result.output


@needs_tts
def test_cli_transcribe_json_has_text_and_word_times(tmp_path) -> None:
    import json

    import soundfile as sf
    from typer.testing import CliRunner

    from qwen_audio.cli import app

    (text, wave), = fresh_test_sentences(1)
    sf.write(tmp_path / "held_out.wav", wave, 16_000)
    result = CliRunner().invoke(app, ["transcribe", str(tmp_path / "held_out.wav"), "--output-format", "json",
                                      "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "out" / "held_out.json").read_text())
    assert payload["words"] and all({"word", "start", "end"} <= set(w) for w in payload["words"])
    assert payload["text"] == " ".join(w["word"] for w in payload["words"])


@needs_tts
@pytest.mark.slow
def test_default_suite_runs_on_the_bundled_model(api, tmp_path) -> None:
    from qwen_audio.eval.runner import EvalSettings
    from qwen_audio.eval.suite import SUITE, ensure_test_split, gate_table, run_suite

    split = ensure_test_split(tmp_path / "corpus", progress=False)
    rows = gate_table(run_suite(api, split, tmp_path / "out", EvalSettings(batch_size=8, limit=12, progress=False)))
    assert [r["benchmark"] for r in rows] == [e.benchmark.name for e in SUITE] + ["synthetic-chat"]
    assert all(r["examples"] > 0 for r in rows)
    # Far above chance on every task (events 1/10, scenes 1/6, LID 1/8, instrument 1/11, pitch ≈ 1/60);
    # this release on these 12: event 1.0, scene 0.83 (of 6), LID 1.0, instrument 0.5, pitch 0.5, ASR 15 %.
    by_name = {r["benchmark"]: r["value"] for r in rows}
    assert by_name["synthetic-sound-event"] >= 0.8 and by_name["synthetic-scene"] >= 0.5, rows
    assert by_name["synthetic-language-id"] >= 0.75, rows
    assert by_name["synthetic-instrument"] >= 0.25 and by_name["synthetic-pitch"] >= 0.25, rows
    assert by_name["synthetic-asr-en"] <= 35, rows  # WER %; 9.2 on 150 held-out sentences


@needs_tts
@pytest.mark.slow
def test_serve_command_on_the_bundled_model(tmp_path) -> None:
    """The acceptance path: `qwen-audio serve`, /health, then the openai client with word times."""
    import io
    import socket
    import subprocess
    import sys
    import time

    import httpx
    import openai
    import soundfile as sf

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "qwen_audio.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, server.stderr.read()
            assert time.monotonic() < deadline, "the server did not become healthy in 120 s"
            time.sleep(0.5)
        (text, wave), = fresh_test_sentences(1)
        buffer = io.BytesIO()
        sf.write(buffer, wave, 16_000, format="WAV")
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=120)
        result = client.audio.transcriptions.create(model="qwen-audio", file=("s.wav", buffer.getvalue()),
                                                    response_format="verbose_json", timestamp_granularities=["word"])
        assert result.words and all(w.start <= w.end for w in result.words)
        assert result.text.strip()
    finally:
        server.terminate()
        server.wait(timeout=30)
