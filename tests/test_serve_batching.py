"""The request batcher, admission and server settings, without HTTP."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from qwen_audio.errors import ConfigError
from qwen_audio.serve.batching import Admission, Batcher, QueueFullError, locked_steps
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
    doubler, lock = Doubler(), threading.Lock()
    batcher = Batcher(doubler, max_batch_size=4, wait_ms=200, engine_lock=lock)
    batcher.start()
    with lock:  # the engine is busy: all ten requests queue up meanwhile
        futures = [batcher.submit(n) for n in range(10)]
    assert [f.result(timeout=5) for f in futures] == [2 * n for n in range(10)]
    batcher.stop()
    assert doubler.calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert batcher.batch_sizes == [4, 4, 2]


def test_batcher_retries_a_failed_batch_one_by_one() -> None:
    doubler = Doubler()
    batcher = Batcher(doubler, max_batch_size=8, wait_ms=100, engine_lock=threading.Lock())
    batcher.start()
    outcomes = run_all(batcher, [1, -1, 3])
    batcher.stop()
    assert outcomes[0] == 2 and outcomes[2] == 6 and isinstance(outcomes[1], ValueError)
    assert doubler.calls[0] == [1, -1, 3] and [1] in doubler.calls and [3] in doubler.calls


def test_batcher_rejects_a_wrong_number_of_results() -> None:
    batcher = Batcher(lambda numbers: [], max_batch_size=1, wait_ms=0, engine_lock=threading.Lock())
    batcher.start()
    with pytest.raises(RuntimeError, match="0 results for 1 requests"):
        batcher.submit(5).result(timeout=5)
    batcher.stop()


def test_stopped_batcher_refuses_work() -> None:
    batcher = Batcher(Doubler(), max_batch_size=2, wait_ms=0, engine_lock=threading.Lock())
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


def test_locked_steps_returns_the_generator_value() -> None:
    def pieces():
        yield "a"
        yield "b"
        return "done"

    step = locked_steps(pieces(), threading.Lock())
    assert [step(), step(), step()] == [("a", None), ("b", None), (None, "done")]


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
