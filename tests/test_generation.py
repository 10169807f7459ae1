"""Generation: audio reaches the prefill, batches equal batch size 1, stop tokens, beams, sampling, streaming."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.streamers import BaseStreamer

from qwen_audio.generation import CtcPrefixScorer, LoopGuard, decode_steps, streamed
from qwen_audio.model import QwenAudioForCausalLM
from tests.model_fixtures import audio_prompt, left_pad, tiny_model
from tests.test_ctc_prefix import said

GREEDY = dict(do_sample=False, max_new_tokens=8, eos_token_id=[], output_scores=True, return_dict_in_generate=True)


def prompts(model: QwenAudioForCausalLM) -> tuple[list[list[int]], torch.Tensor, torch.Tensor]:
    """Three prompts of different text and audio lengths (1 s, 1.51 s, 0.35 s)."""
    c = model.config
    rows, lengths = zip(
        audio_prompt(c, [1, 2, 3], 16_000, [4]),
        audio_prompt(c, [9], 24_160, [7, 7, 7, 7, 7]),
        audio_prompt(c, [11, 12], 5_600, []),
    )
    torch.manual_seed(1)
    return list(rows), torch.randn(3, 80, 3000), torch.tensor(lengths)


def test_first_token_is_the_argmax_of_the_audio_conditioned_forward() -> None:
    model = tiny_model()
    rows, mel, lengths = prompts(model)
    ids = torch.tensor([rows[0]])
    with torch.no_grad():
        logits = model(input_ids=ids, audio_features=mel[:1], audio_lengths=lengths[:1]).logits[0, -1]
    out = model.generate(ids, audio_features=mel[:1], audio_lengths=lengths[:1], **GREEDY)
    assert out.sequences[0, : ids.shape[1]].tolist() == rows[0]
    assert int(out.sequences[0, ids.shape[1]]) == int(logits.argmax())
    assert torch.allclose(out.scores[0][0], logits, atol=1e-5)
    other = model.generate(ids, audio_features=mel[1:2], audio_lengths=lengths[:1], **GREEDY)
    assert not torch.allclose(other.scores[0][0], logits)  # the audio really is used


def test_batched_greedy_equals_batch_size_one() -> None:
    model = tiny_model()
    rows, mel, lengths = prompts(model)
    ids, mask = left_pad(rows, model.config.endoftext_id)
    batch = model.generate(ids, attention_mask=mask, audio_features=mel, audio_lengths=lengths, **GREEDY)
    scores = torch.stack(batch.scores, dim=1)
    for i, row in enumerate(rows):
        alone = model.generate(torch.tensor([row]), audio_features=mel[i : i + 1], audio_lengths=lengths[i : i + 1], **GREEDY)
        assert batch.sequences[i, ids.shape[1]:].tolist() == alone.sequences[0, len(row):].tolist()
        assert (scores[i] - torch.stack(alone.scores, dim=1)[0]).abs().max() <= 1e-4
    # What sits under the padding must not matter either.
    repadded = ids.masked_fill(mask == 0, 7)
    again = model.generate(repadded, attention_mask=mask, audio_features=mel, audio_lengths=lengths, **GREEDY)
    assert torch.equal(again.sequences[:, ids.shape[1]:], batch.sequences[:, ids.shape[1]:])


def test_beam_search_batched_equals_batch_size_one() -> None:
    model = tiny_model()
    rows, mel, lengths = prompts(model)
    ids, mask = left_pad(rows[:2], model.config.endoftext_id)
    options = dict(num_beams=3, do_sample=False, max_new_tokens=5, eos_token_id=[])
    batch = model.generate(ids, attention_mask=mask, audio_features=mel[:2], audio_lengths=lengths[:2], **options)
    for i, row in enumerate(rows[:2]):
        alone = model.generate(torch.tensor([row]), audio_features=mel[i : i + 1], audio_lengths=lengths[i : i + 1], **options)
        assert batch[i, ids.shape[1]:].tolist() == alone[0, len(row):].tolist()


def test_sampling_is_seeded_and_varies() -> None:
    model = tiny_model()
    rows, mel, lengths = prompts(model)
    ids = torch.tensor([rows[0]])
    draws = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        draws.append(model.generate(ids, audio_features=mel[:1], audio_lengths=lengths[:1], do_sample=True, temperature=5.0, max_new_tokens=8, eos_token_id=[]))
    assert torch.equal(draws[0], draws[1])
    assert not torch.equal(draws[0], draws[2])


@pytest.mark.parametrize("stop", ["im_end_id", "endoftext_id"])
def test_generation_stops_at_an_end_token(stop: str) -> None:
    model = tiny_model()
    rows, mel, lengths = prompts(model)
    ids = torch.tensor([rows[0]])
    free = model.generate(ids, audio_features=mel[:1], audio_lengths=lengths[:1], **GREEDY).sequences[0, ids.shape[1]:].tolist()
    step = next(i for i in range(2, len(free)) if free[i] not in free[:i])
    end_id = getattr(model.config, stop)
    assert end_id not in free
    with torch.no_grad():  # make the end token win exactly where free[step] used to
        weight = model.lm_head.weight
        weight[[free[step], end_id]] = weight[[end_id, free[step]]]
    stopped = model.generate(ids, audio_features=mel[:1], audio_lengths=lengths[:1], do_sample=False, max_new_tokens=8)
    assert stopped[0, ids.shape[1]:].tolist() == free[:step] + [end_id]


# --------------------------------------------------------------------------- fast_generate


def teacher_forced_log_prob(model: QwenAudioForCausalLM, row: list[int], mel: torch.Tensor, length: torch.Tensor,
                            said: tuple[int, ...], stop: int | None) -> float:
    """Sum of the forward's log-probabilities of ``said`` (then ``stop``) after the prompt ``row``."""
    tokens = list(said) + ([] if stop is None else [stop])
    with torch.no_grad():  # the new tokens embedded as text (a random model may say an <audio> token)
        embeds = torch.cat([model.embed_inputs(torch.tensor([row]), mel, length),
                            model.model.embed_tokens(torch.tensor([tokens], dtype=torch.long))], dim=1)
        logits = model(inputs_embeds=embeds).logits[0].float().log_softmax(-1)
    return float(sum(logits[len(row) - 1 + i, t] for i, t in enumerate(tokens)))


@pytest.mark.parametrize("fold", [True, False])
def test_fast_beams_carry_their_exact_log_probabilities_ranked(fold: bool) -> None:
    model = tiny_model()
    rows, mel, lengths = prompts(model)
    ids, mask = left_pad(rows, model.config.endoftext_id)
    stop = 5  # a token the random model says now and then: some beams finish, some run to the limit
    found = model.fast_beam_search(ids, attention_mask=mask, audio_features=mel, audio_lengths=lengths, num_beams=3,
                                   max_new_tokens=6, eos_token_id=[stop], fold=fold)
    assert [len(h) for h in found] == [3, 3, 3]
    for i, hypotheses in enumerate(found):
        assert len({h.ids for h in hypotheses}) == 3
        assert [h.score for h in hypotheses] == sorted((h.score for h in hypotheses), reverse=True)
        for h in hypotheses:
            assert stop not in h.ids and h.stop in (stop, None) and (h.finished or len(h.ids) == 6)
            expected = teacher_forced_log_prob(model, rows[i], mel[i : i + 1], lengths[i : i + 1], h.ids,
                                               h.stop)
            assert h.log_prob == pytest.approx(expected, abs=1e-3)
        alone = model.fast_beam_search(torch.tensor([rows[i]]), audio_features=mel[i : i + 1], audio_lengths=lengths[i : i + 1],
                                       num_beams=3, max_new_tokens=6, eos_token_id=[stop], fold=fold)[0]
        assert [h.ids for h in alone] == [h.ids for h in hypotheses]  # batched equals alone


def spelled(tokens: list[int], classes: int, frames_each: int = 2) -> torch.Tensor:
    """CTC log-probabilities [frames, classes] of audio that clearly says ``tokens`` (class = token + 1)."""
    frames = []
    for token in tokens:
        for said in [token + 1] * frames_each + [0]:
            row = torch.full((classes,), -12.0)
            row[said] = -1e-4
            frames.append(row)
    return torch.stack(frames).log_softmax(-1)


def test_a_ctc_steers_the_beams_toward_what_the_audio_says() -> None:
    model = tiny_model()
    rows, mel, lengths = prompts(model)
    stop, vocab = 5, model.config.vocab_size
    args = dict(audio_features=mel[:1], audio_lengths=lengths[:1], num_beams=3, max_new_tokens=6, eos_token_id=[stop])
    plain = model.fast_beam_search(torch.tensor([rows[0]]), **args)[0]
    # audio that says two tokens the decoder ranks third (among the candidates, not first): the steered search
    # says them, then stops
    wanted: list[int] = []
    for _ in range(2):
        ranked = [t for t in teacher_forced_ranks(model, rows[0], mel[:1], lengths[:1], wanted).tolist() if t != stop]
        wanted.append(ranked[2])
    scorer = CtcPrefixScorer(spelled(wanted, vocab + 1), labels=vocab)
    steered = model.fast_beam_search(torch.tensor([rows[0]]), ctc=[scorer], ctc_weight=0.9, **args)[0]
    assert plain[0].ids[:2] != tuple(wanted)
    assert steered[0].ids == tuple(wanted) and steered[0].finished
    assert steered[0].ctc_log_prob == pytest.approx(scorer.final(said(scorer, wanted)))
    assert [h.score for h in steered] == sorted((h.score for h in steered), reverse=True)
    assert steered[0].log_prob == pytest.approx(
        teacher_forced_log_prob(model, rows[0], mel[:1], lengths[:1], steered[0].ids, steered[0].stop), abs=1e-3)
    with pytest.raises(ValueError, match="CTC scorers"):
        model.fast_beam_search(torch.tensor([rows[0]]), ctc=[scorer, scorer], **args)


def teacher_forced_ranks(model: QwenAudioForCausalLM, row: list[int], mel: torch.Tensor, length: torch.Tensor,
                         said: list[int]) -> torch.Tensor:
    """The vocabulary sorted by the model's log-probability of the token after the prompt and ``said``, best first."""
    with torch.no_grad():
        embeds = torch.cat([model.embed_inputs(torch.tensor([row]), mel, length),
                            model.model.embed_tokens(torch.tensor([said], dtype=torch.long))], dim=1)
        logits = model(inputs_embeds=embeds).logits[0, -1]
    return logits.argsort(descending=True)


def test_fast_beams_find_the_beam_search_best() -> None:
    model = tiny_model()
    rows, mel, lengths = prompts(model)
    for i, row in enumerate(rows):
        args = dict(audio_features=mel[i : i + 1], audio_lengths=lengths[i : i + 1])
        ours = model.fast_beam_search(torch.tensor([row]), num_beams=3, max_new_tokens=5, eos_token_id=[], **args)[0]
        theirs = model.generate(torch.tensor([row]), num_beams=3, do_sample=False, max_new_tokens=5, eos_token_id=[], **args)
        assert list(ours[0].ids) == theirs[0, len(row):].tolist()


def test_a_beam_that_falls_into_a_loop_ends_unfinished() -> None:
    model = tiny_model()
    rows, mel, lengths = prompts(model)
    guard = LoopGuard(min_repeats=2, min_span=2, max_block=2)
    found = model.fast_beam_search(torch.tensor([rows[0]]), audio_features=mel[:1], audio_lengths=lengths[:1], num_beams=3,
                                   max_new_tokens=12, eos_token_id=[], loop_guard=guard)[0]
    assert found and all(guard.loop(h.ids) is None or not h.finished for h in found)
    assert all(len(h.ids) == 12 or guard.loop(h.ids) is not None for h in found)


@pytest.mark.parametrize("fold", [True, False])
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_fast_generate_equals_generate_batched_and_alone(fold: bool, kv_heads: int) -> None:
    model = tiny_model(num_key_value_heads=kv_heads)
    rows, mel, lengths = prompts(model)
    ids, mask = left_pad(rows, model.config.endoftext_id)
    options = dict(audio_features=mel, audio_lengths=lengths, max_new_tokens=12, fold=fold)
    fast = model.fast_generate(ids, attention_mask=mask, eos_token_id=[], **options)
    assert (model.kv_backends.folded is not None) == fold
    slow = model.generate(ids, attention_mask=mask, do_sample=False, eos_token_id=[], max_new_tokens=12,
                          audio_features=mel, audio_lengths=lengths)
    assert torch.equal(fast, slow)
    assert not fast.is_inference()  # an ordinary tensor, usable anywhere
    for i, row in enumerate(rows):
        alone = model.fast_generate(torch.tensor([row]), audio_features=mel[i : i + 1], audio_lengths=lengths[i : i + 1],
                                    max_new_tokens=12, eos_token_id=[], fold=fold)
        assert alone[0, len(row):].tolist() == fast[i, ids.shape[1]:].tolist()


def test_fast_generate_stops_rows_independently_and_pads_them() -> None:
    model = tiny_model()
    rows, mel, lengths = prompts(model)
    ids, mask = left_pad(rows, model.config.endoftext_id)
    free = model.fast_generate(ids, attention_mask=mask, audio_features=mel, audio_lengths=lengths, max_new_tokens=6, eos_token_id=[])
    stop = int(free[0, ids.shape[1] + 1])  # row 0's second token ends row 0 (and any row that produces it)
    out = model.fast_generate(ids, attention_mask=mask, audio_features=mel, audio_lengths=lengths, max_new_tokens=6, eos_token_id=[stop])
    ref = model.generate(ids, attention_mask=mask, audio_features=mel, audio_lengths=lengths, max_new_tokens=6,
                         do_sample=False, eos_token_id=[stop])
    assert torch.equal(out, ref)
    assert out[0, ids.shape[1] + 2:].eq(model.config.endoftext_id).all()
    single = model.fast_generate(ids, attention_mask=mask, audio_features=mel, audio_lengths=lengths, max_new_tokens=6, eos_token_id=stop)
    assert torch.equal(single, out)  # one id, as transformers also accepts it


def test_fast_generate_sampling_and_streaming() -> None:
    model = tiny_model()
    rows, mel, lengths = prompts(model)
    ids = torch.tensor([rows[2]])
    options = dict(audio_features=mel[2:], audio_lengths=lengths[2:], max_new_tokens=10, eos_token_id=[], do_sample=True,
                   temperature=3.0, top_k=50, top_p=0.9)
    a = model.fast_generate(ids, generator=torch.Generator().manual_seed(0), **options)
    b = model.fast_generate(ids, generator=torch.Generator().manual_seed(0), **options)
    c = model.fast_generate(ids, generator=torch.Generator().manual_seed(1), **options)
    assert torch.equal(a, b) and not torch.equal(a, c)
    recorder = Recorder()
    streamed = model.fast_generate(ids, streamer=recorder, generator=torch.Generator().manual_seed(0), **options)
    assert recorder.puts[0] == ids[0].tolist() and recorder.ended  # the prompt first, then one put per step
    assert sum(recorder.puts[1:], []) == streamed[0, ids.shape[1]:].tolist() == a[0, ids.shape[1]:].tolist()


class Scripted:
    """A KV backend that says each row's script, one token a step, whatever it is fed."""

    def __init__(self, scripts: list[list[int]], vocab: int = 32) -> None:
        self.scripts, self.vocab, self.at = scripts, vocab, 0

    def _logits(self) -> torch.Tensor:
        logits = torch.zeros(len(self.scripts), self.vocab)
        for row, script in enumerate(self.scripts):
            logits[row, script[min(self.at, len(script) - 1)]] = 1.0
        self.at += 1
        return logits

    def prefill(self, embeds: torch.Tensor, positions: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
        return self._logits()

    def step(self, embeds: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self._logits()


def test_a_row_that_falls_into_a_loop_ends_and_the_others_go_on() -> None:
    looping = [9, 10] + [5, 6, 7, 8] * 10  # a 4-token phrase, again and again
    speaking = [1, 2, 2, 2, 3, 4, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 0]  # "no no no", then on
    ids = torch.zeros(2, 3, dtype=torch.long)
    run = lambda guard: streamed(decode_steps(  # noqa: E731
        Scripted([looping, speaking]), lambda t: torch.zeros(*t.shape, 4), ids, torch.zeros(2, 3, 4), torch.ones(2, 3),
        max_new_tokens=30, stops={0}, pad_id=31, loop_guard=guard), ids, None)
    free, guarded = run(None)[:, 3:].tolist(), run(LoopGuard())[:, 3:].tolist()
    assert free[0] == looping[:30]  # unguarded, the loop runs to the limit
    assert guarded[0] == looping[:14] + [31] * 8  # guarded: stopped once the phrase came three times
    assert guarded[1] == speaking and free[1] == speaking + [31] * 8  # a repeated word is not a loop
    # what a decoder without a guard (vLLM) is cut to, and how a padded row reads
    guard = LoopGuard()
    assert guard.end(free[0], {0}) == 14 and guard.end(free[1], {0}) is None
    assert guard.end(free[0], {0}, checked=13) == 14 and guard.end(free[0][:13], {0}) is None  # streamed: only new prefixes
    assert guard.end([5, 6, 7, 8] * 2 + [0] + [5, 6, 7, 8] * 3, {0}) is None  # a loop after the stop does not count
    assert guard.read(guarded[0], {31}) == (looping[:14], True)
    assert guard.read(guarded[0], {31}, collapse=True) == ([9, 10, 5, 6, 7, 8], True)
    assert guard.read(guarded[1], {0}) == (speaking[:-1], False)


def test_loop_guard_finds_the_shortest_block_and_says_it_once() -> None:
    guard = LoopGuard()
    assert guard.loop([4, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3]) == (3, 4)
    assert guard.collapse([4, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3]) == [4, 1, 2, 3]
    assert guard.loop([7] * 11) is None and guard.loop([7] * 12) == (1, 12)  # one token: 12 times before it counts
    assert guard.loop([1, 2, 3, 1, 2, 3]) is None  # twice is not yet a loop
    assert guard.collapse([1, 2, 3, 4]) == [1, 2, 3, 4]


def test_next_token_logits_are_the_forwards_batched_or_alone() -> None:
    """The decoding loop's prefill alone (language detection reads it) gives the forward's last logits."""
    model = tiny_model()
    rows, mel, lengths = prompts(model)
    ids, mask = left_pad(rows, model.config.endoftext_id)
    batched = model.next_token_logits(ids, attention_mask=mask, audio_features=mel, audio_lengths=lengths)
    assert batched.shape == (3, model.config.vocab_size) and not batched.is_inference()
    for i, row in enumerate(rows):
        with torch.no_grad():
            forward = model(input_ids=torch.tensor([row]), audio_features=mel[i : i + 1], audio_lengths=lengths[i : i + 1]).logits[0, -1]
        torch.testing.assert_close(batched[i], forward, rtol=0, atol=1e-4)  # folded weights: float rounding

class Recorder(BaseStreamer):
    """What a streamer is handed, put by put."""

    def __init__(self) -> None:
        self.puts: list[list[int]] = []
        self.ended = False

    def put(self, value: torch.Tensor) -> None:
        self.puts.append(value.reshape(-1).tolist())

    def end(self) -> None:
        self.ended = True


@pytest.fixture
def folded(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """StaticKV ("modules") or FoldedKV, its matrices packed for oneDNN or input-major."""
    from qwen_audio.generation import folded as module

    if request.param == "packed" and not torch.backends.mkldnn.is_available():
        pytest.skip("this PyTorch has no oneDNN")
    monkeypatch.setattr(module, "PACK", request.param == "packed")
    monkeypatch.setattr(module, "PACK_MIN_ELEMENTS", 0)  # the tiny model's matrices too
    return request.param != "modules"


@pytest.mark.parametrize("folded", ["modules", "packed", "input-major"], indirect=True)
def test_kv_backend_logits_equal_the_forward_at_every_step(folded: bool) -> None:
    """StaticKV (fused RMSNorm, rolled rotary) gives the Qwen2 forward's logits, prefill and steps;
    FoldedKV (fused, norm-folded, complex rotary; packed for oneDNN or not) gives them to float rounding."""
    from qwen_audio.generation import FoldedKV, StaticKV, fold_weights

    model = tiny_model(num_key_value_heads=2)
    rows, mel, lengths = prompts(model)
    ids = torch.tensor([rows[1]])
    tokens = [5, 17, 3, 250]
    with torch.no_grad():
        full = torch.cat([ids, torch.tensor([tokens])], dim=1)
        reference = model(input_ids=full, audio_features=mel[1:2], audio_lengths=lengths[1:2]).logits[0]
        embeds = model.embed_inputs(ids, mel[1:2], lengths[1:2])
        backend = (FoldedKV(model.model, model.lm_head, 1, full.shape[1], fold_weights(model.model, model.lm_head)) if folded
                   else StaticKV(model.model, model.lm_head, 1, full.shape[1]))
        width = ids.shape[1]
        got = [backend.prefill(embeds, torch.arange(width)[None], torch.ones(1, width, dtype=torch.bool))]
        for step, token in enumerate(tokens[:-1]):
            got.append(backend.step(model.model.embed_tokens(torch.tensor([[token]])), torch.tensor([[width + step]])))
    torch.testing.assert_close(torch.cat(got), reference[width - 1 : width - 1 + len(tokens)], rtol=0, atol=1e-5)



@pytest.mark.parametrize("folded", ["modules", "packed", "input-major"], indirect=True)
def test_padded_prompts_prefill_packed_and_step_as_if_alone(folded: bool) -> None:
    """A left-padded batch prefills only its real tokens (each row attends over its own) and then
    decodes each row as it would alone; what the cache holds under padding never leaks (it starts
    as NaN here: 0 × NaN would poison a row)."""
    from qwen_audio.generation import FoldedKV, StaticKV, fold_weights
    from qwen_audio.llm import position_ids_from_attention_mask

    model = tiny_model(num_key_value_heads=2)
    rows = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17]]
    ids, mask = left_pad(rows, model.config.endoftext_id)
    steps = torch.tensor([[20], [21], [22]])

    def run(ids: torch.Tensor, mask: torch.Tensor, steps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, width = ids.shape
        backend = (FoldedKV(model.model, model.lm_head, batch, width + 1, fold_weights(model.model, model.lm_head)) if folded
                   else StaticKV(model.model, model.lm_head, batch, width + 1))
        for buffer in backend.cache.keys + backend.cache.values:
            buffer.fill_(float("nan"))
        positions = position_ids_from_attention_mask(mask, width)
        first = backend.prefill(model.model.embed_tokens(ids), positions, mask.bool())
        second = backend.step(model.model.embed_tokens(steps), positions[:, -1:] + 1)
        return first, second

    with torch.no_grad():
        first, second = run(ids, mask, steps)
        assert first.isfinite().all() and second.isfinite().all()
        for i, row in enumerate(rows):
            alone = run(torch.tensor([row]), torch.ones(1, len(row), dtype=torch.long), steps[i : i + 1])
            torch.testing.assert_close(first[i], alone[0][0], rtol=0, atol=1e-5)
            torch.testing.assert_close(second[i], alone[1][0], rtol=0, atol=1e-5)

def test_folded_weights_are_reused_until_a_weight_changes() -> None:
    from qwen_audio.generation import fold_weights

    model = tiny_model()
    rows, mel, lengths = prompts(model)
    ids = torch.tensor([rows[0]])
    options = dict(audio_features=mel[:1], audio_lengths=lengths[:1], max_new_tokens=8, eos_token_id=[])
    before = model.fast_generate(ids, **options)
    first = model.kv_backends.folded
    model.fast_generate(ids, **options)
    assert model.kv_backends.folded is first and fold_weights(model.model, model.lm_head, first) is first
    with torch.no_grad():  # e.g. an optimizer step: in place, same memory
        model.model.layers[0].mlp.up_proj.weight.mul_(-3.0)
        model.model.layers[1].input_layernorm.weight.add_(0.5)
        model.model.norm.weight.add_(0.5)
    model.fast_generate(ids, fold=False, **options)  # the unfolded loop leaves the cache alone
    assert model.kv_backends.folded is first
    after = model.fast_generate(ids, **options)
    assert model.kv_backends.folded is not first
    assert torch.equal(after, model.generate(ids, do_sample=False, **options))
    assert not torch.equal(after, before)


def test_fold_is_refused_where_a_copy_would_be_wrong_or_too_big() -> None:
    from peft import LoraConfig, get_peft_model

    from qwen_audio.generation import can_fold

    model = tiny_model()
    assert can_fold(model.model, model.lm_head, max_bytes=1 << 20)
    assert not can_fold(model.model, model.lm_head, max_bytes=1_000)  # over the size limit
    half = tiny_model().half()
    assert not can_fold(half.model, half.lm_head, max_bytes=1 << 20)  # fp16: folding would round twice
    lora = get_peft_model(tiny_model(), LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    base = lora.base_model.model
    assert not can_fold(base.model, base.lm_head, max_bytes=1 << 20)  # a copy would drop the LoRA deltas
    rows, mel, lengths = prompts(base)
    ids = torch.tensor([rows[1]])
    options = dict(audio_features=mel[1:2], audio_lengths=lengths[1:2], max_new_tokens=6, eos_token_id=[])
    assert torch.equal(base.fast_generate(ids, **options), base.generate(ids, do_sample=False, **options))
