"""The adversarial corpus, in CI: malformed audio (headers that lie, bombs, odd rates, channels and
codecs) and malformed requests against the live server. Each gets its named answer (a 4xx in
OpenAI's shape, or a 200 where decoding what is there is right), memory stays bounded, and the
server still serves afterwards.

The cases are generated here, not committed; the whole module runs in a few seconds.
"""

from __future__ import annotations

import base64
import io
import json
import time
import struct
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import soundfile as sf

from qwen_audio.serve import BackgroundServer, ServerSettings
from tests.serve_fixtures import FakeEngine, encode, wav_bytes

CHAT = "/v1/chat/completions"
TRANSCRIBE = "/v1/audio/transcriptions"
MAX_AUDIO_SECONDS = 30
RSS_BUDGET_MB = 150  # accepted audio is at most 30 s (2 MB of float32) once decoded; the bomb would be 460 MB


def riff(fmt: bytes, data: bytes, *, riff_size: int | None = None, data_size: int | None = None) -> bytes:
    body = (b"WAVEfmt " + struct.pack("<I", len(fmt)) + fmt
            + b"data" + struct.pack("<I", len(data) if data_size is None else data_size) + data)
    return b"RIFF" + struct.pack("<I", len(body) if riff_size is None else riff_size) + body


def pcm_format(tag: int = 1, channels: int = 1, rate: int = 16_000, bits: int = 16) -> bytes:
    return struct.pack("<HHIIHH", tag, channels, rate, rate * channels * bits // 8, channels * bits // 8, bits)


def silence_flac(seconds: float, rate: int = 2_000) -> bytes:
    """Silence compresses ~300:1 in FLAC; at 16 kHz float32 it would take ~140x the file's size per second."""
    return encode(np.zeros(int(seconds * rate), np.int16), "FLAC", rate)


def float_wav(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, 16_000, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def audio_corpus() -> list[tuple[str, bytes, int, str | None]]:
    """(name, file bytes, status, error code) for one audio file, sent to chat and to transcription."""
    noise = np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    return [
        ("empty file", b"", 400, "empty_audio"),
        ("RIFF magic only", b"RIFF", 400, "invalid_audio"),
        ("random bytes", noise, 400, "invalid_audio"),
        ("OGG magic, no pages", b"OggS" + bytes(2000), 400, "invalid_audio"),
        ("FLAC magic, no stream info", b"fLaC" + bytes(2000), 400, "invalid_audio"),
        ("MP3 sync words only", b"\xff\xfb\x90\x00" * 500, 400, "invalid_audio"),
        ("sample rate 1 Hz (2 KB = 1000 s)", riff(pcm_format(rate=1), bytes(2000)), 400, "invalid_audio"),
        ("sample rate 0 Hz", riff(pcm_format(rate=0), bytes(2000)), 400, "invalid_audio"),
        ("sample rate 2 MHz", riff(pcm_format(rate=2_000_000), bytes(20_000)), 400, "invalid_audio"),
        ("0 channels", riff(pcm_format(channels=0), bytes(2000)), 400, "invalid_audio"),
        ("65 channels", riff(pcm_format(channels=65), bytes(65 * 2 * 1600)), 400, "invalid_audio"),
        ("0 bits per sample", riff(pcm_format(bits=0), bytes(200)), 400, "invalid_audio"),
        ("MP3 codec tag over garbage", riff(pcm_format(tag=0x55), bytes(2000)), 400, "invalid_audio"),
        ("unknown codec tag", riff(pcm_format(tag=0x1234), bytes(2000)), 400, "invalid_audio"),
        ("FLAC bomb: 2 h of silence in 47 kB (460 MB decoded)", silence_flac(7200), 400, "audio_too_long"),
        ("40 s WAV over a 30 s limit", wav_bytes(40.0), 400, "audio_too_long"),
        ("5 ms of audio", wav_bytes(0.005), 400, "audio_too_short"),
        ("NaN samples in a float WAV", float_wav(np.full(16_000, np.nan, np.float32)), 400, "invalid_audio"),
        ("infinite samples in a float WAV", float_wav(np.full(16_000, np.inf, np.float32)), 400, "invalid_audio"),
        # Headers that claim more than the file holds: what is there is decoded, as FFmpeg does.
        ("data chunk claims 2 GB", riff(pcm_format(), bytes(3200), data_size=2**31), 200, None),
        ("RIFF size claims 4 GB", riff(pcm_format(), bytes(3200), riff_size=2**32 - 1), 200, None),
    ]


def audio_part(data: bytes, fmt: str = "wav") -> dict:
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(data).decode(), "format": fmt}}


def _json(body: object) -> dict:
    return {"content": json.dumps(body).encode(), "headers": {"content-type": "application/json"}}


def _chat(*content: object, **fields: object) -> dict:
    return _json({"messages": [{"role": "user", "content": list(content)}], **fields})


def request_corpus() -> list[tuple[str, str, dict, int, str]]:
    """(name, path, httpx keyword arguments, status, error code)."""
    hi = [{"role": "user", "content": "hi"}]
    good = wav_bytes(1.0)
    return [
        ("body is not JSON", CHAT, {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "invalid_json"),
        ("body is invalid UTF-8", CHAT, {"content": b'{"messages": "\xff"}', "headers": {"content-type": "application/json"}}, 400, "invalid_json"),
        ("body is a JSON list", CHAT, _json([hi]), 400, "invalid_json"),
        ("JSON nested 100,000 deep", CHAT, {"content": b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                                            "headers": {"content-type": "application/json"}}, 400, "invalid_json"),
        ("no messages", CHAT, _json({"messages": []}), 400, "invalid_request"),
        ("unknown role", CHAT, _json({"messages": [{"role": "wizard", "content": "hi"}]}), 400, "invalid_request"),
        ("content is a number", CHAT, _json({"messages": [{"role": "user", "content": 7}]}), 400, "invalid_request"),
        ("image part", CHAT, _chat({"type": "image_url", "image_url": {"url": "x"}}), 400, "invalid_request"),
        ("part without a type", CHAT, _chat({"text": "hi"}), 400, "invalid_request"),
        ("base64 that is not", CHAT, _chat({"type": "input_audio", "input_audio": {"data": "%%%", "format": "wav"}}), 400, "invalid_base64"),
        ("http audio_url (no fetching)", CHAT, _chat({"type": "audio_url", "audio_url": {"url": "http://169.254.169.254/x.wav"}}),
         400, "remote_url_refused"),
        ("local path, not allowed", CHAT, _chat({"type": "audio_url", "audio_url": {"url": "/etc/passwd"}}), 403, "local_files_disabled"),
        ("max_tokens 0", CHAT, _json({"messages": hi, "max_tokens": 0}), 400, "invalid_request"),
        ("max_tokens above the limit", CHAT, _json({"messages": hi, "max_tokens": 10**9}), 400, "max_tokens_too_large"),
        ("temperature NaN", CHAT, {"content": b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
                                   "headers": {"content-type": "application/json"}}, 400, "invalid_request"),
        ("temperature 1e308 squared", CHAT, {"content": b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 1e999}',
                                             "headers": {"content-type": "application/json"}}, 400, "invalid_request"),
        ("seed 2**64", CHAT, _json({"messages": hi, "seed": 2**64}), 400, "invalid_request"),
        ("text/plain body", CHAT, {"content": json.dumps({"messages": hi}).encode(), "headers": {"content-type": "text/plain"}},
         415, "unsupported_media_type"),
        ("body over the upload limit", CHAT, {"content": b" " * (2 * 1024 * 1024 + 1), "headers": {"content-type": "application/json"}},
         413, "request_too_large"),
        ("foreign Host header", CHAT, {**_json({"messages": hi}), "headers": {"content-type": "application/json", "host": "evil.example"}},
         400, "host_not_allowed"),
        ("transcription without a file", TRANSCRIBE, {"data": {"model": "x"}, "files": {"other": ("a", b"x")}}, 400, "missing_file"),
        ("transcription as JSON", TRANSCRIBE, _json({"file": "x"}), 400, "invalid_request"),
        ("transcription, bad response_format", TRANSCRIBE,
         {"data": {"model": "x", "response_format": "xml"}, "files": {"file": ("a.wav", good, "audio/wav")}}, 400, "invalid_value"),
        ("transcription, two files", TRANSCRIBE,
         {"data": {"model": "x"}, "files": [("file", ("a.wav", good, "audio/wav")), ("file", ("b.wav", good, "audio/wav"))]},
         400, "invalid_request"),
    ]


def rss_kib(field: str = "VmRSS") -> int:
    """This process' resident memory (the server runs in it), from /proc: no psutil needed."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1])


def reset_peak_rss() -> None:
    """Start VmHWM (the peak) afresh, so an earlier test's peak cannot hide this one's."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pytest.skip("/proc/self/clear_refs cannot be written: the peak memory cannot be measured")


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    settings = ServerSettings(port=0, max_audio_seconds=MAX_AUDIO_SECONDS, max_upload_bytes=2 * 1024 * 1024, batch_wait_ms=0)
    with BackgroundServer(FakeEngine(), settings) as running:
        yield running


def _check(response: httpx.Response, status: int, code: str | None) -> str | None:
    """None when the response is the expected one, else what went wrong."""
    if response.status_code != status:
        return f"{response.status_code} {response.text[:300]}"
    if code is None:
        return None
    try:
        error = response.json()["error"]
    except (ValueError, KeyError):
        return f"not OpenAI's error shape: {response.text[:300]}"
    if set(error) != {"message", "type", "param", "code"} or not error["message"] or len(error["message"]) > 400:
        return f"bad error body: {error}"
    return None if error["code"] == code else f"code {error['code']!r}: {error['message'][:200]}"


def test_malformed_audio_gets_its_named_answer_in_bounded_memory(server: BackgroundServer) -> None:
    failures = []
    corpus = audio_corpus()
    reset_peak_rss()
    before = rss_kib()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for name, data, status, code in corpus:
            chat = http.post(CHAT, json={"messages": [{"role": "user", "content": [audio_part(data)]}]})
            upload = http.post(TRANSCRIBE, data={"model": "whisper-1"}, files={"file": ("clip.wav", data, "audio/wav")})
            for route, response in (("chat", chat), ("transcription", upload)):
                if (problem := _check(response, status, code)) is not None:
                    failures.append(f"{name} ({route}): expected {status} {code}, got {problem}")
        grown_mb = (rss_kib("VmHWM") - before) / 1024
        assert http.post(CHAT, json={"messages": [{"role": "user", "content": [audio_part(wav_bytes(1.0))]}]}).status_code == 200
    assert not failures, "\n".join(failures)
    assert grown_mb < RSS_BUDGET_MB, f"the peak resident memory grew by {grown_mb:.0f} MB during the corpus"


def test_malformed_requests_get_their_named_4xx(server: BackgroundServer) -> None:
    failures = []
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for name, path, kwargs, status, code in request_corpus():
            if (problem := _check(http.post(path, **kwargs), status, code)) is not None:
                failures.append(f"{name}: expected {status} {code}, got {problem}")
        admission, deadline = server.app.state.qwen.admission, time.monotonic() + 5
        while admission.in_flight and time.monotonic() < deadline:  # a slot is given back just after the response
            time.sleep(0.01)
        assert admission.in_flight == 0
        assert http.post(CHAT, json={"messages": [{"role": "user", "content": "still there?"}]}).status_code == 200
        transcript = http.post(TRANSCRIBE, data={"model": "whisper-1"}, files={"file": ("a.wav", wav_bytes(1.0), "audio/wav")})
        assert transcript.status_code == 200 and transcript.json()["text"] == "hello world from qwen"
    assert not failures, "\n".join(failures)
