"""Metrics against hand-computed values (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import pytest

from qwen_audio.eval.caption_metrics import caption_scores, cider_d, cider_d_per_clip
from qwen_audio.errors import MetricUnavailableError
from qwen_audio.eval.metrics import (
    binary_accuracy,
    bleu_tokenizer,
    character_error_rate,
    corpus_bleu,
    english_spelling_mapping,
    exact_accuracy,
    get_normalizer,
    lenient_accuracy,
    normalize_label,
    official_normalize,
    word_error_rate,
)
from qwen_audio.eval.srwt_metrics import align_equal, boundary_f1, srwt_scores
from qwen_audio.formats.srwt import official_segments
from qwen_audio.formats.timestamps import Word

# ---------------------------------------------------------------- WER / CER


def test_wer_pools_edits_over_the_corpus() -> None:
    # utt 1: "the cat sat" vs "the cat sat down" → 1 insertion, N = 3
    # utt 2: "a dog" vs "a frog"                → 1 substitution, N = 2
    # WER = (1 + 1) / (3 + 2) = 0.4 (not the mean of 1/3 and 1/2)
    result = word_error_rate(["the cat sat", "a dog"], ["the cat sat down", "a frog"],
                             normalizer="none")
    assert result.value == pytest.approx(0.4)
    assert (result.substitutions, result.deletions, result.insertions) == (1, 0, 1)
    assert result.reference_length == 5 and result.unit == "word"


def test_official_normaliser_keeps_punctuation_like_qwen_scorer() -> None:
    assert official_normalize("<|en|>Hello ,  World !<|endoftext|>") == "hello, world!"
    # "hello, world!" vs "hello world": both words differ once punctuation stays → 2/2.
    assert word_error_rate(["Hello, world!"], ["hello world"], normalizer="official").value == 1.0


def test_whisper_basic_normaliser_drops_punctuation_and_case() -> None:
    # Both sides normalise to "hello world" → WER 0.
    assert word_error_rate(["Hello, World!"], ["hello world"], normalizer="whisper_basic").value == 0
    # Special tokens are removed before Whisper's normaliser sees them.
    assert get_normalizer("whisper_basic")("<|en|>Hi!") .strip() == "hi"


def test_whisper_english_normaliser_numbers_and_contractions() -> None:
    normalize = get_normalizer("whisper_english")
    assert normalize("It's two dollars.") == normalize("it is $2")
    # "won't" → "will not": 2 reference words, hypothesis identical after normalising → 0.
    assert word_error_rate(["I won't go"], ["I will not go"], language="en").value == 0.0


def test_whisper_english_spelling_map_comes_from_the_whisper_normalizer_dependency() -> None:
    mapping = english_spelling_mapping()
    assert len(mapping) == 1739 and mapping["colour"] == "color" and mapping["theatre"] == "theater"
    # The case: three British spellings cost nothing once mapped.
    assert word_error_rate(["the colour of the grey theatre"], ["the color of the gray theater"],
                           language="en").value == 0.0


def test_whisper_english_normaliser_is_unavailable_without_its_spelling_map(tmp_path, monkeypatch) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("whisper", "whisper_normalizer") else real_find_spec(name, *a))
    english_spelling_mapping.cache_clear()
    try:
        with pytest.raises(MetricUnavailableError, match="whisper-normalizer"):
            english_spelling_mapping()
        # An explicit normalizer.json still works.
        (tmp_path / "n.json").write_text('{"colour": "color"}')
        assert english_spelling_mapping(str(tmp_path / "n.json")) == {"colour": "color"}
    finally:
        english_spelling_mapping.cache_clear()


def test_chinese_is_scored_by_character() -> None:
    # ref 今天天气很好 (6 chars), hyp 今天天汽很好 → 1 substitution → CER 1/6;
    # spaces in either side are ignored.
    result = word_error_rate(["今天 天气 很好"], ["今天天汽很好"], language="zh", normalizer="official")
    assert result.unit == "char" and result.value == pytest.approx(1 / 6)
    assert result.reference_length == 6


def test_cer_on_english_ignores_spaces() -> None:
    # "ab cd" → chars a b c d; hyp "abed" → a b e d: 1 substitution / 4.
    assert character_error_rate(["ab cd"], ["abed"], normalizer="none").value == pytest.approx(0.25)


def test_empty_reference_counts_insertions() -> None:
    # utt 1: empty ref, hyp "uh huh" → 2 insertions; utt 2: "yes" vs "yes" → 0; N = 1.
    result = word_error_rate(["", "yes"], ["uh huh", "yes"], normalizer="none")
    assert result.insertions == 2 and result.value == pytest.approx(2.0)


# ---------------------------------------------------------------- BLEU


def test_bleu_tokenizer_per_language_as_evaluate_st() -> None:
    # ja → ja-mecab, zh → zh, everything else (Korean included) 13a.
    assert [bleu_tokenizer(x) for x in ("en", "de", "zh", "ja", "ko")] == ["13a", "13a", "zh", "ja-mecab", "13a"]


def test_bleu_hand_computed() -> None:
    # hyp "the cat sat on mat" (5 words) vs ref "the cat sat on the mat" (6 words):
    # precisions: 1-gram 5/5, 2-gram 3/4 (the cat, cat sat, sat on; "on mat" misses),
    # 3-gram 2/3, 4-gram 1/2; brevity penalty exp(1 - 6/5) = exp(-0.2).
    # BLEU = 100 · exp(-0.2) · (1 · 3/4 · 2/3 · 1/2)^(1/4) = 100 · 0.818731 · 0.25^(1/4)
    expected = 100 * math.exp(-0.2) * (0.25 ** 0.25)
    result = corpus_bleu(["the cat sat on mat"], ["the cat sat on the mat"])
    assert result.score == pytest.approx(expected, abs=1e-6)
    assert result.tokenize == "13a"


def test_bleu_chinese_uses_zh_tokenizer() -> None:
    # 13a would see one "word" per sentence (no spaces) and score 0; the zh tokenizer splits
    # characters: 今天天气很好 vs 今天天气不错 share 4/6 unigrams, 3/5 bigrams, 2/4, 1/3.
    # BLEU = 100 · (4/6 · 3/5 · 2/4 · 1/3)^(1/4), no brevity penalty (equal length).
    expected = 100 * ((4 / 6) * (3 / 5) * (2 / 4) * (1 / 3)) ** 0.25
    result = corpus_bleu(["今天天气不错"], ["今天天气很好"], target_language="zh")
    assert result.tokenize == "zh" and result.score == pytest.approx(expected, abs=1e-6)


def test_bleu_japanese_is_unavailable_without_mecab_never_char(monkeypatch) -> None:
    import sacrebleu.tokenizers.tokenizer_ja_mecab as ja

    monkeypatch.setattr(ja, "MeCab", None)  # as if sacrebleu[ja] were not installed
    with pytest.raises(MetricUnavailableError, match=r"sacrebleu\[ja\]"):
        corpus_bleu(["猫が座った"], ["猫が座った"], target_language="ja")
    # The lenient figure is asked for by name, and says which tokenizer it used.
    assert corpus_bleu(["猫が座った"], ["猫が座った"], tokenize="char").tokenize == "char"


# ---------------------------------------------------------------- accuracy


def test_lenient_accuracy_normalised_labels_and_alternatives() -> None:
    assert normalize_label("<|scene|>City_center.") == "city center"
    # 1: "Bus" == "bus" ✓; 2: "cafe restaurant" matches "cafe/restaurant" ✓;
    # 3: "dog" ∉ {"cat", "kitten"} ✗; 4: ranked ["sniff", "cough"] → top-1 "sniff" ✗ (ref cough)
    # → 2/4 = 0.5
    result = lenient_accuracy(["Bus", "cafe/restaurant", ["cat", "kitten"], "cough"],
                              ["bus", "cafe restaurant", "dog", ["sniff", "cough"]])
    assert (result.correct, result.total, result.accuracy, result.match) == (2, 4, 0.5, "lenient")


def test_exact_accuracy_is_the_official_string_equality() -> None:
    # The cases: each is right for the lenient reading and wrong for the official one.
    refs = ["city_center", "yes", "Bus", "cafe/restaurant", "dog"]
    preds = ["city center", "Yes.", "bus", "cafe restaurant", "dog"]
    assert exact_accuracy(refs, preds).correct == 1 and exact_accuracy(refs, preds).match == "exact"
    assert lenient_accuracy(refs, preds).correct == 5
    with pytest.raises(TypeError):
        exact_accuracy([["cat", "kitten"]], ["cat"])  # type: ignore[list-item]


def test_binary_accuracy_keeps_yes_no_questions_only() -> None:
    # yes/no refs: ("yes","Yes") and ("no","yes"); "two birds" is not binary.
    # official: "Yes" ≠ "yes" → 0/2; lenient: ("yes","Yes") ✓ → 1/2.
    refs, preds = ["yes", "no", "two birds"], ["Yes", "yes", "two birds"]
    assert (binary_accuracy(refs, preds).correct, binary_accuracy(refs, preds).total) == (0, 2)
    assert (binary_accuracy(refs, preds, lenient=True).correct, binary_accuracy(refs, preds, lenient=True).total) == (1, 2)
    # The official selection is on the answer lowercased: "No" is a yes/no question, "no." is not.
    assert binary_accuracy(["No", "no."], ["No", "no."]).total == 1


# ---------------------------------------------------------------- CIDEr-D


def test_cider_d_hand_computed() -> None:
    # Two clips: A refs {"a b"}, B refs {"c d"}; |I| = 2, every n-gram has df 1 (or 0 for
    # unseen ones, clamped to 1), so each idf = log 2 and cosines are plain count cosines.
    # A: cand "a b" = ref → n=1 cos 1, n=2 cos 1, n=3,4 empty → 0; 10·(1+1)/4 = 5.0.
    # B: cand "c e" vs "c d": n=1 dot = log2², norms √2·log2 each → 1/2; n=2 cos 0;
    #    10·(0.5)/4 = 1.25. Corpus = (5 + 1.25) / 2 = 3.125.
    assert cider_d_per_clip(["a b", "c e"], [["a b"], ["c d"]], tokenizer="lenient") == pytest.approx([5.0, 1.25])
    assert cider_d(["a b", "c e"], [["a b"], ["c d"]], tokenizer="lenient") == pytest.approx(3.125)


def test_cider_d_length_penalty_and_clipping() -> None:
    # A: cand "a b c" vs ref "a b": n=1 cos = 2/(√3·√2); n=2 {ab, bc}·{ab} → 1/√2; n=3 0.
    # Length gap 1 word → penalty exp(-1/72). Score = 10/4 · (2/√6 + 1/√2) · exp(-1/72).
    expected = 2.5 * (2 / math.sqrt(6) + 1 / math.sqrt(2)) * math.exp(-1 / 72)
    assert cider_d_per_clip(["a b c", "c e"], [["a b"], ["c d"]], tokenizer="lenient")[0] == pytest.approx(expected)
    # Clipping: repeating a matched word cannot raise the score ("a a b" vs "a b"):
    # min(2·idf, idf) keeps the dot at 2·log2² while the candidate norm grows.
    repeated = cider_d_per_clip(["a a b", "c d"], [["a b"], ["c d"]], tokenizer="lenient")[0]
    assert repeated < cider_d_per_clip(["a b", "c d"], [["a b"], ["c d"]], tokenizer="lenient")[0]


def test_cider_d_averages_over_references_and_ignores_punctuation() -> None:
    # Clip A has refs "a b" and "x y"; cand "A b." tokenises to "a b": cos 1 with the first
    # (n=1, n=2) and 0 with the second → 10 · (2/4) / 2 = 2.5.
    scores = cider_d_per_clip(["A b.", "c d"], [["a b", "x y"], ["c d"]], tokenizer="lenient")
    assert scores[0] == pytest.approx(2.5)


def test_caption_scores_reports_missing_spice_instead_of_inventing_it() -> None:
    result = caption_scores(["a b", "c d"], [["a b"], ["c d"]], tokenizer="lenient")
    assert result.cider_d == pytest.approx(5.0) and result.spice is None and result.spider is None
    assert result.tokenizer == "lenient"


def test_official_caption_scores_need_java_and_say_so(monkeypatch) -> None:
    import qwen_audio.eval.caption_metrics as caption_metrics

    monkeypatch.setattr(caption_metrics.shutil, "which", lambda name: None)
    with pytest.raises(MetricUnavailableError, match="Java"):
        caption_scores(["a b", "c d"], [["a b"], ["c d"]])
    with pytest.raises(MetricUnavailableError, match="Java"):
        cider_d(["a b", "c d"], [["a b"], ["c d"]], tokenizer="official")


# ---------------------------------------------------------------- SRWT


def test_official_segments_pair_consecutive_times() -> None:
    words = official_segments("<|0.00|><|0.52|>hello<|0.88|><|0.95|> world<|1.40|>")
    assert words == [Word("", 0.0, 0.52), Word("hello", 0.52, 0.88),
                     Word("", 0.88, 0.95), Word("world", 0.95, 1.40)]
    assert official_segments("no times here") is None


def test_align_equal_keeps_only_matching_pairs() -> None:
    # ref a b c d, hyp a x c d → a-a, c-c, d-d aligned; b/x substituted.
    assert align_equal(list("abcd"), list("axcd")) == [(0, 0), (2, 2), (3, 3)]
    # deletion: ref a b c, hyp a c → (0,0), (2,1)
    assert align_equal(list("abc"), list("ac")) == [(0, 0), (2, 1)]


def test_align_equal_breaks_ties_as_the_official_aligner() -> None:
    # The case: "a b a" vs "b a b". Two alignments cost 2 with two equal pairs: insert
    # the first b and delete the last a → pairs (0, 1), (1, 2); delete the first a and insert the
    # last b → (1, 0), (2, 1). Backtracing from the end, the official aligner meets the tie at the
    # last cell and takes the insertion — the second; trying deletion first gave the first.
    assert align_equal(list("aba"), list("bab")) == [(1, 0), (2, 1)]


def test_srwt_aas_hand_computed() -> None:
    ref = "<|0.00|><|0.50|>hello<|0.90|><|1.00|>world<|1.40|>"
    hyp = "<|0.00|><|0.54|>hello<|0.86|><|1.00|>word<|1.50|>"
    # segments: ref ["", hello, "", world], hyp ["", hello, "", word].
    # aligned equal pairs: "" (0.00–0.50 vs 0.00–0.54), hello (0.50–0.90 vs 0.54–0.86),
    # "" (0.90–1.00 vs 0.86–1.00); world≠word.
    # start errors: 0 + 0.04 + 0.04 = 0.08; end errors: 0.04 + 0.04 + 0 = 0.08.
    # AAS = (0.08 + 0.08) / 3 = 0.05333; per boundary = 0.02667. No word has a leading space
    # here, so the official reading pairs the same three segments.
    result = srwt_scores([ref], [hyp], language="en", tolerance=0.05)
    assert result.aligned_words == 3 == result.official.aligned_words
    assert result.aas == pytest.approx(0.16 / 3) == result.official.value
    assert result.mean_boundary_error == pytest.approx(0.08 / 3)
    assert result.mean_start_error == pytest.approx(0.08 / 3)
    # WER on the text: "hello world" vs "hello word" → 1/2.
    assert result.wer == pytest.approx(0.5)
    # boundaries (non-silent words): ref {0.5, 0.9, 1.0, 1.4}, hyp {0.54, 0.86, 1.0, 1.5};
    # within 0.05 s: 0.5~0.54, 0.9~0.86, 1.0~1.0 → 3 matched; 1.4 vs 1.5 is 0.1 apart.
    # P = R = 3/4 → F1 = 0.75.
    assert (result.boundary.matched, result.boundary.f1) == (3, pytest.approx(0.75))


def test_boundary_f1_counts_shared_boundaries_once_and_skips_unparsable() -> None:
    # 面 0.54–0.86, 条 0.86–1.17: boundaries {0.54, 0.86, 1.17} (0.86 shared) → 3 each side.
    ref = official_segments("<|0.00|><|sil|><|0.54|>面<|0.86|>条<|1.17|>")
    hyp = official_segments("<|0.54|>面<|0.90|>条<|1.17|>")
    assert ref is not None and hyp is not None
    result = boundary_f1([ref], [hyp], tolerance=0.02)
    # 0.54 ✓, 0.86 vs 0.90 (0.04 > 0.02) ✗, 1.17 ✓ → P = R = 2/3.
    assert (result.reference_boundaries, result.matched) == (3, 2)
    assert result.f1 == pytest.approx(2 / 3)
    scores = srwt_scores(["<|0.00|>a<|0.10|>", "<|0.00|>b<|0.20|>"],
                         ["<|0.00|>a<|0.12|>", "b without times"])
    # second pair unparsable; first: start 0, end 0.02 → AAS 0.02 over 1 word.
    assert scores.unparsable == 1 and scores.aas == pytest.approx(0.02)
    assert scores.official.unparsable == 1 and scores.official.value == pytest.approx(0.02)
