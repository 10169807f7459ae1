"""train/recipe.py: YAML recipe → stage-1 and stage-2 runs on a tiny model; over-fitting works."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from qwen_audio.data.dataset import collate
from qwen_audio.train.recipe import Recipe, load_tokenizer, run_recipe


def tone(path: Path, freq: float, seconds: float = 1.0) -> str:
    t = np.arange(int(seconds * 16_000)) / 16_000
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t) * np.hanning(t.size)).astype(np.float32), 16_000)
    return path.name


@pytest.fixture()
def data_dir(tmp_path: Path, tiktoken_file: Path) -> Path:
    records = []
    for i, (freq, word) in enumerate([(200, "low"), (400, "middle"), (800, "high"), (1600, "shrill")]):
        name = tone(tmp_path / f"t{i}.wav", freq)
        records += [
            {"id": f"cap{i}", "audio": name, "task": "caption", "audio_language": "unknown", "text_language": "en",
             "text": f"a {word} tone", "duration": 1.0},
            {"id": f"pitch{i}", "audio": name, "task": "pitch", "audio_language": "unknown", "text_language": "en",
             "text": str(40 + 12 * i), "duration": 1.0},
        ]
    records += [
        {"id": "asr0", "audio": "t0.wav", "task": "asr", "audio_language": "en", "text_language": "en",
         "text": "hello world", "duration": 1.0},
        {"id": "asr1", "audio": "t2.wav", "task": "asr", "audio_language": "en", "text_language": "en",
         "text": "the quick fox", "duration": 1.0},
    ]
    (tmp_path / "tasks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    chat = {"id": "c", "messages": [
        {"role": "user", "content": [{"type": "audio", "audio": "t0.wav"}, {"type": "audio", "audio": "t3.wav"},
                                     {"type": "text", "text": "which is higher?"}]},
        {"role": "assistant", "content": "Audio 2"}]}
    (tmp_path / "chat.jsonl").write_text(json.dumps(chat) + "\n")
    (tmp_path / "qwen.tiktoken").write_bytes(tiktoken_file.read_bytes())
    return tmp_path


def write_recipe(path: Path, data: Path, stage: str, out: str, init: str, steps: int, extra: str = "") -> Path:
    manifest = "tasks.jsonl" if stage == "pretrain" else "chat.jsonl"
    path.write_text(f"""
stage: {stage}
tokenizer: {data / "qwen.tiktoken"}
model:
  init: "{init}"
{extra}
data:
  train:
    - manifest: {data / manifest}
  max_batch_seconds: 8
  num_workers: 0
  spec_augment: null
trainer:
  output_dir: {data / out}
  max_steps: {steps}
  learning_rate: 0.003
  warmup_steps: 2
  save_every: 2
  progress: false
  tensorboard: false
distributed: none
""")
    return path


def test_stage_one_then_stage_two_with_lora(data_dir: Path) -> None:
    from qwen_audio.model import QwenAudioForCausalLM

    recipe = Recipe.load(write_recipe(data_dir / "pre.yaml", data_dir, "pretrain", "stage1", "preset:tiny", 4))
    result = run_recipe(recipe)
    assert result.steps == 4 and np.isfinite(result.final_loss)
    stage1 = QwenAudioForCausalLM.from_pretrained(data_dir / "stage1" / "final")
    saved = json.loads((data_dir / "stage1" / "recipe.json").read_text())
    assert saved["parameters"]["frozen"] > 0 and saved["stage"] == "pretrain"
    assert (data_dir / "stage1" / "final" / "qwen.tiktoken").is_file()

    lora = "  lora:\n    r: 4\n    alpha: 8"
    recipe2 = Recipe.load(write_recipe(data_dir / "sft.yaml", data_dir, "sft", "stage2", str(data_dir / "stage1" / "final"), 3, lora))
    result2 = run_recipe(recipe2)
    assert result2.steps == 3
    stage2 = QwenAudioForCausalLM.from_pretrained(data_dir / "stage2" / "final")
    # Stage 2 freezes the encoder: its weights are stage 1's; LoRA merged into the decoder changed it.
    torch.testing.assert_close(stage2.audio.conv1.weight, stage1.audio.conv1.weight)
    changed = [n for n, p in stage2.model.named_parameters() if not torch.equal(p, dict(stage1.model.named_parameters())[n])]
    assert changed


def test_lora_in_stage_one_keeps_the_encoder_training(data_dir: Path) -> None:
    """PEFT freezes every non-adapter weight; the stage's own trainable set must survive the wrap."""
    from qwen_audio.model import QwenAudioForCausalLM
    from qwen_audio.train.recipe import build_model

    lora = "  lora:\n    r: 4\n    alpha: 8\n    target_modules: [q_proj, v_proj]"
    recipe = Recipe.load(write_recipe(data_dir / "pre.yaml", data_dir, "pretrain", "s1l", "preset:tiny", 3, lora))
    torch.manual_seed(recipe.seed)
    initial = build_model(recipe.model, load_tokenizer(recipe.tokenizer))
    run_recipe(recipe)
    trained = QwenAudioForCausalLM.from_pretrained(data_dir / "s1l" / "final")
    assert not torch.equal(trained.audio.proj.weight, initial.audio.proj.weight)
    assert not torch.equal(trained.model.layers[0].self_attn.q_proj.weight, initial.model.layers[0].self_attn.q_proj.weight)
    torch.testing.assert_close(trained.model.layers[0].mlp.up_proj.weight, initial.model.layers[0].mlp.up_proj.weight, rtol=0, atol=0)


def test_per_example_loss_reaches_the_model_it_trains(data_dir: Path) -> None:
    # Same seed, same batches: only the loss's averaging differs (captions have more target tokens
    # than pitches), so the losses must differ, and the setting is recorded with the run.
    losses = {}
    for flag in (False, True):
        extra = f"loss_per_example: {str(flag).lower()}"
        path = write_recipe(data_dir / f"pe{flag}.yaml", data_dir, "pretrain", f"pe{flag}", "preset:tiny", 2)
        text = path.read_text().replace("distributed: none", f"{extra}\ndistributed: none")
        path.write_text(text.replace("max_batch_seconds: 8", "max_batch_seconds: 600\n  num_buckets: 1"))  # rows of both tasks
        losses[flag] = run_recipe(Recipe.load(path)).final_loss
        assert json.loads((data_dir / f"pe{flag}" / "recipe.json").read_text())["loss_per_example"] is flag
    assert np.isfinite(losses[True]) and losses[True] != pytest.approx(losses[False], rel=1e-4)


def test_stage_one_freezes_the_llm(data_dir: Path) -> None:
    from qwen_audio.model import QwenAudioForCausalLM

    recipe = Recipe.load(write_recipe(data_dir / "pre.yaml", data_dir, "pretrain", "s1", "preset:tiny", 3))
    torch.manual_seed(recipe.seed)
    from qwen_audio.train.recipe import build_model

    initial = build_model(recipe.model, load_tokenizer(recipe.tokenizer))
    run_recipe(recipe)
    trained = QwenAudioForCausalLM.from_pretrained(data_dir / "s1" / "final")
    torch.testing.assert_close(trained.lm_head.weight, initial.lm_head.weight, rtol=0, atol=0)
    torch.testing.assert_close(trained.model.layers[0].mlp.up_proj.weight, initial.model.layers[0].mlp.up_proj.weight, rtol=0, atol=0)
    assert not torch.equal(trained.audio.conv1.weight, initial.audio.conv1.weight)


@pytest.mark.slow
def test_tiny_model_overfits_three_tasks_until_greedy_decoding_is_exact(data_dir: Path) -> None:
    """8 examples of 3 tasks (caption, pitch, ASR) whose answers depend on the audio."""
    from qwen_audio.data.dataset import AudioTextDataset, ExampleKey, ManifestIndex
    from qwen_audio.model import QwenAudioForCausalLM
    from qwen_audio.train.setup import config_for_tokenizer

    tokenizer = load_tokenizer(data_dir / "qwen.tiktoken")
    index = ManifestIndex(data_dir / "tasks.jsonl")
    dataset = AudioTextDataset({"t": index}, tokenizer)
    chosen = [0, 1, 2, 3, 4, 5, 8, 9]  # cap0 pitch0 cap1 pitch1 cap2 pitch2 asr0 asr1
    items = [dataset[ExampleKey("t", i)] for i in chosen]
    batch = collate(items, tokenizer.eod_id)
    torch.manual_seed(0)
    model = QwenAudioForCausalLM(config_for_tokenizer("tiny", tokenizer, hidden_size=128, intermediate_size=256,
                                                      audio_config={"n_state": 64, "output_dim": 128}))
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    for _ in range(400):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.01:
            break
    model.eval()
    for item in items:
        trained = item["labels"] != -100
        prompt = item["input_ids"][~trained][None]
        target = item["input_ids"][trained].tolist()
        out = model.generate(prompt, audio_features=item["audio_features"], audio_lengths=item["audio_lengths"],
                             max_new_tokens=len(target) + 2, do_sample=False)
        generated = out[0, prompt.shape[1]:].tolist()
        assert generated[: len(target)] == target, (tokenizer.decode(generated), tokenizer.decode(target))


def test_filtered_sources_draw_only_their_slice(data_dir: Path) -> None:
    from qwen_audio.errors import ConfigError
    from qwen_audio.train.distributed import DistributedContext
    from qwen_audio.train.recipe import DataSource, make_batch_source

    path = write_recipe(data_dir / "pre.yaml", data_dir, "pretrain", "s1", "preset:tiny", 4)
    text = path.read_text().replace(f"    - manifest: {data_dir / 'tasks.jsonl'}\n", f"""\
    - manifest: {data_dir / 'tasks.jsonl'}
      name: english_asr
      tasks: [asr]
      languages: [en]
      weight: 0.5
    - manifest: {data_dir / 'tasks.jsonl'}
      name: pitch
      tasks: [pitch]
      weight: 0.5
""")
    path.write_text(text)
    recipe = Recipe.load(path)
    tokenizer = load_tokenizer(recipe.tokenizer)
    context = DistributedContext(0, 1, 0, torch.device("cpu"))
    batches = make_batch_source(recipe, tokenizer, context)(0)
    seen = set()
    for _ in range(6):
        batch = next(batches)
        for row, labels in zip(batch["input_ids"], batch["labels"]):
            seen.add(tokenizer.decode(row[labels != -100].tolist()))
    pitches = {f"<|midi_pitch_{40 + 12 * i}|><|endoftext|>" for i in range(4)}
    assert seen <= pitches | {"hello world<|endoftext|>", "the quick fox<|endoftext|>"}
    assert seen & pitches and seen - pitches  # both slices drawn, nothing else
    with pytest.raises(ConfigError, match="filters apply to manifests"):
        DataSource(shards="shards", tasks=("asr",))


def test_recipe_paths_are_relative_to_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from qwen_audio.errors import ConfigError

    recipe_path = tmp_path / "configs" / "r.yaml"
    recipe_path.parent.mkdir()
    recipe_path.write_text("""
stage: pretrain
tokenizer: runs/qwen.tiktoken
model: {init: "preset:tiny"}
data: {train: [{manifest: corpus/tasks.jsonl}, {shards: /abs/shards}]}
trainer: {output_dir: runs/out, max_steps: 1}
""")
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    recipe = Recipe.load(recipe_path)
    assert recipe.tokenizer == str(workdir / "runs" / "qwen.tiktoken")
    assert recipe.data.train[0].manifest == str(workdir / "corpus" / "tasks.jsonl")
    assert recipe.data.train[1].shards == "/abs/shards" and recipe.model.init == "preset:tiny"
    assert recipe.trainer.output_dir == str(workdir / "runs" / "out")
    with pytest.raises(ConfigError, match="relative to the folder you run from"):
        load_tokenizer(recipe.tokenizer)


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_load(path: Path) -> None:
    recipe = Recipe.load(path)
    assert recipe.trainer.max_steps > 0 and recipe.data.train


def test_wave_augment_must_name_a_source_of_the_recipe(data_dir: Path) -> None:
    from qwen_audio.errors import ConfigError

    extra = "  lora: null"
    path = write_recipe(data_dir / "aug.yaml", data_dir, "pretrain", "aug", "preset:tiny", 4, extra)
    text = path.read_text().replace("  spec_augment: null", "  spec_augment: null\n  wave_augment: {sources: [tasks], speed: [0.9, 1.1]}")
    path.write_text(text)
    recipe = Recipe.load(path)
    assert recipe.data.wave_augment.speed == (0.9, 1.1)
    assert recipe.data.dataset_options(recipe.seed, recipe.transcripts).wave_augment == recipe.data.wave_augment
    path.write_text(text.replace("sources: [tasks]", "sources: [speech]"))
    with pytest.raises(ConfigError, match="speech"):
        Recipe.load(path)
