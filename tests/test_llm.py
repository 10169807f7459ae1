"""The decoder: logits equal transformers' Qwen2ForCausalLM and the official Qwen v1 math on the same weights."""

from __future__ import annotations

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from qwen_audio.llm import position_ids_from_attention_mask
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
