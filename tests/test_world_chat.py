"""data/world/chat.py: stage-2 conversations over the world records, and how their replies are scored."""

from __future__ import annotations

from pathlib import Path

from qwen_audio.data.manifest import ManifestRecord
from qwen_audio.data.world.chat import CAPITALS, HELD_OUT_CAPITALS, KINDS, PHRASINGS, build_chats, score_reply
from qwen_audio.eval.runner import EvalSettings
from qwen_audio.eval.suite import chat_accuracy
from qwen_audio.formats.chatml import AudioItem
from qwen_audio.infer.engine import ChatReply


def _speech(i: int, language: str = "es") -> ManifestRecord:
    return ManifestRecord(id=f"s{i}", audio=f"/data/s{i}.flac", task="asr", audio_language=language, text_language=language,
                          text=f"frase numero {i} de prueba")


def _sound(i: int) -> ManifestRecord:
    return ManifestRecord(id=f"n{i}", audio=f"/data/n{i}.flac", task="caption", audio_language="unknown", text_language="en",
                          text="a snare drum is hit", labels=("snare drum",))


def test_conversations_cycle_the_kinds_and_answer_from_their_records() -> None:
    chats = build_chats([_speech(i) for i in range(5)], [_sound(i) for i in range(3)], 50, "test", seed=1)
    assert [c.meta["kind"] for c in chats[:5]] == list(KINDS) and len({c.id for c in chats}) == 50
    for chat in chats:
        kind, answer = chat.meta["kind"], chat.meta["answer"]
        user, *_ = [m for m in chat.messages if m.role == "user"]
        asked = user.text
        last = chat.messages[-1]
        assert last.role == "assistant" and score_reply(kind, answer, last.text)  # the reference passes its own scorer
        if kind in ("what_said", "language", "sound"):
            assert asked in {"what_said": PHRASINGS["test"].what_said, "language": PHRASINGS["test"].language,
                             "sound": PHRASINGS["test"].sound}[kind]
        if kind == "two_audios":
            paths = [a.path for a in chat.audios]
            assert len(paths) == 2 and any(p.startswith("/data/s") for p in paths) and any(p.startswith("/data/n") for p in paths)
            speech_number = 1 + [p.startswith("/data/s") for p in paths].index(True)
            assert chat.messages[-2].text == f"What is said in audio {speech_number}?"
        if kind == "text" and answer in CAPITALS.values():
            assert next(c for c, a in CAPITALS.items() if a == answer) in HELD_OUT_CAPITALS
    train = build_chats([_speech(1)], [_sound(1)], 20, "train", seed=1)
    train_asks = {m.text for c in train for m in c.messages if m.role == "user"}
    assert not train_asks & set(PHRASINGS["test"].what_said + PHRASINGS["test"].language + PHRASINGS["test"].sound)


def test_without_sounds_every_audio_kind_that_needs_one_becomes_text() -> None:
    chats = build_chats([_speech(1)], [], 10, "train", seed=0)
    assert {c.meta["kind"] for c in chats} == {"what_said", "language", "text"}


def test_a_reply_is_right_when_it_says_the_transcript_or_names_the_answer() -> None:
    assert not score_reply("what_said", "press one to accept this recording", "Press 2 to delete it.")
    assert score_reply("what_said", "press one to accept this recording", "Press one to accept this recording!")
    assert score_reply("what_said", "press one to accept this recording", "press one to accept the recording")  # 1 of 6 words
    assert not score_reply("what_said", "press one to accept this recording", "")
    assert score_reply("language", "Spanish", "The speaker is speaking Spanish.")
    assert not score_reply("language", "Spanish", "It sounds like Italian.")
    assert score_reply("sound", "snare drum|drum kit", "I hear a snare-drum being hit.")
    assert not score_reply("sound", "snare drum", "A drum is hit.")
    assert score_reply("text", "Paris", "The capital of France is Paris.")


class ReplyingApi:
    def __init__(self, replies: list[str]) -> None:
        self.replies = replies

    def chat_batch(self, requests):  # noqa: ANN001, ANN201
        return [ChatReply(self.replies.pop(0), 1, 1, "stop") for _ in requests]


def test_world_chat_accuracy_scores_each_reply_by_its_kind(tmp_path: Path) -> None:
    from qwen_audio.data.chat_manifest import write_chat_manifest
    import numpy as np
    import soundfile as sf

    for name in ("s1", "n1"):
        sf.write(tmp_path / f"{name}.flac", np.zeros(8000, np.float32), 16_000)
    speech = ManifestRecord(id="s", audio=str(tmp_path / "s1.flac"), task="asr", audio_language="es", text_language="es",
                            text="hola a todos")
    sound = ManifestRecord(id="n", audio=str(tmp_path / "n1.flac"), task="caption", audio_language="unknown",
                           text_language="en", text="a bell rings", labels=("bell",))
    chats = build_chats([speech], [sound], 5, "test", seed=3)
    write_chat_manifest(chats, tmp_path / "chat.jsonl")
    replies = {"what_said": "Hola a todos.", "language": "It is Spanish.", "sound": "A whistle.",
               "two_audios": "hola a todos", "text": "I do not know."}
    result = chat_accuracy(ReplyingApi([replies[c.meta["kind"]] for c in chats]), tmp_path / "chat.jsonl",
                           EvalSettings(batch_size=8, progress=False), tmp_path / "out", name="world-chat", gate=0.7)
    assert result.name == "world-chat" and result.value == 3 / 5 and result.gate == 0.7
    assert (tmp_path / "out" / "world-chat.predictions.jsonl").is_file()
    assert all(isinstance(a, AudioItem) for c in chats for a in c.audios)
