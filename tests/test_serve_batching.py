"""The request batcher, admission and server settings, without HTTP."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from qwen_audio.errors import ConfigError
from qwen_audio.serve.batching import ENGINE_THREAD, Admission, Batcher, EngineThread, QueueFullError
from qwen_audio.serve.settings import ServerSettings


class Doubler:
    """Doubles numbers; a negative one fails the whole call (like a bad input in a real batch)."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    def __call__(self, numbers: Sequence[int]) -> list[int]:
        self.calls.append(list(numbers))
        if any(n < 0 for n in numbers):
            raise ValueError(f"negative input in {list(numbers)}")
        return [2 * n for n in numbers]


def run_all(batcher: Batcher, inputs: list[int]) -> list[object]:
    """Each input's result, or the exception it raised."""
    futures = [batcher.submit(n) for n in inputs]
    outcomes: list[object] = []
    for future in futures:
        try:
            outcomes.append(future.result(timeout=5))
        except ValueError as error:
            outcomes.append(error)
    return outcomes


def test_batcher_groups_queued_requests_up_to_the_limit() -> None:
    doubler, engine, free = Doubler(), EngineThread(), threading.Event()
    batcher = Batcher(doubler, max_batch_size=4, wait_ms=200, engine_thread=engine)
    batcher.start()
    busy = engine.submit(free.wait)  # the engine is busy: all ten requests queue up meanwhile
    futures = [batcher.submit(n) for n in range(10)]
    free.set()
    assert busy.result(timeout=5) and [f.result(timeout=5) for f in futures] == [2 * n for n in range(10)]
    batcher.stop()
    assert doubler.calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert batcher.batch_sizes == [4, 4, 2]


def test_batcher_retries_a_failed_batch_one_by_one() -> None:
    doubler = Doubler()
    batcher = Batcher(doubler, max_batch_size=8, wait_ms=100, engine_thread=EngineThread())
    batcher.start()
    outcomes = run_all(batcher, [1, -1, 3])
    batcher.stop()
    assert outcomes[0] == 2 and outcomes[2] == 6 and isinstance(outcomes[1], ValueError)
    assert doubler.calls[0] == [1, -1, 3] and [1] in doubler.calls and [3] in doubler.calls


def test_batcher_rejects_a_wrong_number_of_results() -> None:
    batcher = Batcher(lambda numbers: [], max_batch_size=1, wait_ms=0, engine_thread=EngineThread())
    batcher.start()
    with pytest.raises(RuntimeError, match="0 results for 1 requests"):
        batcher.submit(5).result(timeout=5)
    batcher.stop()


def test_stopped_batcher_refuses_work() -> None:
    batcher = Batcher(Doubler(), max_batch_size=2, wait_ms=0, engine_thread=EngineThread())
    with pytest.raises(RuntimeError, match="not running"):
        batcher.submit(1)


def test_admission_limit() -> None:
    admission = Admission(2)
    admission.acquire()
    admission.acquire()
    with pytest.raises(QueueFullError):
        admission.acquire()
    admission.release()
    admission.acquire()
    assert admission.in_flight == 2


@pytest.mark.parametrize(
    "fields",
    [{"port": 70000}, {"max_queue": 0}, {"max_batch_size": 0}, {"max_audio_seconds": 0}, {"batch_wait_ms": -1},
     {"api_key": " "}, {"max_upload_bytes": 0}],
)
def test_settings_refuse_bad_values(fields: dict) -> None:
    with pytest.raises(ConfigError):
        ServerSettings(**fields)


def test_settings_local_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="allow_local_files"):
        ServerSettings(allowed_local_dir=tmp_path)
    with pytest.raises(ConfigError, match="not a directory"):
        ServerSettings(allow_local_files=True, allowed_local_dir=tmp_path / "missing")
    settings = ServerSettings(allow_local_files=True, allowed_local_dir=tmp_path / "." / "")
    assert settings.allowed_local_dir == tmp_path.resolve()


# --------------------------------------------------------------------------- streams share the batched path


def test_concurrent_streams_take_about_the_time_of_one() -> None:
    """Streamed chats used to take the engine lock once per piece, one stream at a time: at 32
    clients a streamed reply took 7x a non-streamed one. Now they are batched like the rest."""
    import httpx

    from qwen_audio.serve import BackgroundServer
    from tests.serve_fixtures import FakeEngine

    engine = FakeEngine(token_delay=0.03)  # 12 words a reply: ~0.36 s per stream, alone or in a batch
    body = {"messages": [{"role": "user", "content": "a b c d e"}], "stream": True}

    def stream() -> tuple[float, str]:
        started, text = time.monotonic(), ""
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=30) as response:
            for line in response.iter_lines():
                if line.startswith("data: {") and '"content"' in line:
                    text += json.loads(line[6:])["choices"][0]["delta"]["content"]
        return time.monotonic() - started, text

    # a wait long enough that all eight make one batch on a busy machine
    with BackgroundServer(engine, ServerSettings(port=0, max_batch_size=8, batch_wait_ms=200)) as server:
        alone, expected = stream()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: stream(), range(8)))
    assert all(text == expected == "echo: a b c d e | audios=0 [] | turns=1" for _, text in results)
    slowest = max(seconds for seconds, _ in results)
    assert slowest < 2 * alone, f"8 streams: slowest {slowest:.2f} s, one alone {alone:.2f} s"


class StreamOnlyEngine:
    """An engine without ``chat_streamed``: only the protocol's ``chat_batch`` and ``stream_chat``."""

    def __init__(self, fake) -> None:  # noqa: ANN001 - a FakeEngine
        self.fake, self.model_id = fake, fake.model_id
        self.chat_batch, self.stream_chat, self.transcribe_batch = fake.chat_batch, fake.stream_chat, fake.transcribe_batch


def test_without_batched_streaming_a_lone_stream_uses_stream_chat_and_company_uses_chat() -> None:
    import httpx

    from qwen_audio.serve import BackgroundServer
    from tests.serve_fixtures import FakeEngine

    fake = FakeEngine(token_delay=0.01)
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}

    def contents() -> list[str]:
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=30) as response:
            return [json.loads(line[6:])["choices"][0]["delta"].get("content") for line in response.iter_lines()
                    if line.startswith("data: {") and '"content"' in line]

    with BackgroundServer(StreamOnlyEngine(fake), ServerSettings(port=0, batch_wait_ms=300)) as server:
        assert contents() == ["", "echo:", " hi", " |", " audios=0", " []", " |", " turns=1"]  # piece by piece
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            together = list(pool.map(lambda _: contents(), range(3)))
    assert together == [["", "echo: hi | audios=0 [] | turns=1"]] * 3  # one batched call, one piece each
    assert fake.calls == [("stream_chat", 1), ("chat", 3)]


def test_the_model_is_loaded_and_every_request_decoded_on_one_thread() -> None:
    """PyTorch runs a thread's CPU ops on that thread's own team: with a second team alive (the model
    loaded on the main thread, decoded on a batcher's), every op ran at about one core's speed. So the
    server loads and decodes on ``ENGINE_THREAD``: chats, streamed chats, transcriptions, streamed ones."""
    import httpx

    from qwen_audio.serve import BackgroundServer
    from tests.serve_fixtures import FakeEngine, wav_bytes

    class ThreadNoting(FakeEngine):
        def __init__(self) -> None:
            super().__init__()
            self.threads = {"load": threading.get_ident()}

        def __getattribute__(self, name: str):  # noqa: ANN204
            if name in ("chat_batch", "chat_streamed", "transcribe_batch", "transcribe_streamed"):
                object.__getattribute__(self, "threads")[name] = threading.get_ident()
            return object.__getattribute__(self, name)

    engine = ENGINE_THREAD.call(ThreadNoting)
    upload = {"files": {"file": ("a.wav", wav_bytes(1.0), "audio/wav")}}
    with BackgroundServer(engine, ServerSettings(port=0, batch_wait_ms=0)) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        for stream in (False, True):
            assert http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "stream": stream}).status_code == 200
            assert http.post("/v1/audio/transcriptions", data={"stream": str(stream).lower()}, **upload).status_code == 200
    assert set(engine.threads) == {"load", "chat_batch", "chat_streamed", "transcribe_batch", "transcribe_streamed"}
    assert set(engine.threads.values()) == {engine.threads["load"]} != {threading.get_ident()}


def test_a_decode_running_at_exit_does_not_hold_the_process() -> None:
    """SIGTERM's grace ends with the process: a long transcription still on the engine thread must not
    keep it alive (the thread is a daemon, as the batchers' are)."""
    import subprocess
    import sys

    code = ("import time; from qwen_audio.serve.batching import ENGINE_THREAD; "
            "ENGINE_THREAD.submit(time.sleep, 60); time.sleep(0.2); print('exiting')")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=50)
    assert done.returncode == 0 and "exiting" in done.stdout and time.monotonic() - started < 30
