"""The OpenAI-compatible HTTP API over any :class:`~qwen_audio.infer.engine.Engine`.

Endpoints: ``POST /v1/chat/completions`` (JSON or SSE), ``POST /v1/audio/transcriptions`` and
``/v1/audio/translations`` (multipart, as OpenAI's audio API), ``GET /v1/models``, ``GET /health``
and the web UI at ``/``. One model is served: any ``model`` name is accepted and answered as the
engine's ``model_id`` (clients written for OpenAI send names such as ``whisper-1``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qwen_audio.errors import QwenAudioError
from qwen_audio.infer.engine import ChatReply, Engine, Transcript
from qwen_audio.serve.batching import ENGINE_THREAD, Admission, Batcher, QueueFullError
from qwen_audio.serve.inputs import APIError, build_chat_request, check_prompt_length, too_large
from qwen_audio.serve.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    ErrorDetail,
    ErrorResponse,
    ModelCard,
    ModelList,
    Usage,
)
from qwen_audio.serve.settings import ServerSettings
from qwen_audio.serve.streaming import (
    ChatJob,
    TranscriptionJob,
    can_retry,
    chat_batch_runner,
    open_stream,
    open_transcript_stream,
    transcribe_batch_runner,
)
from qwen_audio.serve.transcription import parse_transcription_form, transcription_response
from qwen_audio.serve.webui import mount_webui

log = logging.getLogger(__name__)
T = TypeVar("T")


def error_response(status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                   code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorResponse(error=ErrorDetail(message=message, type=type, param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


class RequestGuard:
    """Host, API key, size and admission checks before any parsing: a refused upload is never
    decoded, and never even buffered.

    A request to the API (a POST under ``/v1``) takes its admission slot before its body is read
    and gives it back when its response has ended (a stream: on its last byte, its client's hang-up
    or the end of the shutdown grace): at most ``max_queue`` bodies are buffered at once. The body
    is read here, up to ``max_upload_bytes``, and replayed to the app, so a client that lies about
    (or omits) ``Content-Length`` is still cut off at the limit.
    """

    def __init__(self, app: ASGIApp, settings: ServerSettings, admission: Admission) -> None:
        self.app = app
        self.settings = settings
        self.admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refuse_early(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self._call_app(scope, receive, send)
            return
        if not scope["path"].startswith("/v1"):
            await self._read_body_and_call(scope, receive, send)
            return
        try:
            self.admission.acquire()
        except QueueFullError as error:
            await error_response(503, str(error), type="server_error", code="queue_full",
                                 headers={"Retry-After": "1"})(scope, receive, send)
            return
        try:
            await self._read_body_and_call(scope, receive, send)
        finally:  # synchronous: a cancellation (hang-up, shutdown) cannot skip it
            self.admission.release()

    async def _read_body_and_call(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit, body, more = self.settings.max_upload_bytes, bytearray(), True
        try:
            # A client that never finishes its body would hold its connection and buffer forever.
            async with asyncio.timeout(self.settings.body_timeout_s):
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    body += message.get("body", b"")
                    if len(body) > limit:
                        await error_response(413, str(too_large("the request body", len(body), limit)),
                                             code="request_too_large")(scope, receive, send)
                        return
                    more = message.get("more_body", False)
        except TimeoutError:
            message = f"the request body did not arrive within {self.settings.body_timeout_s:g} s"
            await error_response(408, message, code="request_timeout", headers={"Connection": "close"})(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self._call_app(scope, replay, send)

    async def _call_app(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer an unexpected failure with a 500 here rather than in Starlette's outermost
        handler, which re-raises and makes uvicorn drop the connection a client may reuse."""
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except asyncio.CancelledError:  # the shutdown grace ended with this request still running
            if started:
                raise
            message = "the server is shutting down and this request was still running when its grace ended; send it again"
            with suppress(Exception):  # a client already gone cannot be told
                await error_response(503, message, type="server_error", code="server_shutting_down",
                                     headers={"Retry-After": "5"})(scope, receive, send)
        except Exception as error:  # noqa: BLE001 - the server must keep serving
            log.exception("request failed")
            if started:
                raise
            message = f"internal error ({type(error).__name__}); see the server log"
            await error_response(500, message, type="server_error")(scope, receive, send)

    def _refuse_early(self, scope: Scope) -> Callable[[Scope, Receive, Send], Awaitable[None]] | None:
        headers = Headers(scope=scope)
        host = headers.get("host")
        if not self.settings.host_allowed(host):
            shown = repr(host[:100])
            return error_response(400, f"this server does not answer to the host name {shown}; start it with "
                                       f"--allowed-host NAME to allow a name", code="host_not_allowed")
        key = self.settings.api_key
        if key is not None and scope["path"].startswith("/v1"):
            scheme, _, token = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
                return error_response(401, "missing or incorrect API key: send 'Authorization: Bearer <key>'",
                                      code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return error_response(400, f"invalid Content-Length {length!r}", code="invalid_request")
            if int(length) > self.settings.max_upload_bytes:
                return error_response(413, str(too_large("the request body", int(length), self.settings.max_upload_bytes)),
                                      code="request_too_large")
        return None


class ServerState:
    """The engine, the batchers (their calls run on ``ENGINE_THREAD``) and the admission count of one app."""

    def __init__(self, engine: Engine, settings: ServerSettings) -> None:
        self.engine, self.settings = engine, settings
        self.admission = Admission(settings.max_queue)
        self.max_prompt_tokens = settings.max_prompt_tokens or getattr(engine, "context_length", None)
        common = dict(max_batch_size=settings.max_batch_size, wait_ms=settings.batch_wait_ms, engine_thread=ENGINE_THREAD)
        self.chat = Batcher[ChatJob, ChatReply](chat_batch_runner(engine), name="chat-batcher", can_retry=can_retry, **common)  # type: ignore[arg-type]
        self.transcribe = Batcher[TranscriptionJob, Transcript](transcribe_batch_runner(engine), name="transcribe-batcher",  # type: ignore[arg-type]
                                                                can_retry=can_retry, **common)

    def start(self) -> None:
        self.chat.start()
        self.transcribe.start()

    def stop(self) -> None:
        self.chat.stop()
        self.transcribe.stop()

    async def run(self, batcher: Batcher[Any, T], request: Any) -> T:
        future: Future[T] = batcher.submit(request)
        try:
            return await asyncio.wrap_future(future)
        except QwenAudioError as error:  # the engine refused this input (e.g. unknown language)
            raise APIError(400, str(error), code="invalid_request") from None


def _validation_message(error: ValidationError | RequestValidationError) -> tuple[str, str | None]:
    errors = error.errors()
    # A content part of an unknown type fails both the string and the list branch of ``content``;
    # the list branch's error is the one that says what is wrong.
    first = next((e for e in errors if e["type"] in ("union_tag_invalid", "union_tag_not_found")), errors[0])
    location = [str(part) for part in first.get("loc", ()) if part != "body" and not _is_union_branch(part)]
    param = ".".join(location) or None
    message = first["msg"]
    if first["type"] == "union_tag_invalid":
        message = f"only text and audio parts are supported (type {first['ctx']['expected_tags']}), not {first['ctx']['tag']!r}"
    elif first["type"] == "union_tag_not_found":
        message = "a content part needs a 'type': 'text', 'input_audio' or 'audio_url'"
    return (f"{param}: {message}" if param else message), param


def _is_union_branch(part: object) -> bool:
    """pydantic names the branch of a union in an error's location ('str', 'list[tagged-union[…]]')."""
    return isinstance(part, str) and (part == "str" or "[" in part)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(_: Request, error: APIError) -> JSONResponse:
        return error_response(error.status, error.message, type=error.type, param=error.param, code=error.code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(error)  # FastAPI says 422; OpenAI clients expect 400
        return error_response(400, message, param=param, code="invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if error.status_code == 404 else None
        return error_response(error.status_code, str(error.detail), code=code, headers=error.headers)




def create_app(engine: Engine, settings: ServerSettings | None = None) -> FastAPI:
    """A FastAPI app serving ``engine``; its batching workers run while the app's lifespan does."""
    settings = settings or ServerSettings()
    state = ServerState(engine, settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state.start()
        try:
            yield
        finally:
            await run_in_threadpool(state.stop)

    # With an API key the interactive docs go too: /docs would show every route to anyone.
    docs = {} if settings.api_key is None else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title="qwen-audio", summary="OpenAI-compatible audio chat and transcription", lifespan=lifespan, **docs)
    app.state.qwen = state
    app.add_middleware(RequestGuard, settings=settings, admission=state.admission)
    _install_error_handlers(app)
    created = int(time.time())

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "model": engine.model_id}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return ModelList(data=[ModelCard(id=engine.model_id, created=created)]).model_dump()

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> dict[str, Any]:
        if model_id != engine.model_id:
            raise APIError(404, f"model {model_id!r} is not served here; this server serves {engine.model_id!r}",
                           "model", "model_not_found")
        return ModelCard(id=engine.model_id, created=created).model_dump()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        # A browser sends text/plain across sites without asking (no CORS preflight): JSON only.
        if request.headers.get("content-type", "").partition(";")[0].strip().lower() != "application/json":
            raise APIError(415, "send the messages as JSON with 'Content-Type: application/json'", code="unsupported_media_type")
        body = _parse_chat_body(await request.body())
        chat_request = await run_in_threadpool(build_chat_request, body, settings)
        await run_in_threadpool(check_prompt_length, engine, chat_request, state.max_prompt_tokens)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return open_stream(state.chat, chat_request, model_id=engine.model_id, include_usage=include_usage)
        reply = await state.run(state.chat, chat_request)
        completion = ChatCompletion(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=engine.model_id,
            choices=[Choice(message=AssistantMessage(content=reply.text), finish_reason=reply.finish_reason)],
            usage=Usage(prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
                        total_tokens=reply.prompt_tokens + reply.completion_tokens),
        )
        return JSONResponse(completion.model_dump())

    async def audio_endpoint(request: Request, translate: bool) -> Response:
        form = await _read_form(request)
        parsed = await parse_transcription_form(form, settings, translate=translate)
        request = parsed.request
        if not translate and request.options.temperature == 0:  # greedy asked (or nothing): the engine's own speech decode
            request = replace(request, options=replace(request.options, num_beams=getattr(state.engine, "speech_beams", 1)))
        if parsed.stream:
            return open_transcript_stream(state.transcribe, request)
        transcript = await state.run(state.transcribe, request)
        return transcription_response(transcript, parsed, translate=translate)

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request) -> Response:
        return await audio_endpoint(request, translate=False)

    @app.post("/v1/audio/translations")
    async def translations(request: Request) -> Response:
        return await audio_endpoint(request, translate=True)

    mount_webui(app)
    return app


def _parse_chat_body(raw: bytes) -> ChatCompletionRequest:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise APIError(400, f"the request body is not valid JSON ({error})", code="invalid_json") from None
    except RecursionError:  # the parser recurses once per level: [[[[…]]]] a few thousand deep
        raise APIError(400, "the request body's JSON is nested too deeply", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as error:
        message, param = _validation_message(error)
        raise APIError(400, message, param, "invalid_request") from None


async def _read_form(request: Request) -> Any:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise APIError(400, "send the audio as multipart/form-data with a 'file' field", "file", "invalid_request")
    try:
        return await request.form(max_files=1, max_fields=64)
    except Exception as error:  # noqa: BLE001 - python-multipart raises several unrelated types
        raise APIError(400, f"cannot parse the multipart body ({error})", code="invalid_request") from None

