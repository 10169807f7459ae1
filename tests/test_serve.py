"""The OpenAI-compatible server, driven by the real ``openai`` client over loopback, on a fake engine."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from qwen_audio.formats.chatml import AudioItem
from qwen_audio.serve import BackgroundServer, ServerSettings
from tests.serve_fixtures import BAD_LANGUAGE, CRASH_TEXT, FakeEngine, encode, tone, wav_bytes

MAX_UPLOAD = 400_000
MAX_SECONDS = 5.0
MAX_TOKENS = 64


@pytest.fixture(scope="module")
def allowed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("serve_files")
    (root / "allowed").mkdir()
    (root / "allowed" / "clip.wav").write_bytes(wav_bytes(0.75))
    (root / "secret.wav").write_bytes(wav_bytes(0.5))
    (root / "allowed" / "link.wav").symlink_to(root / "secret.wav")
    return root / "allowed"


@pytest.fixture(scope="module")
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture(scope="module")
def server(engine: FakeEngine, allowed_dir: Path) -> Iterator[BackgroundServer]:
    settings = ServerSettings(
        port=0, max_upload_bytes=MAX_UPLOAD, max_audio_seconds=MAX_SECONDS, max_new_tokens=MAX_TOKENS,
        batch_wait_ms=2, allow_local_files=True, allowed_local_dir=allowed_dir,
    )
    with BackgroundServer(engine, settings) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: BackgroundServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=10)


def audio_part(data: bytes, fmt: str = "wav") -> dict:
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": fmt}}


def url_part(url: str) -> dict:
    return {"type": "audio_url", "audio_url": {"url": url}}


def user(*parts: object) -> dict:
    return {"role": "user", "content": [{"type": "text", "text": p} if isinstance(p, str) else p for p in parts]}


# --------------------------------------------------------------------------- happy paths


def test_health_and_models(server: BackgroundServer, client: openai.OpenAI) -> None:
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    assert [m.id for m in client.models.list().data] == [FakeEngine.model_id]
    assert client.models.retrieve(FakeEngine.model_id).id == FakeEngine.model_id
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-nonexistent")


def test_chat_text_only(client: openai.OpenAI, engine: FakeEngine) -> None:
    reply = client.chat.completions.create(model="anything", messages=[{"role": "user", "content": "hello"}])
    assert reply.choices[0].message.content == "echo: hello | audios=0 [] | turns=1"
    assert reply.model == FakeEngine.model_id and reply.choices[0].finish_reason == "stop"
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens == 1 + 7
    options = engine.chat_requests[-1].options
    assert (options.temperature, options.top_p, options.max_new_tokens) == (0.0, 1.0, MAX_TOKENS)


def test_chat_one_audio(client: openai.OpenAI, engine: FakeEngine) -> None:
    reply = client.chat.completions.create(model="m", messages=[user(audio_part(wav_bytes(1.5)), "what is it?")])
    assert reply.choices[0].message.content == "echo: what is it? | audios=1 [1.50] | turns=1"
    request = engine.chat_requests[-1]
    assert request.turns[0].items[0] == AudioItem("audio1") and request.audios["audio1"].shape == (24_000,)


def test_chat_two_audios_multi_turn(client: openai.OpenAI, engine: FakeEngine) -> None:
    flac_url = "data:audio/flac;base64," + base64.b64encode(encode(tone(0.5), "FLAC")).decode()
    messages = [
        {"role": "system", "content": "Be brief."},
        user(audio_part(wav_bytes(1.0)), "first?"),
        {"role": "assistant", "content": "a tone"},
        user(url_part(flac_url), "and the second?"),
    ]
    reply = client.chat.completions.create(model="m", messages=messages)
    assert reply.choices[0].message.content == "echo: and the second? | audios=2 [1.00,0.50] | turns=3"
    request = engine.chat_requests[-1]
    assert request.system == "Be brief."
    assert [t.role for t in request.turns] == ["user", "assistant", "user"]
    assert request.turns[2].audio_paths == ["audio2"]


def test_chat_options_are_mapped(client: openai.OpenAI, engine: FakeEngine) -> None:
    reply = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], temperature=0.7, top_p=0.9, max_tokens=3, seed=5
    )
    options = engine.chat_requests[-1].options
    assert (options.temperature, options.top_p, options.max_new_tokens, options.seed) == (0.7, 0.9, 3, 5)
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 3


def test_chat_stream(client: openai.OpenAI) -> None:
    messages = [user(audio_part(wav_bytes(0.5)), "stream me")]
    chunks = list(client.chat.completions.create(
        model="m", messages=messages, stream=True, stream_options={"include_usage": True}
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: stream me | audios=1 [0.50] | turns=1"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == len(text.split(" "))


def test_local_file_inside_allowed_dir(client: openai.OpenAI, allowed_dir: Path) -> None:
    for url in (str(allowed_dir / "clip.wav"), (allowed_dir / "clip.wav").as_uri()):
        reply = client.chat.completions.create(model="m", messages=[user(url_part(url), "local")])
        assert "audios=1 [0.75]" in reply.choices[0].message.content


def test_transcription_word_timestamps(client: openai.OpenAI, engine: FakeEngine) -> None:
    result = client.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", wav_bytes(2.0)), language="en",
        response_format="verbose_json", timestamp_granularities=["word"],
    )
    assert result.text == "hello world from qwen" and result.duration == 2.0 and result.language == "en"
    assert [(w.word, w.start, w.end) for w in result.words] == [
        ("hello", 0.0, 0.4), ("world", 0.5, 0.9), ("from", 1.0, 1.4), ("qwen", 1.5, 1.9)
    ]
    assert result.segments[0].start == 0.0 and result.segments[0].end == 1.9
    request = engine.transcription_requests[-1]
    assert request.word_timestamps and request.language == "en" and request.translate_to is None


def test_a_greedy_transcription_runs_the_engines_own_speech_decode(client: openai.OpenAI, engine: FakeEngine,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav_bytes(1.0)))
    assert engine.transcription_requests[-1].options.num_beams == 1  # an engine that names no beams: greedy
    monkeypatch.setattr(engine, "speech_beams", 4, raising=False)
    client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav_bytes(1.0)))
    assert engine.transcription_requests[-1].options.num_beams == 4
    client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav_bytes(1.0)), temperature=0.7)
    sampled = engine.transcription_requests[-1].options
    assert sampled.num_beams == 1 and sampled.temperature == 0.7  # a sampled request samples
    client.audio.translations.create(model="whisper-1", file=("a.wav", wav_bytes(1.0)))
    assert engine.transcription_requests[-1].options.num_beams == 1  # translation keeps the greedy decode


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("text", "hello world from qwen"),
        ("srt", "1\n00:00:00,000 --> 00:00:01,900\nhello world from qwen\n\n"),
        ("vtt", "WEBVTT\n\n00:00.000 --> 00:01.900\nhello world from qwen\n\n"),
    ],
)
def test_transcription_text_formats(client: openai.OpenAI, fmt: str, expected: str) -> None:
    result = client.audio.transcriptions.create(model="whisper-1", file=("a.flac", encode(tone(2.0), "FLAC")), response_format=fmt)
    assert result.strip() == expected.strip() and (fmt == "text" or result == expected)


def test_transcription_json_and_verbose_without_words(server: BackgroundServer, engine: FakeEngine) -> None:
    files = {"file": ("a.ogg", encode(tone(1.0), "OGG"), "audio/ogg")}
    plain = httpx.post(server.url + "/v1/audio/transcriptions", files=files, data={"model": "x"})
    assert plain.json() == {"text": "hello world from qwen"} and not engine.transcription_requests[-1].word_timestamps
    verbose = httpx.post(server.url + "/v1/audio/transcriptions", files=files, data={"response_format": "verbose_json"})
    assert verbose.status_code == 200 and "words" not in verbose.json() and verbose.json()["task"] == "transcribe"


def test_a_streamed_transcription_sends_openais_text_events(client: openai.OpenAI, engine: FakeEngine) -> None:
    """``stream=true``: ``transcript.text.delta`` events as the transcript grows, then
    ``transcript.text.done`` with the whole text, read by OpenAI's own client."""
    events = list(client.audio.transcriptions.create(model="gpt-4o-transcribe", file=("a.wav", wav_bytes(2.0)),
                                                     language="en", stream=True))
    assert [e.type for e in events] == ["transcript.text.delta"] * 4 + ["transcript.text.done"]
    assert [e.delta for e in events[:-1]] == ["hello", " world", " from", " qwen"]
    assert events[-1].text == "hello world from qwen"
    assert engine.transcription_requests[-1].language == "en" and not engine.transcription_requests[-1].word_timestamps
    with pytest.raises(openai.APIError, match="unknown language"):  # the headers are sent: the error comes in-band
        list(client.audio.transcriptions.create(model="m", file=("a.wav", wav_bytes(1.0)), language=BAD_LANGUAGE, stream=True))


def test_an_engine_that_cannot_stream_a_transcript_sends_it_in_one_piece() -> None:
    class Plain:  # only the Engine protocol: no transcribe_streamed
        def __init__(self, fake: FakeEngine) -> None:
            self.model_id, self.chat_batch, self.stream_chat = fake.model_id, fake.chat_batch, fake.stream_chat
            self.transcribe_batch = fake.transcribe_batch

    with BackgroundServer(Plain(FakeEngine()), ServerSettings(port=0, batch_wait_ms=2)) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=10)
        events = list(client.audio.transcriptions.create(model="m", file=("a.wav", wav_bytes(1.0)), stream=True))
    assert [(e.type, getattr(e, "delta", None)) for e in events] == [
        ("transcript.text.delta", "hello world from qwen"), ("transcript.text.done", None)]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the client marks translations deprecated
def test_translation(client: openai.OpenAI, engine: FakeEngine) -> None:
    result = client.audio.translations.create(model="whisper-1", file=("a.wav", wav_bytes(1.0)), response_format="verbose_json")
    assert result.text == "HELLO WORLD FROM QWEN"
    assert engine.transcription_requests[-1].translate_to == "en"


# --------------------------------------------------------------------------- bad requests

CHAT, TRANSCRIBE = "/v1/chat/completions", "/v1/audio/transcriptions"
OK_MESSAGES = [{"role": "user", "content": "hi"}]


def _chat(**fields: object) -> dict:
    return {"json": {"model": "m", "messages": OK_MESSAGES, **fields}}


def _audio_chat(data: bytes, fmt: str = "wav") -> dict:
    return {"json": {"model": "m", "messages": [user(audio_part(data, fmt), "x")]}}


def _url_chat(url: str) -> dict:
    return {"json": {"model": "m", "messages": [user(url_part(url), "x")]}}


def _upload(data: bytes, **fields: object) -> dict:
    return {"files": {"file": ("a.wav", data, "audio/wav")}, "data": fields}


def _bad_cases(allowed: Path) -> list[tuple[str, str, dict, int, str | None]]:
    """(name, path, httpx kwargs, status, code) for every refusal the server promises."""
    long_wav = encode(tone(MAX_SECONDS + 1, sr=8000), sr=8000)
    return [
        ("bad json", CHAT, {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "invalid_json"),
        ("json array", CHAT, {"json": [1, 2]}, 400, "invalid_json"),
        ("no messages", CHAT, {"json": {"model": "m"}}, 400, "invalid_request"),
        ("empty messages", CHAT, _chat(messages=[]), 400, "invalid_request"),
        ("unknown role", CHAT, _chat(messages=[{"role": "robot", "content": "x"}]), 400, "invalid_request"),
        ("image part", CHAT, _chat(messages=[user({"type": "image_url", "image_url": {"url": "x"}})]), 400, "invalid_request"),
        ("assistant last", CHAT, _chat(messages=OK_MESSAGES + [{"role": "assistant", "content": "y"}]), 400, "invalid_messages"),
        ("audio in system", CHAT, _chat(messages=[{"role": "system", "content": [audio_part(wav_bytes(1))]}] + OK_MESSAGES), 400, "unsupported_content"),
        ("bad base64", CHAT, {"json": {"messages": [user({"type": "input_audio", "input_audio": {"data": "%%%", "format": "wav"}})]}}, 400, "invalid_base64"),
        ("undecodable audio", CHAT, _audio_chat(b"this is not audio at all" * 10), 400, "invalid_audio"),
        ("empty audio", CHAT, _audio_chat(encode(np.zeros(0, np.float32))), 400, "empty_audio"),
        ("too short audio", CHAT, _audio_chat(wav_bytes(0.01)), 400, "audio_too_short"),
        ("too long audio", CHAT, _audio_chat(long_wav), 400, "audio_too_long"),
        ("unknown format", CHAT, _audio_chat(wav_bytes(1), "wva"), 400, "invalid_audio_format"),
        ("max_tokens", CHAT, _chat(max_tokens=MAX_TOKENS + 1), 400, "max_tokens_too_large"),
        ("max_completion_tokens", CHAT, _chat(max_completion_tokens=10**6), 400, "max_tokens_too_large"),
        ("n=2", CHAT, _chat(n=2), 400, "unsupported_value"),
        ("temperature", CHAT, _chat(temperature=3), 400, "invalid_request"),
        ("http url", CHAT, _url_chat("https://example.com/a.wav"), 400, "remote_url_refused"),
        ("relative path", CHAT, _url_chat("clip.wav"), 400, "invalid_audio_url"),
        ("missing local file", CHAT, _url_chat(str(allowed / "nope.wav")), 400, "audio_not_found"),
        ("outside dir", CHAT, _url_chat(str(allowed.parent / "secret.wav")), 403, "path_not_allowed"),
        ("traversal", CHAT, _url_chat(f"{allowed}/../secret.wav"), 403, "path_not_allowed"),
        ("encoded traversal", CHAT, _url_chat(f"file://{allowed}/%2E%2E/secret.wav"), 403, "path_not_allowed"),
        ("symlink out", CHAT, _url_chat(str(allowed / "link.wav")), 403, "path_not_allowed"),
        ("body too large", CHAT, {"content": b"x" * (MAX_UPLOAD + 1), "headers": {"content-type": "application/json"}}, 413, "request_too_large"),
        ("chunked too large", CHAT, {"content": iter([b"x" * 50_000] * 10), "headers": {"content-type": "application/json"}}, 413, "request_too_large"),
        ("upload too large", TRANSCRIBE, _upload(b"\0" * MAX_UPLOAD), 413, "request_too_large"),
        ("no file", TRANSCRIBE, {"data": {"model": "whisper-1"}, "files": {"other": ("x", b"y")}}, 400, "missing_file"),
        ("not multipart", TRANSCRIBE, {"json": {"file": "x"}}, 400, "invalid_request"),
        ("empty file", TRANSCRIBE, _upload(b""), 400, "empty_audio"),
        ("undecodable file", TRANSCRIBE, _upload(b"garbage" * 50), 400, "invalid_audio"),
        ("long file", TRANSCRIBE, _upload(long_wav), 400, "audio_too_long"),
        ("response_format", TRANSCRIBE, _upload(wav_bytes(1), response_format="docx"), 400, "invalid_value"),
        ("granularity", TRANSCRIBE, _upload(wav_bytes(1), response_format="verbose_json", **{"timestamp_granularities[]": "char"}), 400, "invalid_value"),
        ("granularity needs verbose", TRANSCRIBE, _upload(wav_bytes(1), **{"timestamp_granularities[]": "word"}), 400, "invalid_value"),
        ("temperature text", TRANSCRIBE, _upload(wav_bytes(1), temperature="hot"), 400, "invalid_value"),
        ("stream translation", "/v1/audio/translations", _upload(wav_bytes(1), stream="true"), 400, "unsupported_value"),
        ("stream subtitles", TRANSCRIBE, _upload(wav_bytes(1), stream="true", response_format="srt"), 400, "unsupported_value"),
        ("stream maybe", TRANSCRIBE, _upload(wav_bytes(1), stream="maybe"), 400, "invalid_value"),
        ("language refused by engine", TRANSCRIBE, _upload(wav_bytes(1), language=BAD_LANGUAGE), 400, "invalid_request"),
        ("unknown route", "/v1/embeddings", {"json": {}}, 404, "not_found"),
    ]


def test_bad_requests_get_4xx_and_server_keeps_serving(server: BackgroundServer, client: openai.OpenAI, allowed_dir: Path) -> None:
    failures = []
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for name, path, kwargs, status, code in _bad_cases(allowed_dir):
            response = http.post(path, **kwargs)
            error = response.json().get("error", {}) if response.headers.get("content-type", "").startswith("application/json") else {}
            if response.status_code != status or error.get("code") != code or not error.get("message") or set(error) != {"message", "type", "param", "code"}:
                failures.append(f"{name}: {response.status_code} {response.text[:200]}")
            good = http.post(CHAT, json={"messages": OK_MESSAGES})
            assert good.status_code == 200, f"after {name}: {good.text}"
        assert http.get(CHAT).status_code == 405
    assert not failures, "\n".join(failures)
    assert client.chat.completions.create(model="m", messages=OK_MESSAGES).choices[0].message.content.startswith("echo: hi")


def test_engine_failure_is_500_then_server_recovers(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": CRASH_TEXT}])
    with pytest.raises(openai.APIError, match="crashed mid-stream"):
        list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": CRASH_TEXT}], stream=True))
    assert client.chat.completions.create(model="m", messages=OK_MESSAGES).choices[0].finish_reason == "stop"


# --------------------------------------------------------------------------- settings that change behaviour


def test_api_key_and_local_files_refused_by_default() -> None:
    settings = ServerSettings(port=0, api_key="s3cret")
    with BackgroundServer(FakeEngine(), settings) as server:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0).models.list()
        assert httpx.post(server.url + CHAT, json={"messages": OK_MESSAGES}).status_code == 401
        assert httpx.get(server.url + "/health").status_code == 200  # probes and the page need no key
        assert httpx.get(server.url + "/").status_code == 200
        good = openai.OpenAI(base_url=server.url + "/v1", api_key="s3cret", max_retries=0)
        assert good.chat.completions.create(model="m", messages=OK_MESSAGES).choices[0].message.content
        for url in ("/etc/hostname", "file:///etc/hostname"):
            with pytest.raises(openai.PermissionDeniedError, match="local file paths are refused"):
                good.chat.completions.create(model="m", messages=[user(url_part(url), "x")])


def test_concurrent_clients_are_batched() -> None:
    engine = FakeEngine(delay=0.05)
    settings = ServerSettings(port=0, max_batch_size=8, batch_wait_ms=40)
    clients, answers, errors = 16, {}, []
    barrier = threading.Barrier(clients)
    with BackgroundServer(engine, settings) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=20)

        def ask(number: int) -> None:
            try:
                messages = [user(audio_part(wav_bytes(0.1 * (number + 1))), f"client {number}")]
                barrier.wait(timeout=10)
                answers[number] = client.chat.completions.create(model="m", messages=messages).choices[0].message.content
            except Exception as error:  # noqa: BLE001 - reported below
                errors.append(repr(error))

        threads = [threading.Thread(target=ask, args=(n,)) for n in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert not errors
    assert answers == {n: f"echo: client {n} | audios=1 [{0.1 * (n + 1):.2f}] | turns=1" for n in range(clients)}
    sizes = engine.batch_sizes("chat")
    assert sum(sizes) == clients and max(sizes) > 1 and max(sizes) <= 8


def test_one_bad_input_fails_only_its_request_in_a_batch() -> None:
    engine = FakeEngine(delay=0.05)
    # A batch of exactly three closes as soon as all three arrive (a long wait bound only matters
    # on a loaded machine, where the requests may take a while to get in).
    with BackgroundServer(engine, ServerSettings(port=0, batch_wait_ms=5000, max_batch_size=3)) as server:
        results: dict[str, int] = {}

        def post(language: str) -> None:
            data = {"language": language}
            response = httpx.post(server.url + TRANSCRIBE, files={"file": ("a.wav", wav_bytes(0.5))}, data=data, timeout=10)
            results[language] = response.status_code

        threads = [threading.Thread(target=post, args=(lang,)) for lang in ("en", BAD_LANGUAGE, "de")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)
    assert results == {"en": 200, BAD_LANGUAGE: 400, "de": 200}
    assert engine.batch_sizes("transcribe")[0] == 3  # batched together, then retried one by one


def test_full_queue_answers_503() -> None:
    gate = threading.Event()
    engine = FakeEngine(gate=gate)
    settings = ServerSettings(port=0, max_queue=2, max_batch_size=1, batch_wait_ms=0)
    with BackgroundServer(engine, settings) as server:
        statuses: list[int] = []
        threads = [
            threading.Thread(target=lambda: statuses.append(httpx.post(server.url + CHAT, json={"messages": OK_MESSAGES}, timeout=20).status_code))
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        admission = server.app.state.qwen.admission
        deadline = time.monotonic() + 10
        while admission.in_flight < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        refused = httpx.post(server.url + CHAT, json={"messages": OK_MESSAGES}, timeout=10)
        gate.set()
        for thread in threads:
            thread.join(timeout=20)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "queue_full"
        assert refused.headers["retry-after"] == "1"
        assert statuses == [200, 200]
        assert httpx.post(server.url + CHAT, json={"messages": OK_MESSAGES}, timeout=10).status_code == 200
