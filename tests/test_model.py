"""QwenAudioForCausalLM: audio splicing, loss, save/load, PEFT."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from qwen_audio.configuration import preset_config
from qwen_audio.errors import ConfigError
from qwen_audio.model import AudioSpanError, QwenAudioForCausalLM, find_audio_spans
from tests.model_fixtures import audio_prompt, tiny_model

SECOND = 16_000


def two_row_batch(model: QwenAudioForCausalLM) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
    """Row 0 holds two audios (1 s, 0.5 s), row 1 one audio (0.75 s) at another offset."""
    c = model.config
    first, mel_a = audio_prompt(c, [1, 2], SECOND, [3])
    row0, mel_b = audio_prompt(c, first, SECOND // 2, [4, 5])
    row1, mel_c = audio_prompt(c, [6, 7, 8, 9, 10, 11], 3 * SECOND // 4, [12])
    width = max(len(row0), len(row1))
    row0 += [13] * (width - len(row0))
    row1 += [13] * (width - len(row1))
    ids = torch.tensor([row0, row1])
    spans = [(0, 2, 2 + 26), (0, 30, 30 + 13), (1, 6, 6 + 20)]  # spans of 27, 14 and 21 tokens
    return ids, torch.randn(3, 80, 3000), torch.tensor([mel_a, mel_b, mel_c]), spans


def test_spans_are_found_in_reading_order() -> None:
    model = tiny_model()
    ids, _, _, spans = two_row_batch(model)
    assert find_audio_spans(ids, model.config.audio_start_id).tolist() == [list(s) for s in spans]


def test_encoder_outputs_replace_exactly_the_span_embeddings() -> None:
    model = tiny_model()
    ids, mel, lengths, spans = two_row_batch(model)
    with torch.no_grad():
        spliced = model.embed_inputs(ids, mel, lengths)
        tokens = model.model.embed_tokens(ids)
        encoded = model.encode_audio(mel, lengths).spans()
    inside = torch.zeros(ids.shape, dtype=torch.bool)
    for (row, start, end), audio in zip(spans, encoded):
        assert torch.equal(spliced[row, start : end + 1], audio)
        inside[row, start : end + 1] = True
    assert torch.equal(spliced[~inside], tokens[~inside])


def test_span_mismatches_are_refused() -> None:
    model = tiny_model()
    ids, mel, lengths, _ = two_row_batch(model)
    with pytest.raises(AudioSpanError, match="3 audio spans but 2"):
        model.embed_inputs(ids, mel[:2], lengths[:2])
    with pytest.raises(AudioSpanError, match="span lengths"):
        model.embed_inputs(ids, mel, lengths.flip(0))
    with pytest.raises(AudioSpanError, match="no audio_features"):
        model(input_ids=ids)
    broken = ids.clone()
    broken[0, 28] = 5  # drop the first </audio>
    with pytest.raises(AudioSpanError):
        model.embed_inputs(broken, mel, lengths)


def test_loss_ignores_minus_100_and_is_shifted() -> None:
    model = tiny_model()
    ids, mel, lengths, spans = two_row_batch(model)
    labels = ids.clone()
    for row, start, end in spans:
        labels[row, start : end + 1] = -100
    out = model(input_ids=ids, audio_features=mel, audio_lengths=lengths, labels=labels)
    expected = F.cross_entropy(out.logits[:, :-1].reshape(-1, out.logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert torch.allclose(out.loss, expected, atol=1e-5)
    out.loss.backward()
    assert model.audio.conv1.weight.grad is not None and model.audio.conv1.weight.grad.abs().sum() > 0


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    model = tiny_model()
    ids, mel, lengths, _ = two_row_batch(model)
    model.save_pretrained(tmp_path)
    for loaded in (QwenAudioForCausalLM.from_pretrained(tmp_path), AutoModelForCausalLM.from_pretrained(tmp_path)):
        assert isinstance(loaded, QwenAudioForCausalLM)
        with torch.no_grad():
            a = model(input_ids=ids, audio_features=mel, audio_lengths=lengths).logits
            b = loaded.eval()(input_ids=ids, audio_features=mel, audio_lengths=lengths).logits
        assert torch.equal(a, b)
    assert loaded.generation_config.eos_token_id == [model.config.im_end_id, model.config.endoftext_id]


def test_peft_lora_wraps_the_decoder() -> None:
    peft = pytest.importorskip("peft")
    model = tiny_model()
    ids, mel, lengths, _ = two_row_batch(model)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    out = lora(input_ids=ids, audio_features=mel, audio_lengths=lengths, labels=ids)
    out.loss.backward()
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    generated = lora.generate(input_ids=ids[:1, :29], audio_features=mel[:1], audio_lengths=lengths[:1], max_new_tokens=2, do_sample=False)
    assert generated.shape == (1, 31)


# --------------------------------------------------------------------------- configuration


def test_paper_preset_has_the_paper_sizes() -> None:
    from accelerate import init_empty_weights

    config = preset_config("paper")
    assert (config.audio.n_layer, config.audio.n_state, config.audio.n_head, config.audio.output_dim) == (32, 1280, 20, 4096)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size) == (4096, 32, 32, 11008)
    assert (config.vocab_size, config.rms_norm_eps, config.rope_parameters["rope_theta"]) == (155947, 1e-5, 10000.0)
    assert (config.audio_start_id, config.audio_end_id, config.audio_pad_id) == (155163, 155164, 151851)
    with init_empty_weights():  # sizes only, no memory
        model = QwenAudioForCausalLM(config)
    encoder = sum(p.numel() for p in model.audio.parameters())
    llm = sum(p.numel() for p in model.parameters()) - encoder
    assert round(llm / 1e9, 2) == 7.75 and round(encoder / 1e9, 2) == 0.64


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(hidden_size=66), "divisible"),
        (dict(hidden_size=60), "even"),
        (dict(audio_start_id=511), "outside the vocabulary"),
        (dict(audio_pad_id=400), "distinct"),
        (dict(audio_config={"output_dim": 32}), "projection width"),
        (dict(audio_config={"avg_pool": False}), "avg_pool"),
        (dict(audio_config={"n_state": 66, "n_head": 4}), "not divisible"),
    ],
)
def test_invalid_configs_are_refused(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        preset_config("tiny", **overrides)
    with pytest.raises(ConfigError, match="unknown model size"):
        preset_config("huge")


def test_mel_batch_from_the_front_end_is_accepted() -> None:
    from qwen_audio.audio import batch_log_mel

    model = tiny_model()
    torch.manual_seed(0)
    waves = [torch.randn(SECOND).numpy() * 0.1, torch.randn(SECOND // 2).numpy() * 0.1]
    mels = batch_log_mel(waves)
    first, _ = audio_prompt(model.config, [1], SECOND, [])
    row, _ = audio_prompt(model.config, first, SECOND // 2, [2])
    ids = torch.tensor([row])
    with torch.no_grad():
        a = model(input_ids=ids, audio_features=mels).logits
        b = model(input_ids=ids, audio_features=mels.features, audio_lengths=mels.mel_lengths).logits
    assert torch.equal(a, b)


def test_train_mode_scores_only_targets_with_the_eval_loss_and_gradients() -> None:
    # In training the lm_head runs only where a target follows (not over audio frames and prompts);
    # the loss and every gradient must be those of eval mode's full-logit loss.
    model = tiny_model()
    ids, mel, lengths, spans = two_row_batch(model)
    labels = ids.clone()
    labels[:, :4] = -100
    for row, start, end in spans:
        labels[row, start : end + 1] = -100
    results = []
    for training in (False, True):
        model.train(training)
        model.zero_grad()
        out = model(input_ids=ids, audio_features=mel, audio_lengths=lengths, labels=labels)
        out.loss.backward()
        results.append((out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (full, full_grads), (targets, target_grads) = results
    n_targets = int((labels[:, 1:] != -100).sum())
    assert full.logits.shape[:2] == ids.shape and targets.logits.shape == (n_targets, model.config.vocab_size)
    torch.testing.assert_close(targets.loss, full.loss, atol=1e-6, rtol=1e-6)
    assert full_grads.keys() == target_grads.keys() and "audio.conv1.weight" in target_grads
    for name, grad in full_grads.items():
        torch.testing.assert_close(target_grads[name], grad, atol=1e-6, rtol=1e-5, msg=name)


def test_per_example_loss_weighs_a_one_token_answer_as_much_as_a_long_transcript() -> None:
    model = tiny_model().train()
    ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 0, 0, 0]])
    labels = ids.clone()
    labels[:, :2] = -100  # row 0: six targets; row 1: one target (a label), then padding
    labels[1, 3:] = -100
    with torch.no_grad():
        logits = model.eval()(input_ids=ids).logits
    rows = [F.cross_entropy(logits[r, :-1][labels[r, 1:] != -100], labels[r, 1:][labels[r, 1:] != -100])
            for r in range(2)]
    model.train()
    with torch.no_grad():
        by_token = model(input_ids=ids, labels=labels).loss
        model.loss_per_example = True
        by_example = model(input_ids=ids, labels=labels).loss
    torch.testing.assert_close(by_example, (rows[0] + rows[1]) / 2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(by_token, (6 * rows[0] + rows[1]) / 7, atol=1e-5, rtol=1e-5)


def test_train_mode_without_targets_is_a_zero_loss_that_backpropagates() -> None:
    model = tiny_model().train()
    ids = torch.tensor([[1, 2, 3, 4]])
    out = model(input_ids=ids, labels=torch.full_like(ids, -100))
    assert out.loss.item() == 0.0 and out.logits.shape == (0, model.config.vocab_size)
    out.loss.backward()  # a batch of prompts only must not break the step (DDP needs the graph)
