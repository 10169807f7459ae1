"""Qwen-Audio's tokenizer: tiktoken BPE + the special tokens of the spec, in the official id order.

The ids must equal the official checkpoint's (its embedding rows are indexed by them), so the
special-token list (:mod:`qwen_audio.formats.tokens`) is the contract: never reorder it.
Audio enters the text as ``<audio>PATH</audio>``; encoding expands each span to
``<audio>`` + (N − 2) pads + ``</audio>``, N from :func:`qwen_audio.formats.spans.audio_span`.
Loading audio stays out of here: callers pass lengths (in samples at 16 kHz).
"""

from __future__ import annotations

import base64
import json
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import AbstractSet, Literal, Union

import tiktoken
from transformers import PreTrainedTokenizer

from qwen_audio.errors import TagFormatError, TokenizerError
from qwen_audio.formats.languages import LANGUAGES  # noqa: F401  (re-exported)
from qwen_audio.formats.spans import audio_span
from qwen_audio.formats.timestamps import N_TIME_TOKENS, TIME_STEP, time_token_text  # noqa: F401  (re-exported)
from qwen_audio.formats.tokens import (  # noqa: F401  (the special tokens live in formats; re-exported)
    AUDIO_END,
    AUDIO_PAD,
    AUDIO_START,
    ENDOFTEXT,
    IM_END,
    IM_START,
    N_EXTRA_TOKENS,
    SPECIAL_TOKENS,
    STARTOFTRANSCRIPT,
    STARTOFTRANSCRIPT_ALIAS,
    AudioSpanInfo,
    EncodedPrompt,
    special_token_ids,
    special_tokens,
)

VOCAB_FILE = "qwen.tiktoken"
# Qwen's pre-tokenisation regex (spec §Tokenizer): digits split one by one, contractions kept.
PAT_STR = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


# --------------------------------------------------------------------------- rank files


def load_tiktoken_ranks(path: str | os.PathLike[str]) -> dict[bytes, int]:
    """Read a ``qwen.tiktoken`` file: one ``base64(token) rank`` per line, ranks 0…n−1."""
    file = Path(path)
    if not file.is_file():
        raise TokenizerError(f"{file}: no such tokenizer file; pass the path of a qwen.tiktoken file")
    ranks: dict[bytes, int] = {}
    for number, line in enumerate(file.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError as error:
            raise TokenizerError(f"{file}:{number}: expected 'base64token rank', got {line[:60]!r}") from error
    if sorted(ranks.values()) != list(range(len(ranks))):
        # Special ids are n_ranks + i: holes or duplicates would make them collide with BPE tokens.
        raise TokenizerError(f"{file}: ranks must be unique and cover 0…{len(ranks) - 1} without gaps")
    return ranks


def write_tiktoken_ranks(ranks: Mapping[bytes, int], path: str | os.PathLike[str]) -> Path:
    """Write ranks in the ``qwen.tiktoken`` format (sorted by rank)."""
    file = Path(path)
    lines = [f"{base64.b64encode(token).decode('ascii')} {rank}" for token, rank in sorted(ranks.items(), key=lambda kv: kv[1])]
    file.write_text("\n".join(lines) + "\n", encoding="ascii")
    return file


def train_bpe_ranks(texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2) -> dict[bytes, int]:
    """Learn byte-level BPE ranks from ``texts``: the 256 bytes first (rank = byte), then merges.

    Uses the Rust trainer of the ``tokenizers`` package (a dependency of transformers, so always
    present) with Qwen's pre-tokenisation regex; a few MB of text train in about a second.
    Fewer than ``vocab_size`` ranks come back when the text supports no more merges.
    """
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    if vocab_size < 256:
        raise TokenizerError(f"vocab_size must be at least 256 (one rank per byte), got {vocab_size}")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PAT_STR), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator((unicodedata.normalize("NFC", t) for t in texts), trainer)
    to_byte = byte_level_decoder()
    ranks = {bytes([b]): b for b in range(256)}
    for merge in json.loads(bpe.to_str())["model"]["merges"]:
        left, right = merge.split(" ") if isinstance(merge, str) else merge
        token = bytes(to_byte[c] for c in left + right)
        if token not in ranks and len(ranks) < vocab_size:
            ranks[token] = len(ranks)  # merge order = rank, which is what tiktoken's greedy merging needs
    return ranks


def _byte_level_chars() -> dict[int, str]:
    """GPT-2's byte → printable character map, which ``tokenizers``' ByteLevel uses."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return chars


def byte_level_decoder() -> dict[str, int]:
    """GPT-2 byte-level character → byte (the inverse of ``_byte_level_chars``)."""
    return {char: byte for byte, char in _byte_level_chars().items()}


def build_tiktoken_file(
    texts: Iterable[str], vocab_size: int, path: str | os.PathLike[str], *, min_frequency: int = 2
) -> Path:
    """Train BPE ranks on ``texts`` and write them as a ``qwen.tiktoken`` file."""
    return write_tiktoken_ranks(train_bpe_ranks(texts, vocab_size, min_frequency=min_frequency), path)


# --------------------------------------------------------------------------- tokenizer

AudioLengths = Union[Sequence[int], Mapping[str, int], Callable[[str], int], None]
_AUDIO_SPAN = re.compile(re.escape(AUDIO_START) + "(.*?)" + re.escape(AUDIO_END), re.DOTALL)


class QwenAudioTokenizer(PreTrainedTokenizer):
    """The official tokenizer's behaviour as a transformers tokenizer (save/from_pretrained work).

    ``tokenizer(text, audio_lengths=...)`` and :meth:`encode_prompt` expand audio spans;
    :meth:`decode` takes ``audio_paths`` to restore them. Every spec token is special (ids ≥
    ``n_ranks``) and is dropped by ``skip_special_tokens``.
    """

    vocab_files_names = {"vocab_file": VOCAB_FILE}
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self, vocab_file: str | os.PathLike[str], errors: str = "replace", pat_str: str | None = None, **kwargs: object
    ) -> None:
        self.vocab_file = str(vocab_file)
        self.errors = errors
        # Qwen's regex unless the vocabulary came with its own (a GGUF base's pre-tokeniser); saved in tokenizer_config.json.
        self.pat_str = pat_str or PAT_STR
        self.mergeable_ranks = load_tiktoken_ranks(vocab_file)
        self.n_ranks = len(self.mergeable_ranks)
        self.special_tokens = special_token_ids(self.n_ranks)
        self._special_by_id = {i: t for t, i in self.special_tokens.items()}
        self._bytes_by_id = {i: t for t, i in self.mergeable_ranks.items()}
        self.encoding = tiktoken.Encoding(
            "qwen_audio", pat_str=self.pat_str, mergeable_ranks=self.mergeable_ranks, special_tokens=self.special_tokens
        )
        if pat_str:
            kwargs["pat_str"] = pat_str
        kwargs.setdefault("eos_token", ENDOFTEXT)
        kwargs.setdefault("pad_token", ENDOFTEXT)
        super().__init__(**kwargs)

    # ---- ids of the tokens the model code needs
    @property
    def eod_id(self) -> int:
        return self.special_tokens[ENDOFTEXT]

    @property
    def im_start_id(self) -> int:
        return self.special_tokens[IM_START]

    @property
    def im_end_id(self) -> int:
        return self.special_tokens[IM_END]

    @property
    def audio_start_id(self) -> int:
        return self.special_tokens[AUDIO_START]

    @property
    def audio_end_id(self) -> int:
        return self.special_tokens[AUDIO_END]

    @property
    def audio_pad_id(self) -> int:
        return self.special_tokens[AUDIO_PAD]

    @property
    def time_token_ids(self) -> range:
        """Ids of ``<|0.00|>`` … ``<|30.00|>``: id − range.start is the time in 10 ms steps."""
        first = self.special_tokens[time_token_text(0)]
        return range(first, first + N_TIME_TOKENS)

    @property
    def vocab_size(self) -> int:
        return self.n_ranks + len(self.special_tokens)

    def __len__(self) -> int:
        return self.vocab_size

    def get_vocab(self) -> dict[Union[bytes, str], int]:
        return {**self.mergeable_ranks, **self.special_tokens}

    # ---- encoding
    def encode_prompt(
        self,
        text: str,
        audio_lengths: AudioLengths = None,
        *,
        allowed_special: Union[Literal["all"], AbstractSet[str]] = "all",
    ) -> EncodedPrompt:
        """Encode ``text``, expanding each ``<audio>PATH</audio>`` to its span of pad tokens.

        ``audio_lengths`` gives each audio's length in samples at 16 kHz: a list in span order, a
        mapping path → samples, or a callable path → samples. A span whose body is already pad
        tokens (a decoded prompt) keeps its length. Other special-token strings become special
        tokens when ``allowed_special`` allows them, plain text otherwise.
        """
        ids: list[int] = []
        audios: list[AudioSpanInfo] = []
        position = 0
        for match in _AUDIO_SPAN.finditer(text):
            ids += self._encode_text(text[position : match.start()], allowed_special)
            body = match.group(1)
            if body and body.replace(AUDIO_PAD, "") == "":
                length = body.count(AUDIO_PAD) + 2
            else:
                length = audio_span(self._audio_length(body, len(audios), audio_lengths)).span_tokens
            audios.append(AudioSpanInfo(body, len(ids), length))
            ids += [self.audio_start_id, *([self.audio_pad_id] * (length - 2)), self.audio_end_id]
            position = match.end()
        ids += self._encode_text(text[position:], allowed_special)
        return EncodedPrompt(ids, tuple(audios))

    def _encode_text(self, text: str, allowed_special: Union[Literal["all"], AbstractSet[str]]) -> list[int]:
        if not text:
            return []
        allowed = set(self.special_tokens) if allowed_special == "all" else set(allowed_special)
        if STARTOFTRANSCRIPT in allowed:
            text = text.replace(STARTOFTRANSCRIPT_ALIAS, STARTOFTRANSCRIPT)
        for stray in (AUDIO_START, AUDIO_END, AUDIO_PAD):
            if stray in allowed and stray in text:
                # A lone tag or pad would desynchronise the model's audio splicing.
                # The message names the tag only: the text may hold a system prompt not meant for the user.
                raise TagFormatError(f"unpaired {stray!r} in the prompt: audio must be written <audio>PATH</audio>")
        return self.encoding.encode(unicodedata.normalize("NFC", text), allowed_special=allowed, disallowed_special=())

    def encode_plain(self, text: str) -> list[int]:
        """``text`` as plain text: a special-token string in it (``<|im_end|>``, ``<audio>``, a task
        tag) is encoded as the characters it is made of, as the official ``make_context`` encodes
        what users write (``allowed_special=set()``)."""
        return self._encode_text(text, frozenset())

    @staticmethod
    def _audio_length(path: str, index: int, audio_lengths: AudioLengths) -> int:
        try:
            if audio_lengths is None:
                raise KeyError(path)
            if callable(audio_lengths):
                return int(audio_lengths(path))
            if isinstance(audio_lengths, Mapping):
                return int(audio_lengths[path])
            return int(audio_lengths[index])
        except (KeyError, IndexError) as error:
            raise TokenizerError(
                f"no length for audio #{index + 1} ({path!r}): pass audio_lengths (samples at 16 kHz) "
                "as a list in span order, a mapping path → samples, or a callable"
            ) from error

    def tokenize(self, text: str, audio_lengths: AudioLengths = None, **kwargs: object) -> list[Union[bytes, str]]:
        """Tokens as the official tokenizer returns them: ``bytes`` for BPE, ``str`` for specials."""
        kwargs.pop("add_special_tokens", None)
        allowed = kwargs.pop("allowed_special", "all")
        ids = self.encode_prompt(text, audio_lengths, allowed_special=allowed).ids  # type: ignore[arg-type]
        return [self._convert_id_to_token(i) for i in ids]

    def convert_tokens_to_ids(self, tokens: Union[bytes, str, Sequence[Union[bytes, str]]]) -> Union[int, list[int]]:
        if isinstance(tokens, (bytes, str)):
            return self._convert_token_to_id(tokens)
        return [self._convert_token_to_id(token) for token in tokens]

    def _convert_token_to_id(self, token: Union[bytes, str]) -> int:
        if isinstance(token, str):
            if token in self.special_tokens:
                return self.special_tokens[token]
            token = token.encode("utf-8")
        if token in self.mergeable_ranks:
            return self.mergeable_ranks[token]
        raise TokenizerError(f"{token!r} is not a token of this vocabulary")

    def _convert_id_to_token(self, index: int) -> Union[bytes, str]:
        if index in self._special_by_id:
            return self._special_by_id[index]
        if index in self._bytes_by_id:
            return self._bytes_by_id[index]
        raise TokenizerError(f"id {index} is outside the vocabulary (0…{self.vocab_size - 1})")

    def convert_tokens_to_string(self, tokens: Sequence[Union[bytes, str]]) -> str:
        pieces, pending = [], b""
        for token in tokens:
            if isinstance(token, bytes):
                pending += token
                continue
            pieces.append(pending.decode("utf-8", errors=self.errors) + token)
            pending = b""
        return "".join(pieces) + pending.decode("utf-8", errors=self.errors)

    # ---- decoding
    def _decode(
        self,
        token_ids: Union[int, Sequence[int]],
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
        audio_paths: Sequence[str] | None = None,
        errors: str | None = None,
        **kwargs: object,
    ) -> str:
        """Ids → text. ``audio_paths`` replaces each pad run by its path (as encoded); without them
        the pads stay, so the text re-encodes to the same ids. Ids beyond the vocabulary (the LLM's
        padded embedding rows) have no text and are dropped rather than crash a generation."""
        ids = [token_ids] if isinstance(token_ids, int) else [int(i) for i in token_ids]
        errors = errors or self.errors
        paths = iter(audio_paths or ())
        out: list[str] = []
        run: list[int] = []
        i = 0
        while i < len(ids):
            index = ids[i]
            if 0 <= index < self.n_ranks:
                run.append(index)
                i += 1
                continue
            out.append(self.encoding.decode_bytes(run).decode("utf-8", errors=errors))
            run = []
            end = i + 1
            if index == self.audio_start_id:
                while end < len(ids) and ids[end] == self.audio_pad_id:
                    end += 1
                end += int(end < len(ids) and ids[end] == self.audio_end_id)
                path = next(paths, None)
                if skip_special_tokens:
                    pass
                elif path is None:
                    out.append("".join(self._special_by_id[t] for t in ids[i:end]))
                else:
                    closed = ids[end - 1] == self.audio_end_id
                    out.append(AUDIO_START + path + (AUDIO_END if closed else ""))
            elif not skip_special_tokens:
                out.append(self._special_by_id.get(index, ""))
            i = end
        out.append(self.encoding.decode_bytes(run).decode("utf-8", errors=errors))
        return "".join(out)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        prefix = f"{filename_prefix}-" if filename_prefix else ""
        path = write_tiktoken_ranks(self.mergeable_ranks, Path(save_directory) / (prefix + VOCAB_FILE))
        return (str(path),)
