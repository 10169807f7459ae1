"""Word times on a known transcript: CTC forced alignment (infer.alignment) and the SRWT decode held to the
text (generation.TimedText), alone and through ``QwenAudio.transcribe(word_timestamps=True)``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from qwen_audio.api import QwenAudio
from qwen_audio.formats.tags import Task, build_prompt, strip_tags
from qwen_audio.generation import Hypothesis, TimedText
from qwen_audio.infer.alignment import (
    ALIGNER_FILE,
    EDGE_SEARCH,
    END_REACH,
    FRAME_SECONDS,
    GAP,
    START_SHIFT,
    CtcAligner,
    forced_align,
    loud_frames,
    loud_mask,
    words_from_path,
)
from qwen_audio.infer.engine import GenerationOptions
from qwen_audio.train.ctc import EmbeddingCtc


def planted(frames: int, classes: int, spikes: dict[int, int]) -> np.ndarray:
    """Log-probs where the blank wins every frame except ``spikes`` (frame → class), which win there."""
    scores = np.full((frames, classes), -8.0)
    scores[:, 0] = -0.1
    for frame, label in spikes.items():
        scores[frame, label], scores[frame, 0] = -0.1, -6.0
    return scores


def test_forced_alignment_finds_the_planted_spikes() -> None:
    path = forced_align(planted(12, 10, {2: 5, 6: 7, 9: 7}), [5, 7, 7])
    assert path is not None
    assert [i for i, label in enumerate(path) if label >= 0] == [2, 6, 9]
    assert [path[i] for i in (2, 6, 9)] == [0, 1, 2]


def test_forced_alignment_keeps_every_label_even_against_the_scores() -> None:
    # label 4 never wins a frame, yet the path must say it, between the others, in order
    path = forced_align(planted(10, 10, {1: 3, 8: 6}), [3, 4, 6])
    assert path is not None
    said = [label for i, label in enumerate(path) if label >= 0 and (i == 0 or path[i - 1] != label)]
    assert said == [0, 1, 2]


def test_forced_alignment_refuses_too_few_frames() -> None:
    assert forced_align(planted(2, 10, {}), [3, 4, 6]) is None
    assert forced_align(planted(2, 10, {}), [7, 7]) is None  # a repeat needs a blank between
    assert forced_align(planted(3, 10, {}), [7, 7]) is not None


def test_word_spans_follow_the_spikes_and_stay_inside_the_audio() -> None:
    path = [-1, 0, -1, -1, 1, 2, -1, -1, -1, -1, 3, -1]  # words: [0], [1, 2], [3]
    words = words_from_path(path, [0, 1, 1, 2], ["a", "bc", "d"], seconds=0.45)
    assert [w.word for w in words] == ["a", "bc", "d"]
    assert words[0].start == pytest.approx(max(FRAME_SECONDS + START_SHIFT, 0.0))
    assert words[1].start == pytest.approx(4 * FRAME_SECONDS + START_SHIFT)
    assert words[0].end == pytest.approx(min(2 * FRAME_SECONDS + END_REACH, words[1].start - GAP))
    assert words[2].end <= 0.45
    assert all(0 <= w.start <= w.end <= 0.45 for w in words)
    assert [w.start for w in words] == sorted(w.start for w in words)


def mask(seconds: float, loud_spans: list[tuple[float, float]]) -> np.ndarray:
    """A 10 ms loudness mask, loud inside ``loud_spans`` (seconds)."""
    loud = np.zeros(round(seconds * 100), dtype=bool)
    for start, end in loud_spans:
        loud[round(start * 100):round(end * 100)] = True
    return loud


def test_pauses_move_word_edges_onto_the_audio() -> None:
    # two words, spikes at 0.40 s and 1.20 s; the voice says them over 0.33-0.71 s and 1.05-1.50 s
    path = [-1] * 40
    path[10], path[30] = 0, 1
    words = words_from_path(path, [0, 1], ["one", "two"], seconds=1.6, loud=mask(1.6, [(0.33, 0.71), (1.05, 1.5)]))
    assert [(w.start, w.end) for w in words] == [(0.33, 0.71), (1.05, 1.5)]
    plain = words_from_path(path, [0, 1], ["one", "two"], seconds=1.6)
    assert (plain[0].start, plain[1].start) == (round(10 * FRAME_SECONDS + START_SHIFT, 2), round(30 * FRAME_SECONDS + START_SHIFT, 2))


def test_running_speech_without_a_pause_keeps_the_spike_estimates() -> None:
    path = [-1] * 40
    path[10], path[14], path[30] = 0, 1, 2
    owners, text = [0, 1, 2], ["a", "b", "c"]
    plain = words_from_path(path, owners, text, seconds=1.6)
    everywhere = words_from_path(path, owners, text, seconds=1.6, loud=mask(1.6, [(0.0, 1.6)]))
    assert everywhere == plain
    # a pause further back than EDGE_SEARCH does not pull a start away from its spike
    far = words_from_path(path, owners, text, seconds=1.6, loud=mask(1.6, [(0.4 - EDGE_SEARCH - 0.1, 1.6)]))
    assert far[0].start == plain[0].start


def test_a_short_quiet_stretch_inside_speech_is_no_pause() -> None:
    decibels = np.full(60, -20.0)
    decibels[:5] = decibels[-5:] = -60.0  # silence around the speech
    decibels[20:24] = -55.0  # 40 ms: a stop's closure
    decibels[35:45] = -55.0  # 100 ms: a pause
    loud = loud_mask(decibels, min_pause=6)
    assert not loud[:5].any() and not loud[-5:].any() and loud[5:35].all() and not loud[35:45].any() and loud[45:55].all()
    assert not loud_mask(decibels)[20:24].any()  # without bridging, the closure reads as a pause


def test_loudness_is_relative_to_the_recording() -> None:
    rng = np.random.default_rng(0)
    tone = 0.3 * np.sin(2 * np.pi * 200 * np.arange(8000) / 16_000)
    audio = np.concatenate([np.zeros(8000), tone, np.zeros(8000)]) + 1e-3 * rng.standard_normal(24_000)
    for gain in (1.0, 0.01):  # a recording 40 dB quieter is the same picture
        loud = loud_frames((gain * audio).astype(np.float32))
        assert loud.shape == (150,) and not loud[:48].any() and loud[52:98].all() and not loud[102:].any()


@pytest.fixture(scope="module")
def aligned_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a (random) aligner beside it."""
    directory = tmp_path_factory.mktemp("aligned") / "model"
    shutil.copytree(tiny_model_dir, directory)
    ctc = EmbeddingCtc(QwenAudio.from_pretrained(tiny_model_dir).model, 0.3)  # as training exports it
    torch.manual_seed(3)
    with torch.no_grad():
        ctc.blank.copy_(torch.randn(ctc.blank.shape[0]))
        ctc.blank_bias.fill_(0.5)
    ctc.save_aligner(directory)
    return directory


def speech(seconds: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * 16_000)) / 16_000
    return (0.2 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def test_an_aligner_round_trips_and_a_model_without_one_has_none(aligned_dir: Path, tiny_model_dir: Path) -> None:
    api = QwenAudio.from_pretrained(aligned_dir)
    loaded = CtcAligner.load(aligned_dir, api.model)
    assert loaded is not None and (aligned_dir / ALIGNER_FILE).is_file() and loaded.model is api.model
    torch.manual_seed(3)
    assert torch.equal(loaded.blank, torch.randn(loaded.blank.shape[0]))
    assert float(loaded.bias) == 0.5
    assert CtcAligner.load(tiny_model_dir, api.model) is None
    assert QwenAudio.from_pretrained(tiny_model_dir).aligner is None
    assert QwenAudio.from_pretrained(aligned_dir).aligner is not None


def test_the_aligner_times_each_word_of_the_text_in_order(aligned_dir: Path) -> None:
    api = QwenAudio.from_pretrained(aligned_dir)
    pieces = [speech(2.0), speech(1.2), speech(0.8)]
    texts = ["the cold wind blows", "", "yes yes yes"]
    timed = api.aligner.word_times(api.tokenizer, pieces, texts, " ")
    assert [[w.word for w in words] for words in timed] == [["the", "cold", "wind", "blows"], [], ["yes", "yes", "yes"]]
    for words, piece in zip(timed, pieces):
        assert all(0 <= w.start <= w.end <= piece.size / 16_000 for w in words)
        assert [w.start for w in words] == sorted(w.start for w in words)


def test_the_aligner_encodes_without_recording_gradients(aligned_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Word times run inside no autograd context of the caller's: the encoder pass must not build a graph."""
    api = QwenAudio.from_pretrained(aligned_dir)
    encode, recording = api.model.encode_audio, []

    def watched(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        recording.append(torch.is_grad_enabled())
        return encode(*args, **kwargs)

    monkeypatch.setattr(api.model, "encode_audio", watched)
    api.aligner.log_probs([speech(1.0)])
    assert recording == [False]


@pytest.mark.parametrize("with_aligner", [True, False])
def test_word_times_keep_the_plain_transcript(with_aligner: bool, aligned_dir: Path, tiny_model_dir: Path) -> None:
    api = QwenAudio.from_pretrained(aligned_dir if with_aligner else tiny_model_dir)
    options = GenerationOptions(max_new_tokens=8)
    audios = [(speech(1.5), 16_000), (speech(3.0), 16_000)]
    plain = api.transcribe(audios, language="en", options=options)
    timed = api.transcribe(audios, language="en", word_timestamps=True, options=options)
    assert any(p.text.split() for p in plain)  # the random model does say something
    for p, t in zip(plain, timed):
        assert [w.word for w in t.words] == p.text.split()
        assert t.text == " ".join(p.text.split())
        assert all(0 <= w.start <= w.end <= t.duration for w in t.words)


def test_a_timed_decode_says_the_template_and_only_chooses_rising_times(tiny_model_dir: Path) -> None:
    api = QwenAudio.from_pretrained(tiny_model_dir)
    times = api.tokenizer.time_token_ids
    words = api.tokenizer.encode_plain(" no")
    template = (times.start, *words, times.start, times.start, *words, times.start) * 3  # a phrase said six times
    constraint = TimedText(template, times.start, times.start + 150, api.tokenizer.eod_id)
    prompt = build_prompt(Task.SRWT, audio="a", audio_language="en")
    out = api.generate([prompt, prompt], [[speech(1.5)], [speech(1.0)]], GenerationOptions(max_new_tokens=constraint.max_new_tokens),
                       constraints=[constraint, None])[0]
    assert out.finished and len(out.ids) == len(template)  # the loop guard leaves a constrained row alone
    chosen = [t for t, slot in zip(out.ids, template) if slot == times.start]
    assert [t for t, slot in zip(out.ids, template) if slot != times.start] == [t for t in template if t != times.start]
    assert chosen == sorted(chosen) and all(times.start <= t <= times.start + 150 for t in chosen)


def test_timed_text_allows_forced_tokens_then_rising_times_then_the_stop() -> None:
    constraint = TimedText((100, 7, 8, 100, 100, 9, 100), first_time=100, last_time=120, stop=1)
    assert constraint.allowed([]) == (100, 120)
    assert constraint.allowed([105]) == (7, 7)
    assert constraint.allowed([105, 7]) == (8, 8)
    assert constraint.allowed([105, 7, 8]) == (105, 120)
    assert constraint.allowed([105, 7, 8, 110, 112, 9]) == (112, 120)
    assert constraint.allowed([105, 7, 8, 110, 112, 9, 115]) == (1, 1)
    logits = torch.zeros(200)
    logits[50] = 9.0
    restricted = constraint.restrict([105, 7, 8], logits)
    assert int(restricted.argmax()) in range(105, 121) and torch.isinf(restricted[50])
    with pytest.raises(ValueError):
        TimedText((100,), first_time=100, last_time=99, stop=1)


def test_the_ctc_likelihood_favours_the_text_the_frames_say(aligned_dir: Path) -> None:
    api = QwenAudio.from_pretrained(aligned_dir)
    yes, no = api.tokenizer.encode_plain("yes"), api.tokenizer.encode_plain("no")
    spikes = {3 + 2 * n: t + 1 for n, t in enumerate(yes)}
    vocab = api.model.get_input_embeddings().weight.shape[0]
    planted_frames = torch.from_numpy(planted(12, vocab + 1, spikes)).log_softmax(-1)
    [[said, other, empty, too_long]] = api.aligner.text_log_likelihoods(
        api.tokenizer, [planted_frames], [["yes", "no", "", "yes " * 12]])
    assert yes != no and said > other and said > empty
    assert too_long == float("-inf")  # 12 frames cannot say 24+ tokens


def test_audio_encoded_once_serves_the_beams_and_the_ctc_as_the_pieces_themselves(aligned_dir: Path) -> None:
    api = QwenAudio.from_pretrained(aligned_dir)
    pieces = [speech(1.5), speech(0.7)]
    prompt = build_prompt(Task.ASR, audio="a", audio_language="en")
    inputs = api.processor([prompt] * 2, [[p] for p in pieces], padding_side="left")
    encoded = api.model.encode_audio(inputs.audio_features, inputs.audio_lengths, grouped=True)
    shared, alone = api.aligner.frame_log_probs(encoded), api.aligner.log_probs(pieces)
    assert [s.shape for s in shared] == [a.shape for a in alone]
    for s, a in zip(shared, alone):
        torch.testing.assert_close(s, a)
    search = {"attention_mask": inputs.attention_mask, "num_beams": 2, "max_new_tokens": 4}
    assert (api.model.fast_beam_search(inputs.input_ids, audio_features=encoded, **search)
            == api.model.fast_beam_search(inputs.input_ids, **search, **inputs.audio_kwargs()))


class _PreferLast:
    """An aligner stand-in whose CTC overwhelmingly prefers each piece's last candidate."""

    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    def frame_log_probs(self, encoded: object) -> list[torch.Tensor]:
        return []  # read by nothing here: the planted likelihoods below ignore the frames

    def text_log_likelihoods(self, tokenizer: object, log_probs: list[torch.Tensor], candidates: list[list[str]]) -> list[list[float]]:
        self.seen += [list(texts) for texts in candidates]
        return [[0.0] * (len(texts) - 1) + [1e6] for texts in candidates]


def test_beam_transcripts_are_chosen_jointly_with_the_ctc(aligned_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    api = QwenAudio.from_pretrained(aligned_dir)
    stop = api.model.generation_config.eos_token_id[0]
    ids = api.tokenizer.encode_plain

    def planted(input_ids: torch.Tensor, **kwargs: object) -> list[list[Hypothesis]]:
        """Row 0: two finished beams and a better-scored one cut by the limit; row 1: only unfinished beams."""
        assert kwargs["num_beams"] == 3
        found = [[Hypothesis(tuple(ids("to the left")), -1.0, stop), Hypothesis(tuple(ids("to the lift")), -2.0, stop),
                  Hypothesis(tuple(ids("to the the the")), -0.5)],
                 [Hypothesis(tuple(ids("la la la")), -0.1), Hypothesis(tuple(ids("la la")), -0.2)]]
        return found[: input_ids.shape[0]]

    monkeypatch.setattr(api.model, "fast_beam_search", planted)
    stub = _PreferLast()
    api.aligner = stub  # type: ignore[assignment]
    options = GenerationOptions(max_new_tokens=6, num_beams=3)
    short, long = speech(1.0), speech(2.0)  # decoded shortest first: row 0 is the short one
    out = api.transcribe([(long, 16_000), (short, 16_000)], language="en", options=options)
    assert stub.seen == [["to the left", "to the lift"], []]  # an unfinished beam is never a candidate
    assert out[1].text == "to the lift"  # the CTC's choice over the decoder's
    greedy = api.transcribe((long, 16_000), language="en", options=GenerationOptions(max_new_tokens=6))
    assert out[0].text == greedy.text  # no finished beam: decoded greedily
    assert len(stub.seen) == 2  # greedy decoding has one text: nothing to rescore


def test_without_an_aligner_beams_keep_the_decoders_best(tiny_model_dir: Path) -> None:
    api = QwenAudio.from_pretrained(tiny_model_dir)
    options = GenerationOptions(max_new_tokens=6, num_beams=3)
    wave = speech(1.0)
    [beam] = api.generate([build_prompt(Task.ASR, audio="a", audio_language="en")], [[wave]], options)
    assert api.transcribe((wave, 16_000), language="en", options=options).text == strip_tags(beam.text).strip()


def test_an_unsure_language_tag_is_settled_by_decoding_in_each_likely_language(
        aligned_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    api = QwenAudio.from_pretrained(aligned_dir)
    vocab = api.model.config.vocab_size

    def logits_preferring(chances: dict[str, float]):
        def next_token_logits(input_ids: torch.Tensor, **kwargs: object) -> torch.Tensor:
            logits = torch.full((1, vocab), -50.0)
            for code, chance in chances.items():
                logits[0, api.language_ids[code]] = float(np.log(chance))
            return logits
        return next_token_logits

    decoded: list[str] = []

    def rescored(prompts: list[str], pieces: list[np.ndarray],
                 options: GenerationOptions) -> tuple[list[tuple[str, float] | None], list[None]]:
        code = next(c for c in api.language_ids if f"<|{c}|>" in prompts[0])
        decoded.append(code)
        assert options.num_beams == api.speech_beams and len(pieces) == 1
        return ([("doce", -2.0)] if code == "es" else [None] if code == "it" else [("douze", -9.0)]), [None]

    monkeypatch.setattr(api, "_ctc_rescored", rescored)
    wave = speech(0.8)
    monkeypatch.setattr(api.model, "next_token_logits", logits_preferring({"fr": 0.6, "es": 0.25, "it": 0.1, "en": 0.05}))
    assert api.detect_language((wave, 16_000)) == "es"  # its transcript explains the audio best
    assert decoded == ["fr", "es", "it"]  # the three likeliest tags are checked, nothing else
    decoded.clear()
    heard = api.transcribe((wave, 16_000))
    assert (heard.language, heard.text) == ("es", "doce") and decoded == ["fr", "es", "it"]  # not decoded a fourth time
    decoded.clear()  # the server asks for up to 512 tokens: capped by the audio's length, the same decode
    served = api.transcribe((wave, 16_000), options=GenerationOptions(max_new_tokens=512, num_beams=api.speech_beams))
    assert served.text == "doce" and decoded == ["fr", "es", "it"]
    decoded.clear()
    monkeypatch.setattr(api.model, "next_token_logits", logits_preferring({"fr": 0.95, "es": 0.05}))
    assert api.detect_language((wave, 16_000)) == "fr" and decoded == []  # a sure tag decides alone
    monkeypatch.setattr(api.model, "next_token_logits", logits_preferring({"fr": 0.6, "es": 0.4}))
    assert api.detect_language((np.zeros(16_000, np.float32), 16_000)) == "fr" and decoded == []  # silence: nothing to decode


def test_a_translation_is_never_judged_by_the_ctc_of_what_is_said(aligned_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CTC scores the source speech's own tokens: it would pull a translation toward the source's sounds."""
    api = QwenAudio.from_pretrained(aligned_dir)

    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError("a translation was decoded jointly with the CTC")

    monkeypatch.setattr(api, "_ctc_rescored", refused)
    options = GenerationOptions(max_new_tokens=6, num_beams=3)
    wave = speech(1.0)
    translated = api.translate((wave, 16_000), to="en", language="fr", options=options)
    [beam] = api.generate([build_prompt(Task.S2TT, audio="a", audio_language="fr", text_language="en")], [[wave]], options)
    assert translated.text == strip_tags(beam.text).strip()


def test_word_times_encode_a_bounded_batch_at_a_time(aligned_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A piece's CTC log-probabilities are [frames, vocab]: an hour's at once ran out of memory, so the
    aligner encodes ``ALIGN_BATCH`` pieces at a time, and given a piece's log-probabilities, none."""
    from qwen_audio.infer.alignment import ALIGN_BATCH

    api = QwenAudio.from_pretrained(aligned_dir)
    encode, batches = api.model.encode_audio, []

    def watched(mel, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        batches.append(mel.features.shape[0])
        return encode(mel, *args, **kwargs)

    monkeypatch.setattr(api.model, "encode_audio", watched)
    count = 2 * ALIGN_BATCH + 3
    pieces, texts = [speech(0.6 + 0.01 * i) for i in range(count)], ["yes"] * count
    alone = api.aligner.word_times(api.tokenizer, pieces, texts, " ")
    assert batches == [ALIGN_BATCH, ALIGN_BATCH, 3]
    batches.clear()
    given = api.aligner.log_probs(pieces[:5])
    batches.clear()
    assert api.aligner.word_times(api.tokenizer, pieces[:5], texts[:5], " ", given) == alone[:5] and batches == []
    assert [s.shape for s in given] == [s.shape for s in api.aligner.log_probs(pieces[:5])]  # left as they were


def test_long_audio_with_word_times_encodes_each_piece_once(aligned_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The joint CTC decode's log-probabilities place the words: no second encoder pass for the times,
    and the same words and times as aligning afterwards."""
    api = QwenAudio.from_pretrained(aligned_dir)
    api.model.config.utterance_seconds = 12.0
    pause = np.zeros(8000, np.float32)
    pieces = [speech(0.8 + 0.1 * i) for i in range(5)]
    wave = np.concatenate([np.concatenate([p, pause]) for p in pieces])
    align, aligned = CtcAligner.log_probs, []

    def watched(self, pieces):  # noqa: ANN001, ANN202
        aligned.append(len(pieces))
        return align(self, pieces)

    monkeypatch.setattr(CtcAligner, "log_probs", watched)
    options = GenerationOptions(max_new_tokens=4, num_beams=2)
    timed = api.transcribe((wave, 16_000), language="en", word_timestamps=True, options=options)
    windows = api._pieces(wave)
    assert len(windows) == 5 and aligned == []
    texts = api._speech([build_prompt(Task.ASR, audio="a", audio_language="en")] * 5,
                        [wave[w.start:w.end] for w in windows], options)
    apart = api._stitched(wave, "en", windows, api._word_times([wave[w.start:w.end] for w in windows], texts, "en"), True)
    assert timed.words == apart.words and timed.text == apart.text
