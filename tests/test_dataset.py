"""data/examples + data/dataset: prompts and targets, loss masks, mels, batching into the model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from qwen_audio.audio import SpecAugmentConfig, audio_span
from qwen_audio.data.dataset import AudioTextDataset, DatasetOptions, ExampleKey, ManifestIndex, collate
from qwen_audio.data.examples import IGNORE_INDEX, record_example, target_text
from qwen_audio.data.manifest import ManifestRecord, Word
from qwen_audio.errors import ManifestError


def write_wav(path: Path, seconds: float, freq: float = 220.0) -> Path:
    t = np.arange(int(seconds * 16_000)) / 16_000
    sf.write(path, (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16_000)
    return path


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    write_wav(tmp_path / "a.wav", 1.0)
    write_wav(tmp_path / "b.wav", 2.5, 440)
    records = [
        {"id": "asr1", "audio": "a.wav", "task": "asr", "audio_language": "en", "text_language": "en",
         "text": "hello world", "duration": 1.0},
        {"id": "srwt1", "audio": "b.wav", "task": "srwt", "audio_language": "en", "text_language": "en",
         "text": "hello world", "words": [{"word": "hello", "start": 0.1, "end": 0.5},
                                          {"word": "world", "start": 0.6, "end": 1.1}]},
        {"id": "scene1", "audio": "b.wav", "task": "scene", "audio_language": "unknown", "text_language": "en",
         "text": "park", "duration": 2.5},
        {"id": "pitch1", "audio": "a.wav", "task": "pitch", "audio_language": "unknown", "text_language": "en",
         "text": "57", "duration": 1.0},
    ]
    (tmp_path / "tasks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    chat = {"id": "c1", "messages": [
        {"role": "user", "content": [{"type": "audio", "audio": "a.wav"}, {"type": "text", "text": "what is it?"}]},
        {"role": "assistant", "content": "a tone"},
        {"role": "user", "content": [{"type": "audio", "audio": "b.wav"}, {"type": "text", "text": "and this?"}]},
        {"role": "assistant", "content": "a higher tone"},
    ]}
    (tmp_path / "chat.jsonl").write_text(json.dumps(chat) + "\n")
    return tmp_path


def test_targets_follow_each_task_format() -> None:
    base = dict(id="x", audio="a.wav", audio_language="unknown", text_language="en")
    assert target_text(ManifestRecord(task="pitch", text="60", **base)) == "<|midi_pitch_60|>"
    assert target_text(ManifestRecord(task="velocity", text="100", **base)) == "<|midi_velocity_100|>"
    assert target_text(ManifestRecord(task="scene", text="park", **base)) == "park"
    srwt = ManifestRecord(task="srwt", text="hi you", words=(Word("hi", 0.1, 0.3), Word("you", 0.4, 0.72)),
                          **{**base, "audio_language": "en"})
    assert target_text(srwt) == "<|0.10|>hi<|0.30|><|0.40|> you<|0.72|>"
    lid = ManifestRecord(task="language_id", text="de", **{**base, "audio_language": "de"})
    assert target_text(lid) == "<|de|>"


def test_record_example_prompt_is_the_official_tag_prefix(tmp_path: Path) -> None:
    record = ManifestRecord(id="x", audio="a.wav", task="asr", audio_language="en", text_language="en", text="hi")
    example = record_example(record, tmp_path)
    assert example.pieces == (
        ("<audio>a.wav</audio><|startoftranscript|><|en|><|transcribe|><|en|><|notimestamps|><|wo_itn|>", False),
        ("hi<|endoftext|>", True),
    )
    assert example.audios[0].source == str((tmp_path / "a.wav").resolve())


def test_index_reads_lines_on_demand_and_durations(corpus: Path) -> None:
    index = ManifestIndex(corpus / "tasks.jsonl")
    assert len(index) == 4 and not index.is_chat
    assert index.durations == pytest.approx([1.0, 2.5, 2.5, 1.0])  # srwt1's from the wav header
    assert index.line(2)["id"] == "scene1"
    chat = ManifestIndex(corpus / "chat.jsonl")
    assert chat.is_chat and chat.durations == pytest.approx([3.5])


def test_index_keeps_only_the_asked_tasks_and_languages(corpus: Path) -> None:
    english_asr = ManifestIndex(corpus / "tasks.jsonl", tasks=("asr", "srwt"), languages=("en",))
    assert [english_asr.line(i)["id"] for i in range(len(english_asr))] == ["asr1", "srwt1"]
    assert english_asr.durations == pytest.approx([1.0, 2.5])
    non_speech = ManifestIndex(corpus / "tasks.jsonl", languages=("unknown",))
    assert [non_speech.line(i)["id"] for i in range(len(non_speech))] == ["scene1", "pitch1"]
    pitch = ManifestIndex(corpus / "tasks.jsonl", tasks=["pitch"])
    assert len(pitch) == 1 and pitch.example(0).pieces[-1] == ("<|midi_pitch_57|><|endoftext|>", True)
    with pytest.raises(ManifestError, match=r"no examples with tasks \['asr'\] and languages \['de'\]"):
        ManifestIndex(corpus / "tasks.jsonl", tasks=("asr",), languages=("de",))
    with pytest.raises(ManifestError, match=r"no examples with languages \['de'\]$"):
        ManifestIndex(corpus / "tasks.jsonl", languages=("de",))
    with pytest.raises(ManifestError, match="not chat"):
        ManifestIndex(corpus / "chat.jsonl", tasks=("asr",))


def test_index_leaves_out_transcripts_longer_than_one_window_and_says_so(tmp_path: Path) -> None:
    rows = [
        {"id": "short", "audio": "a.wav", "task": "asr", "audio_language": "fr", "text": "oui", "duration": 29.9},
        {"id": "monologue", "audio": "b.wav", "task": "asr", "audio_language": "fr", "text": "…", "duration": 70.7},
        {"id": "long-scene", "audio": "c.wav", "task": "scene", "text": "park", "duration": 45.0},  # a label survives the cut
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.warns(UserWarning, match=r"1 transcript record\(s\) with audio over 30 s left out \(first: monologue\)"):
        index = ManifestIndex(manifest)
    assert [index.line(i)["id"] for i in range(len(index))] == ["short", "long-scene"] and index.left_out == ["monologue"]


def test_index_errors(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="not found"):
        ManifestIndex(tmp_path / "none.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ManifestError, match="no examples"):
        ManifestIndex(tmp_path / "empty.jsonl")


def test_labels_cover_exactly_the_target(corpus: Path, tokenizer) -> None:
    dataset = AudioTextDataset({"tasks": ManifestIndex(corpus / "tasks.jsonl")}, tokenizer)
    item = dataset[ExampleKey("tasks", 0)]
    ids, labels = item["input_ids"], item["labels"]
    trained = labels != IGNORE_INDEX
    assert tokenizer.decode(ids[trained].tolist()) == "hello world<|endoftext|>"
    # The audio span (a 1 s audio: 27 tokens) sits in the untrained prompt.
    start = ids.tolist().index(tokenizer.audio_start_id)
    assert ids[start + audio_span(16_000).span_tokens - 1] == tokenizer.audio_end_id
    assert not trained[: start + 27].any()
    assert item["audio_features"].shape == (1, 80, 3000) and item["audio_lengths"].tolist() == [100]


def test_chat_trains_only_on_assistant_replies(corpus: Path, tokenizer) -> None:
    dataset = AudioTextDataset({"chat": ManifestIndex(corpus / "chat.jsonl")}, tokenizer)
    item = dataset[ExampleKey("chat", 0)]
    labels = item["labels"]
    pieces, current = [], []
    for token, label in zip(item["input_ids"].tolist(), labels.tolist()):
        if label == IGNORE_INDEX:
            if current:
                pieces.append(tokenizer.decode(current))
                current = []
        else:
            current.append(token)
    pieces.append(tokenizer.decode(current))
    assert pieces == ["a tone<|im_end|>", "a higher tone<|im_end|>"]
    assert item["audio_lengths"].tolist() == [100, 250]
    text = tokenizer.decode(item["input_ids"].tolist(), audio_paths=["A", "B"])
    assert "Audio 1:<audio>A</audio>\nwhat is it?" in text and "Audio 2:<audio>B</audio>\nand this?" in text


def test_spec_augment_is_keyed_by_example_and_salt(corpus: Path, tokenizer) -> None:
    options = DatasetOptions(spec_augment=SpecAugmentConfig(time_masks=2, max_time_width=20, max_time_ratio=0.2), seed=1)
    dataset = AudioTextDataset({"tasks": ManifestIndex(corpus / "tasks.jsonl")}, tokenizer, options)
    a = dataset[ExampleKey("tasks", 1, salt=5)]["audio_features"]
    b = dataset[ExampleKey("tasks", 1, salt=5)]["audio_features"]
    c = dataset[ExampleKey("tasks", 1, salt=6)]["audio_features"]
    plain = AudioTextDataset({"tasks": ManifestIndex(corpus / "tasks.jsonl")}, tokenizer)[ExampleKey("tasks", 1)]
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, plain["audio_features"])


def test_too_many_tokens_is_an_error(corpus: Path, tokenizer) -> None:
    dataset = AudioTextDataset({"t": ManifestIndex(corpus / "tasks.jsonl")}, tokenizer, DatasetOptions(max_tokens=10))
    with pytest.raises(ManifestError, match="max_tokens"):
        dataset[ExampleKey("t", 0)]


def test_collated_batch_trains_a_tiny_model(corpus: Path, tokenizer) -> None:
    from qwen_audio.model import QwenAudioForCausalLM
    from qwen_audio.train.setup import config_for_tokenizer

    sources = {"tasks": ManifestIndex(corpus / "tasks.jsonl"), "chat": ManifestIndex(corpus / "chat.jsonl")}
    dataset = AudioTextDataset(sources, tokenizer)
    items = [dataset[ExampleKey("tasks", i)] for i in range(4)] + [dataset[ExampleKey("chat", 0)]]
    batch = collate(items, tokenizer.eod_id)
    assert batch["audio_features"].shape == (6, 80, 3000)
    assert batch["audio_lengths"].tolist() == [100, 250, 250, 100, 100, 250]
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()
    torch.manual_seed(0)
    model = QwenAudioForCausalLM(config_for_tokenizer("tiny", tokenizer))
    loss = model(**batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    assert model.audio.conv1.weight.grad is not None and model.audio.conv1.weight.grad.abs().sum() > 0


def test_wave_augment_changes_only_the_named_source_and_keeps_timed_targets_in_place(corpus: Path, tokenizer) -> None:
    from qwen_audio.data.augment import WaveAugmentConfig

    augment = WaveAugmentConfig(sources=("tasks",), speed=(1.25, 1.25), speed_p=1.0, reverb_p=1.0, noise_p=1.0)
    sources = {"tasks": ManifestIndex(corpus / "tasks.jsonl"), "other": ManifestIndex(corpus / "tasks.jsonl")}
    plain = AudioTextDataset(sources, tokenizer)
    augmented = AudioTextDataset(sources, tokenizer, DatasetOptions(wave_augment=augment))
    asr, again = augmented[ExampleKey("tasks", 0, 3)], augmented[ExampleKey("tasks", 0, 3)]
    assert torch.equal(asr["audio_features"], again["audio_features"])
    assert asr["audio_lengths"].item() == audio_span(int(16_000 / 1.25)).mel_len  # 1 s said 1.25x faster
    srwt, srwt_plain = augmented[ExampleKey("tasks", 1, 3)], plain[ExampleKey("tasks", 1, 3)]
    assert srwt["audio_lengths"].tolist() == srwt_plain["audio_lengths"].tolist()  # word times still hold
    assert torch.equal(srwt["labels"], srwt_plain["labels"])
    assert not torch.equal(srwt["audio_features"], srwt_plain["audio_features"])
    untouched = augmented[ExampleKey("other", 0, 3)]["audio_features"]
    assert torch.equal(untouched, plain[ExampleKey("other", 0, 3)]["audio_features"])


def test_vocal_tract_warp_moves_only_the_named_source_and_is_seeded_by_the_key(corpus: Path, tokenizer) -> None:
    from qwen_audio.data.augment import WaveAugmentConfig

    warp_only = WaveAugmentConfig(sources=("tasks",), speed_p=0.0, reverb_p=0.0, noise_p=0.0, peak=(1.0, 1.0),
                                  warp=(0.8, 1.25), warp_p=1.0)
    loud = WaveAugmentConfig(sources=("tasks",), speed_p=0.0, reverb_p=0.0, noise_p=0.0, peak=(1.0, 1.0))
    sources = {"tasks": ManifestIndex(corpus / "tasks.jsonl"), "other": ManifestIndex(corpus / "tasks.jsonl")}
    warped = AudioTextDataset(sources, tokenizer, DatasetOptions(wave_augment=warp_only))
    unwarped = AudioTextDataset(sources, tokenizer, DatasetOptions(wave_augment=loud))
    a, b = warped[ExampleKey("tasks", 0, 3)], warped[ExampleKey("tasks", 0, 3)]
    assert torch.equal(a["audio_features"], b["audio_features"])
    assert not torch.equal(a["audio_features"], unwarped[ExampleKey("tasks", 0, 3)]["audio_features"])
    assert not torch.equal(a["audio_features"], warped[ExampleKey("tasks", 0, 4)]["audio_features"])  # another draw
    assert a["audio_lengths"].tolist() == unwarped[ExampleKey("tasks", 0, 3)]["audio_lengths"].tolist()
    assert torch.equal(warped[ExampleKey("other", 0, 3)]["audio_features"],
                       unwarped[ExampleKey("other", 0, 3)]["audio_features"])
