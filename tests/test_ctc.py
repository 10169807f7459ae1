"""train/ctc.py + its data side: the encoder's auxiliary CTC loss (training only, never shipped)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from qwen_audio.audio import batch_log_mel
from qwen_audio.data.dataset import token_targets, transcript_ids, transcript_targets
from qwen_audio.data.examples import heard_label, spoken_text
from qwen_audio.data.manifest import ManifestRecord
from qwen_audio.encoder import conv_lengths
from qwen_audio.model import QwenAudioForCausalLM
from qwen_audio.errors import ConfigError
from qwen_audio.train.ctc import ALIGNER_FILE, EmbeddingCtc, EncoderCtc, greedy_decode
from qwen_audio.train.recipe import Recipe, run_recipe
from tests.test_recipe import data_dir, write_recipe  # noqa: F401  (fixture)


def record(**fields) -> ManifestRecord:
    base = {"id": "r", "audio": "a.wav", "audio_language": "en", "text_language": "en", "duration": 1.0}
    return ManifestRecord.from_dict({**base, **fields})


def test_spoken_text_prefers_the_spoken_words_then_asr_transcripts() -> None:
    assert spoken_text(record(task="language_id", text="en", meta={"spoken": ["two", "cats"]})) == "two cats"
    assert spoken_text(record(task="asr", text="20", meta={"spoken": ["twenty"]})) == "twenty"
    assert spoken_text(record(task="asr", text="hello there")) == "hello there"
    assert spoken_text(record(task="caption", text="a dog barks", audio_language="unknown")) is None


def test_heard_label_names_a_sounds_source_and_never_speech() -> None:
    note = {"family": "keyboard", "pitch": 43}
    assert heard_label(record(task="pitch", text="43", labels=["43"], audio_language="unknown", meta=note)) == "keyboard"
    assert heard_label(record(task="sound_event", text="snare drum", labels=["snare drum"], audio_language="unknown")) \
        == "snare drum"
    assert heard_label(record(task="caption", text="an alarm clock beeps", labels=["alarm clock", "beep"],
                              audio_language="unknown")) == "alarm clock"
    assert heard_label(record(task="sound_event", text="speech", labels=["speech"], audio_language="unknown")) is None
    assert heard_label(record(task="asr", text="hello there")) is None


def test_sound_labels_give_a_sound_its_sources_tokens_as_ctc_target_only_when_asked(tmp_path: Path, tokenizer) -> None:
    from qwen_audio.data.dataset import DatasetOptions, ExampleKey, example_item
    from qwen_audio.data.examples import record_example

    wave = 0.1 * np.random.default_rng(3).standard_normal(16_000).astype(np.float32)
    drum = record(id="d", task="sound_event", text="snare drum", labels=["snare drum"], audio_language="unknown")
    speech = record(id="s", task="asr", text="hello there")
    items = {flag: [example_item(record_example(r, tmp_path), [wave], tokenizer,
                                 DatasetOptions(transcripts="tokens", sound_labels=flag), ExampleKey("x", 0))
                    for r in (drum, speech)] for flag in (False, True)}
    assert items[False][0]["transcript_ids"] == [[]]  # off: a sound has nothing to read, as before
    assert items[True][0]["transcript_ids"] == [tokenizer.encode_plain("snare drum")]
    assert items[True][1]["transcript_ids"] == items[False][1]["transcript_ids"] == [tokenizer.encode_plain("hello there")]


def test_recipe_refuses_sound_labels_without_the_token_ctc(data_dir: Path) -> None:  # noqa: F811
    path = write_recipe(data_dir / "labels.yaml", data_dir, "pretrain", "labels", "preset:tiny", 2, "  freeze: []")
    path.write_text(path.read_text().replace("distributed: none", "ctc_sound_labels: true\ndistributed: none"))
    with pytest.raises(ConfigError, match="ctc_sound_labels"):
        Recipe.load(path)
    path.write_text(path.read_text().replace("ctc_sound_labels: true", "ctc_sound_labels: true\nctc_weight: 0.3\nctc_units: tokens"))
    assert Recipe.load(path).data.dataset_options(0, "tokens", True).sound_labels


def test_transcript_targets_are_shifted_utf8_bytes_and_zero_length_without_transcript() -> None:
    out = transcript_targets(["ab", None, "猫"])
    assert out["ctc_lengths"].tolist() == [2, 0, 3]
    assert out["ctc_targets"].tolist() == [ord("a") + 1, ord("b") + 1] + [b + 1 for b in "猫".encode()]
    assert int(out["ctc_targets"].min()) >= 1  # 0 is the blank


@pytest.fixture()
def tiny(tiny_model_dir: Path) -> QwenAudioForCausalLM:
    torch.manual_seed(0)
    return QwenAudioForCausalLM.from_pretrained(tiny_model_dir)


def audio_batch(tokenizer, waves: list[np.ndarray]) -> dict[str, torch.Tensor]:
    from qwen_audio.formats.tags import Task, build_prompt
    from qwen_audio.processing import QwenAudioProcessor

    prompt = build_prompt(Task.ASR, audio="a", audio_language="en") + "x"
    inputs = QwenAudioProcessor(tokenizer)([prompt] * len(waves), [[w] for w in waves], padding_side="right")
    # Right padding with <|endoftext|> and no mask, as the training collate feeds the loss.
    return {"input_ids": inputs.input_ids, "labels": inputs.input_ids.clone(), **inputs.audio_kwargs()}


def test_loss_adds_weighted_ctc_and_reaches_the_encoder(tiny: QwenAudioForCausalLM, tokenizer) -> None:
    rng = np.random.default_rng(0)
    waves = [0.1 * rng.standard_normal(16_000).astype(np.float32), 0.1 * rng.standard_normal(24_000).astype(np.float32)]
    batch = audio_batch(tokenizer, waves)
    wrapper = EncoderCtc(tiny, weight=0.5)
    plain = tiny(**batch).loss
    without = wrapper(**batch, **transcript_targets([None, None]))  # no transcript: the LM loss alone
    torch.testing.assert_close(without.loss, plain)
    assert "ctc_loss" not in wrapper.last_metrics

    out = wrapper(**batch, **transcript_targets(["hello", None]))
    ctc = wrapper.last_metrics["ctc_loss"]
    assert ctc > 0 and out.loss.item() == pytest.approx(plain.item() + 0.5 * ctc, rel=1e-5)
    out.loss.backward()
    assert tiny.audio.conv1.weight.grad is not None and tiny.audio.conv1.weight.grad.abs().sum() > 0
    assert wrapper.ctc_head.weight.grad.abs().sum() > 0
    assert not any(name.startswith("ctc_head") for name in tiny.state_dict())  # the shipped model has no head


@pytest.mark.parametrize("weight", [0.0, -1.0])
def test_weight_must_be_positive(tiny: QwenAudioForCausalLM, weight: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        EncoderCtc(tiny, weight)


@pytest.mark.slow
def test_encoder_learns_to_spell_two_audios_through_the_head(tiny: QwenAudioForCausalLM) -> None:
    """Over-fit: the CTC path can carry what is said from the mel to the head's best path."""
    t = np.arange(8_000) / 16_000
    tones = {f: np.sin(2 * np.pi * f * t).astype(np.float32) * 0.3 for f in (300.0, 600.0, 1200.0, 2400.0)}
    waves = [np.concatenate([tones[300.0], tones[600.0]]), np.concatenate([tones[1200.0], tones[2400.0]])]
    texts = ["ab", "cd"]  # one letter per half-second tone
    mels = batch_log_mel(waves)
    targets = transcript_targets(texts)
    wrapper = EncoderCtc(tiny, weight=1.0)
    optimizer = torch.optim.Adam(wrapper.parameters(), lr=3e-3)
    decoded: list[str] = []
    for _ in range(300):  # typically 60-150 steps
        frames, _ = tiny.audio.hidden_states(mels.features, mels.mel_lengths)
        loss = wrapper.ctc_loss(frames, conv_lengths(mels.mel_lengths), targets["ctc_targets"], targets["ctc_lengths"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            decoded = greedy_decode(wrapper, frames.detach(), conv_lengths(mels.mel_lengths))
        if decoded == texts and loss.item() < 0.1:
            break
    assert decoded == texts and loss.item() < 0.1


def test_recipe_with_ctc_logs_both_losses_resumes_and_exports_without_the_head(data_dir: Path) -> None:  # noqa: F811
    path = write_recipe(data_dir / "ctc.yaml", data_dir, "pretrain", "ctc", "preset:tiny", 4, "  freeze: []")
    path.write_text(path.read_text().replace("distributed: none", "ctc_weight: 0.3\ndistributed: none"))
    recipe = Recipe.load(path)
    assert run_recipe(recipe).steps == 4
    checkpoints = sorted((data_dir / "ctc").glob("checkpoint-*"))
    assert "ctc_head.weight" in load_file(str(checkpoints[-1] / "model.safetensors"))
    exported = load_file(str(data_dir / "ctc" / "final" / "model.safetensors"))
    assert exported and not any("ctc" in name for name in exported)
    QwenAudioForCausalLM.from_pretrained(data_dir / "ctc" / "final")
    logged = [json.loads(line) for line in (data_dir / "ctc" / "metrics.jsonl").read_text().splitlines()]
    assert any("ctc_loss" in row and "lm_loss" in row for row in logged)  # speech batches
    # Longer run from the same folder resumes from step 4 (the head's weights and moments included).
    from dataclasses import replace

    longer = replace(recipe, trainer=replace(recipe.trainer, max_steps=6))
    assert run_recipe(longer).steps == 6


def test_token_targets_are_the_transcripts_plain_ids_shifted_past_the_blank(tokenizer) -> None:
    ids = transcript_ids("  hello <|en|> there ", tokenizer)
    assert ids == tokenizer.encode_plain("hello <|en|> there")  # a tag in a transcript is its characters
    assert transcript_ids(None, tokenizer) == [] and transcript_ids("   ", tokenizer) == []
    out = token_targets([ids, []])
    assert out["ctc_lengths"].tolist() == [len(ids), 0]
    assert out["ctc_targets"].tolist() == [i + 1 for i in ids]


def test_embedding_ctc_scores_frames_against_the_llm_embeddings_without_running_the_llm(
    tiny: QwenAudioForCausalLM, tokenizer
) -> None:
    rng = np.random.default_rng(1)
    waves = [0.1 * rng.standard_normal(16_000).astype(np.float32), 0.1 * rng.standard_normal(24_000).astype(np.float32)]
    batch = audio_batch(tokenizer, waves)
    targets = token_targets([tokenizer.encode_plain("hello"), []])
    wrapper = EmbeddingCtc(tiny, weight=2.0, lm_loss=False)
    calls = []
    tiny.model.register_forward_hook(lambda *args: calls.append(1))
    out = wrapper(**batch, **targets)
    assert not calls and set(wrapper.last_metrics) == {"ctc_loss"}  # the LLM never ran
    assert out.loss.item() == pytest.approx(2.0 * wrapper.last_metrics["ctc_loss"])
    encoded = tiny.encode_audio(batch["audio_features"], batch["audio_lengths"])
    logits = wrapper.logits(encoded.frames)
    table = tiny.get_input_embeddings().weight
    torch.testing.assert_close(logits[..., 1:], encoded.frames @ table.T)  # class i + 1 is token i
    assert logits.shape[-1] == table.shape[0] + 1
    out.loss.backward()
    assert tiny.audio.proj.weight.grad.abs().sum() > 0 and wrapper.blank.grad is not None
    assert tiny.get_input_embeddings().weight.grad is None  # the LLM's table is only read
    assert all(len(ids) <= int(n) for ids, n in zip(wrapper.greedy_ids(encoded.frames, encoded.lengths), encoded.lengths))
    idle = wrapper(**batch, **token_targets([[], []]))  # nothing said: a zero loss that still backpropagates
    assert idle.loss.item() == 0.0 and idle.loss.requires_grad


def test_a_later_stage_starts_from_the_aligner_its_init_ships(tiny: QwenAudioForCausalLM, tmp_path: Path) -> None:
    trained = EmbeddingCtc(tiny, weight=0.3)
    with torch.no_grad():
        trained.blank.normal_()
        trained.blank_bias.fill_(-2.5)
    trained.save_aligner(tmp_path)
    fresh = EmbeddingCtc(tiny, weight=0.3)
    assert not fresh.load_aligner(tmp_path / "elsewhere") and fresh.blank.abs().sum() == 0  # none shipped: zeros
    assert fresh.load_aligner(tmp_path)
    assert torch.equal(fresh.blank, trained.blank) and fresh.blank_bias.item() == -2.5
    assert fresh.blank.requires_grad  # still trained


def test_embedding_ctc_with_the_lm_adds_both_losses(tiny: QwenAudioForCausalLM, tokenizer) -> None:
    rng = np.random.default_rng(2)
    batch = audio_batch(tokenizer, [0.1 * rng.standard_normal(16_000).astype(np.float32)])
    wrapper = EmbeddingCtc(tiny, weight=0.5)
    plain = tiny(**batch).loss
    out = wrapper(**batch, **token_targets([tokenizer.encode_plain("hi")]))
    assert out.loss.item() == pytest.approx(plain.item() + 0.5 * wrapper.last_metrics["ctc_loss"], rel=1e-5)
    assert wrapper.last_metrics["lm_loss"] == pytest.approx(plain.item(), rel=1e-6)


def test_recipe_without_the_lm_loss_needs_token_ctc(data_dir: Path) -> None:  # noqa: F811
    path = write_recipe(data_dir / "noctc.yaml", data_dir, "pretrain", "noctc", "preset:tiny", 2, "  freeze: []")
    with pytest.raises(ConfigError, match="lm_loss"):
        Recipe.load(path.write_text(path.read_text().replace("distributed: none", "lm_loss: false\ndistributed: none")) and path)
    text = path.read_text().replace("lm_loss: false", "lm_loss: false\nctc_weight: 1.0\nctc_units: tokens")
    path.write_text(text)
    recipe = Recipe.load(path)
    assert run_recipe(recipe).steps == 2
    logged = [json.loads(line) for line in (data_dir / "noctc" / "metrics.jsonl").read_text().splitlines()]
    assert logged and all("lm_loss" not in row for row in logged)
    exported = load_file(str(data_dir / "noctc" / "final" / "model.safetensors"))
    assert not any("blank" in name for name in exported)
    aligner = load_file(str(data_dir / "noctc" / "final" / ALIGNER_FILE))  # the blank travels beside it instead
    assert set(aligner) == {"blank", "blank_bias"} and aligner["blank_bias"].shape == ()
