"""runtime.py: the inference model holds QwenAudioForCausalLM's tensors under its names, decodes to the
same tokens and logits, and loads without importing transformers' modelling code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file
from transformers import Qwen2Model

from qwen_audio.checkpoints.loading import load_model
from qwen_audio.errors import CheckpointError
from qwen_audio.llm import DecoderLayout, has_plain_layout, qwen2_parts
from qwen_audio.model import QwenAudioForCausalLM
from qwen_audio.runtime import QwenAudioRuntime, can_load_runtime, load_runtime
from tests.model_fixtures import left_pad, tiny_config, tiny_model
from tests.test_generation import prompts


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model with non-trivial norms and biases, grouped-query attention, untied embeddings, saved."""
    directory = tmp_path_factory.mktemp("runtime-model")
    tiny_model(seed=4, num_key_value_heads=2).save_pretrained(directory)
    return directory


def test_the_layout_holds_qwen2s_parameters_rotary_and_norm() -> None:
    config = tiny_config(num_key_value_heads=2)
    torch.manual_seed(0)
    qwen2, layout = Qwen2Model(config), DecoderLayout(config)
    theirs, ours = qwen2.state_dict(), layout.state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    assert torch.equal(layout.rotary_emb.inv_freq, qwen2.rotary_emb.inv_freq)
    with torch.no_grad():
        for p in qwen2.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    layout.load_state_dict(qwen2.state_dict())
    x = torch.randn(3, 5, config.hidden_size)
    q2, lay = qwen2_parts(qwen2), qwen2_parts(layout)
    norm, our_norm = q2.layers[1].input_norm, lay.layers[1].input_norm
    assert torch.equal(norm(x), our_norm(x)) and torch.equal(norm(x.half()), our_norm(x.half()))
    assert torch.equal(q2.layers[1].mlp(x), lay.layers[1].mlp(x))
    assert (q2.rms_norm_eps, q2.attention_scaling) == (lay.rms_norm_eps, lay.attention_scaling)


def test_scaled_rope_and_other_activations_are_not_the_plain_layout() -> None:
    assert has_plain_layout(tiny_config())
    assert not has_plain_layout(tiny_config(hidden_act="gelu"))
    assert not has_plain_layout(tiny_config(rope_parameters={"rope_type": "linear", "rope_theta": 1e4, "factor": 2.0}))
    with pytest.raises(ValueError, match="plain RoPE"):
        DecoderLayout(tiny_config(hidden_act="gelu"))


@pytest.mark.parametrize("fold", [True, False])
def test_the_runtime_decodes_the_transformers_models_tokens_and_logits(saved: Path, fold: bool) -> None:
    full = QwenAudioForCausalLM.from_pretrained(saved).eval()
    runtime = load_runtime(saved)
    assert isinstance(runtime, QwenAudioRuntime) and not runtime.training
    assert {k: v.shape for k, v in runtime.state_dict().items()} == {k: v.shape for k, v in full.state_dict().items()}
    for name, tensor in full.state_dict().items():
        assert torch.equal(runtime.state_dict()[name], tensor), name
    rows, mel, lengths = prompts(full)
    ids, mask = left_pad(rows, full.config.endoftext_id)
    audio = dict(audio_features=mel, audio_lengths=lengths)
    assert torch.equal(runtime.next_token_logits(ids, attention_mask=mask, **audio),
                       full.next_token_logits(ids, attention_mask=mask, **audio))
    options = dict(attention_mask=mask, max_new_tokens=10, eos_token_id=[], fold=fold, **audio)
    assert torch.equal(runtime.fast_generate(ids, **options), full.fast_generate(ids, **options))
    beams = dict(attention_mask=mask, num_beams=3, max_new_tokens=6, fold=fold, **audio)
    ours, theirs = runtime.fast_beam_search(ids, **beams), full.fast_beam_search(ids, **beams)
    assert [[(h.ids, h.log_prob) for h in row] for row in ours] == [[(h.ids, h.log_prob) for h in row] for row in theirs]


def test_beam_sampling_runs_transformers_generate_over_the_same_tensors(saved: Path) -> None:
    full, runtime = QwenAudioForCausalLM.from_pretrained(saved).eval(), load_runtime(saved)
    rows, mel, lengths = prompts(full)
    ids, mask = left_pad(rows[:2], full.config.endoftext_id)
    options = dict(attention_mask=mask, audio_features=mel[:2], audio_lengths=lengths[:2], max_new_tokens=6,
                   num_beams=2, do_sample=True, eos_token_id=[])
    torch.manual_seed(7)
    twin = QwenAudioForCausalLM.sharing(runtime)  # built after the seed: its init must not draw from it
    ours = twin.generate(ids, **options)
    torch.manual_seed(7)
    theirs = full.generate(ids, **options)
    assert torch.equal(ours, theirs)
    assert twin.lm_head.weight.data_ptr() == runtime.lm_head.weight.data_ptr()  # no copy of the weights
    assert twin.generation_config.eos_token_id == runtime.generation_config.eos_token_id


def test_the_api_beam_samples_on_the_inference_models_tensors(tiny_model_dir: Path) -> None:
    from qwen_audio.api import QwenAudio
    from qwen_audio.infer.engine import GenerationOptions

    api = QwenAudio.from_pretrained(tiny_model_dir)
    assert isinstance(api.model, QwenAudioRuntime)
    wave = np.random.default_rng(0).standard_normal(16_000).astype(np.float32) * 0.1
    options = GenerationOptions(num_beams=2, temperature=0.8, max_new_tokens=5, seed=3)
    prompt = api.tokenizer.encode_prompt("<audio>a</audio>hello", [wave.size])
    first = api.generate([prompt], [[wave]], options)
    again = api.generate([prompt], [[wave]], options)
    assert first == again  # seeded: the first call, which builds the transformers model, draws the same
    assert api._transformers_model() is api._transformers_model()


def test_tied_embeddings_load_as_one_tensor(tmp_path: Path) -> None:
    tiny_model(seed=1, tie_word_embeddings=True).save_pretrained(tmp_path)
    assert "lm_head.weight" not in load_file(str(tmp_path / "model.safetensors"))
    runtime = load_runtime(tmp_path)
    assert runtime.lm_head.weight.data_ptr() == runtime.model.embed_tokens.weight.data_ptr()
    full = QwenAudioForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    assert torch.equal(runtime.next_token_logits(ids), full.next_token_logits(ids))


def test_weights_that_do_not_fit_the_config_are_one_clear_error(saved: Path, tmp_path: Path) -> None:
    for name in ("config.json", "generation_config.json"):
        (tmp_path / name).write_text((saved / name).read_text())
    state = load_file(str(saved / "model.safetensors"))
    del state["model.norm.weight"]
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"missing \['model.norm.weight'\]"):
        load_runtime(tmp_path)


def test_inference_loading_opens_ours_as_the_runtime_and_the_rest_as_the_transformers_model(
    saved: Path, tmp_path: Path, tiny_model_dir: Path,
) -> None:
    model, _ = load_model(tiny_model_dir, inference=True)
    assert isinstance(model, QwenAudioRuntime)
    model, _ = load_model(tiny_model_dir)
    assert isinstance(model, QwenAudioForCausalLM)
    for name in ("config.json", "generation_config.json"):  # a layout the runtime does not hold
        (tmp_path / name).write_text((saved / name).read_text())
    config = json.loads((saved / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").symlink_to(saved / "model.safetensors")
    assert not can_load_runtime(tmp_path)


def test_the_api_loads_and_transcribes_without_importing_transformers_modelling_code(
    tiny_model_dir: Path, tmp_path: Path,
) -> None:
    wav = tmp_path / "tone.wav"
    sf.write(wav, (0.2 * np.sin(np.arange(16_000) / 16_000 * 2 * np.pi * 220)).astype(np.float32), 16_000)
    script = f"""
import sys
from qwen_audio.api import QwenAudio
qa = QwenAudio.from_pretrained({str(tiny_model_dir)!r})
qa.transcribe({str(wav)!r}, language="en")
heavy = ["transformers.modeling_utils", "transformers.models.qwen2.modeling_qwen2", "torch._dynamo", "qwen_audio.model"]
print(type(qa.model).__name__, [m for m in heavy if m in sys.modules])
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[-2] == "QwenAudioRuntime []", done.stdout + done.stderr
