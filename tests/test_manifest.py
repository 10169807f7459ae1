"""Task and chat manifests: round trips, streaming, and a validator that reports every problem."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from qwen_audio.data.chat_manifest import (
    ChatRecord,
    read_chat_manifest,
    validate_chat_manifest,
    write_chat_manifest,
)
from qwen_audio.data.manifest import (
    KNOWN_TASKS,
    ManifestRecord,
    ManifestValidationError,
    Word,
    check_manifest,
    read_manifest,
    register_task,
    validate_manifest,
    write_manifest,
)
from qwen_audio.formats.chatml import AudioItem, ChatTurn, TextItem
from qwen_audio.errors import ManifestError


def _write_lines(path: Path, lines: list[object]) -> Path:
    path.write_text(
        "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines),
        encoding="utf-8",
    )
    return path


def _srwt_record() -> ManifestRecord:
    return ManifestRecord(
        id="u1", audio="clips/u1.wav", task="srwt", text="hello world", offset=1.5,
        duration=2.0, audio_language="en", text_language="en",
        words=(Word("hello", 0.0, 0.52), Word("world", 0.6, 1.4)), meta={"speaker": "s1"},
    )


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    records = [
        _srwt_record(),
        ManifestRecord(id="q1", audio="https://example.org/a.wav", task="aqa", text="yes",
                       question="is it raining?", choices=("yes", "no"), labels=("yes", "yes")),
    ]
    path = tmp_path / "m.jsonl"
    assert write_manifest(records, path) == 2
    assert list(read_manifest(path)) == records


def test_gzip_manifest_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl.gz"
    write_manifest([_srwt_record()], path)
    with gzip.open(path, "rt", encoding="utf-8") as f:
        assert json.loads(f.readline())["id"] == "u1"
    assert list(read_manifest(path)) == [_srwt_record()]


def test_written_line_omits_none_fields(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    write_manifest([ManifestRecord(id="a", audio="a.wav", task="asr", text="hi")], path)
    assert json.loads(path.read_text()) == {"id": "a", "audio": "a.wav", "task": "asr",
                                            "text": "hi"}


def test_relative_paths_are_rewritten_against_the_manifest_folder(tmp_path: Path) -> None:
    audio = tmp_path / "corpus" / "x.wav"
    path = tmp_path / "manifests" / "m.jsonl"
    write_manifest([ManifestRecord(id="a", audio=str(audio), task="asr")], path,
                   relative_paths=True)
    record = next(read_manifest(path))
    assert record.audio == "../corpus/x.wav"
    assert record.resolve_audio(path.parent) == str(audio.resolve())


def test_url_and_absolute_audio_resolve_unchanged(tmp_path: Path) -> None:
    url = ManifestRecord(id="a", audio="https://x.org/a.wav", task="asr")
    assert url.is_url and url.resolve_audio(tmp_path) == "https://x.org/a.wav"
    absolute = ManifestRecord(id="b", audio="/data/b.wav", task="asr")
    assert absolute.resolve_audio(tmp_path) == "/data/b.wav"


def test_reader_streams_lazily(tmp_path: Path) -> None:
    # A bad line after the first must not be touched until iteration reaches it.
    path = _write_lines(tmp_path / "m.jsonl", [
        {"id": "a", "audio": "a.wav", "task": "asr", "text": "x"}, "{not json",
    ])
    reader = read_manifest(path)
    assert next(reader).id == "a"
    with pytest.raises(ManifestValidationError) as err:
        next(reader)
    assert err.value.problems[0].line == 2


def test_validator_reports_line_and_field_of_every_problem(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "m.jsonl", [
        {"id": "ok", "audio": "a.wav", "task": "asr", "text": "fine"},
        {"id": "", "audio": "b.wav", "task": "asrr", "duraton": 3.0, "offset": -1},
        "",  # blank lines are skipped but still counted
        "{broken",
        {"id": "s", "audio": "c.wav", "task": "srwt", "duration": 1.0,
         "words": [{"word": "a", "start": 0.5, "end": 0.2}, {"word": "b", "start": 0.1,
                                                              "end": 2.0}]},
        {"id": "ok", "audio": "d.wav", "task": "aqa", "audio_language": "xx",
         "labels": ["fine", ""]},
    ])
    found = {(p.line, p.field) for p in validate_manifest(path)}
    assert found == {
        (2, "id"), (2, "task"), (2, "duraton"), (2, "offset"),
        (4, None),
        # words[0]: end 0.2 < start 0.5; words[1]: starts (0.1) before words[0] ends (0.2)
        # and ends (2.0) after the duration (1.0).
        (5, "words[0]"), (5, "words[1]"),
        (6, "audio_language"), (6, "labels"), (6, "question"), (6, "id"),
    }
    with pytest.raises(ManifestError) as err:
        check_manifest(path)
    assert len(err.value.problems) == len(validate_manifest(path))  # type: ignore[attr-defined]
    assert "m.jsonl:2: task: unknown task 'asrr'" in str(err.value)


def test_srwt_needs_words_and_aqa_needs_question() -> None:
    with pytest.raises(ManifestValidationError) as err:
        ManifestRecord(id="a", audio="a.wav", task="srwt")
    assert [p.field for p in err.value.problems] == ["words"]
    with pytest.raises(ManifestValidationError):
        ManifestRecord.from_dict({"id": "a", "audio": "a.wav", "task": "aqa", "text": "yes"})


def test_register_task_extends_the_known_set() -> None:
    with pytest.raises(ManifestError):
        ManifestRecord(id="a", audio="a.wav", task="bird_song_test")
    register_task("bird_song_test")
    try:
        assert ManifestRecord(id="a", audio="a.wav", task="bird_song_test").task == "bird_song_test"
    finally:
        KNOWN_TASKS.discard("bird_song_test")
    with pytest.raises(ManifestError):
        register_task("bad name!")


def test_records_are_hashable_despite_meta() -> None:
    record = _srwt_record()
    assert len({record, _srwt_record()}) == 1


def _conversation() -> ChatRecord:
    return ChatRecord(id="c1", messages=(
        ChatTurn("system", (TextItem("You are a helpful assistant."),)),
        ChatTurn.user(AudioItem("a.wav"), AudioItem("b.wav", 1.0, 2.0), "compare them"),
        ChatTurn.assistant("The first is louder."),
        ChatTurn.user("why?"),
        ChatTurn.assistant("More energy."),
    ))


def test_chat_round_trip_and_audio_numbering(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    write_chat_manifest([_conversation()], path)
    line = json.loads(path.read_text())
    assert line["messages"][0] == {"role": "system", "content": "You are a helpful assistant."}
    assert line["messages"][1]["content"][1] == {"type": "audio", "audio": "b.wav",
                                                 "offset": 1.0, "duration": 2.0}
    (back,) = read_chat_manifest(path)
    assert back == _conversation()
    assert [a.path for a in back.audios] == ["a.wav", "b.wav"]
    assert validate_manifest(path) == []  # auto-detects the chat format


def test_chat_validator_reports_every_problem(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "chat.jsonl", [
        {"id": "c1", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "system", "content": "late system"},
            {"role": "assistant", "content": [{"type": "audio", "audio": "x.wav"}]},
            {"role": "robot", "content": [{"type": "video", "video": "v.mp4"}]},
        ]},
        {"id": "c2", "messages": []},
        {"id": "c3", "messages": [{"role": "assistant", "content": "orphan"}], "extra": 1},
    ])
    found = {(p.line, p.field) for p in validate_chat_manifest(path)}
    assert found == {
        (1, "messages[1].role"),  # system not first
        (1, "messages[2].content[0]"),  # audio in an assistant turn
        (1, "messages[3].role"), (1, "messages[3].content[0].type"),
        (1, "messages"),  # last message is not the assistant's
        (2, "messages"),
        (3, "extra"), (3, "messages"),  # no user message
    }
    assert {(p.line, p.field) for p in validate_manifest(path)} == found


def test_tag_task_maps_manifest_names_onto_the_tag_registry() -> None:
    from qwen_audio.data.manifest import TAG_TASKS, tag_task

    tags = pytest.importorskip("qwen_audio.formats.tags")
    registry = {t.value for t in tags.Task}
    assert set(TAG_TASKS.values()) <= registry
    clotho = ManifestRecord(id="c", audio="a.wav", task="caption", meta={"caption_style": "clotho"})
    plain = ManifestRecord(id="p", audio="a.wav", task="caption")
    scene = ManifestRecord(id="s", audio="a.wav", task="scene", text="Bus")
    asr = ManifestRecord(id="a", audio="a.wav", task="asr")
    assert [tag_task(r) for r in (clotho, plain, scene, asr)] == [
        "caption_clotho", "caption_plain", "acoustic_scene", "asr"]
    assert all(tag_task(r) in registry for r in (clotho, plain, scene, asr))
