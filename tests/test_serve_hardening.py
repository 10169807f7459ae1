"""The server under hostile or careless clients: slots are never leaked, odd inputs get a named 4xx."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import httpx
import pytest

from qwen_audio.infer.engine import ChatRequest
from qwen_audio.serve import BackgroundServer, ServerSettings
from tests.serve_fixtures import FakeEngine, wav_bytes

CHAT = "/v1/chat/completions"
OK_MESSAGES = [{"role": "user", "content": "hi"}]


class SlowStreamEngine(FakeEngine):
    """Streams many pieces slowly, so a client can hang up in the middle of a reply."""

    def stream_chat(self, request: ChatRequest) -> Iterator[str]:
        for number in range(200):
            time.sleep(0.01)
            yield f" word{number}"


def wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_streams_dropped_by_their_clients_release_their_slots() -> None:
    settings = ServerSettings(port=0, max_queue=2, batch_wait_ms=0)
    with BackgroundServer(SlowStreamEngine(), settings) as server:
        admission = server.app.state.qwen.admission
        for _ in range(2 * settings.max_queue):
            with httpx.Client(base_url=server.url, timeout=10) as http:
                with http.stream("POST", CHAT, json={"messages": OK_MESSAGES, "stream": True}) as response:
                    assert response.status_code == 200
                    next(response.iter_raw())  # the first chunk, then hang up mid-reply
            assert wait_until(lambda: admission.in_flight == 0), f"{admission.in_flight} slots leaked"
        for _ in range(settings.max_queue + 1):
            assert httpx.post(server.url + CHAT, json={"messages": OK_MESSAGES}, timeout=10).status_code == 200


class CountingEngine(FakeEngine):
    """Counts a prompt as its words plus 100 tokens per audio, in a context of 50 tokens."""

    context_length = 50

    def prompt_tokens(self, request: ChatRequest) -> int:
        return sum(len(turn.text.split()) for turn in request.turns) + 100 * len(request.audios)


def audio_part(data: bytes) -> dict:
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": "wav"}}


def error_of(response: httpx.Response) -> dict:
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


@pytest.mark.parametrize("stream", [False, True])
def test_prompts_longer_than_the_models_context_are_refused(stream: bool) -> None:
    engine = CountingEngine()
    with BackgroundServer(engine, ServerSettings(port=0, batch_wait_ms=0)) as server:
        def chat(*content: object) -> httpx.Response:
            message = {"role": "user", "content": list(content) if len(content) > 1 else content[0]}
            return httpx.post(server.url + CHAT, json={"messages": [message], "stream": stream}, timeout=10)

        long = chat("word " * 51)
        assert long.status_code == 400 and error_of(long)["code"] == "context_length_exceeded"
        assert "51 prompt tokens" in error_of(long)["message"] and "at most 50" in error_of(long)["message"]
        assert chat(audio_part(wav_bytes(0.5)), {"type": "text", "text": "hi"}).status_code == 400  # 101 tokens
        assert chat("word " * 50).status_code == 200
        assert engine.chat_requests and all(len(r.turns[-1].text.split()) <= 50 for r in engine.chat_requests)


def test_the_prompt_limit_can_be_set_below_the_context() -> None:
    with BackgroundServer(CountingEngine(), ServerSettings(port=0, max_prompt_tokens=5)) as server:
        response = httpx.post(server.url + CHAT, json={"messages": [{"role": "user", "content": "a b c d e f"}]}, timeout=10)
        assert response.status_code == 400 and "at most 5" in error_of(response)["message"]


def test_too_many_audio_parts_are_refused_before_any_is_decoded() -> None:
    garbage = {"type": "input_audio", "input_audio": {"data": "%%%", "format": "wav"}}  # would be invalid_base64
    with BackgroundServer(FakeEngine(), ServerSettings(port=0, max_audio_parts=2)) as server:
        messages = [{"role": "user", "content": [garbage, garbage]}, {"role": "assistant", "content": "ok"},
                    {"role": "user", "content": [garbage]}]
        response = httpx.post(server.url + CHAT, json={"messages": messages}, timeout=10)
        assert response.status_code == 400 and error_of(response)["code"] == "too_many_audios"
        assert "3 audios" in error_of(response)["message"]
