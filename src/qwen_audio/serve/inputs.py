"""OpenAI requests → engine requests: audio decoding, the local-file policy, generation options.

Everything here raises :class:`APIError` with the HTTP status and OpenAI error fields the client
should see, so the endpoints stay free of validation code.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np

from qwen_audio.audio import SAMPLE_RATE, load_audio, min_audio_samples
from qwen_audio.errors import (
    AudioError,
    AudioFileNotFoundError,
    AudioTooLongError,
    EmptyAudioError,
)
from qwen_audio.formats.chatml import DEFAULT_SYSTEM, AudioItem, ChatItem, ChatTurn, TextItem
from qwen_audio.infer.engine import ChatRequest, GenerationOptions
from qwen_audio.serve.schemas import AudioURLPart, ChatCompletionRequest, InputAudioPart, TextPart
from qwen_audio.serve.settings import ServerSettings

# What ``input_audio.format`` may say. Decoding sniffs the bytes, so the name is only checked for
# being an audio format at all: a typo such as "wva" is a client bug worth reporting.
AUDIO_FORMATS = frozenset(
    "wav wave mp3 mpeg mpga flac ogg oga opus webm m4a mp4 aac aiff aif caf wma amr".split()
)


@dataclass
class APIError(Exception):
    """A request the server refuses, in OpenAI's error shape."""

    status: int
    message: str
    param: str | None = None
    code: str | None = None
    type: str = "invalid_request_error"

    def __str__(self) -> str:
        return self.message


def too_large(what: str, size: int, limit: int) -> APIError:
    return APIError(413, f"{what} is {size:,} bytes; this server accepts at most {limit:,}", code="request_too_large")


def decode_base64(data: str, settings: ServerSettings, param: str) -> bytes:
    try:
        raw = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, "audio data is not valid base64", param, "invalid_base64") from None
    if not raw:
        raise APIError(400, "the audio is empty (0 bytes)", param, "empty_audio")
    if len(raw) > settings.max_upload_bytes:
        raise too_large("the audio", len(raw), settings.max_upload_bytes)
    return raw


def decode_audio(source: bytes | Path, settings: ServerSettings, param: str) -> np.ndarray:
    """Encoded bytes or an already-vetted path → 16 kHz mono float32, within the duration limit."""
    try:
        samples = load_audio(source, max_duration=settings.max_audio_seconds)
    except AudioTooLongError as error:
        raise APIError(400, str(error), param, "audio_too_long") from None
    except EmptyAudioError as error:
        raise APIError(400, str(error), param, "empty_audio") from None
    except AudioFileNotFoundError as error:
        raise APIError(400, str(error), param, "audio_not_found") from None
    except AudioError as error:
        raise APIError(400, str(error), param, "invalid_audio") from None
    if not np.isfinite(samples).all():  # NaN in the features makes every reply garbage, silently
        raise APIError(400, "the audio holds NaN or infinite samples", param, "invalid_audio")
    if samples.size < min_audio_samples():
        raise APIError(
            400,
            f"the audio lasts {samples.size / SAMPLE_RATE * 1000:.0f} ms; at least "
            f"{min_audio_samples() / SAMPLE_RATE * 1000:.0f} ms are needed",
            param,
            "audio_too_short",
        )
    return samples


def local_audio_path(text: str, settings: ServerSettings, param: str) -> Path:
    """A client-named file, only when the operator allowed it, and never outside the allowed folder."""
    if not settings.allow_local_files:
        raise APIError(
            403,
            "local file paths are refused by this server; send the audio as input_audio (base64) or a "
            "data: URL, or start the server with --allow-local-files --allowed-local-dir DIR",
            param,
            "local_files_disabled",
            "permission_error",
        )
    shown = _quoted(text)
    if "\x00" in text or not Path(text).is_absolute():
        raise APIError(400, f"a local audio path must be absolute, got {shown}", param, "invalid_audio_url")
    try:
        # Hostile names fail here in several ways: a symlink loop (RuntimeError), a name too long
        # (OSError), a lone surrogate that no file system encoding takes (UnicodeEncodeError).
        resolved = Path(text).resolve()  # follows symlinks and "..": what is checked is what is read
        folder = settings.allowed_local_dir
        if folder is not None and not resolved.is_relative_to(folder):
            raise APIError(403, f"{shown} is outside the folder this server may read", param, "path_not_allowed", "permission_error")
        if not resolved.exists():
            raise APIError(400, f"{shown}: no such audio file", param, "audio_not_found")
        if not resolved.is_file():  # /dev/zero, a folder, a FIFO: never read
            raise APIError(400, f"{shown} is not a regular file", param, "invalid_audio_url")
        size = resolved.stat().st_size
    except (OSError, RuntimeError, ValueError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        raise APIError(400, f"cannot use the path {shown} ({reason})", param, "invalid_audio_url") from None
    if size > settings.max_upload_bytes:
        raise too_large(f"the file {text}", size, settings.max_upload_bytes)
    return resolved


def _quoted(text: str, limit: int = 100) -> str:
    """A client's string for an error message: quoted, escaped (a lone surrogate cannot be sent as
    UTF-8) and cut short (a 5,000-character path need not come back whole)."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


def audio_url_source(url: str, settings: ServerSettings, param: str) -> bytes | Path:
    """``data:`` URLs are decoded; ``file://`` URLs and absolute paths go through the local-file
    policy; http(s) is refused because the server makes no outbound requests."""
    if url.startswith("data:"):
        header, comma, payload = url[5:].partition(",")
        if not comma or not header.endswith(";base64"):
            raise APIError(400, "a data URL must be base64: data:audio/wav;base64,…", param, "invalid_audio_url")
        return decode_base64(payload, settings, param)
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https"):
        raise APIError(
            400,
            "remote audio URLs are not fetched (this server makes no outbound requests); "
            "send the audio as input_audio (base64) or a data: URL",
            param,
            "remote_url_refused",
        )
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise APIError(400, f"file URL on another host: {url!r}", param, "invalid_audio_url")
        return local_audio_path(unquote(parsed.path), settings, param)
    if not parsed.scheme and url.startswith("/"):
        return local_audio_path(url, settings, param)
    raise APIError(400, f"unsupported audio_url {url[:80]!r}: use a data: URL, file:// URL or absolute path", param, "invalid_audio_url")


def generation_options(
    settings: ServerSettings,
    *,
    max_tokens: int | None,
    temperature: float | None,
    top_p: float | None = None,
    seed: int | None = None,
    max_tokens_param: str = "max_tokens",
) -> GenerationOptions:
    """OpenAI sampling fields → options. Unset temperature means greedy (this model's best),
    not OpenAI's default of 1."""
    if max_tokens is not None and max_tokens > settings.max_new_tokens:
        raise APIError(
            400,
            f"{max_tokens_param}={max_tokens} is above this server's limit of {settings.max_new_tokens}",
            max_tokens_param,
            "max_tokens_too_large",
        )
    try:
        return GenerationOptions(
            max_new_tokens=max_tokens or settings.max_new_tokens,
            temperature=temperature or 0.0,
            top_p=top_p or 1.0,
            seed=seed,
        )
    except ValueError as error:  # the options' own check, behind the schema's: a 400, never a failed batch
        raise APIError(400, str(error), code="invalid_request") from None


def _text_only(content: object, param: str, role: str) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        raise APIError(400, f"a {role} message needs content", param, "missing_content")
    texts = []
    for number, part in enumerate(content):  # type: ignore[union-attr]
        if not isinstance(part, TextPart):
            raise APIError(400, f"{role} messages may hold text only", f"{param}.{number}", "unsupported_content")
        texts.append(part.text)
    return "".join(texts)


def build_chat_request(body: ChatCompletionRequest, settings: ServerSettings) -> ChatRequest:
    """Decode every audio part and map the conversation to typed turns (runs in a worker thread:
    decoding is CPU work)."""
    if body.n not in (None, 1):
        raise APIError(400, "only n=1 is supported", "n", "unsupported_value")
    parts = sum(isinstance(part, (InputAudioPart, AudioURLPart))
                for message in body.messages if isinstance(message.content, list) for part in message.content)
    if parts > settings.max_audio_parts:
        raise APIError(400, f"the messages hold {parts} audios; this server accepts at most {settings.max_audio_parts} per request",
                       "messages", "too_many_audios")
    systems: list[str] = []
    turns: list[ChatTurn] = []
    audios: dict[str, np.ndarray] = {}
    for index, message in enumerate(body.messages):
        param = f"messages.{index}.content"
        if message.role in ("system", "developer"):
            systems.append(_text_only(message.content, param, message.role))
        elif message.role == "assistant":
            turns.append(ChatTurn.assistant(_text_only(message.content, param, "assistant")))
        else:
            turns.append(ChatTurn("user", _user_items(message.content, settings, param, audios)))
    if not turns or turns[-1].role != "user":
        raise APIError(400, "the last message must be from the user", "messages", "invalid_messages")
    options = generation_options(
        settings,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        max_tokens_param="max_completion_tokens" if body.max_completion_tokens else "max_tokens",
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
    )
    system = "\n".join(systems) if systems else DEFAULT_SYSTEM
    return ChatRequest(turns=tuple(turns), audios=audios, system=system, options=options)


def check_prompt_length(engine: object, request: ChatRequest, limit: int | None) -> None:
    """Refuse a prompt longer than ``limit`` tokens before it queues for the model, when the engine
    can count them (``prompt_tokens(request)``; the model engine can, test fakes need not)."""
    count = getattr(engine, "prompt_tokens", None)
    if limit is None or count is None:
        return
    tokens = count(request)
    if tokens > limit:
        raise APIError(400, f"the messages come to {tokens:,} prompt tokens; this server accepts at most {limit:,}: "
                       "shorten the conversation or send fewer or shorter audios", "messages", "context_length_exceeded")


def _user_items(content: object, settings: ServerSettings, param: str, audios: dict[str, np.ndarray]) -> tuple[ChatItem, ...]:
    if isinstance(content, str):
        return (TextItem(content),)
    if not content:
        raise APIError(400, "a user message needs content", param, "missing_content")
    items: list[ChatItem] = []
    for number, part in enumerate(content):  # type: ignore[arg-type]
        where = f"{param}.{number}"
        if isinstance(part, TextPart):
            items.append(TextItem(part.text))
            continue
        if isinstance(part, InputAudioPart):
            if part.input_audio.format.lower() not in AUDIO_FORMATS:
                raise APIError(
                    400,
                    f"unknown audio format {part.input_audio.format!r}: use one of {', '.join(sorted(AUDIO_FORMATS))}",
                    f"{where}.input_audio.format",
                    "invalid_audio_format",
                )
            source: bytes | Path = decode_base64(part.input_audio.data, settings, f"{where}.input_audio.data")
        else:
            assert isinstance(part, AudioURLPart)
            source = audio_url_source(part.audio_url.url, settings, f"{where}.audio_url.url")
        key = f"audio{len(audios) + 1}"  # numbering over the conversation, as ChatML's "Audio k:"
        audios[key] = decode_audio(source, settings, where)
        items.append(AudioItem(key))
    return tuple(items)
