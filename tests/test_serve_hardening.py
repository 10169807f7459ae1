"""The server under hostile or careless clients: slots are never leaked, odd inputs get a named 4xx."""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import pytest

from qwen_audio.errors import ConfigError
from qwen_audio.infer.engine import ChatReply, ChatRequest, GenerationOptions, Transcript, TranscriptionRequest
from qwen_audio.serve import BackgroundServer, ServerSettings
from tests.serve_fixtures import FakeEngine, wav_bytes

CHAT = "/v1/chat/completions"
OK_MESSAGES = [{"role": "user", "content": "hi"}]


class SlowStreamEngine(FakeEngine):
    """Streams many pieces slowly (2 s), so a client can hang up in the middle of a reply."""

    def chat_streamed(self, requests: Sequence[ChatRequest], on_piece: Callable[[int, str], None]) -> list[ChatReply]:
        for number in range(200):
            time.sleep(0.01)
            for index in range(len(requests)):
                on_piece(index, f" word{number}")
        return [ChatReply("", 1, 200, "length") for _ in requests]


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


class SlowTranscriptEngine(FakeEngine):
    """Tells a transcript in many slow pieces (2 s), counting how many it told before it was stopped."""

    told, ended = 0, False

    def transcribe_streamed(self, requests: Sequence[TranscriptionRequest],
                            on_text: Callable[[int, str], None]) -> list[Transcript]:
        try:
            for number in range(200):
                time.sleep(0.01)
                for index in range(len(requests)):
                    on_text(index, f" word{number}")
                    self.told += 1
            return [Transcript("", "en", 1.0) for _ in requests]
        finally:
            self.ended = True


def test_a_streamed_transcription_dropped_by_its_client_stops_and_releases_its_slot() -> None:
    settings = ServerSettings(port=0, max_queue=1, batch_wait_ms=0)
    engine = SlowTranscriptEngine()
    with BackgroundServer(engine, settings) as server:
        admission = server.app.state.qwen.admission
        with httpx.Client(base_url=server.url, timeout=10) as http:
            files = {"file": ("a.wav", wav_bytes(1.0), "audio/wav")}
            with http.stream("POST", "/v1/audio/transcriptions", files=files, data={"stream": "true"}) as response:
                assert response.status_code == 200
                next(response.iter_raw())  # the first piece, then hang up
        assert wait_until(lambda: admission.in_flight == 0), f"{admission.in_flight} slots leaked"
        assert wait_until(lambda: engine.ended) and engine.told < 150  # stopped, not left decoding for no one
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


# --------------------------------------------------------------------------- odd requests: a named 4xx, never a 500


def zero_bit_wav() -> bytes:
    fmt = struct.pack("<HHIIHH", 1, 1, 16_000, 0, 0, 0)  # 0 bits per sample
    return b"RIFF" + struct.pack("<I", 36 + 200) + b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", 200) + bytes(200)


def many_channel_wav(channels: int = 65) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, channels, 16_000, 16_000 * 2 * channels, 2 * channels, 16)
    data = bytes(2 * channels * 1600)
    return b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data


@pytest.fixture(scope="module")
def local_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hostile")
    (folder / "loop").symlink_to(folder / "loop")
    os.mkfifo(folder / "fifo")
    return folder


def _json(body: object) -> dict:
    # ensure_ascii: a lone surrogate travels as the JSON escape \ud800, as a hostile client sends it
    return {"content": json.dumps(body).encode(), "headers": {"content-type": "application/json"}}


def _url(url: str) -> dict:
    return _json({"messages": [{"role": "user", "content": [{"type": "audio_url", "audio_url": {"url": url}}]}]})


def _odd_cases(folder: Path) -> list[tuple[str, dict, int, str, str]]:
    """(name, httpx kwargs, status, code, words the message must hold)."""
    deep = b'{"messages": [{"role": "user", "content": "hi"}], "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    return [
        ("deeply nested json", {"content": deep, "headers": {"content-type": "application/json"}}, 400, "invalid_json", "nested too deeply"),
        ("seed of 2**64", _json({"messages": OK_MESSAGES, "seed": 2**64}), 400, "invalid_request", "seed"),
        ("symlink loop", _url(str(folder / "loop")), 400, "invalid_audio_url", "cannot use the path"),
        ("5000-character path", _url(f"{folder}/{'a' * 5000}.wav"), 400, "invalid_audio_url", "cannot use the path"),
        ("lone surrogate", _url(f"{folder}/\ud800.wav"), 400, "invalid_audio_url", "cannot use the path"),
        ("fifo", _url(str(folder / "fifo")), 400, "invalid_audio_url", "not a regular file"),
        ("0-bit wav", _json({"messages": [{"role": "user", "content": [audio_part(zero_bit_wav())]}]}), 400, "invalid_audio", "cannot be decoded"),
        ("65 channels", _json({"messages": [{"role": "user", "content": [audio_part(many_channel_wav())]}]}), 400, "invalid_audio", "65 audio channels"),
        ("image part", _json({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
         400, "invalid_request", "only text and audio parts are supported"),
    ]


def test_odd_requests_get_a_named_4xx_and_the_server_keeps_serving(local_dir: Path) -> None:
    settings = ServerSettings(port=0, allow_local_files=True, allowed_local_dir=local_dir)
    failures = []
    with BackgroundServer(FakeEngine(), settings) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        for name, kwargs, status, code, words in _odd_cases(local_dir):
            response = http.post(CHAT, **kwargs)
            try:
                error = error_of(response)
                assert (response.status_code, error["code"]) == (status, code) and words in error["message"]
                assert len(error["message"]) < 400
            except (AssertionError, ValueError, KeyError):
                failures.append(f"{name}: {response.status_code} {response.text[:300]}")
        assert http.post(CHAT, json={"messages": OK_MESSAGES, "seed": 2**64 - 1}).status_code == 200
        assert http.post(CHAT, json={"messages": OK_MESSAGES}).status_code == 200
    assert not failures, "\n".join(failures)


def test_a_device_file_is_not_a_regular_file() -> None:
    with BackgroundServer(FakeEngine(), ServerSettings(port=0, allow_local_files=True)) as server:
        response = httpx.post(server.url + CHAT, timeout=10, **_url("/dev/zero"))
        assert response.status_code == 400 and "not a regular file" in error_of(response)["message"]


@pytest.mark.parametrize("field", ["max_audio_seconds", "batch_wait_ms", "body_timeout_s"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0])
def test_limits_must_be_finite_and_positive(field: str, value: float) -> None:
    # NaN passed `value <= 0` and switched the audio length check off
    with pytest.raises(ConfigError, match=field):
        ServerSettings(**{field: value})


def test_chat_takes_json_only_and_a_keyed_server_hides_its_docs() -> None:
    with BackgroundServer(FakeEngine(), ServerSettings(port=0, api_key="k")) as server:
        headers = {"authorization": "Bearer k"}
        body = json.dumps({"messages": OK_MESSAGES})
        for kind in ("text/plain", "application/x-www-form-urlencoded", None):  # what a cross-site form can send
            sent = {**headers, "content-type": kind} if kind else headers
            response = httpx.post(server.url + CHAT, content=body, headers=sent, timeout=10)
            assert response.status_code == 415 and error_of(response)["code"] == "unsupported_media_type"
        assert httpx.post(server.url + CHAT, content=body, headers={**headers, "content-type": "application/json; charset=utf-8"},
                          timeout=10).status_code == 200
        assert [httpx.get(server.url + path).status_code for path in ("/docs", "/redoc", "/openapi.json")] == [404] * 3
    with BackgroundServer(FakeEngine(), ServerSettings(port=0)) as server:
        assert httpx.get(server.url + "/docs").status_code == 200


def test_a_body_that_never_finishes_is_answered_408_and_closed() -> None:
    with BackgroundServer(FakeEngine(), ServerSettings(port=0, body_timeout_s=0.3)) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as client:
            client.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                           b"Content-Length: 1000\r\n\r\n{\"messages\": ")  # and then nothing
            started = time.monotonic()
            answer = b""
            while chunk := client.recv(4096):
                answer += chunk
            assert time.monotonic() - started < 3
        assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer
        assert httpx.post(server.url + CHAT, json={"messages": OK_MESSAGES}, timeout=10).status_code == 200


# --------------------------------------------------------------------------- options checked where they are made


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"seed": 2**64}, "seed"), ({"seed": -(2**63) - 1}, "seed"), ({"seed": 1.5}, "seed"), ({"seed": True}, "seed"),
        ({"temperature": float("nan")}, "temperature"), ({"temperature": float("inf")}, "temperature"),
        ({"temperature": -0.1}, "temperature"), ({"top_p": float("nan")}, "top_p"), ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"), ({"max_new_tokens": 0}, "max_new_tokens"), ({"max_new_tokens": 2.5}, "max_new_tokens"),
        ({"num_beams": 0}, "num_beams"),
    ],
)
def test_generation_options_refuse_what_would_fail_a_batch(fields: dict, words: str) -> None:
    # A seed ≥ 2**64 used to reach torch.manual_seed inside the batched call, failing the whole batch.
    with pytest.raises(ValueError, match=words):
        GenerationOptions(**fields)


def test_generation_options_take_torchs_whole_seed_range() -> None:
    torch = pytest.importorskip("torch")
    for seed in (-(2**63), 0, 2**63, 2**64 - 1):
        torch.manual_seed(GenerationOptions(seed=seed).seed)


# --------------------------------------------------------------------------- SIGTERM: drain, then exit 0

_SERVE_WITH_A_FAKE = """
import sys
from qwen_audio.cli import app
from qwen_audio.serve import cli as serve_cli
from tests.serve_fixtures import FakeEngine
serve_cli.load_engine = lambda model: FakeEngine(delay=float(sys.argv[1]))
app(sys.argv[2:], prog_name="qwen-audio")
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow  # a Python process that imports torch
def test_sigterm_lets_requests_in_flight_finish_and_exits_0() -> None:
    port = free_port()
    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-c", _SERVE_WITH_A_FAKE, "1.0", "serve", "--port", str(port), "--shutdown-grace", "5",
               "--log-level", "warning"]
    process = subprocess.Popen(command, cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_until(lambda: _answers(url + "/health"), timeout=20), process.stdout.read() if process.poll() is not None else ""
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pending = pool.submit(httpx.post, url + CHAT, json={"messages": OK_MESSAGES}, timeout=10)
            time.sleep(0.3)  # the request is in the engine (1 s) when the signal comes
            process.send_signal(signal.SIGTERM)
            assert pending.result().status_code == 200  # drained, not cut
        assert process.wait(timeout=10) == 0, process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_a_request_cut_at_the_end_of_the_grace_is_told_the_server_is_shutting_down() -> None:
    """A 503 naming the shutdown (the client may send it again), not a 500 "internal error (CancelledError)"."""
    server = BackgroundServer(FakeEngine(delay=3.0), ServerSettings(port=0, shutdown_grace_s=0.3, batch_wait_ms=0)).start()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.post, server.url + CHAT, json={"messages": OK_MESSAGES}, timeout=10)
        time.sleep(0.5)  # in the engine (3 s) when the server stops
        server.stop()
        response = pending.result()
    assert response.status_code == 503 and error_of(response)["code"] == "server_shutting_down"


def test_streams_cut_at_the_end_of_the_grace_release_their_slots() -> None:
    server = BackgroundServer(SlowStreamEngine(), ServerSettings(port=0, shutdown_grace_s=0.3, batch_wait_ms=0)).start()
    admission = server.app.state.qwen.admission
    with httpx.Client(base_url=server.url, timeout=10) as http:
        with http.stream("POST", CHAT, json={"messages": OK_MESSAGES, "stream": True}) as response:
            chunks = response.iter_raw()  # held: a dropped iterator closes the response (a disconnect)
            next(chunks)  # a 2 s stream is under way
            assert admission.in_flight == 1
            started = time.monotonic()
            server.stop()
            assert time.monotonic() - started < 1.5  # the grace, not the stream's 2 s
    assert admission.in_flight == 0


def test_shutdown_grace_must_be_finite_and_not_negative() -> None:
    for value in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ConfigError, match="shutdown_grace_s"):
            ServerSettings(shutdown_grace_s=value)
    assert ServerSettings(shutdown_grace_s=0).shutdown_grace_s == 0


# --------------------------------------------------------------------------- Host header (DNS rebinding)


def test_a_locally_bound_server_answers_only_to_local_host_names() -> None:
    # A page at http://evil.example:8000 whose name is re-pointed at 127.0.0.1 sends Host: evil.example:8000.
    with BackgroundServer(FakeEngine(), ServerSettings(port=0)) as server:
        def status(host: str, path: str = CHAT) -> httpx.Response:
            return httpx.post(server.url + path, json={"messages": OK_MESSAGES}, headers={"host": host}, timeout=10)

        refused = status(f"evil.example:{server.port}")
        assert refused.status_code == 400 and error_of(refused)["code"] == "host_not_allowed"
        assert "evil.example" in error_of(refused)["message"] and "--allowed-host" in error_of(refused)["message"]
        assert httpx.get(server.url + "/", headers={"host": "evil.example"}).status_code == 400  # the web UI too
        for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", "LocalHost.", f"[::1]:{server.port}"):
            assert status(host).status_code == 200, host


def test_allowed_hosts_by_bind_address_and_by_option() -> None:
    anywhere = ServerSettings(host="0.0.0.0")
    assert anywhere.host_allowed("evil.example:80") and anywhere.host_allowed("10.0.0.7")
    named = ServerSettings(host="0.0.0.0", allowed_hosts=("API.example.",))
    assert named.host_allowed("api.example:443") and not named.host_allowed("localhost") and not named.host_allowed("evil.example")
    assert ServerSettings(allowed_hosts=("*",)).host_allowed("evil.example")
    lan = ServerSettings(host="192.168.1.5")
    assert lan.host_allowed("192.168.1.5:8000") and lan.host_allowed("localhost") and not lan.host_allowed("evil.example")
    assert ServerSettings().host_allowed(None)  # HTTP/1.0 without Host: not a browser
    with pytest.raises(ConfigError, match="allowed_hosts"):
        ServerSettings(allowed_hosts=(" ",))


def test_uploads_are_admitted_before_their_bodies_are_buffered() -> None:
    # 16 stalled 24 MiB uploads used to buffer 388 MB before admission control saw any of them.
    with BackgroundServer(FakeEngine(), ServerSettings(port=0, max_queue=2)) as server:
        admission = server.app.state.qwen.admission
        stalled = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(2)]
        try:
            for client in stalled:
                client.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                               b"Content-Length: 20000000\r\n\r\n" + b" " * 65536)
            assert wait_until(lambda: admission.in_flight == 2)
            refused = httpx.post(server.url + CHAT, content=b" " * 1_000_000, headers={"content-type": "application/json"}, timeout=10)
            assert refused.status_code == 503 and error_of(refused)["code"] == "queue_full"
        finally:
            for client in stalled:
                client.close()
        assert wait_until(lambda: admission.in_flight == 0)
        assert httpx.post(server.url + CHAT, json={"messages": OK_MESSAGES}, timeout=10).status_code == 200
