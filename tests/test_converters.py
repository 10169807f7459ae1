"""Each converter on a miniature copy of its dataset's layout, written here by the test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from qwen_audio.data.converters import CONVERTERS, convert, get_converter
from qwen_audio.data.manifest import read_manifest, validate_manifest
from qwen_audio.errors import ManifestError


def wav(path: Path, seconds: float = 0.25, sr: int = 16_000) -> Path:
    """A tiny real wav file (so duration probing has a header to read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), np.zeros(int(seconds * sr), dtype=np.float32), sr)
    return path


def text(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    return path


def test_registry_names_every_dataset_of_the_paper() -> None:
    assert set(CONVERTERS) == {
        "librispeech", "aishell1", "aishell2", "covost2", "clotho", "clotho_aqa", "cochlscene",
        "tut2017", "vocalsound", "meld", "nsynth", "audiocaps",
    }
    with pytest.raises(ManifestError, match="available"):
        get_converter("timit")


def test_librispeech(tmp_path: Path) -> None:
    chapter = tmp_path / "LibriSpeech" / "dev-clean" / "1272" / "128104"
    text(chapter / "1272-128104.trans.txt",
         "1272-128104-0000 MISTER QUILTER IS THE APOSTLE\n1272-128104-0001 NOR IS MISTER\n")
    wav(chapter / "1272-128104-0000.flac", 0.5)
    wav(chapter / "1272-128104-0001.flac")
    records = list(CONVERTERS["librispeech"](tmp_path, "dev-clean"))
    assert [r.id for r in records] == ["1272-128104-0000", "1272-128104-0001"]
    first = records[0]
    assert (first.task, first.text, first.audio_language) == (
        "asr", "MISTER QUILTER IS THE APOSTLE", "en")
    assert first.duration == pytest.approx(0.5)
    assert first.meta is not None and first.meta["speaker"] == "1272"
    with pytest.raises(ManifestError, match="not found"):
        list(CONVERTERS["librispeech"](tmp_path, "test-other"))


def test_aishell1_joins_segmentation_and_skips_untranscribed(tmp_path: Path) -> None:
    text(tmp_path / "transcript" / "aishell_transcript_v0.8.txt",
         "BAC009S0764W0121 甚至 出现 交易 几乎 停滞 的 情况\nBAC009S0002W0122 而 对 楼市\n")
    wav(tmp_path / "wav" / "test" / "S0764" / "BAC009S0764W0121.wav")
    wav(tmp_path / "wav" / "test" / "S0764" / "BAC009S0764W0999.wav")  # no transcript line
    wav(tmp_path / "wav" / "train" / "S0002" / "BAC009S0002W0122.wav")
    (record,) = CONVERTERS["aishell1"](tmp_path, "test")
    assert (record.id, record.text, record.audio_language) == (
        "BAC009S0764W0121", "甚至出现交易几乎停滞的情况", "zh")
    assert [r.id for r in CONVERTERS["aishell1"](tmp_path, "train")] == ["BAC009S0002W0122"]


def test_aishell2_eval_set_and_train(tmp_path: Path) -> None:
    test_dir = tmp_path / "iOS" / "test"
    text(test_dir / "wav.scp", "IT0011W0001\twav/T0011/IT0011W0001.wav\n")
    text(test_dir / "trans.txt", "IT0011W0001\t换一首歌\n")
    wav(test_dir / "wav" / "T0011" / "IT0011W0001.wav")
    (record,) = CONVERTERS["aishell2"](tmp_path, "ios-test")
    assert (record.id, record.text, record.task) == ("IT0011W0001", "换一首歌", "asr")
    train_dir = tmp_path / "iOS" / "data"
    text(train_dir / "trans.txt", "IC0001W0001\t厨房 用具\n")  # no wav.scp: wav/<id>.wav
    wav(train_dir / "wav" / "IC0001W0001.wav")
    assert [r.text for r in CONVERTERS["aishell2"](tmp_path, "train")] == ["厨房用具"]
    with pytest.raises(ManifestError, match="ios-test"):
        list(CONVERTERS["aishell2"](tmp_path, "tablet-test"))


def test_covost2_reads_unquoted_tsv_and_maps_language_codes(tmp_path: Path) -> None:
    text(tmp_path / "covost_v2.zh-CN_en.test.tsv",
         'path\tsentence\ttranslation\tclient_id\n'
         'common_voice_zh-CN_1.mp3\t你好\tHe said "hello"\tabc\n'
         'common_voice_zh-CN_2.mp3\t再见\tbye\tdef\n')
    wav(tmp_path / "clips" / "common_voice_zh-CN_1.mp3")  # content type is irrelevant here
    with pytest.warns(UserWarning, match="skipped 1 row"):
        (record,) = CONVERTERS["covost2"](tmp_path, "test", source="zh-CN", target="en")
    assert (record.task, record.audio_language, record.text_language) == ("s2tt", "zh", "en")
    assert record.text == 'He said "hello"'  # QUOTE_NONE keeps the quotes
    assert record.meta is not None and record.meta["transcript"] == "你好"
    text(tmp_path / "covost_v2.ca_en.test.tsv", "path\tsentence\ttranslation\tclient_id\n")
    with pytest.raises(ManifestError, match="register_language"):
        list(CONVERTERS["covost2"](tmp_path, "test", source="ca", target="en"))


def test_clotho_groups_five_references(tmp_path: Path) -> None:
    text(tmp_path / "clotho_captions_evaluation.csv",
         "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"
         'rain.wav,Rain falls.,"Rain, hard.",Drops hit a roof.,Water drips.,It rains.\n')
    wav(tmp_path / "evaluation" / "rain.wav")
    (record,) = CONVERTERS["clotho"](tmp_path, "test")
    assert record.task == "caption" and record.text == "Rain falls."
    assert record.labels is not None and len(record.labels) == 5 and record.labels[1] == "Rain, hard."
    assert record.audio_language == "unknown"
    per_caption = list(CONVERTERS["clotho"](tmp_path, "evaluation", one_per_caption=True))
    assert [r.id for r in per_caption][-1].endswith("#5")


def test_clotho_aqa_majority_answer(tmp_path: Path) -> None:
    text(tmp_path / "clotho_aqa_test.csv",
         "file_name,QuestionText,answer,confidence\n"
         "a.wav,Is it raining?,yes,yes\na.wav,Is it raining?,no,maybe\n"
         "a.wav,Is it raining?,yes,yes\na.wav,How many birds?,two,yes\n")
    wav(tmp_path / "audio_files" / "a.wav")
    records = list(CONVERTERS["clotho_aqa"](tmp_path, "test"))
    assert [(r.question, r.text, r.labels) for r in records] == [
        ("Is it raining?", "yes", ("yes", "no", "yes")),
        ("How many birds?", "two", ("two",)),
    ]
    assert all(r.task == "aqa" for r in records)


def test_cochlscene(tmp_path: Path) -> None:
    wav(tmp_path / "Test" / "Bus" / "Bus_001.wav")
    wav(tmp_path / "Test" / "Park" / "Park_007.wav")
    wav(tmp_path / "Train" / "Car" / "Car_001.wav")
    records = list(CONVERTERS["cochlscene"](tmp_path, "test"))
    assert [(r.text, r.task) for r in records] == [("Bus", "scene"), ("Park", "scene")]


def test_tut2017_fold_lists_and_meta(tmp_path: Path) -> None:
    text(tmp_path / "meta.txt",
         "audio/a001_0_10.wav\tresidential_area\ta001\naudio/b020_10_20.wav\tcafe/restaurant\tb020\n")
    text(tmp_path / "evaluation_setup" / "fold1_evaluate.txt", "audio/b020_10_20.wav\tcafe/restaurant\n")
    text(tmp_path / "evaluation_setup" / "fold1_test.txt", "audio/a001_0_10.wav\n")  # no label
    wav(tmp_path / "audio" / "a001_0_10.wav")
    wav(tmp_path / "audio" / "b020_10_20.wav")
    assert [r.text for r in CONVERTERS["tut2017"](tmp_path, "fold1_evaluate")] == ["cafe/restaurant"]
    assert [r.text for r in CONVERTERS["tut2017"](tmp_path, "fold1_test")] == ["residential_area"]
    assert len(list(CONVERTERS["tut2017"](tmp_path, "meta"))) == 2


def test_vocalsound_split_from_datafiles(tmp_path: Path) -> None:
    for name in ("f0003_0_cough.wav", "m0104_1_throatclearing.wav", "f0010_0_sniff.wav"):
        wav(tmp_path / "audio_16k" / name)
    text(tmp_path / "datafiles" / "te.json", json.dumps({"data": [
        {"wav": "/orig/path/audio_16k/m0104_1_throatclearing.wav", "labels": "/m/vs_throat"}]}))
    (record,) = CONVERTERS["vocalsound"](tmp_path, "test")
    assert (record.text, record.task) == ("throatclearing", "vocal_sound")
    assert record.meta is not None and record.meta["speaker"] == "m0104"
    assert sorted(r.text for r in CONVERTERS["vocalsound"](tmp_path, "all")) == [
        "cough", "sniff", "throatclearing"]


def test_meld_prefers_extracted_wav(tmp_path: Path) -> None:
    text(tmp_path / "test_sent_emo.csv",
         "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,"
         "StartTime,EndTime\n"
         '1,"Oh my God, no!",Rachel,Surprise,negative,0,3,1,1,00:00:01,00:00:02\n'
         "2,Fine.,Ross,neutral,neutral,1,0,1,1,00:00:03,00:00:04\n")
    folder = tmp_path / "output_repeated_splits_test"
    wav(folder / "dia0_utt3.wav")
    (folder / "dia1_utt0.mp4").write_bytes(b"not decodable here")
    records = list(CONVERTERS["meld"](tmp_path, "test"))
    assert [(r.text, Path(r.audio).name) for r in records] == [
        ("surprise", "dia0_utt3.wav"), ("neutral", "dia1_utt0.mp4")]
    assert records[1].duration is None  # mp4 header is not probed
    assert records[0].meta is not None and records[0].meta["utterance"] == "Oh my God, no!"


def test_nsynth_targets(tmp_path: Path) -> None:
    folder = tmp_path / "nsynth-test"
    text(folder / "examples.json", json.dumps({"keyboard_acoustic_004-060-025": {
        "note_str": "keyboard_acoustic_004-060-025", "pitch": 60, "velocity": 25,
        "instrument_family_str": "keyboard", "instrument_source_str": "acoustic",
        "qualities_str": ["bright", "percussive"]}}))
    wav(folder / "audio" / "keyboard_acoustic_004-060-025.wav")
    (note,) = CONVERTERS["nsynth"](tmp_path, "test")
    assert (note.task, note.text) == ("note_analysis", "keyboard")
    assert note.meta is not None and note.meta["qualities"] == ["bright", "percussive"]
    assert [r.text for r in CONVERTERS["nsynth"](folder, "test", target="pitch")] == ["60"]
    assert [r.text for r in CONVERTERS["nsynth"](folder, "test", target="velocity")] == ["25"]
    with pytest.raises(ManifestError):
        list(CONVERTERS["nsynth"](folder, "test", target="timbre"))


def test_audiocaps_groups_test_captions_and_skips_missing(tmp_path: Path) -> None:
    text(tmp_path / "test.csv",
         "audiocap_id,youtube_id,start_time,caption\n"
         "1,abc,30,A dog barks\n2,abc,30,A dog is barking\n3,gone,0,Removed video\n")
    wav(tmp_path / "test" / "abc.wav")
    with pytest.warns(UserWarning, match="skipped 1 row"):
        (record,) = CONVERTERS["audiocaps"](tmp_path, "test")
    assert record.labels == ("A dog barks", "A dog is barking")
    assert record.meta is not None and record.meta["caption_style"] == "audiocaps"


def test_convert_writes_a_valid_relative_manifest(tmp_path: Path) -> None:
    for name in ("Bus_001.wav", "Bus_002.wav"):
        wav(tmp_path / "data" / "Val" / "Bus" / name)
    out = tmp_path / "manifests" / "cochl_val.jsonl"
    assert convert("cochlscene", tmp_path / "data", "val", out) == 2
    assert validate_manifest(out) == []
    first = next(read_manifest(out))
    assert first.audio == "../data/Val/Bus/Bus_001.wav"
    assert Path(first.resolve_audio(out.parent)).exists()
