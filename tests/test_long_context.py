"""Past seq_length: dynamic NTK and log-n as the released model applies them (issue 18, item 1).

The reference is ``tests.model_fixtures.qwen_v1_reference_logits``: the released formulas written out
independently (``get_ntk_alpha`` transcribed, the log-n table built as the release builds it, absolute
positions, batch of one). ``seq_length`` is 16 here so 17 … 70 tokens exercise alphas 3, 7 and 15 fast.
"""

from __future__ import annotations

import math

import pytest
import torch

from qwen_audio.long_context import dynamic_ntk_alpha, logn_query_scale
from tests.model_fixtures import left_pad, official_state_dict, qwen_v1_reference_logits, released_ntk_alpha, tiny_model

SEQ = 16


def long_model(**overrides: object):  # noqa: ANN201
    return tiny_model(seed=3, seq_length=SEQ, **overrides)


def tokens(length: int, seed: int = 0) -> list[int]:
    return torch.randint(0, 400, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


def reference(model, ids: list[int], *, alpha: float | None = None, logn: bool = True) -> torch.Tensor:  # noqa: ANN001
    """Released logits of one row; ``alpha`` defaults to the prefill's own (``get_ntk_alpha(len)``)."""
    c = model.config
    alpha = released_ntk_alpha(len(ids), SEQ) if alpha is None else alpha
    with torch.no_grad():
        embeds = model.model.embed_tokens(torch.tensor([ids]))
        return qwen_v1_reference_logits(official_state_dict(model), c, embeds, ntk_alpha=alpha,
                                        logn_seq_length=SEQ if logn else None)[0]


def test_ntk_alpha_has_the_released_values() -> None:
    for length, alpha in [(1, 1), (2048, 1), (2049, 3), (3000, 3), (4096, 3), (4097, 7), (4100, 7), (8193, 15)]:
        assert dynamic_ntk_alpha(length, 2048) == alpha == released_ntk_alpha(length, 2048)
    assert all(dynamic_ntk_alpha(n, SEQ) == released_ntk_alpha(n, SEQ) for n in range(1, 300))


def test_logn_scales_queries_past_seq_length_only() -> None:
    scale = logn_query_scale(torch.arange(20)[None], SEQ)[0]
    assert torch.equal(scale[:SEQ], torch.ones(SEQ))  # 1-based i = 1 … 16
    assert scale[SEQ].item() == pytest.approx(math.log(17) / math.log(16))
    assert scale[19].item() == pytest.approx(math.log(20, 16))


@pytest.mark.parametrize("length", [SEQ, SEQ + 1, 24, 40, 70])
def test_forward_matches_the_released_long_context_math(length: int) -> None:
    model = long_model()
    ids = tokens(length, seed=length)
    with torch.no_grad():
        got = model(input_ids=torch.tensor([ids])).logits[0]
    assert (got - reference(model, ids)).abs().max() <= 1e-4
    if length > SEQ:  # NTK rotates the whole prompt: positions before seq_length change too
        plain = reference(model, ids, alpha=1, logn=False)
        assert (got[1:SEQ] - plain[1:SEQ]).abs().max() > 1e-3


def test_each_switch_alone() -> None:
    ids = tokens(40)
    for ntk, logn in [(True, False), (False, True), (False, False)]:
        model = long_model(use_dynamic_ntk=ntk, use_logn_attn=logn)
        with torch.no_grad():
            got = model(input_ids=torch.tensor([ids])).logits[0]
        assert (got - reference(model, ids, alpha=None if ntk else 1, logn=logn)).abs().max() <= 1e-4


def test_training_uses_neither_as_released() -> None:
    model = long_model().train()
    ids = tokens(40)
    got = model(input_ids=torch.tensor([ids])).logits[0].detach()
    assert (got - reference(model, ids, alpha=1, logn=False)).abs().max() <= 1e-4


def test_a_padded_row_gets_its_batch_of_one_logits() -> None:
    # The released batched path rotates a padded row by its padding; ours counts real tokens only.
    model = long_model()
    rows = [tokens(10, 1), tokens(20, 2), tokens(40, 3)]
    ids, mask = left_pad(rows, model.config.endoftext_id)
    with torch.no_grad():
        batch = model(input_ids=ids, attention_mask=mask).logits
        for i, row in enumerate(rows):
            alone = model(input_ids=torch.tensor([row])).logits[0]
            assert (batch[i, ids.shape[1] - len(row):] - alone).abs().max() <= 1e-5
            assert (alone - reference(model, row)).abs().max() <= 1e-4


@pytest.mark.parametrize("prompt", [10, 24, 40])
def test_generate_reuses_the_prefill_alpha_and_scales_by_position(prompt: int) -> None:
    """A prompt under seq_length that grows past it keeps alpha 1 (log-n still applies past it);
    one over it keeps its prefill alpha while decoding — the released behaviour."""
    model = long_model()
    ids = tokens(prompt, seed=prompt)
    out = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=24, eos_token_id=[],
                         output_scores=True, return_dict_in_generate=True)
    sequence = out.sequences[0].tolist()
    full = reference(model, sequence[:-1], alpha=released_ntk_alpha(prompt, SEQ))
    for step, scores in enumerate(out.scores):
        assert (scores[0] - full[prompt - 1 + step]).abs().max() <= 1e-4
        assert sequence[prompt + step] == int(full[prompt - 1 + step].argmax())


def test_padded_batch_generation_equals_each_row_alone() -> None:
    model = long_model()
    rows = [tokens(10, 4), tokens(24, 5), tokens(40, 6)]
    ids, mask = left_pad(rows, model.config.endoftext_id)
    options = dict(do_sample=False, max_new_tokens=16, eos_token_id=[], output_scores=True, return_dict_in_generate=True)
    batch = model.generate(ids, attention_mask=mask, **options)
    scores = torch.stack(batch.scores, dim=1)
    for i, row in enumerate(rows):
        alone = model.generate(torch.tensor([row]), **options)
        assert batch.sequences[i, ids.shape[1]:].tolist() == alone.sequences[0, len(row):].tolist()
        assert (scores[i] - torch.stack(alone.scores, dim=1)[0]).abs().max() <= 1e-4


# --------------------------------------------------------------------------- fast_generate (KV backends)


@pytest.mark.parametrize("fold", [True, False])
def test_fast_generate_equals_generate_past_seq_length(fold: bool) -> None:
    model = long_model()
    rows = [tokens(10, 7), tokens(24, 8), tokens(40, 9)]
    ids, mask = left_pad(rows, model.config.endoftext_id)
    fast = model.fast_generate(ids, attention_mask=mask, max_new_tokens=12, eos_token_id=[], fold=fold)
    slow = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=12, eos_token_id=[])
    assert torch.equal(fast, slow)
    for i, row in enumerate(rows):
        alone = model.fast_generate(torch.tensor([row]), max_new_tokens=12, eos_token_id=[], fold=fold)
        assert alone[0, len(row):].tolist() == fast[i, ids.shape[1]:].tolist()


@pytest.mark.parametrize("folded", [False, True])
@pytest.mark.parametrize("prompt", [10, 40])
def test_kv_backends_give_the_released_logits_at_every_step(folded: bool, prompt: int) -> None:
    from qwen_audio.generation import FoldedKV, StaticKV, fold_weights

    model = long_model()
    ids = tokens(prompt, seed=prompt + 1)
    new = tokens(20, seed=99)
    full = reference(model, ids + new, alpha=released_ntk_alpha(prompt, SEQ))
    settings = dict(ntk_alphas=[dynamic_ntk_alpha(prompt, SEQ)], logn_seq_length=SEQ)
    length = prompt + len(new)
    backend = (FoldedKV(model.model, model.lm_head, 1, length, fold_weights(model.model, model.lm_head), **settings)
               if folded else StaticKV(model.model, model.lm_head, 1, length, **settings))
    with torch.no_grad():
        got = [backend.prefill(model.model.embed_tokens(torch.tensor([ids])), torch.arange(prompt)[None],
                               torch.ones(1, prompt, dtype=torch.bool))]
        for step, token in enumerate(new[:-1]):
            got.append(backend.step(model.model.embed_tokens(torch.tensor([[token]])), torch.tensor([[prompt + step]])))
    assert (torch.cat(got) - full[prompt - 1 : prompt - 1 + len(new)]).abs().max() <= 1e-4


@pytest.mark.slow
def test_release_lengths_match_the_released_math_at_seq_length_2048() -> None:
    """Issue 18's acceptance numbers at full scale: |Δlogit| ≤ 1e-4 at 2049 / 3000 / 4100 tokens, and
    64 greedy tokens after a 3000-token prompt equal the released algorithm's (alpha kept from prefill)."""
    model = tiny_model(seed=5, seq_length=2048)
    state, c = official_state_dict(model), model.config

    def released(ids: list[int], alpha: float) -> torch.Tensor:
        with torch.no_grad():
            embeds = model.model.embed_tokens(torch.tensor([ids]))
            return qwen_v1_reference_logits(state, c, embeds, ntk_alpha=alpha, logn_seq_length=2048)[0]

    for length in (2049, 3000, 4100):
        ids = tokens(length, seed=length)
        with torch.no_grad():
            got = model(input_ids=torch.tensor([ids])).logits[0]
        assert (got - released(ids, released_ntk_alpha(length, 2048))).abs().max() <= 1e-4, length

    prompt = tokens(3000, seed=1)
    ids = torch.tensor([prompt])
    ones = torch.ones_like(ids)
    generated = model.generate(ids, attention_mask=ones, max_new_tokens=64, do_sample=False, eos_token_id=None,
                               min_new_tokens=64)[0, 3000:].tolist()
    fast = model.fast_generate(ids, attention_mask=ones, max_new_tokens=64, eos_token_id=[])[0, -64:].tolist()
    assert fast == generated and len(generated) == 64
    # The released greedy loop, checked in one pass: its logits at each position depend only on the
    # tokens so far, the prefill's alpha (kept while decoding) and the absolute position (log-n).
    alpha = released_ntk_alpha(len(prompt), 2048)
    logits = released(prompt + generated, alpha)
    assert logits[2999:-1].argmax(-1).tolist() == generated
