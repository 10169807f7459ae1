"""Group concurrent requests into one batched engine call.

A model answers 8 requests in one forward pass for little more than the cost of one, so the
server waits up to ``batch_wait_ms`` for company before calling the engine. One collecting thread per
engine method keeps the event loop free; every engine call runs on one :class:`EngineThread`, which
serialises access to the model (not assumed to be thread-safe) and keeps PyTorch fast (its docstring).
Streamed chats are batched too (``streaming.py``): a lock taken once per streamed piece let streams
starve each other and the batches.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

RequestT = TypeVar("RequestT")
ResultT = TypeVar("ResultT")
T = TypeVar("T")


class EngineThread:
    """The one thread that runs the model: loading it (``ENGINE_THREAD.call(QwenAudio.from_pretrained)``)
    and every batch, one call at a time.

    Why one thread: PyTorch's CPU ops run on a thread team (OpenMP) of the thread that calls them, and
    once a second thread holds a team, ops on a later one run at about one core's speed. The model
    loaded on the main thread and decoded on a batcher's thread (one per engine method) transcribed
    30 s of speech in 8.9 s instead of 5.4 s (2 cores; 78 s of speech through the server, 17 s instead
    of 11 s). Loading and decoding on this thread keep a single team."""

    def __init__(self, name: str = "qwen-audio-engine") -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        with self._start:  # a daemon thread, started on first use: a decode running at exit does not hold the process
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._thread.start()
        future: Future[T] = Future()
        self._jobs.put((future, fn, args, kwargs))
        return future

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` run on this thread; its result, or its exception raised here."""
        return self.submit(fn, *args, **kwargs).result()

    def _work(self) -> None:
        while True:
            future, fn, args, kwargs = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as error:  # noqa: BLE001 - raised again in the caller's thread
                future.set_exception(error)


ENGINE_THREAD = EngineThread()  # the process's: servers decode where ``serve`` loaded the model

log = logging.getLogger(__name__)


class QueueFullError(RuntimeError):
    """The server already holds ``max_queue`` requests; the client should retry later (503)."""


class Admission:
    """Counts requests admitted (waiting or running) and refuses past ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._count = 0
        self._lock = threading.Lock()

    @property
    def in_flight(self) -> int:
        return self._count

    def acquire(self) -> None:
        with self._lock:
            if self._count >= self.limit:
                raise QueueFullError(
                    f"the server is busy ({self.limit} requests queued or running); retry shortly"
                )
            self._count += 1

    def release(self) -> None:
        with self._lock:
            self._count = max(self._count - 1, 0)


@dataclass
class _Job(Generic[RequestT, ResultT]):
    request: RequestT
    future: Future[ResultT]


_STOP = object()


class Batcher(Generic[RequestT, ResultT]):
    """Collect requests for up to ``wait_ms`` or ``max_batch_size``, then call ``run_batch`` once.

    ``run_batch`` maps a list of requests to a list of results in the same order. When a batch
    raises, each request is retried alone, so that one bad input fails only its own request
    (unless ``can_retry`` says no: a stream that already sent pieces cannot take them back).
    A job whose future was cancelled while it queued (its client left) is dropped unrun.
    """

    def __init__(
        self,
        run_batch: Callable[[Sequence[RequestT]], Sequence[ResultT]],
        *,
        max_batch_size: int,
        wait_ms: float,
        engine_thread: EngineThread,
        name: str = "batcher",
        can_retry: Callable[[RequestT], bool] = lambda request: True,
    ) -> None:
        self._run_batch = run_batch
        self._can_retry = can_retry
        self.max_batch_size = max_batch_size
        self.wait_s = wait_ms / 1000.0
        self._engine_thread = engine_thread
        self._jobs: queue.Queue[object] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self.batch_sizes: list[int] = []  # history, for logs and tests

    def start(self) -> None:
        if not self._thread.is_alive():
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Finish the jobs already queued, then end the worker."""
        if self._thread.is_alive():
            self._jobs.put(_STOP)
            self._thread.join(timeout)

    def submit(self, request: RequestT) -> Future[ResultT]:
        if not self._thread.is_alive():
            raise RuntimeError("the batcher is not running (the server is starting or stopping)")
        future: Future[ResultT] = Future()
        self._jobs.put(_Job(request, future))
        return future

    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        """``first`` plus whatever arrives before the deadline; True when a stop was seen."""
        batch = [first]
        deadline = time.monotonic() + self.wait_s
        while len(batch) < self.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                job = self._jobs.get(timeout=remaining) if remaining > 0 else self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:
                return batch, True
            batch.append(job)  # type: ignore[arg-type]
        return batch, False

    def _work(self) -> None:
        stopping = False
        while not stopping:
            first = self._jobs.get()
            if first is _STOP:
                break
            batch, stopping = self._collect(first)  # type: ignore[arg-type]
            batch = [job for job in batch if job.future.set_running_or_notify_cancel()]
            if batch:
                self.batch_sizes.append(len(batch))
                self._execute(batch)
        while True:  # jobs that raced with the stop: fail them rather than leave clients waiting
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if isinstance(job, _Job) and job.future.set_running_or_notify_cancel():
                job.future.set_exception(RuntimeError("the server is shutting down"))

    def _call(self, requests: list[RequestT]) -> Sequence[ResultT]:
        results = self._engine_thread.call(self._run_batch, requests)
        if len(results) != len(requests):
            raise RuntimeError(f"the engine returned {len(results)} results for {len(requests)} requests")
        return results

    def _execute(self, batch: list[_Job]) -> None:
        try:
            results = self._call([job.request for job in batch])
        except Exception as error:  # noqa: BLE001 - every failure must reach its clients
            if len(batch) == 1:
                batch[0].future.set_exception(error)
                return
            log.warning("a batch of %d failed (%s); retrying its requests one by one", len(batch), error)
            for job in batch:
                if self._can_retry(job.request):
                    self._execute([job])
                else:
                    job.future.set_exception(error)
            return
        for job, result in zip(batch, results):
            job.future.set_result(result)

