"""Stage-2 chat conversations for the default model, built from the world data's own records (paper §3.3).

Kinds, each answer following from its record so that it can be scored (``score_reply``):

- ``what_said``: an audio and a request for its words → the transcript;
- ``language``: which language is spoken → the language's name;
- ``sound``: what is heard → the sound's caption (which names its source);
- ``two_audios``: speech and a sound, which one is speech, then what it says;
- ``text``: a text-only question with one right answer (sums, capitals), so the chat model keeps
  answering without audio (the paper mixes text-only data into stage 2).

Train conversations use train records and one set of phrasings; test conversations use the test
splits' records (held-out prompts, voices, texts and sound sources) and phrasings never trained on.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

import jiwer

from qwen_audio.data.chat_manifest import ChatRecord
from qwen_audio.data.manifest import ManifestRecord
from qwen_audio.formats.chatml import AudioItem, ChatTurn, TextItem

SYSTEM_PROMPT = "You are a helpful assistant."
KINDS = ("what_said", "language", "sound", "two_audios", "text")
LANGUAGE_NAMES = {"en": "English", "de": "German", "es": "Spanish", "fr": "French", "it": "Italian",
                  "zh": "Chinese", "ja": "Japanese", "ko": "Korean"}
TRANSCRIPT_WER = 0.3  # a reply "says what the speaker says" within this word error rate


@dataclass(frozen=True)
class Phrasings:
    what_said: tuple[str, ...]
    language: tuple[str, ...]
    sound: tuple[str, ...]


PHRASINGS = {
    "train": Phrasings(
        ("What does the speaker say?", "Please transcribe this audio.", "What is said in this recording?",
         "Write down what you hear."),
        ("Which language is spoken here?", "What language is this?", "In which language is this person speaking?"),
        ("What can you hear in this audio?", "Describe this sound.", "What is making this sound?"),
    ),
    "test": Phrasings(
        ("Can you tell me the words in this clip?", "Transcribe the speech, please."),
        ("Tell me the language of this recording.",),
        ("What do you hear?", "What is this sound?"),
    ),
}
CAPITALS = {"France": "Paris", "Italy": "Rome", "Spain": "Madrid", "Germany": "Berlin", "Japan": "Tokyo",
            "Portugal": "Lisbon", "Austria": "Vienna", "Greece": "Athens", "Egypt": "Cairo", "Norway": "Oslo",
            "Poland": "Warsaw", "Russia": "Moscow", "Ireland": "Dublin", "Sweden": "Stockholm", "Peru": "Lima",
            "Kenya": "Nairobi", "Canada": "Ottawa", "Chile": "Santiago", "Cuba": "Havana", "China": "Beijing"}
HELD_OUT_CAPITALS = ("Norway", "Kenya", "Chile", "Cuba", "Peru")  # asked only in the test split


def _sentence(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")


def text_turns(rng: random.Random, split: str) -> tuple[list[ChatTurn], str]:
    """A text-only question and its answer; the answer's key word is what a reply must contain."""
    if rng.random() < 0.5:
        a, b = rng.randint(2, 40), rng.randint(2, 40)
        if split == "test":
            a += 40  # sums over 40 + 2 never appear in training
        return [ChatTurn.user(f"What is {a} plus {b}?"), ChatTurn.assistant(f"{a} plus {b} is {a + b}.")], str(a + b)
    countries = [c for c in CAPITALS if (c in HELD_OUT_CAPITALS) == (split == "test")]
    country = rng.choice(countries)
    capital = CAPITALS[country]
    return [ChatTurn.user(f"What is the capital of {country}?"),
            ChatTurn.assistant(f"The capital of {country} is {capital}.")], capital


def build_chats(speech: Sequence[ManifestRecord], sounds: Sequence[ManifestRecord], count: int, split: str,
                seed: int) -> list[ChatRecord]:
    """``count`` conversations cycling through ``KINDS`` over ``speech`` (ASR records with their
    language) and ``sounds`` (caption records, labels naming the source). ``meta`` keeps the kind and
    what a reply is scored against."""
    rng, ask = random.Random(seed), PHRASINGS[split]
    records = []
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        if kind in ("what_said", "language", "two_audios") and not speech or kind in ("sound", "two_audios") and not sounds:
            kind = "text"
        if kind == "what_said":
            record = rng.choice(speech)
            messages = [ChatTurn.user(AudioItem(record.audio), rng.choice(ask.what_said)),
                        ChatTurn.assistant(record.text)]
            answer = record.text
        elif kind == "language":
            record = rng.choice(speech)
            answer = LANGUAGE_NAMES[record.audio_language]
            messages = [ChatTurn.user(AudioItem(record.audio), rng.choice(ask.language)),
                        ChatTurn.assistant(f"The speaker is speaking {answer}.")]
        elif kind == "sound":
            record = rng.choice(sounds)
            messages = [ChatTurn.user(AudioItem(record.audio), rng.choice(ask.sound)),
                        ChatTurn.assistant(_sentence(record.text))]
            answer = "|".join(record.labels or (record.text,))
        elif kind == "two_audios":
            said, heard = rng.choice(speech), rng.choice(sounds)
            first = rng.random() < 0.5
            n = 1 if first else 2
            audios = (AudioItem(said.audio), AudioItem(heard.audio)) if first else (AudioItem(heard.audio), AudioItem(said.audio))
            messages = [ChatTurn.user(*audios, "Which of these two audios contains speech?"),
                        ChatTurn.assistant(f"Audio {n} contains speech."),
                        ChatTurn.user(f"What is said in audio {n}?"), ChatTurn.assistant(said.text)]
            answer = said.text
        else:
            messages, answer = text_turns(rng, split)
        system = ChatTurn("system", (TextItem(SYSTEM_PROMPT),))
        records.append(ChatRecord(f"{split}-world-chat-{i:05d}", (system, *messages), meta={"kind": kind, "answer": answer}))
    return records


def _words(text: str) -> str:
    return " ".join(re.findall(r"[\w']+", text.lower()))


def score_reply(kind: str, answer: str, reply: str) -> bool:
    """Whether ``reply`` answers a conversation of ``kind`` whose expected answer is ``answer``:
    the transcript within ``TRANSCRIPT_WER``, or the key words (any one of ``|``-separated labels,
    every word of it) in the reply."""
    if kind in ("what_said", "two_audios"):
        reference = _words(answer)
        return bool(reference) and jiwer.wer(reference, _words(reply) or "-") <= TRANSCRIPT_WER
    words = set(_words(reply.replace("-", " ")).split())
    return any(set(_words(label.replace("-", " ")).split()) <= words for label in answer.split("|"))


__all__ = ["KINDS", "PHRASINGS", "build_chats", "score_reply", "text_turns"]
