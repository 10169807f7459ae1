"""The server on the real model code path (QwenAudio's Engine adapter, tiny random weights)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from qwen_audio.serve import BackgroundServer, ServerSettings
from qwen_audio.serve.cli import load_engine
from tests.serve_fixtures import wav_bytes


@pytest.fixture(scope="module")
def server(tiny_model_dir) -> Iterator[BackgroundServer]:
    engine = load_engine(str(tiny_model_dir))
    with BackgroundServer(engine, ServerSettings(port=0, max_new_tokens=8)) as running:
        yield running


def test_chat_and_transcription_through_the_model_engine(server: BackgroundServer) -> None:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    audio = {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav_bytes(1.0)).decode(), "format": "wav"}}
    reply = client.chat.completions.create(
        model="qwen-audio", max_tokens=6,
        messages=[{"role": "user", "content": [audio, {"type": "text", "text": "what is this?"}]}],
    )
    assert reply.usage.prompt_tokens > 27  # the 1 s audio alone is 27 tokens
    assert reply.usage.completion_tokens <= 6
    stream = client.chat.completions.create(
        model="qwen-audio", max_tokens=6, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": [audio, {"type": "text", "text": "what is this?"}]}],
    )
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == reply.choices[0].message.content
    assert chunks[-1].usage.prompt_tokens == reply.usage.prompt_tokens
    transcript = client.audio.transcriptions.create(
        model="qwen-audio", file=("a.wav", wav_bytes(1.0)), language="en",
        response_format="verbose_json", timestamp_granularities=["word"],
    )
    assert transcript.language == "en" and transcript.duration == pytest.approx(1.0, abs=0.01)


def test_streams_batched_together_each_stream_piece_by_piece(tiny_model_dir) -> None:
    # A batch closes when two requests are in (or after 10 s), so the two streams share one
    # batched call; each used to get its whole reply in one chunk there (ModelEngine had no
    # chat_streamed). Greedy: a reply does not depend on its batch, so the non-streamed pair is
    # the reference.
    engine = load_engine(str(tiny_model_dir))
    settings = ServerSettings(port=0, max_new_tokens=24, max_batch_size=2, batch_wait_ms=10_000)
    with BackgroundServer(engine, settings) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
        texts = ["hi", "你好世界 今天天气很好, the quick brown fox"]

        def ask(text: str, stream: bool):
            return client.chat.completions.create(model="qwen-audio", max_tokens=24, stream=stream,
                                                  messages=[{"role": "user", "content": text}])

        def reply(text: str) -> str:
            return ask(text, False).choices[0].message.content

        def pieces(text: str) -> list[str]:
            return [c.choices[0].delta.content for c in ask(text, True) if c.choices and c.choices[0].delta.content]

        with ThreadPoolExecutor(2) as pool:
            replies = list(pool.map(reply, texts))
            streamed = list(pool.map(pieces, texts))
        assert server.app.state.qwen.chat.batch_sizes == [2, 2]
        for got, expected in zip(streamed, replies):
            assert len(got) > 1 and "".join(got) == expected
