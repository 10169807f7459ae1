"""How the vLLM plugin reads an official Qwen-Audio folder, without vLLM itself: the config, the tensor
names, the tokenizer's end of sequence. These run in the main environment too (they import no vLLM);
that vLLM then decodes as QwenAudio does is test_engine.py's ``official`` case."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from qwen_audio.checkpoints.official import official_config
from qwen_audio.errors import CheckpointError
from qwen_audio.vllm import ARCHITECTURE
from qwen_audio.vllm.official import OfficialPromptTokenizer, QwenAudioOfficialConfig, native_weights
from tests.model_fixtures import official_state_dict, official_tiny_model, write_official_checkpoint


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("official")
    write_official_checkpoint(official_tiny_model(seed=4, n_ranks=300), directory)
    return directory


def test_config_is_the_conversion_s_and_names_the_plugin_model(folder: Path) -> None:
    config = QwenAudioOfficialConfig.from_pretrained(folder)
    converted = official_config(folder)  # what `qwen-audio convert` writes

    assert config.architectures == [ARCHITECTURE] and config.model_type == "qwen"
    ours = {k: v for k, v in config.to_dict().items() if k not in ("architectures", "model_type", "_name_or_path")}
    assert ours == {k: v for k, v in converted.to_dict().items() if k in ours}
    assert config.audio_start_id == 300 + 3520  # from the folder's 300-rank qwen.tiktoken, not the release's ids
    again = QwenAudioOfficialConfig.from_dict(config.to_dict())  # vLLM may serialise it and read it back
    assert again.to_dict() == config.to_dict()


def test_a_qwen_config_without_audio_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="not Qwen-Audio"):
        QwenAudioOfficialConfig.from_dict({"model_type": "qwen", "hidden_size": 64, "num_attention_heads": 4})


def test_official_tensors_become_this_package_s() -> None:
    """Every tensor of the official layout (written independently of checkpoints/) lands on its own name."""
    model = official_tiny_model(seed=2)
    official = official_state_dict(model)
    official["transformer.h.0.attn.rotary_emb.inv_freq"] = torch.zeros(8)  # released buffers that carry nothing

    renamed: dict[str, torch.Tensor] = {}
    for name, tensor in native_weights(model.config, official.items()):
        assert name not in renamed, f"{name} twice"
        renamed[name] = tensor

    expected = {k: v for k, v in model.state_dict().items() if not k.endswith("inv_freq")}
    assert renamed.keys() == expected.keys()
    assert all(torch.equal(renamed[k], expected[k]) for k in expected)
    native = list(native_weights(model.config, [("model.norm.weight", expected["model.norm.weight"])]))  # our layout passes
    assert [name for name, _ in native] == ["model.norm.weight"]
    with pytest.raises(CheckpointError, match="transformer.h.9.extra"):
        list(native_weights(model.config, [("transformer.h.9.extra", torch.zeros(1))]))


def test_official_tokenizer_ends_at_im_end(folder: Path) -> None:
    """The release's generation_config.json stops at <|endoftext|> only; vLLM adds the tokenizer's end."""
    tokenizer = OfficialPromptTokenizer(folder / "qwen.tiktoken")
    assert tokenizer.eos_token_id == tokenizer.im_end_id and tokenizer.pad_token_id == tokenizer.eod_id
