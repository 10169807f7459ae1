"""The server under hostile or careless clients: slots are never leaked, odd inputs get a named 4xx."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx

from qwen_audio.infer.engine import ChatRequest
from qwen_audio.serve import BackgroundServer, ServerSettings
from tests.serve_fixtures import FakeEngine

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
