"""``qwen-audio serve --engine vllm``: this package's server in front of vLLM answers as it does with its
own engine, through the same OpenAI client.

Both servers run the bundled default model (real speech, so transcripts and word times are not empty):
the built-in one in this process, the vLLM one as the README starts it (the ``qwen-audio`` command of
vLLM's environment, a subprocess). Transcriptions with word timestamps, with the language detected,
of audio past the 30 s window (windows stitched by their word times), a translation and a streamed
chat with audio must come back the same. Where vLLM is not installed, ``--engine vllm`` says how to
set its environment up, in one line.
"""

from __future__ import annotations

import importlib.util
import io
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

VLLM_MISSING = importlib.util.find_spec("vllm") is None
needs_vllm = pytest.mark.skipif(VLLM_MISSING, reason="vLLM runs in its own environment: scripts/setup-vllm-env.sh")


@pytest.mark.skipif(not VLLM_MISSING, reason="what the main environment (no vLLM) answers")
def test_engine_vllm_without_vllm_says_how_to_set_it_up() -> None:
    from typer.testing import CliRunner

    from qwen_audio.cli import app

    result = CliRunner().invoke(app, ["serve", "--engine", "vllm", "--port", "0"])

    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "setup-vllm-env.sh" in lines[0], result.output


def test_serve_help_offers_both_engines() -> None:
    from typer.testing import CliRunner

    from qwen_audio.cli import app

    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})

    assert result.exit_code == 0 and "--engine" in result.output and "--vllm-args" in result.output


@pytest.fixture(scope="module")
def builtin_server() -> Iterator[str]:
    from qwen_audio.api import QwenAudio
    from qwen_audio.serve import BackgroundServer, ServerSettings

    with BackgroundServer(QwenAudio.from_pretrained("default"), ServerSettings(port=0)) as server:
        yield server.url


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tests.vllm.servers import free_port, running

    port = free_port()
    command = [str(Path(sys.executable).with_name("qwen-audio")), "serve", "--engine", "vllm", "--port", str(port),
               "--vllm-args", "--dtype float32 --enforce-eager", "--log-level", "warning"]
    with running(command, f"http://127.0.0.1:{port}", tmp_path_factory.mktemp("serve") / "serve.log", "qwen-audio serve --engine vllm") as url:
        yield url


@pytest.fixture(scope="module")
def clients(builtin_server: str, vllm_server: str):  # noqa: ANN201
    import openai

    return [openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300) for url in (builtin_server, vllm_server)]


def flac(wave: np.ndarray) -> tuple[str, bytes]:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, wave, 16_000, format="FLAC", subtype="PCM_24")
    return "speech.flac", buffer.getvalue()


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    from qwen_audio.api import default_model_path
    from qwen_audio.audio import load_audio

    return load_audio(default_model_path().parent / "samples" / "speech_en.flac")


@needs_vllm
@pytest.mark.slow
@pytest.mark.parametrize("case", ["words", "detected-language", "past-30s"])
def test_transcription_is_the_builtin_engine_s(clients, speech: np.ndarray, case: str) -> None:  # noqa: ANN001
    wave = np.tile(speech, 6) if case == "past-30s" else speech  # 33 s of whole prompts: no word cut at the end
    language = None if case == "detected-language" else "en"
    extra = {} if language is None else {"language": language}

    builtin, vllm = (client.audio.transcriptions.create(model="qwen-audio", file=flac(wave), response_format="verbose_json",
                                                         timestamp_granularities=["word"], **extra) for client in clients)

    assert builtin.text and builtin.words, "the default model transcribes its own sample"
    # the built-in engine decodes four beams rescored by the CTC, vLLM greedily: on this clean sample both say the same
    assert vllm.text == builtin.text and vllm.language == builtin.language
    assert [w.model_dump() for w in vllm.words] == [w.model_dump() for w in builtin.words]
    if case == "past-30s":
        assert builtin.words[-1].end > 30


@needs_vllm
@pytest.mark.slow
def test_translation_is_the_builtin_engine_s(clients, speech: np.ndarray) -> None:  # noqa: ANN001
    builtin, vllm = (client.audio.translations.create(model="qwen-audio", file=flac(speech)) for client in clients)
    assert vllm.text == builtin.text


@needs_vllm
@pytest.mark.slow
def test_streamed_chat_with_audio_is_the_builtin_engine_s(clients, speech: np.ndarray) -> None:  # noqa: ANN001
    import base64

    _, data = flac(speech)
    content = [{"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": "flac"}},
               {"type": "text", "text": "What does the speaker say?"}]
    replies = []
    for client in clients:
        stream = client.chat.completions.create(model="qwen-audio", messages=[{"role": "user", "content": content}],
                                                max_tokens=24, temperature=0, stream=True)
        replies.append([chunk.choices[0].delta.content for chunk in stream if chunk.choices and chunk.choices[0].delta.content])

    builtin, vllm = replies
    assert "".join(builtin) and "".join(vllm) == "".join(builtin)
    assert len(vllm) > 1, "the reply streams in pieces"
