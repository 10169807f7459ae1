"""processing.py: prompts + waveforms → model inputs, padded left or right, audio cut to 30 s once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import qwen_audio
import qwen_audio.processing as processing
from qwen_audio.formats.spans import N_SAMPLES, audio_span
from qwen_audio.formats.tags import Task, build_prompt
from qwen_audio.model import QwenAudioForCausalLM
from qwen_audio.processing import ModelInputs, QwenAudioProcessor, pad_rows
from tests.model_fixtures import tiny_model

SECOND = 16_000


def noise(seconds: float, seed: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SECOND))).astype(np.float32)


def tiny_model_for(tokenizer) -> QwenAudioForCausalLM:
    """The tiny random model with the test tokenizer's vocabulary and special ids."""
    return tiny_model(
        vocab_size=-(-tokenizer.vocab_size // 64) * 64, endoftext_id=tokenizer.eod_id,
        im_start_id=tokenizer.im_start_id, im_end_id=tokenizer.im_end_id,
        audio_pad_id=tokenizer.audio_pad_id, audio_start_id=tokenizer.audio_start_id,
    )


@pytest.fixture(scope="module")
def model(tokenizer) -> QwenAudioForCausalLM:
    return tiny_model_for(tokenizer)


@pytest.fixture(scope="module")
def batch(tokenizer) -> tuple[list, list[list[np.ndarray]]]:
    """Three prompts of different lengths: ours with two audios, user text (encoded) without, a task prompt with one."""
    asr = build_prompt(Task.ASR, audio="a", audio_language="en")
    prompts = ["<audio>a</audio> and <audio>b</audio> compared:", tokenizer.encode_prompt("just text, no audio"), asr]
    audios = [[noise(0.5, 0), noise(1.2, 1)], [], [noise(0.8, 2)]]
    return prompts, audios


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_side_places_the_pads(tokenizer, batch, side: str) -> None:
    prompts, audios = batch
    inputs = QwenAudioProcessor(tokenizer)(prompts, audios, padding_side=side)
    rows = [(p if not isinstance(p, str) else tokenizer.encode_prompt(p, [w.size for w in a])).ids
            for p, a in zip(prompts, audios)]
    width = max(len(r) for r in rows)
    assert inputs.input_ids.shape == inputs.attention_mask.shape == (3, width)
    assert inputs.prompt_lengths == [len(r) for r in rows]
    for i, row in enumerate(rows):
        pads = [tokenizer.eod_id] * (width - len(row))
        mask = [0] * len(pads) + [1] * len(row) if side == "left" else [1] * len(row) + [0] * len(pads)
        assert inputs.input_ids[i].tolist() == (pads + row if side == "left" else row + pads)
        assert inputs.attention_mask[i].tolist() == mask
    assert inputs.input_ids.dtype == inputs.attention_mask.dtype == torch.long
    assert inputs.audio_lengths.tolist() == [audio_span(a.size).mel_len for waves in audios for a in waves]


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_logits_equal_each_prompt_alone(tokenizer, model, batch, side: str) -> None:
    prompts, audios = batch
    processor = QwenAudioProcessor(tokenizer)
    inputs = processor(prompts, audios, padding_side=side)
    with torch.no_grad():
        batched = model(**inputs.as_kwargs()).logits
        for i, (prompt, waves) in enumerate(zip(prompts, audios)):
            one = processor([prompt], [waves])
            alone = model(input_ids=one.input_ids, **one.audio_kwargs()).logits[0]
            n = len(alone)
            row = batched[i, -n:] if side == "left" else batched[i, :n]
            assert (row - alone).abs().max() <= 1e-4


def test_audio_longer_than_30_s_is_cut_to_30_s_once(tokenizer, model, monkeypatch: pytest.MonkeyPatch) -> None:
    long = noise(45.0, 3)
    prompt = build_prompt(Task.ASR, audio="a", audio_language="en")
    seen: list[int] = []
    real = processing.batch_log_mel

    def spy(waves: list) -> object:
        seen.extend(w.shape[-1] for w in waves)
        return real(waves)

    monkeypatch.setattr(processing, "batch_log_mel", spy)
    processor = QwenAudioProcessor(tokenizer)
    cut = processor([prompt], [[long]])
    assert seen == [N_SAMPLES]  # the mel front end gets the 30 s window, not the whole audio
    window = processor([prompt], [[long[:N_SAMPLES]]])
    for name in ("input_ids", "attention_mask", "audio_features", "audio_lengths"):
        assert torch.equal(getattr(cut, name), getattr(window, name)), name
    assert cut.audio_lengths.tolist() == [3000]
    assert int((cut.input_ids == tokenizer.audio_pad_id).sum()) == 750  # span and features count the same 30 s
    with torch.no_grad():
        model(**cut.as_kwargs())  # no AudioSpanError: the model accepts the pair


def test_only_the_processor_cuts_audio_to_30_s() -> None:
    package = Path(qwen_audio.__file__).parent
    cutting = sorted(str(p.relative_to(package)) for p in package.rglob("*.py") if "[:N_SAMPLES]" in p.read_text())
    assert cutting == ["processing.py"]


def test_text_only_batch_passes_no_audio(tokenizer) -> None:
    inputs = QwenAudioProcessor(tokenizer)(["hello", "a longer hello"], [[], []])
    assert inputs.audio_features is None and inputs.audio_kwargs() == {}
    assert set(inputs.as_kwargs()) == {"input_ids", "attention_mask"}


def test_one_list_of_waveforms_per_prompt_is_required(tokenizer) -> None:
    with pytest.raises(ValueError, match="one list per prompt"):
        QwenAudioProcessor(tokenizer)(["<audio>a</audio>", "<audio>b</audio>"], [[noise(1.0, 0)]])


def test_pad_rows_right_pads_labels_and_refuses_an_unknown_side() -> None:
    ids, mask = pad_rows([torch.tensor([7, 8, 9]), [5]], -100, "right")
    assert ids.tolist() == [[7, 8, 9], [5, -100, -100]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    with pytest.raises(ValueError, match="padding side"):
        pad_rows([[1]], 0, "middle")  # type: ignore[arg-type]


def test_model_inputs_are_the_models_keyword_arguments() -> None:
    inputs = ModelInputs(torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.long),
                         torch.zeros(1, 80, 3000), torch.tensor([100]))
    assert list(inputs.as_kwargs()) == ["input_ids", "attention_mask", "audio_features", "audio_lengths"]
