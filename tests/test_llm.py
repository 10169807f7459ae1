"""The decoder: logits equal transformers' Qwen2ForCausalLM and the official Qwen v1 math on the same weights;
the adapter onto the Qwen2 blocks' internals reads what it expects, and says so when transformers moves it."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from qwen_audio.llm import position_ids_from_attention_mask, qwen2_parts, rotary_frequencies
from tests.model_fixtures import left_pad, official_state_dict, qwen_v1_reference_logits, tiny_model


def qwen2_twin(model) -> Qwen2ForCausalLM:  # noqa: ANN001
    c = model.config
    twin = Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
            num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
            num_key_value_heads=c.num_attention_heads, rms_norm_eps=c.rms_norm_eps, tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, attn_implementation="eager",
        )
    ).eval()
    state = {k: v for k, v in model.state_dict().items() if k.startswith(("model.", "lm_head."))}
    missing, unexpected = twin.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("inv_freq") for k in missing)
    return twin


def test_logits_match_transformers_qwen2() -> None:
    model = tiny_model()
    twin = qwen2_twin(model)
    ids = torch.randint(0, 400, (2, 13))
    with torch.no_grad():
        ours = model(input_ids=ids).logits
        theirs = twin(input_ids=ids).logits
    assert (ours - theirs).abs().max() <= 1e-4


def test_logits_match_the_official_qwen_v1_formula() -> None:
    model = tiny_model(seed=3)
    ids = torch.randint(0, 400, (1, 11))
    with torch.no_grad():
        ours = model(input_ids=ids).logits
        reference = qwen_v1_reference_logits(official_state_dict(model), model.config, model.model.embed_tokens(ids))
    assert (ours - reference).abs().max() <= 1e-4


def test_left_padding_leaves_logits_unchanged() -> None:
    model = tiny_model()
    rows = [[5, 6, 7, 8, 9, 10], [11, 12, 13]]
    ids, mask = left_pad(rows, pad_id=400)
    with torch.no_grad():
        batch = model(input_ids=ids, attention_mask=mask).logits
        for i, row in enumerate(rows):
            alone = model(input_ids=torch.tensor([row])).logits[0]
            assert (batch[i, -len(row):] - alone).abs().max() <= 1e-4


def test_position_ids_count_real_tokens_only() -> None:
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert position_ids_from_attention_mask(mask, 5).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]
    assert position_ids_from_attention_mask(mask, 1).tolist() == [[2], [4]]


# --------------------------------------------------------------------------- the adapter onto Qwen2's internals


def test_the_qwen2_internals_llm_reads_are_where_and_what_it_expects() -> None:
    """Fails, naming the attribute, when a transformers upgrade moves or redefines what decoding and
    long context read of the Qwen2 blocks (llm.py is the only module that names them)."""
    from torch import nn

    model = tiny_model()
    c = model.config
    parts = qwen2_parts(model.model)  # raises Qwen2StructureError, naming the attribute, if one is gone
    head_dim = c.hidden_size // c.num_attention_heads
    assert len(parts.layers) == c.num_hidden_layers
    expected = {"q": (c.num_attention_heads * head_dim, c.hidden_size), "k": (c.num_key_value_heads * head_dim, c.hidden_size),
                "v": (c.num_key_value_heads * head_dim, c.hidden_size), "o": (c.hidden_size, c.num_attention_heads * head_dim),
                "gate": (c.intermediate_size, c.hidden_size), "up": (c.intermediate_size, c.hidden_size),
                "down": (c.hidden_size, c.intermediate_size)}
    for layer in parts.layers:
        for name, shape in expected.items():
            projection = getattr(layer, name)
            assert isinstance(projection, nn.Linear) and tuple(projection.weight.shape) == shape, name
        assert layer.q.bias is not None and layer.o.bias is None  # Qwen's biased QKV
        x = torch.randn(3, c.hidden_size)
        mlp = layer.down(torch.nn.functional.silu(layer.gate(x)) * layer.up(x))
        torch.testing.assert_close(layer.mlp(x), mlp, rtol=0, atol=0)  # SwiGLU, as the folded backend computes it
        for norm in (layer.input_norm, layer.post_attention_norm):
            rms = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + parts.rms_norm_eps) * norm.weight
            torch.testing.assert_close(norm(x), rms)
    assert parts.rms_norm_eps == c.rms_norm_eps
    inv_freq = 1.0 / (c.rope_parameters["rope_theta"] ** (torch.arange(0, head_dim, 2).float() / head_dim))
    torch.testing.assert_close(parts.inv_freq, inv_freq)
    assert parts.attention_scaling == 1.0  # default RoPE: cos/sin unscaled


def test_a_renamed_qwen2_internal_is_named_in_the_error() -> None:
    from qwen_audio.errors import Qwen2StructureError

    model = tiny_model()
    del model.model.layers[1].post_attention_layernorm.variance_epsilon
    with pytest.raises(Qwen2StructureError, match=r"layers\[1\]\.post_attention_layernorm\.variance_epsilon.*transformers version pyproject.toml pins"):
        qwen2_parts(model.model)
    model = tiny_model()
    model.model.layers[0].self_attn.query_proj = model.model.layers[0].self_attn.q_proj
    del model.model.layers[0].self_attn.q_proj
    with pytest.raises(Qwen2StructureError, match=r"no layers\[0\]\.self_attn\.q_proj"):
        qwen2_parts(model.model)


def test_rotary_frequencies_swap_for_the_block_only() -> None:
    model = tiny_model()
    ids = torch.randint(0, 400, (1, 9))
    with torch.no_grad():
        before = model(input_ids=ids).logits
        saved = qwen2_parts(model.model).inv_freq
        with rotary_frequencies(model.model, saved * 0.5):
            swapped = model(input_ids=ids).logits
            assert torch.equal(qwen2_parts(model.model).inv_freq, saved * 0.5)
        assert qwen2_parts(model.model).inv_freq is saved
        after = model(input_ids=ids).logits
    assert torch.equal(before, after) and not torch.allclose(before, swapped)
