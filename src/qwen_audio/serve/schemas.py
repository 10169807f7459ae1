"""The OpenAI wire shapes the server reads and writes (the subset that concerns audio and chat).

Requests ignore unknown fields, as OpenAI's own server does for fields a model does not use, so
clients that send e.g. ``presence_penalty`` keep working.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Request):
    type: Literal["text"]
    text: str


class InputAudio(_Request):
    data: str  # base64 of an encoded file
    format: str = "wav"


class InputAudioPart(_Request):
    type: Literal["input_audio"]
    input_audio: InputAudio


class AudioURL(_Request):
    url: str  # data:audio/…;base64,… | file:///abs/path | /abs/path


class AudioURLPart(_Request):
    type: Literal["audio_url"]
    audio_url: AudioURL


ContentPart = Annotated[Union[TextPart, InputAudioPart, AudioURLPart], Field(discriminator="type")]


class ChatMessage(_Request):
    """One message as the HTTP request spells it (OpenAI's wire shape). Only the server's input:
    ``serve/inputs.py`` turns it into the one chat type, :class:`qwen_audio.formats.chatml.ChatTurn`."""

    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[ContentPart], None] = None


class StreamOptions(_Request):
    include_usage: bool = False


class ChatCompletionRequest(_Request):
    model: Optional[str] = None  # any name is accepted: one model is served
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    temperature: Optional[float] = Field(default=None, ge=0.0, le=2.0)
    top_p: Optional[float] = Field(default=None, gt=0.0, le=1.0)
    max_tokens: Optional[int] = Field(default=None, ge=1)
    max_completion_tokens: Optional[int] = Field(default=None, ge=1)
    seed: Optional[int] = Field(default=None, ge=-(2**63), le=2**64 - 1)  # what torch.manual_seed takes
    n: Optional[int] = Field(default=None, ge=1)


# --------------------------------------------------------------------------- responses


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class Delta(BaseModel):
    role: Optional[Literal["assistant"]] = None
    content: Optional[str] = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Optional[str] = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Optional[Usage] = None


class WordTiming(BaseModel):
    word: str
    start: float
    end: float


class TranscriptionSegment(BaseModel):
    id: int
    start: float
    end: float
    text: str


class VerboseTranscription(BaseModel):
    task: Literal["transcribe", "translate"]
    language: Optional[str]
    duration: float
    text: str
    words: Optional[list[WordTiming]] = None
    segments: list[TranscriptionSegment]


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "qwen-audio"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: Optional[str] = None
    code: Optional[str] = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
