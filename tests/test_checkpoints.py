"""Checkpoint layouts written by the tests themselves, loaded back: official, Whisper, Qwen v1/Qwen2, conversion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import Qwen2Config, Qwen2ForCausalLM, WhisperConfig, WhisperForConditionalGeneration

from qwen_audio.checkpoints import (
    config_from_official,
    convert_checkpoint,
    is_official_checkpoint,
    load_official,
    load_qwen_llm,
    load_whisper_encoder,
    transformers_whisper_name,
)
from qwen_audio.checkpoints.loading import load_model
from qwen_audio.configuration import QwenAudioConfig
from qwen_audio.errors import CheckpointError
from qwen_audio.model import QwenAudioForCausalLM
from qwen_audio.tokenizer import QwenAudioTokenizer
from tests.model_fixtures import (
    audio_prompt,
    official_config_json,
    official_state_dict,
    official_tiny_model,
    qwen_v1_reference_logits,
    tiktoken_lines,
    tiny_model,
    write_official_checkpoint,
)


def sample_inputs(model: QwenAudioForCausalLM) -> dict[str, torch.Tensor]:
    ids, mel_len = audio_prompt(model.config, [1, 2], 12_800, [3, 4])
    torch.manual_seed(5)
    return dict(input_ids=torch.tensor([ids]), audio_features=torch.randn(1, 80, 3000), audio_lengths=torch.tensor([mel_len]))


def logits(model: QwenAudioForCausalLM, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits.float()


def test_official_sharded_checkpoint_gives_the_official_logits(tmp_path: Path) -> None:
    original = official_tiny_model(seed=7)
    state = write_official_checkpoint(original, tmp_path / "official", shards=3)
    assert is_official_checkpoint(tmp_path / "official")
    loaded = load_official(tmp_path / "official")
    assert not any(p.is_meta for p in loaded.parameters())
    inputs = sample_inputs(original)
    assert torch.equal(logits(loaded, inputs), logits(original, inputs))
    text = torch.tensor([[5, 9, 33, 2, 17, 250]])
    reference = qwen_v1_reference_logits(state, loaded.config, loaded.model.embed_tokens(text))
    assert (logits(loaded, {"input_ids": text}) - reference).abs().max() <= 1e-4
    with pytest.raises(CheckpointError, match="load_model"):  # the model class opens only its own layout
        QwenAudioForCausalLM.from_pretrained(tmp_path / "official")
    opened, tokenizer = load_model(tmp_path / "official")  # the one loader opens every layout
    assert torch.equal(logits(opened, inputs), logits(original, inputs))
    assert tokenizer.convert_tokens_to_ids("<audio>") == opened.config.audio_start_id


def test_load_model_opens_our_layout_in_fp32_and_names_what_is_missing(tmp_path: Path) -> None:
    model = official_tiny_model(seed=3)
    write_official_checkpoint(model, tmp_path / "official")
    native = tmp_path / "native"
    convert_checkpoint(tmp_path / "official", native, to="native")
    opened, _ = load_model(native)
    assert all(p.dtype == torch.float32 for p in opened.parameters())
    with pytest.raises(CheckpointError, match="config.json"):
        load_model(tmp_path / "nowhere")
    (native / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights"):
        load_model(native)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_official_half_precision(tmp_path: Path, dtype: torch.dtype) -> None:
    original = official_tiny_model()
    write_official_checkpoint(original, tmp_path, dtype=dtype)
    stored = load_official(tmp_path)  # keeps the stored dtype
    assert stored.lm_head.weight.dtype == dtype and stored.audio.conv1.weight.dtype == dtype
    as_fp32 = load_official(tmp_path, dtype=torch.float32)
    assert as_fp32.lm_head.weight.dtype == torch.float32
    inputs = sample_inputs(original)
    assert (logits(as_fp32, inputs) - logits(original, inputs)).abs().max() < 0.5  # rounding of the stored weights only
    assert torch.isfinite(logits(stored, inputs)).all()


def test_official_checkpoint_problems_are_named(tmp_path: Path) -> None:
    model = official_tiny_model()
    write_official_checkpoint(model, tmp_path / "ok", shards=1)
    state = load_file(tmp_path / "ok" / "model-00001-of-00001.safetensors")

    def variant(name: str, tensors: dict[str, torch.Tensor], config_change: dict | None = None) -> Path:
        directory = tmp_path / name
        directory.mkdir()
        config = json.loads((tmp_path / "ok" / "config.json").read_text())
        config.update(config_change or {})
        (directory / "config.json").write_text(json.dumps(config))
        (directory / "qwen.tiktoken").write_bytes((tmp_path / "ok" / "qwen.tiktoken").read_bytes())
        save_file(tensors, str(directory / "model.safetensors"))
        return directory

    missing = {k: v for k, v in state.items() if k != "transformer.h.1.mlp.w2.weight"}
    with pytest.raises(CheckpointError, match=r"missing transformer\.h\.1\.mlp\.w2\.weight"):
        load_official(variant("missing", missing))
    with pytest.raises(CheckpointError, match="unexpected tensors.*transformer.h.9.extra"):
        load_official(variant("unexpected", {**state, "transformer.h.9.extra": torch.zeros(1)}))
    with pytest.raises(CheckpointError, match="shape"):
        load_official(variant("shape", state, {"intermediate_size": 2 * 2 * model.config.intermediate_size}))
    ignorable = {**state, "transformer.h.0.attn.rotary_emb.inv_freq": torch.zeros(8)}
    ignorable.pop("transformer.audio.positional_embedding")  # a fixed buffer: recomputed when absent
    loaded = load_official(variant("ignorable", ignorable))
    assert torch.equal(loaded.audio.positional_embedding, model.audio.positional_embedding)


# --------------------------------------------------------------------------- the folder's own tokenizer


def test_official_folder_takes_its_ids_from_its_own_tokenizer(tmp_path: Path) -> None:
    # Issue 18: such a folder used to fail with "audio_pad_id = 151851 is outside the vocabulary".
    original = official_tiny_model(seed=3, n_ranks=300)
    write_official_checkpoint(original, tmp_path)
    assert "audio_pad_id" not in json.loads((tmp_path / "config.json").read_text())  # as in the release
    loaded, _ = load_model(tmp_path)
    c = loaded.config
    # 300 ranks: <|endoftext|> 300, <|im_start|> 301, <|im_end|> 302, pad 300 + 208, <audio> 300 + 3520.
    assert (c.endoftext_id, c.im_start_id, c.im_end_id, c.audio_pad_id, c.audio_start_id) == (300, 301, 302, 508, 3820)
    assert c.eos_token_ids == (302, 300) and c.vocab_size == original.config.vocab_size
    tokenizer = QwenAudioTokenizer(tmp_path / "qwen.tiktoken")
    assert (tokenizer.eod_id, tokenizer.im_end_id, tokenizer.audio_pad_id, tokenizer.audio_start_id) == (300, 302, 508, 3820)
    inputs = sample_inputs(original)
    assert torch.equal(logits(loaded, inputs), logits(original, inputs))
    native = convert_checkpoint(tmp_path, tmp_path.parent / "native", to="native")
    assert QwenAudioConfig.from_pretrained(native).audio_pad_id == 508


def test_official_config_json_that_states_its_ids_must_agree_with_its_tokenizer(tmp_path: Path) -> None:
    config = official_tiny_model(n_ranks=300).config
    agreeing = official_config_json(config, state_ids=True)  # what config_to_official writes
    assert config_from_official(agreeing, tokenizer_ranks=300).audio_pad_id == 508
    for name, wrong in [("audio_pad_id", 403), ("im_end_id", 151645), ("endoftext_id", 299)]:
        with pytest.raises(CheckpointError, match=rf"disagrees with its qwen.tiktoken \(300 ranks\).*{name} {wrong} \(the tokenizer's is"):
            config_from_official({**agreeing, name: wrong}, tokenizer_ranks=300)
    stale_audio = {**agreeing, "audio": {**agreeing["audio"], "audio_start_id": 155163}}
    with pytest.raises(CheckpointError, match="audio_start_id 155163"):
        config_from_official(stale_audio, tokenizer_ranks=300)
    # The same refusal from a folder: a config.json copied from the release next to a smaller tokenizer.
    write_official_checkpoint(official_tiny_model(n_ranks=300), tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(stale_audio))
    with pytest.raises(CheckpointError, match="disagrees with its qwen.tiktoken"):
        load_official(tmp_path)


def test_official_tokenizer_that_does_not_fit_the_embedding_is_refused() -> None:
    values = official_config_json(official_tiny_model(n_ranks=300).config)  # vocab_size 3840
    with pytest.raises(CheckpointError, match=r"400 ranks, so its special tokens reach id 3921, but the embedding has vocab_size 3840"):
        config_from_official({**values, "audio": {k: v for k, v in values["audio"].items() if k != "audio_start_id"}}, tokenizer_ranks=400)


def test_official_folder_without_a_tokenizer(tmp_path: Path) -> None:
    # The release's numbers fit its own vocab_size: a folder without qwen.tiktoken gets the spec's ids.
    small = official_config_json(official_tiny_model(n_ranks=300).config)
    release_like = {**small, "vocab_size": 155_947, "audio": {**small["audio"], "audio_start_id": 155163}}
    c = config_from_official(release_like)
    assert (c.endoftext_id, c.im_start_id, c.im_end_id, c.audio_pad_id, c.audio_start_id) == (151643, 151644, 151645, 151851, 155163)
    # A small vocabulary has nothing to derive its ids from: refused by name, not with a ConfigError.
    write_official_checkpoint(official_tiny_model(n_ranks=300), tmp_path)
    (tmp_path / "qwen.tiktoken").unlink()
    with pytest.raises(CheckpointError, match=r"no qwen.tiktoken.*audio_pad_id 151851.*vocab_size 3840; put the checkpoint's qwen.tiktoken"):
        load_official(tmp_path)
    (tmp_path / "qwen.tiktoken").write_text("not base64 at all\n")
    with pytest.raises(CheckpointError, match="qwen.tiktoken does not read"):
        load_official(tmp_path)
    (tmp_path / "qwen.tiktoken").write_text(tiktoken_lines(300))
    assert load_official(tmp_path).config.audio_pad_id == 508


def test_convert_round_trip(tmp_path: Path) -> None:
    original = official_tiny_model(seed=2)
    state = write_official_checkpoint(original, tmp_path / "official")
    native = convert_checkpoint(tmp_path / "official", tmp_path / "native", to="native", max_shard_bytes=200_000)
    assert (native / "model.safetensors.index.json").is_file() and (native / "qwen.tiktoken").is_file()
    from_native = QwenAudioForCausalLM.from_pretrained(native).eval()
    inputs = sample_inputs(original)
    assert torch.equal(logits(from_native, inputs), logits(original, inputs))
    back = convert_checkpoint(native, tmp_path / "back", to="official")
    assert is_official_checkpoint(back)
    restored = {}
    for file in back.glob("*.safetensors"):
        restored.update(load_file(file))
    assert restored.keys() == state.keys()
    assert all(torch.equal(restored[k], state[k]) for k in state)
    with pytest.raises(CheckpointError, match="not empty"):
        convert_checkpoint(tmp_path / "official", tmp_path / "back", to="native")
    with pytest.raises(CheckpointError, match="not an official"):
        convert_checkpoint(native, tmp_path / "again", to="native")


def test_save_pretrained_output_converts_to_official(tmp_path: Path) -> None:
    original = tiny_model(seed=4)
    original.save_pretrained(tmp_path / "native")
    official = convert_checkpoint(tmp_path / "native", tmp_path / "official", to="official", dtype=torch.bfloat16)
    restored = {}
    for file in official.glob("*.safetensors"):
        restored.update(load_file(file))
    expected = official_state_dict(original)
    assert all(torch.equal(restored[k], expected[k].to(torch.bfloat16)) for k in expected)
    assert json.loads((official / "config.json").read_text())["intermediate_size"] == 2 * original.config.intermediate_size


# --------------------------------------------------------------------------- Whisper


def test_openai_whisper_pt_into_the_encoder(tmp_path: Path) -> None:
    source = tiny_model(seed=11).audio
    c = source.config
    state = {f"encoder.{k}": v for k, v in source.state_dict().items() if not k.startswith(("proj.", "audio_bos_eos_token."))}
    state["decoder.token_embedding.weight"] = torch.zeros(10, c.n_state)
    dims = {"n_mels": c.n_mels, "n_audio_ctx": c.n_ctx, "n_audio_state": c.n_state, "n_audio_head": c.n_head, "n_audio_layer": c.n_layer}
    torch.save({"dims": dims, "model_state_dict": state}, tmp_path / "tiny.pt")
    target = tiny_model(seed=12)
    proj_before = target.audio.proj.weight.clone()
    report = load_whisper_encoder(target, tmp_path / "tiny.pt")
    assert torch.equal(target.audio.blocks[1].attn.key.weight, source.blocks[1].attn.key.weight)
    assert torch.equal(target.audio.ln_post.bias, source.ln_post.bias)
    assert torch.equal(target.audio.proj.weight, proj_before)
    assert "proj.weight" in report.untouched and "decoder.token_embedding.weight" in report.ignored_source_keys
    torch.save({"dims": {**dims, "n_mels": 128}, "model_state_dict": state}, tmp_path / "v3.pt")
    with pytest.raises(CheckpointError, match="128 mel bins"):
        load_whisper_encoder(target, tmp_path / "v3.pt")


def test_transformers_whisper_into_the_encoder(tmp_path: Path) -> None:
    source = tiny_model(seed=13).audio
    c = source.config
    whisper = WhisperForConditionalGeneration(
        WhisperConfig(num_mel_bins=c.n_mels, d_model=c.n_state, encoder_layers=c.n_layer, encoder_attention_heads=c.n_head,
                      encoder_ffn_dim=4 * c.n_state, decoder_layers=1, decoder_attention_heads=c.n_head,
                      decoder_ffn_dim=4 * c.n_state, max_source_positions=c.n_ctx, vocab_size=100,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=3)
    )
    whisper.model.encoder.load_state_dict(
        {transformers_whisper_name(k): v for k, v in source.state_dict().items() if not k.startswith(("proj.", "audio_bos_eos_token."))}
    )
    whisper.save_pretrained(tmp_path)
    target = tiny_model(seed=14)
    load_whisper_encoder(target, tmp_path)
    inputs = sample_inputs(target)
    with torch.no_grad():
        a, _ = target.audio.hidden_states(inputs["audio_features"], inputs["audio_lengths"])
        b, _ = source.hidden_states(inputs["audio_features"], inputs["audio_lengths"])
    assert torch.equal(a, b)


# --------------------------------------------------------------------------- Qwen LLM


def test_qwen_v1_llm_into_the_decoder(tmp_path: Path) -> None:
    source = tiny_model(seed=21)
    llm_only = {k: v for k, v in official_state_dict(source).items() if not k.startswith("transformer.audio.")}
    save_file(llm_only, str(tmp_path / "model.safetensors"))
    target = tiny_model(seed=22)
    audio_before = target.audio.conv1.weight.clone()
    load_qwen_llm(target, tmp_path)
    text = {"input_ids": torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6]])}
    assert torch.equal(logits(target, text), logits(source, text))
    assert torch.equal(target.audio.conv1.weight, audio_before)


def test_qwen2_llm_with_a_smaller_vocabulary(tmp_path: Path) -> None:
    target = tiny_model(seed=31)
    c = target.config
    qwen2 = Qwen2ForCausalLM(Qwen2Config(vocab_size=400, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                                         num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
                                         num_key_value_heads=c.num_attention_heads, tie_word_embeddings=False))
    qwen2.save_pretrained(tmp_path)
    audio_rows = target.model.embed_tokens.weight[400:].clone()
    with pytest.raises(CheckpointError, match="shape"):
        load_qwen_llm(target, tmp_path)
    report = load_qwen_llm(target, tmp_path, resize_vocab=True)
    assert set(report.resized) == {"model.embed_tokens.weight", "lm_head.weight"}
    assert torch.equal(target.model.embed_tokens.weight[:400], qwen2.model.embed_tokens.weight)
    assert torch.equal(target.model.embed_tokens.weight[400:], audio_rows)
    assert torch.equal(target.model.layers[1].mlp.gate_proj.weight, qwen2.model.layers[1].mlp.gate_proj.weight)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_qwen_llm(tiny_model(), tmp_path / "nothing")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="neither a Qwen v1"):
        load_qwen_llm(tiny_model(), tmp_path)


def test_convert_command_picks_the_other_layout(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from qwen_audio.cli import app

    write_official_checkpoint(official_tiny_model(), tmp_path / "official")
    result = CliRunner().invoke(app, ["convert", str(tmp_path / "official"), str(tmp_path / "native"), "--dtype", "bfloat16"])
    assert result.exit_code == 0, result.output
    assert "native" in result.output
    loaded = QwenAudioForCausalLM.from_pretrained(tmp_path / "native")
    assert loaded.lm_head.weight.dtype == torch.bfloat16
    bad = CliRunner().invoke(app, ["convert", str(tmp_path / "official"), str(tmp_path / "x"), "--dtype", "int8"])
    assert bad.exit_code == 1 and "--dtype must be one of" in bad.output
