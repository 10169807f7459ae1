"""train.setup.train_only_new_rows: only the vocabulary rows appended after a pretrained base learn."""

from __future__ import annotations

import pytest
import torch

from qwen_audio.errors import ConfigError
from qwen_audio.train.setup import ModelSettings, apply_freezing, train_only_new_rows
from tests.model_fixtures import tiny_model


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_rows_below_endoftext_get_no_gradient_and_do_not_move(tied: bool) -> None:
    model = tiny_model(tie_word_embeddings=tied).train()
    first_new = model.config.endoftext_id  # 400 in the tiny preset
    assert train_only_new_rows(model) == first_new
    ids = torch.tensor([[5, 17, first_new, 399, model.config.im_start_id, 42, model.config.im_end_id, 7]])
    before = model.get_input_embeddings().weight.detach().clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    model(input_ids=ids, labels=ids).loss.backward()
    weights = {id(w): w for w in (model.get_input_embeddings().weight, model.get_output_embeddings().weight)}
    assert len(weights) == (1 if tied else 2)
    for weight in weights.values():
        assert torch.count_nonzero(weight.grad[:first_new]) == 0
        assert weight.grad[first_new:].abs().sum(-1).gt(0).any()
    output = model.get_output_embeddings().weight.grad
    assert output[first_new:].abs().sum(-1).gt(0).all()  # the softmax reaches every new row
    embed = model.get_input_embeddings().weight.grad
    assert embed[model.config.im_start_id].abs().sum() > 0  # a new token that was read
    assert model.model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0  # the rest trains as usual
    optimizer.step()
    after = model.get_input_embeddings().weight.detach()
    assert torch.equal(after[:first_new], before[:first_new])
    assert not torch.equal(after[first_new:], before[first_new:])


def test_frozen_embeddings_are_refused() -> None:
    model = tiny_model()
    apply_freezing(model, ["model.embed_tokens.*"])
    with pytest.raises(ConfigError, match="new_token_rows_only needs the embeddings trainable"):
        train_only_new_rows(model)


def test_setting_is_off_by_default() -> None:
    assert ModelSettings().new_token_rows_only is False
