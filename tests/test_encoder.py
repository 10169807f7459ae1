"""The Whisper encoder: parity with transformers' WhisperEncoder, forward order, masking, lengths."""

from __future__ import annotations

import pytest
import torch
from transformers import WhisperConfig
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from qwen_audio.audio import audio_span
from qwen_audio.checkpoints import transformers_whisper_name
from qwen_audio.configuration import AudioEncoderConfig
from qwen_audio.encoder import AudioEncoder, conv_lengths, pooled_lengths

CONFIG = AudioEncoderConfig(n_mels=80, n_ctx=20, n_state=32, n_head=4, n_layer=2, output_dim=48)


def random_encoder(config: AudioEncoderConfig = CONFIG, seed: int = 0) -> AudioEncoder:
    torch.manual_seed(seed)
    encoder = AudioEncoder(config).eval()
    with torch.no_grad():
        for name, param in encoder.named_parameters():
            param.copy_(torch.randn_like(param) * (0.2 if param.dim() > 1 else 0.5) + (1.0 if "ln" in name and name.endswith("weight") else 0.0))
    return encoder


def whisper_twin(encoder: AudioEncoder) -> WhisperEncoder:
    """transformers' WhisperEncoder holding the same weights (names translated one by one)."""
    c = encoder.config
    hf_config = WhisperConfig(
        num_mel_bins=c.n_mels, d_model=c.n_state, encoder_layers=c.n_layer, encoder_attention_heads=c.n_head,
        encoder_ffn_dim=4 * c.n_state, max_source_positions=c.n_ctx, attn_implementation="eager",
    )
    twin = WhisperEncoder(hf_config).eval()
    state = {
        transformers_whisper_name(k): v for k, v in encoder.state_dict().items()
        if not k.startswith(("proj.", "audio_bos_eos_token."))
    }
    missing, unexpected = twin.load_state_dict(state, strict=True)
    assert not missing and not unexpected
    return twin


def test_blocks_match_transformers_whisper_encoder() -> None:
    encoder = random_encoder()
    twin = whisper_twin(encoder)
    mel = torch.randn(2, 80, 2 * CONFIG.n_ctx)
    with torch.no_grad():
        ours, _ = encoder.hidden_states(mel)
        theirs = twin(mel).last_hidden_state  # WhisperEncoder ends with its layer_norm (our ln_post)
    assert ours.shape == theirs.shape
    assert (encoder.ln_post(ours) - theirs).abs().max() <= 1e-4


def test_forward_pools_then_normalises_then_projects() -> None:
    encoder = random_encoder()
    mel = torch.randn(1, 80, 40)
    with torch.no_grad():
        hidden, _ = encoder.hidden_states(mel)
        pooled = (hidden[:, 0::2] + hidden[:, 1::2]) / 2
        expected = encoder.proj(encoder.ln_post(pooled))
        wrong_order = (lambda h: (h[:, 0::2] + h[:, 1::2]) / 2)(encoder.proj(encoder.ln_post(hidden)))
        out = encoder(mel)
    assert out.frames.shape == (1, 10, CONFIG.output_dim)
    assert torch.allclose(out.frames, expected, atol=1e-5)
    assert not torch.allclose(out.frames, wrong_order, atol=1e-3)
    spans = out.spans()
    assert torch.equal(spans[0][0], encoder.audio_bos_eos_token.weight[0])
    assert torch.equal(spans[0][-1], encoder.audio_bos_eos_token.weight[1])


@pytest.mark.parametrize("num_samples", [480, 1_600, 16_000, 16_160, 33_333, 480_000])
def test_lengths_follow_the_spec(num_samples: int) -> None:
    span = audio_span(num_samples)
    mel_len = torch.tensor([span.mel_len])
    assert int(conv_lengths(mel_len)) == span.conv_len
    assert int(pooled_lengths(mel_len)) == span.pooled_len


@pytest.mark.parametrize("mel_len", [20, 21])
def test_padding_content_does_not_leak(mel_len: int) -> None:
    encoder = random_encoder()
    mel = torch.randn(1, 80, 40)
    other = mel.clone()
    conv_len = (mel_len - 1) // 2 + 1
    other[:, :, 2 * conv_len:] = torch.randn_like(other[:, :, 2 * conv_len:]) * 10
    lengths = torch.tensor([mel_len])
    with torch.no_grad():
        a, b = encoder(mel, lengths), encoder(other, lengths)
        changed_real = mel.clone()
        changed_real[:, :, mel_len - 2] += 5
        c = encoder(changed_real, lengths)
    n = int(a.lengths)
    assert torch.equal(a.frames[0, :n], b.frames[0, :n])
    assert not torch.allclose(a.frames[0, :n], c.frames[0, :n])


def test_batch_of_mixed_lengths_equals_one_by_one() -> None:
    encoder = random_encoder()
    mel = torch.randn(3, 80, 40)
    lengths = torch.tensor([40, 17, 26])
    with torch.no_grad():
        batch = encoder(mel, lengths)
        for i in range(3):
            # alone = what the official model gets for a batch of one: the same (padded) mel
            alone = encoder(mel[i : i + 1], lengths[i : i + 1])
            n = int(alone.lengths)
            assert int(batch.lengths[i]) == n
            assert (batch.frames[i, :n] - alone.frames[0, :n]).abs().max() <= 1e-5


def test_grouped_runs_audios_of_similar_length_together_with_the_same_result() -> None:
    from qwen_audio.encoder import length_groups

    assert length_groups([100, 60, 80, 99, 75, 20]) == [[0, 3, 2, 4], [1], [5]]  # 75 ≥ 0.75 × 100; 60 is not
    assert length_groups([50, 50, 50]) == [[0, 1, 2]] and length_groups([]) == []
    encoder = random_encoder()
    mel = torch.randn(4, 80, 40)
    lengths = torch.tensor([40, 12, 38, 14])  # two groups: {40, 38} and {14, 12}
    out = encoder.grouped(mel, lengths)
    out.frames.sum().backward()  # differentiable, though decoding is what uses it
    assert out.lengths.tolist() == [10, 3, 9, 3] and out.frames.shape == (4, 10, CONFIG.output_dim)
    with torch.no_grad():
        for i in range(4):
            alone = encoder(mel[i : i + 1], lengths[i : i + 1])
            assert (out.frames[i, : int(alone.lengths)] - alone.frames[0]).abs().max() <= 1e-5
    assert encoder.proj.weight.grad.abs().sum() > 0


def test_runs_only_up_to_the_longest_audio() -> None:
    encoder = random_encoder(AudioEncoderConfig(n_ctx=1500, n_state=32, n_head=4, n_layer=1, output_dim=48))
    with torch.no_grad():
        hidden, conv_len = encoder.hidden_states(torch.randn(2, 80, 3000), torch.tensor([100, 60]))
    assert hidden.shape[1] == 50 and conv_len.tolist() == [50, 30]


def test_rejects_too_short_and_too_long_audio() -> None:
    encoder = random_encoder()
    with pytest.raises(ValueError, match="mel lengths"):
        encoder(torch.randn(1, 80, 40), torch.tensor([2]))
    with pytest.raises(ValueError, match="exceeds"):
        encoder(torch.randn(1, 80, 60))


def test_gradient_checkpointing_recomputes_encoder_blocks_with_equal_gradients(tiny_model_dir) -> None:
    from qwen_audio.model import QwenAudioForCausalLM

    model = QwenAudioForCausalLM.from_pretrained(tiny_model_dir).train()
    mel = torch.randn(2, 80, 3000)
    lengths = torch.tensor([400, 250])

    def grads() -> tuple[torch.Tensor, torch.Tensor]:
        model.zero_grad()
        model.encode_audio(mel, lengths).frames.square().sum().backward()
        return model.audio.conv1.weight.grad.clone(), model.audio.blocks[0].mlp[0].weight.grad.clone()

    plain = grads()
    calls = []
    model.activation_checkpointing_enable()
    block = model.audio.blocks[0]
    assert block.gradient_checkpointing
    handle = block.attn.register_forward_hook(lambda *_: calls.append(1))
    checkpointed = grads()
    handle.remove()
    assert len(calls) == 2  # forward, then the recompute in backward
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(a, b)
