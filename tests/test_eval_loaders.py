"""Benchmarks: every row of the paper's table has data, a task and a metric, loads from a
miniature layout or a manifest, and scores predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from qwen_audio.data.converters import CONVERTERS
from qwen_audio.data.manifest import KNOWN_TASKS, ManifestRecord, Word, write_manifest
from qwen_audio.eval.benchmarks import (
    BENCHMARKS,
    METRICS,
    get_benchmark,
    score_benchmark,
    srwt_reference,
)


def _wav(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), np.zeros(1600, dtype=np.float32), 16_000)


def test_every_benchmark_names_a_converter_task_and_metric() -> None:
    for b in BENCHMARKS.values():
        assert b.converter in CONVERTERS or (b.converter == "" and b.task == "srwt"), b.name
        assert b.task in KNOWN_TASKS and b.metric in METRICS
    covost = {n for n in BENCHMARKS if n.startswith("covost2-")}
    assert covost == {"covost2-en-de", "covost2-de-en", "covost2-en-zh-CN", "covost2-zh-CN-en",
                      "covost2-es-en", "covost2-fr-en", "covost2-it-en"}
    # Numbers as published (README of the official release, = the paper's table).
    assert get_benchmark("librispeech-test-other").paper_value == 4.2
    assert get_benchmark("covost2-en-zh-CN").paper_value == 41.5
    assert get_benchmark("vocalsound").paper_value == 0.9289
    assert get_benchmark("nsynth-pitch").paper_value is None  # the paper gives none
    with pytest.raises(ValueError, match="unknown benchmark"):
        get_benchmark("imagenet")


def test_librispeech_benchmark_loads_and_scores_wer_in_percent(tmp_path: Path) -> None:
    chapter = tmp_path / "test-clean" / "61" / "70968"
    chapter.mkdir(parents=True)
    (chapter / "61-70968.trans.txt").write_text("61-70968-0000 HE BEGAN A CONFUSED COMPLAINT\n")
    _wav(chapter / "61-70968-0000.flac")
    bench = get_benchmark("librispeech-test-clean")
    records = list(bench.records(tmp_path))
    assert [r.task for r in records] == ["asr"]
    # "he began a confused complaint" vs "he began a confused complain": 1 sub / 5 = 20 %.
    score = score_benchmark(bench, records, ["<|en|>he began a confused complain"])
    assert score.value == pytest.approx(20.0) and score.paper_value == 2.0


def test_scene_benchmark_from_manifest_file_filters_by_task(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    write_manifest([
        ManifestRecord(id="1", audio="a.wav", task="scene", text="Bus", labels=("Bus",)),
        ManifestRecord(id="2", audio="b.wav", task="scene", text="Park", labels=("Park",)),
        ManifestRecord(id="3", audio="c.wav", task="asr", text="ignored"),
    ], manifest)
    bench = get_benchmark("cochlscene")
    records = list(bench.records(manifest))
    assert [r.id for r in records] == ["1", "2"]
    # Official (the headline): "bus" ≠ "Bus" exactly, "street" ✗ → 0.0; lenient: "bus" ✓ → 0.5.
    score = score_benchmark(bench, records, ["bus", "street"])
    assert score.value == score.official.value == 0.0
    assert score.lenient is not None and score.lenient.value == 0.5


def test_nsynth_pitch_benchmark_uses_its_target(tmp_path: Path) -> None:
    folder = tmp_path / "nsynth-test"
    folder.mkdir()
    (folder / "examples.json").write_text(
        '{"guitar_acoustic_001-082-050": {"pitch": 82, "velocity": 50, '
        '"instrument_family_str": "guitar", "instrument_source_str": "acoustic"}}')
    _wav(folder / "audio" / "guitar_acoustic_001-082-050.wav")
    bench = get_benchmark("nsynth-pitch")
    (record,) = bench.records(tmp_path)
    assert (record.task, record.text) == ("pitch", "82")


def test_aqa_scores_against_majority_answer(tmp_path: Path) -> None:
    (tmp_path / "clotho_aqa_test.csv").write_text(
        "file_name,QuestionText,answer,confidence\n"
        "a.wav,Is it loud?,yes,yes\na.wav,Is it loud?,yes,yes\na.wav,Is it loud?,no,maybe\n")
    _wav(tmp_path / "audio_files" / "a.wav")
    bench = get_benchmark("clotho-aqa")
    records = list(bench.records(tmp_path))
    # Majority "yes": answering "no" (a minority annotator's answer) is wrong → 0.0.
    assert score_benchmark(bench, records, ["no"]).value == 0.0
    assert score_benchmark(bench, records, ["yes"]).value == 1.0
    # "Yes" is right for the lenient reading only: the official scorer compares exactly.
    score = score_benchmark(bench, records, ["Yes"])
    assert score.value == 0.0 and score.lenient is not None and score.lenient.value == 1.0


def test_srwt_benchmark_on_any_manifest_with_words() -> None:
    record = ManifestRecord(id="w", audio="a.wav", task="srwt", text="hi there",
                            audio_language="en",
                            words=(Word("hi", 0.2, 0.5), Word("there", 0.5, 0.9)))
    # English words after the first carry their leading space, as decoded output does.
    assert srwt_reference(record) == "<|0.00|><|0.20|>hi<|0.50|> there<|0.90|>"
    # Hypothesis shifts "there"'s end by 0.04 s; segments: "" 0–0.2, hi 0.2–0.5, " there" 0.5–0.94
    # → 3 aligned, total shift 0.04 → AAS 0.04 / 3, under both readings.
    score = score_benchmark(get_benchmark("srwt"), [record],
                            ["<|0.00|><|0.20|>hi<|0.50|> there<|0.94|>"])
    assert score.value == score.official.value == pytest.approx(0.04 / 3)
    assert score.details.aligned_words == 3
    assert score.lenient is not None and score.lenient.value == pytest.approx(0.04 / 3)
    # Without the space the official reading no longer pairs "there"; the lenient one still does.
    score = score_benchmark(get_benchmark("srwt"), [record], ["<|0.00|><|0.20|>hi<|0.50|>there<|0.94|>"])
    assert score.official.value == 0.0 and score.official.details.aligned_words == 2
    assert score.lenient is not None and score.lenient.value == pytest.approx(0.04 / 3)
