"""checkpoints.ctranslate2: a CTranslate2 Whisper model.bin, written by ctranslate2 itself, read into our encoder."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from qwen_audio.checkpoints import TensorSource, load_whisper_encoder
from qwen_audio.checkpoints.ctranslate2 import Ct2Model, is_ctranslate2_file, whisper_encoder_names
from qwen_audio.configuration import AudioEncoderConfig
from qwen_audio.encoder import AudioEncoder
from qwen_audio.errors import CheckpointError
from tests.base_fixtures import WHISPER_CTX, WHISPER_MELS, ct2_encode, tiny_hf_whisper, write_ct2_whisper

pytest.importorskip("ctranslate2")


@pytest.fixture(scope="module")
def hf_whisper():  # noqa: ANN201
    return tiny_hf_whisper()


@pytest.fixture(scope="module")
def ct2_dir(hf_whisper, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: ANN001
    directory = tmp_path_factory.mktemp("ct2") / "whisper"
    write_ct2_whisper(directory, hf_whisper)
    return directory


def tiny_encoder() -> AudioEncoder:
    torch.manual_seed(1)
    config = AudioEncoderConfig(n_mels=WHISPER_MELS, n_ctx=WHISPER_CTX, n_state=64, n_head=4, n_layer=2, output_dim=32)
    return AudioEncoder(config).eval()


def whisper_names(encoder: AudioEncoder) -> set[str]:
    return {"encoder." + n for n in encoder.state_dict() if not n.startswith(("proj.", "audio_bos_eos_token."))}


def test_loaded_encoder_equals_ctranslate2_encode(ct2_dir: Path) -> None:
    encoder = tiny_encoder()
    load_whisper_encoder(encoder, ct2_dir / "model.bin")
    mel = np.random.RandomState(0).randn(2, WHISPER_MELS, 2 * WHISPER_CTX).astype(np.float32)
    expected = ct2_encode(ct2_dir, mel)
    with torch.no_grad():
        hidden, _ = encoder.hidden_states(torch.from_numpy(mel))
        ours = encoder.ln_post(hidden).numpy()
    assert ours.shape == expected.shape == (2, WHISPER_CTX, 64)
    assert np.abs(ours - expected).max() <= 1e-3 * np.abs(expected).max()


def test_float16_file_loads_as_ctranslate2_computes_it(hf_whisper, tmp_path: Path) -> None:  # noqa: ANN001
    # The pinned Whisper base is stored in float16 (dtype id 4).
    directory = tmp_path / "fp16"
    model_bin = write_ct2_whisper(directory, hf_whisper, quantization="float16")
    assert Ct2Model(model_bin).variables["encoder/conv1/weight"].dtype_id == 4
    encoder = tiny_encoder()
    load_whisper_encoder(encoder, model_bin, dtype=torch.float32)
    mel = np.random.RandomState(1).randn(1, WHISPER_MELS, 2 * WHISPER_CTX).astype(np.float32)
    expected = ct2_encode(directory, mel)
    with torch.no_grad():
        hidden, _ = encoder.hidden_states(torch.from_numpy(mel))
        ours = encoder.ln_post(hidden).numpy()
    assert np.abs(ours - expected).max() <= 1e-3 * np.abs(expected).max()


def test_bfloat16_variables_widen_exactly(hf_whisper, tmp_path: Path) -> None:  # noqa: ANN001
    model = Ct2Model(write_ct2_whisper(tmp_path / "bf16", hf_whisper, quantization="bfloat16"))
    assert model.variables["encoder/conv1/weight"].dtype_id == 5
    conv = hf_whisper.model.encoder.conv1.weight.detach()
    assert torch.equal(model.tensor("encoder/conv1/weight"), conv.to(torch.bfloat16).float())
    model.close()


def test_names_shapes_and_qkv_thirds(ct2_dir: Path, hf_whisper) -> None:  # noqa: ANN001
    encoder = tiny_encoder()
    attention = hf_whisper.model.encoder.layers[1].self_attn
    with TensorSource(ct2_dir / "model.bin") as source:
        assert source.keys() == whisper_names(encoder)  # the decoder and num_heads are not offered
        for name, value in encoder.state_dict().items():
            if not name.startswith(("proj.", "audio_bos_eos_token.")):
                assert source.shape("encoder." + name) == tuple(value.shape), name
        prefix = "encoder.blocks.1.attn."
        assert torch.equal(source.get(prefix + "query.weight"), attention.q_proj.weight.detach())
        assert torch.equal(source.get(prefix + "key.weight"), attention.k_proj.weight.detach())
        assert torch.equal(source.get(prefix + "value.weight"), attention.v_proj.weight.detach())
        assert torch.equal(source.get(prefix + "query.bias"), attention.q_proj.bias.detach())
        assert torch.equal(source.get(prefix + "value.bias"), attention.v_proj.bias.detach())
        assert prefix + "key.bias" not in source.keys()
        assert torch.equal(source.get("encoder.ln_post.weight"), hf_whisper.model.encoder.layer_norm.weight.detach())
        assert source.extra["dims"]["n_mels"] == WHISPER_MELS


def _copy_model_bin(ct2_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model.bin"
    shutil.copyfile(ct2_dir / "model.bin", target)
    return target


def test_nonzero_key_bias_is_refused(ct2_dir: Path, tmp_path: Path) -> None:
    path = _copy_model_bin(ct2_dir, tmp_path)
    model = Ct2Model(path)
    variable = model.variables["encoder/layer_0/self_attention/linear_0/bias"]
    model.close()
    key_slot = variable.offset + variable.nbytes // 3  # float32 [q | k | v]: k's first entry
    with open(path, "r+b") as handle:
        handle.seek(key_slot)
        handle.write(struct.pack("<f", 0.5))
    with pytest.raises(CheckpointError, match="key slot is not zero"):
        load_whisper_encoder(tiny_encoder(), path)


@pytest.mark.parametrize("keep", [8, 40, 0.5, -3])
def test_truncated_file_is_a_checkpoint_error(ct2_dir: Path, tmp_path: Path, keep: float) -> None:
    data = (ct2_dir / "model.bin").read_bytes()
    length = int(len(data) * keep) if isinstance(keep, float) else (keep if keep > 0 else len(data) + keep)
    path = tmp_path / "model.bin"
    path.write_bytes(data[:length])
    assert is_ctranslate2_file(path)  # still looks like one: the error must come from the reader
    with pytest.raises(CheckpointError, match=r"truncated|past the file's end"):
        Ct2Model(path)
    with pytest.raises(CheckpointError):
        load_whisper_encoder(tiny_encoder(), path)


def test_empty_other_version_and_other_spec_are_refused(ct2_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    assert not is_ctranslate2_file(empty)
    with pytest.raises(CheckpointError, match="empty file"):
        Ct2Model(empty)

    data = bytearray((ct2_dir / "model.bin").read_bytes())
    assert struct.unpack_from("<I", data)[0] == 6
    (tmp_path / "v5.bin").write_bytes(struct.pack("<I", 5) + data[4:])
    with pytest.raises(CheckpointError, match="binary version 5"):
        Ct2Model(tmp_path / "v5.bin")

    assert data[6:17] == b"WhisperSpec"
    data[6:17] = b"MarianSpec_"
    (tmp_path / "other.bin").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="not a Whisper model"):
        whisper_encoder_names(Ct2Model(tmp_path / "other.bin"))


def test_int8_quantised_file_is_refused_not_loaded_as_integers(hf_whisper, tmp_path: Path) -> None:  # noqa: ANN001
    # An int8 model stores int8 weights plus a per-row weight_scale; reading the integers as weights is garbage.
    model_bin = write_ct2_whisper(tmp_path / "int8", hf_whisper, quantization="int8")
    with pytest.raises(CheckpointError, match="quantised .*--quantization float16"):
        load_whisper_encoder(tiny_encoder(), model_bin)
