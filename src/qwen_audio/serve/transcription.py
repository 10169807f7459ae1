"""OpenAI's audio API (``/v1/audio/transcriptions`` and ``/translations``): form in, formats out.

Field names and response shapes follow OpenAI's, so its client's ``response_format`` and
``timestamp_granularities=["word"]`` behave the same against this server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.datastructures import UploadFile

from qwen_audio.infer.engine import Transcript, TranscriptionRequest
from qwen_audio.infer.exports import Segment, segments_from_words, to_srt, to_vtt
from qwen_audio.serve.inputs import APIError, decode_audio, generation_options, too_large
from qwen_audio.serve.schemas import TranscriptionSegment, VerboseTranscription, WordTiming
from qwen_audio.serve.settings import ServerSettings

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("word", "segment")


@dataclass(frozen=True)
class ParsedTranscription:
    request: TranscriptionRequest
    response_format: str
    granularities: tuple[str, ...]
    stream: bool = False  # the text as server-sent events (``streaming.open_transcript_stream``)


def _text_field(form: Any, name: str) -> str | None:
    value = form.get(name)
    if isinstance(value, UploadFile):
        raise APIError(400, f"{name} must be a text field, not a file", name, "invalid_request")
    return value.strip() if isinstance(value, str) and value.strip() else None


def _float_field(form: Any, name: str, low: float, high: float) -> float | None:
    text = _text_field(form, name)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise APIError(400, f"{name} must be a number, got {text!r}", name, "invalid_value") from None
    if not low <= value <= high:
        raise APIError(400, f"{name} must be between {low:g} and {high:g}, got {value:g}", name, "invalid_value")
    return value


async def parse_transcription_form(form: Any, settings: ServerSettings, *, translate: bool) -> ParsedTranscription:
    """Validate the fields, then decode the upload in a worker thread.

    ``model`` and ``prompt`` are accepted and ignored (one model is served; this model takes no
    text prompt). For translations, ``language`` optionally names the spoken language.
    """
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise APIError(400, "the 'file' field with the audio is required", "file", "missing_file")
    response_format = _text_field(form, "response_format") or "json"
    if response_format not in RESPONSE_FORMATS:
        raise APIError(400, f"unknown response_format {response_format!r}: use one of {', '.join(RESPONSE_FORMATS)}",
                       "response_format", "invalid_value")
    granularities = tuple(
        value.strip()
        for name in ("timestamp_granularities[]", "timestamp_granularities")
        for value in form.getlist(name)
        if isinstance(value, str) and value.strip()
    )
    for value in granularities:
        if value not in GRANULARITIES:
            raise APIError(400, f"unknown timestamp granularity {value!r}: use word or segment",
                           "timestamp_granularities", "invalid_value")
    if granularities and response_format != "verbose_json":
        raise APIError(400, "timestamp_granularities needs response_format=verbose_json",
                       "timestamp_granularities", "invalid_value")
    stream = (_text_field(form, "stream") or "false").lower()
    if stream not in ("true", "false"):
        raise APIError(400, f"stream must be true or false, got {stream!r}", "stream", "invalid_value")
    if stream == "true" and translate:
        raise APIError(400, "streaming is for transcriptions; a translation comes whole: leave stream unset",
                       "stream", "unsupported_value")
    if stream == "true" and response_format not in ("json", "text"):
        raise APIError(400, f"stream=true sends the text as events; it takes response_format json or text, "
                            f"not {response_format!r}", "response_format", "unsupported_value")
    temperature = _float_field(form, "temperature", 0.0, 1.0)
    language = _text_field(form, "language")

    data = await upload.read()
    if len(data) > settings.max_upload_bytes:
        raise too_large("the audio file", len(data), settings.max_upload_bytes)
    if not data:
        raise APIError(400, "the uploaded file is empty (0 bytes)", "file", "empty_audio")
    samples = await run_in_threadpool(decode_audio, data, settings, "file")
    # Subtitles need times, so srt/vtt ask for words too; plain text and json do not pay for them.
    want_words = "word" in granularities or response_format in ("srt", "vtt", "verbose_json")
    request = TranscriptionRequest(
        audio=samples,
        language=language,
        translate_to="en" if translate else None,
        word_timestamps=want_words,
        options=generation_options(settings, max_tokens=None, temperature=temperature),
    )
    return ParsedTranscription(request, response_format, granularities, stream == "true")


def _segments(transcript: Transcript) -> list[Segment]:
    if transcript.words:
        return segments_from_words(transcript.words)
    if not transcript.text.strip():
        return []
    return [Segment(0.0, transcript.duration, transcript.text.strip())]


def transcription_response(transcript: Transcript, parsed: ParsedTranscription, *, translate: bool) -> Response:
    fmt = parsed.response_format
    if fmt == "json":
        return JSONResponse({"text": transcript.text})
    if fmt == "text":
        return PlainTextResponse(transcript.text + "\n")
    if fmt == "srt":
        return PlainTextResponse(to_srt(_segments(transcript)), media_type="application/x-subrip")
    if fmt == "vtt":
        return PlainTextResponse(to_vtt(_segments(transcript)), media_type="text/vtt")
    # OpenAI's verbose_json always carries segments; words only when asked for.
    words = [WordTiming(word=w.word, start=w.start, end=w.end) for w in transcript.words]
    verbose = VerboseTranscription(
        task="translate" if translate else "transcribe",
        language="en" if translate else transcript.language,  # codes, as the engine gives them
        duration=transcript.duration,
        text=transcript.text,
        words=words if "word" in parsed.granularities else None,
        segments=[
            TranscriptionSegment(id=i, start=s.start, end=s.end, text=s.text) for i, s in enumerate(_segments(transcript))
        ],
    )
    return JSONResponse(verbose.model_dump(exclude_none=True))
