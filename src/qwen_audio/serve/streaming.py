"""Streamed chat completions and transcriptions (SSE), answered by the same batched engine calls as the others.

A streamed request is a :class:`StreamedChat` job in the chat batcher; the engine's pieces reach
the client through an asyncio queue. Each stream used to step the model alone, taking the
engine lock once per piece: at 32 clients a streamed reply took 7x a non-streamed one, and
batches waited behind the streams. Now one decoding step serves every row of a batch:

- an engine with ``chat_streamed`` (:class:`~qwen_audio.infer.engine.BatchStreamingEngine`)
  streams every row of a batch as it grows;
- otherwise a stream alone in its batch is answered by ``stream_chat`` (pieces as they come),
  and streams batched with others by ``chat_batch``, in one piece each.

A streamed transcription (``stream=true``, OpenAI's ``transcript.text.delta`` events) is a
:class:`Streamed` job in the transcription batcher: an engine with ``transcribe_streamed``
(:class:`~qwen_audio.infer.engine.TranscriptStreamingEngine`) tells long audio piece by piece,
any other sends its transcript in one piece.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, Union

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from qwen_audio.errors import QwenAudioError
from qwen_audio.infer.engine import (
    BatchStreamingEngine,
    ChatReply,
    ChatRequest,
    Engine,
    Transcript,
    TranscriptionRequest,
    TranscriptStreamingEngine,
)
from qwen_audio.serve.batching import Batcher
from qwen_audio.serve.schemas import ChatCompletionChunk, ChunkChoice, Delta, ErrorDetail, Usage

log = logging.getLogger(__name__)


RequestT = TypeVar("RequestT")


@dataclass(eq=False)
class Streamed(Generic[RequestT]):
    """A request whose answer is sent piece by piece through ``emit`` (called on the batcher's thread)."""

    request: RequestT
    emit: Callable[[str | None], None]
    started: bool = False  # a piece went out: the request cannot be retried without repeating it
    abandoned: bool = False  # the client is gone: a stream answered alone stops early

    def send(self, piece: str) -> None:
        self.started = True
        self.emit(piece)


StreamedChat = Streamed[ChatRequest]
ChatJob = Union[ChatRequest, StreamedChat]
TranscriptionJob = Union[TranscriptionRequest, Streamed[TranscriptionRequest]]


class StreamsAbandoned(RuntimeError):
    """Raised from ``on_piece`` to stop a batch nobody listens to any more (clients gone, or cut
    at the end of the shutdown grace): the engine stops instead of decoding for no one."""


def _split(jobs: Sequence[Any]) -> tuple[list[Any], dict[int, Streamed[Any]]]:
    """A batch's requests, and its streamed jobs by position."""
    requests = [job.request if isinstance(job, Streamed) else job for job in jobs]
    return requests, {index: job for index, job in enumerate(jobs) if isinstance(job, Streamed)}


def _sender(streams: dict[int, Streamed[Any]], jobs: Sequence[Any]) -> Callable[[int, str], None]:
    """The ``on_piece(i, text)`` of a batched streaming call: row i's piece to its client; a batch
    of streams alone stops (``StreamsAbandoned``) once every one of its clients has gone."""
    only_streams = len(streams) == len(jobs)

    def send(index: int, piece: str) -> None:
        if index in streams:
            streams[index].send(piece)
        if only_streams and all(stream.abandoned for stream in streams.values()):
            raise StreamsAbandoned("every client of this batch has gone")

    return send


def chat_batch_runner(engine: Engine) -> Callable[[Sequence[ChatJob]], list[ChatReply]]:
    """The chat batcher's function: plain requests and streamed ones, answered together."""

    def run(jobs: Sequence[ChatJob]) -> list[ChatReply]:
        requests, streams = _split(jobs)
        if not streams:
            return engine.chat_batch(requests)
        if isinstance(engine, BatchStreamingEngine):
            return engine.chat_streamed(requests, _sender(streams, jobs))
        if len(jobs) == 1:
            return [_stream_alone(engine, streams[0])]
        replies = engine.chat_batch(requests)
        for index, stream in streams.items():
            stream.send(replies[index].text)
        return replies

    return run


def _stream_alone(engine: Engine, job: StreamedChat) -> ChatReply:
    pieces: list[str] = []
    stream = engine.stream_chat(job.request)
    try:
        while not job.abandoned:
            try:
                piece = next(stream)
            except StopIteration as stop:  # the generator's return value: usage and finish reason
                if isinstance(stop.value, ChatReply):
                    return stop.value
                break
            pieces.append(piece)
            job.send(piece)
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    return ChatReply("".join(pieces), 0, len(pieces))


def transcribe_batch_runner(engine: Engine) -> Callable[[Sequence[TranscriptionJob]], list[Transcript]]:
    """The transcription batcher's function: plain requests and streamed ones, answered together."""

    def run(jobs: Sequence[TranscriptionJob]) -> list[Transcript]:
        requests, streams = _split(jobs)
        if not streams:
            return engine.transcribe_batch(requests)
        if isinstance(engine, TranscriptStreamingEngine):
            return engine.transcribe_streamed(requests, _sender(streams, jobs))
        transcripts = engine.transcribe_batch(requests)
        for index, stream in streams.items():
            if transcripts[index].text:
                stream.send(transcripts[index].text)
        return transcripts

    return run


def can_retry(job: Any) -> bool:
    return not (isinstance(job, Streamed) and (job.started or job.abandoned))


def open_stream(batcher: Batcher[ChatJob, ChatReply], request: ChatRequest, *, model_id: str,
                include_usage: bool) -> AbandonableStream:
    """Queue ``request`` as a streamed job, answered as server-sent events."""
    job, future, pieces = _submitted(batcher, request)
    return AbandonableStream(_sse_events(future, pieces, model_id, include_usage), job, future)


def open_transcript_stream(batcher: Batcher[TranscriptionJob, Transcript],
                           request: TranscriptionRequest) -> AbandonableStream:
    """Queue ``request`` as a streamed transcription, answered as OpenAI's transcription events:
    ``transcript.text.delta`` pieces, then ``transcript.text.done`` with the whole text."""
    job, future, pieces = _submitted(batcher, request)
    return AbandonableStream(_transcript_events(future, pieces), job, future)


def _submitted(batcher: Batcher[Any, Any], request: Any) -> tuple[Streamed[Any], Future[Any], asyncio.Queue[str | None]]:
    """``request`` queued as a :class:`Streamed` job whose pieces reach the event loop through the
    returned queue, closed by None once the job is done (failed or cancelled too)."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[str | None] = asyncio.Queue()

    def emit(piece: str | None) -> None:
        try:
            loop.call_soon_threadsafe(pieces.put_nowait, piece)
        except RuntimeError:  # the event loop is closed (the server stopped): nobody is listening
            pass

    job = Streamed(request, emit)
    future = batcher.submit(job)
    future.add_done_callback(lambda _: emit(None))  # after every piece: same thread, same order
    return job, future, pieces


async def _transcript_events(future: Future[Transcript], pieces: asyncio.Queue[str | None]) -> AsyncIterator[str]:
    try:
        while (piece := await pieces.get()) is not None:
            if piece:
                yield _sse({"type": "transcript.text.delta", "delta": piece})
        yield _sse({"type": "transcript.text.done", "text": future.result().text})
    except Exception as error:  # noqa: BLE001 - headers are sent: report in-band
        yield _error_event(error, "streamed transcription")


def _error_event(error: Exception, what: str) -> str:
    """A stream's failure after its headers went out, logged and sent in-band in OpenAI's error shape."""
    log.exception("%s failed", what)
    kind = "invalid_request_error" if isinstance(error, QwenAudioError) else "server_error"
    return _sse({"error": ErrorDetail(message=f"{type(error).__name__}: {error}", type=kind).model_dump()})


def _sse(payload: dict[str, Any] | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)}\n\n"


async def _sse_events(future: Future[ChatReply], pieces: asyncio.Queue[str | None], model_id: str,
                      include_usage: bool) -> AsyncIterator[str]:
    """OpenAI's chunk sequence: a role delta, content deltas, a finish delta, [usage], [DONE]."""
    base = dict(id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=model_id)

    def chunk(**fields: Any) -> str:
        return _sse(ChatCompletionChunk(**base, **fields).model_dump(exclude_none=True))

    try:
        yield chunk(choices=[ChunkChoice(delta=Delta(role="assistant", content=""))])
        while (piece := await pieces.get()) is not None:
            if piece:
                yield chunk(choices=[ChunkChoice(delta=Delta(content=piece))])
        reply = future.result()  # done: the sentinel comes from its done callback
        yield chunk(choices=[ChunkChoice(delta=Delta(), finish_reason=reply.finish_reason)])
        if include_usage:
            usage = Usage(prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
                          total_tokens=reply.prompt_tokens + reply.completion_tokens)
            yield chunk(choices=[], usage=usage)
    except Exception as error:  # noqa: BLE001 - headers are sent: report in-band, as OpenAI does
        yield _error_event(error, "streamed chat")
    yield _sse("[DONE]")


class AbandonableStream(StreamingResponse):
    """A streamed answer that tells its job however it ends: finished, failed, cut by a client that
    hung up, or cut at the end of the shutdown grace (the admission slot is the RequestGuard's).

    The cleanup lives here, around the whole response, not in the event generator's ``finally``:
    on a disconnect Starlette cancels the response task, which cancels any ``await`` in that
    ``finally``, and a generator cancelled before its first chunk never runs its ``finally`` at all.
    """

    def __init__(self, events: AsyncIterator[str], job: Streamed[Any], future: Future[Any]) -> None:
        super().__init__(events, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._job, self._future = job, future

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:  # synchronous: nothing can cancel it
            self._job.abandoned = True
            self._future.cancel()  # still queued: dropped unrun; running: its batch finishes or stops
