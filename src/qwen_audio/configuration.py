"""Model configuration: the Whisper encoder's sizes plus the Qwen decoder's, validated at construction.

``QwenAudioConfig`` subclasses transformers' ``Qwen2Config`` on purpose: the decoder *is* a Qwen2
stack (Qwen v1 with QKV bias and untied embeddings is exactly Qwen2), so every field transformers'
Qwen2 blocks, ``generate``, PEFT and accelerate read is already there under its usual name. Note
``intermediate_size`` therefore follows transformers' meaning, the width of *one* SwiGLU branch:
the official Qwen config's 22016 is two branches of 11008, so the paper preset says 11008 (the
official converter in ``checkpoints.py`` halves/doubles it).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from transformers import Qwen2Config

from qwen_audio.errors import ConfigError


@dataclass(frozen=True)
class AudioEncoderConfig:
    """Whisper encoder sizes, in openai-whisper's names (those of the official ``"audio"`` dict)."""

    n_mels: int = 80
    n_ctx: int = 1500  # positions after the stride-2 conv: 30 s of 20 ms frames
    n_state: int = 1280
    n_head: int = 20
    n_layer: int = 32
    output_dim: int = 4096  # the LLM width the projection maps to
    avg_pool: bool = True
    add_audio_bos_eos_token: bool = True

    def __post_init__(self) -> None:
        for name in ("n_mels", "n_ctx", "n_state", "n_head", "n_layer", "output_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"audio encoder `{name}` must be a positive integer, got {value!r}")
        if self.n_state % self.n_head:
            raise ConfigError(f"audio encoder n_state {self.n_state} is not divisible by n_head {self.n_head}")
        if self.n_state % 2 or self.n_state < 4:
            raise ConfigError(f"audio encoder n_state must be even and ≥ 4 (sinusoidal positions), got {self.n_state}")
        if not (self.avg_pool and self.add_audio_bos_eos_token):
            # The span arithmetic of the spec (and of audio.audio_span) assumes both, as the released models do.
            raise ConfigError("only avg_pool=True and add_audio_bos_eos_token=True (the released Qwen-Audio) are supported")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AudioEncoderConfig:
        """Read an official ``"audio"`` dict; keys that are not encoder sizes (``audio_start_id``) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class QwenAudioConfig(Qwen2Config):
    """Qwen-Audio: a Whisper encoder (``audio_config``) feeding a Qwen decoder (the Qwen2 fields).

    Token ids come from here, not from a tokenizer, so the model never depends on one:
    ``<audio>`` = ``audio_start_id``, ``</audio>`` = ``audio_start_id + 1``, audio pad =
    ``audio_pad_id``; generation stops on ``<|im_end|>`` or ``<|endoftext|>``.

    ``use_dynamic_ntk``/``use_logn_attn`` are the released model's long-context inference, applied
    here as released (``long_context.py``) in ``forward``, ``generate`` and ``fast_generate``, never
    in training. A prompt over ``seq_length`` (2048) tokens changes *every* logit (the NTK base is set
    from the prompt's length at prefill and kept while decoding); log-n scales queries past it. Up
    to ``seq_length`` both are inactive. Unlike the released batched path, a left-padded row gets
    exactly its batch-of-one result (alpha from its real length, positions counting real tokens).
    """

    model_type = "qwen_audio"

    # Qwen-7B (v1) as used by Qwen-Audio; the official config.json's values.
    vocab_size: int = 155947
    hidden_size: int = 4096
    intermediate_size: int = 11008  # one SwiGLU branch; the official file says 22016 = 2 × 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    max_position_embeddings: int = 8192
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    audio_config: dict | None = None
    audio_start_id: int = 155163
    audio_pad_id: int = 151851
    endoftext_id: int = 151643
    im_start_id: int = 151644
    im_end_id: int = 151645
    seq_length: int = 2048
    use_dynamic_ntk: bool = True
    use_logn_attn: bool = True
    # How long audio is cut (``infer/longform.py``). None: overlapping 30 s windows stitched by word
    # times, as a model trained on 30 s windows reads them. A number: the model learned single
    # utterances (the default model), so audio is split at its pauses into pieces of at most this
    # many seconds, each transcribed on its own.
    utterance_seconds: float | None = None
    # Stop ids of the pretrained LLM itself (SmolLM2's <|im_end|> and <|endoftext|>): the spec's end
    # markers copy their rows, so with tied embeddings their logits tie and a greedy step may pick
    # the base's id, which must end the reply too.
    base_stop_ids: list[int] | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        if self.rope_parameters is None and "rope_theta" not in kwargs and "rope_scaling" not in kwargs:
            self.rope_parameters = {"rope_type": "default", "rope_theta": 10000.0}
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.eos_token_id is None:  # stop on either end marker (chat turns end with <|im_end|>)
            self.eos_token_id = [self.im_end_id, self.endoftext_id]
        # pad_token_id stays None: Qwen2Model would make it the embedding's padding_idx, freezing that
        # row in training. Generation pads with <|endoftext|> through the generation config instead.
        encoder = self.audio_config
        if isinstance(encoder, AudioEncoderConfig):
            encoder = encoder.to_dict()
        self.audio_config = AudioEncoderConfig.from_dict(encoder or {}).to_dict()
        super().__post_init__(**kwargs)
        self._validate()

    # ------------------------------------------------------------------ derived values

    @property
    def audio(self) -> AudioEncoderConfig:
        """The encoder's sizes as a frozen, validated dataclass."""
        return AudioEncoderConfig.from_dict(self.audio_config or {})

    @property
    def audio_end_id(self) -> int:
        return self.audio_start_id + 1

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        return (self.im_end_id, self.endoftext_id, *(self.base_stop_ids or ()))

    def _validate(self) -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"`{name}` must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}")
        if (self.hidden_size // self.num_attention_heads) % 2:
            raise ConfigError("the attention head size must be even for rotary embeddings")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError("num_attention_heads must be a multiple of num_key_value_heads")
        if not self.rms_norm_eps > 0:
            raise ConfigError(f"rms_norm_eps must be > 0, got {self.rms_norm_eps}")
        if self.audio.output_dim != self.hidden_size:
            raise ConfigError(
                f"the audio projection width ({self.audio.output_dim}) must equal the LLM hidden_size ({self.hidden_size})"
            )
        ids = {
            "audio_start_id": self.audio_start_id,
            "audio_end_id (audio_start_id + 1)": self.audio_end_id,
            "audio_pad_id": self.audio_pad_id,
            "endoftext_id": self.endoftext_id,
            "im_start_id": self.im_start_id,
            "im_end_id": self.im_end_id,
        }
        for name, value in ids.items():
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < self.vocab_size:
                raise ConfigError(f"{name} = {value!r} is outside the vocabulary [0, {self.vocab_size})")
        audio_ids = {self.audio_start_id, self.audio_end_id, self.audio_pad_id}
        if len(audio_ids) != 3 or audio_ids & {self.endoftext_id, self.im_start_id, self.im_end_id}:
            raise ConfigError(f"audio token ids must be distinct from each other and from the chat ids: {ids}")


# --------------------------------------------------------------------------- presets

_PAPER_AUDIO = AudioEncoderConfig()  # Whisper-large-v2 encoder, projected to 4096

#: name → (encoder sizes, decoder fields). ``tiny`` is for unit tests (vocab 512, its own token ids);
#: ``small`` keeps the real vocabulary and token ids so it trains with the real tokenizer.
_PRESETS: dict[str, tuple[AudioEncoderConfig, dict[str, Any]]] = {
    "paper": (_PAPER_AUDIO, {}),
    "small": (
        AudioEncoderConfig(n_state=384, n_head=6, n_layer=4, output_dim=512),
        dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, intermediate_size=1408),
    ),
    "tiny": (
        AudioEncoderConfig(n_state=64, n_head=4, n_layer=2, output_dim=64),
        dict(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=512,
            endoftext_id=400, im_start_id=401, im_end_id=402, audio_pad_id=403, audio_start_id=510,
        ),
    ),
}


def preset_config(name: str = "paper", **overrides: Any) -> QwenAudioConfig:
    """A named size (``paper``, ``small``, ``tiny``); ``overrides`` replace any field, ``audio_config`` included."""
    if name not in _PRESETS:
        raise ConfigError(f"unknown model size {name!r}; choose one of {sorted(_PRESETS)}")
    audio, llm = _PRESETS[name]
    values: dict[str, Any] = {"audio_config": audio.to_dict(), **llm}
    audio_overrides = overrides.pop("audio_config", None)
    if audio_overrides:
        if isinstance(audio_overrides, AudioEncoderConfig):
            audio_overrides = audio_overrides.to_dict()
        values["audio_config"] = {**values["audio_config"], **audio_overrides}
    values.update(overrides)
    return QwenAudioConfig(**values)


def is_official_checkpoint(path: str | Path) -> bool:
    """A directory whose config.json is the official remote-code Qwen config with an ``"audio"`` dict.

    Here, below both the model and ``checkpoints``, so the model can name the right loader for such a
    folder without importing the loaders (which import the model)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    values = json.loads(config.read_text())
    return values.get("model_type") == "qwen" and isinstance(values.get("audio"), dict)
