"""What the vLLM plugin builds without vLLM itself: placeholder spans, skipped special tokens, the
chat template. These run in the main environment too (they import no vLLM)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwen_audio.formats.chatml import AudioItem, ChatTurn, render_chatml
from qwen_audio.formats.spans import audio_span
from qwen_audio.formats.tags import Task, build_prompt
from qwen_audio.tokenizer import QwenAudioTokenizer, write_tiktoken_ranks
from qwen_audio.vllm import CHAT_TEMPLATE
from qwen_audio.vllm.tokenizer import VllmPromptTokenizer


@pytest.fixture(scope="module")
def vocab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiktoken_ranks({bytes([b]): b for b in range(256)}, tmp_path_factory.mktemp("vocab") / "qwen.tiktoken")


def test_text_prompt_holds_one_placeholder_span_per_audio(vocab: Path) -> None:
    ours, prompt_tokenizer = QwenAudioTokenizer(vocab), VllmPromptTokenizer(vocab)
    text = build_prompt(Task.ASR, audio="talk.wav", audio_language="en") + " and <audio>https://x/y.flac</audio>"
    placeholder = [ours.audio_start_id, ours.audio_pad_id, ours.audio_end_id]

    ids = prompt_tokenizer.encode(text)

    assert [ids[i:i + 3] for i, t in enumerate(ids) if t == ours.audio_start_id] == [placeholder, placeholder]
    assert [t for t in ids if t not in placeholder] == [t for t in ours.encode_prompt(text, [16_000, 8_000]).ids
                                                          if t not in placeholder]
    # given lengths, the usual full spans
    full = prompt_tokenizer.tokenize(text, [16_000, 8_000])
    assert prompt_tokenizer.convert_tokens_to_ids(full) == ours.encode_prompt(text, [16_000, 8_000]).ids
    assert audio_span(16_000).span_tokens == 27


def test_skip_special_tokens_drops_every_spec_token(vocab: Path) -> None:
    tokenizer = VllmPromptTokenizer(vocab)
    ids = tokenizer.encode_prompt("<|0.52|>hi<|0.88|><|en|>yo<|im_end|>").ids

    kept = tokenizer.convert_ids_to_tokens(ids, skip_special_tokens=True)

    assert tokenizer.convert_tokens_to_string(kept) == "hiyo" == tokenizer.decode(ids, skip_special_tokens=True)
    assert tokenizer.convert_tokens_to_string(tokenizer.convert_ids_to_tokens(ids)) == tokenizer.decode(ids)


def test_chat_template_renders_formats_chatml(vocab: Path) -> None:
    """The template vLLM falls back to gives render_chatml's text, audios numbered across the dialogue."""
    tokenizer = VllmPromptTokenizer(vocab)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "audio"}, {"type": "audio"}, {"type": "text", "text": "Compare them."}]},
        {"role": "assistant", "content": "The first is louder."},
        {"role": "user", "content": [{"type": "text", "text": "And "}, {"type": "audio"}, {"type": "text", "text": "?"}]},
    ]
    turns = [ChatTurn.user(AudioItem("1"), AudioItem("2"), "Compare them."), ChatTurn.assistant("The first is louder."),
             ChatTurn.user("And ", AudioItem("3"), "?")]

    rendered = tokenizer.apply_chat_template(messages, chat_template=CHAT_TEMPLATE.read_text(), tokenize=False,
                                             add_generation_prompt=True)
    plain = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], chat_template=CHAT_TEMPLATE.read_text(),
                                          tokenize=False, add_generation_prompt=False)

    assert rendered == render_chatml(turns, system="Be brief.")
    assert plain == render_chatml([ChatTurn.user("Hi")], add_generation_prompt=False)
