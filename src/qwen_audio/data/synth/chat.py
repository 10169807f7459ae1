"""Stage-2 chat conversations built from a split's own rendered items (paper §3.3).

Kinds: multi-turn questions about one speech audio; two audios in one conversation; sounds,
scenes and notes described in dialogue; and text-only turns (so the chat model keeps answering
without audio). Answers are templated and follow from the labels, so they can be scored.
"""

from __future__ import annotations

import random
from typing import Any

from qwen_audio.data.chat_manifest import ChatRecord
from qwen_audio.data.synth import lexicon as lx
from qwen_audio.data.synth.render import LANGUAGE_NAMES
from qwen_audio.formats.chatml import AudioItem, ChatTurn, TextItem

SYSTEM_PROMPT = "You are a helpful assistant."


def _speech_turns(fact: dict[str, Any], rng: random.Random) -> list[tuple[str, str]]:
    """Follow-up (question, answer) pairs about one utterance."""
    turns = [("which language is that?", f"It is {LANGUAGE_NAMES[fact['language']]}."),
             ("is the speaker male or female?", f"The speaker sounds {fact['gender']}.")]
    if len(set(fact.get("colours", []))) == 1:
        turns.append(("what colour is mentioned?", f"The colour {fact['colours'][0]}."))
    if len(fact.get("numbers", [])) == 1:
        turns.append(("which number do you hear?", f"The number {fact['numbers'][0]}."))
    rng.shuffle(turns)
    return turns[: rng.randint(1, 2)]


def speech_chat(fact: dict[str, Any], rng: random.Random) -> list[ChatTurn]:
    ask = rng.choice(("what does the speaker say?", "please transcribe this audio.",
                      "what is said in this recording?"))
    messages = [ChatTurn.user(AudioItem(fact["audio"]), ask), ChatTurn.assistant(fact["text"])]
    for question, answer in _speech_turns(fact, rng):
        messages += [ChatTurn.user(question), ChatTurn.assistant(answer)]
    return messages


def describe(fact: dict[str, Any]) -> str:
    """A one-sentence answer about any non-speech item."""
    if fact["kind"] == "note":
        return (f"It is a single {fact['family'].replace('_', ' ')} note, "
                f"{fact['note']} (MIDI pitch {fact['pitch']}).")
    if fact["kind"] == "scene":
        return f"It sounds like a {fact['scene']}: {fact['caption']}."
    caption = fact["caption"]
    return f"{caption[0].upper()}{caption[1:]}."


def two_audio_chat(speech: dict[str, Any], other: dict[str, Any], rng: random.Random
                   ) -> list[ChatTurn]:
    """Two audios in one conversation: which one is speech, then what each holds."""
    first_is_speech = rng.random() < 0.5
    a, b = (speech, other) if first_is_speech else (other, speech)
    which = "the first" if first_is_speech else "the second"
    n_speech, n_other = (1, 2) if first_is_speech else (2, 1)
    return [
        ChatTurn.user(AudioItem(a["audio"]), AudioItem(b["audio"]),
              "which of these two audios contains speech?"),
        ChatTurn.assistant(f"Audio {n_speech}, {which} one, contains speech."),
        ChatTurn.user(f"what is said in audio {n_speech}?"), ChatTurn.assistant(speech["text"]),
        ChatTurn.user(f"and what do you hear in audio {n_other}?"), ChatTurn.assistant(describe(other)),
    ]


def text_only_turns(rng: random.Random) -> list[ChatTurn]:
    """Plain text questions with exact answers (arithmetic, number words, colour names)."""
    kind = rng.randrange(3)
    if kind == 0:
        a, b = rng.randint(1, 10), rng.randint(1, 10)
        question, answer = f"what is {a} plus {b}?", f"{a} plus {b} is {a + b}."
    elif kind == 1:
        n, lang = rng.randint(1, 20), rng.choice([x for x in lx.LANGUAGES if x != "en"])
        word = lx.text_of(lx.NUMBERS[lang][n - 1])
        question = f"how do you say the number {n} in {LANGUAGE_NAMES[lang]}?"
        answer = f"In {LANGUAGE_NAMES[lang]}, {n} is {word}."
    else:
        c, lang = rng.randrange(len(lx.COLOUR_NAMES)), rng.choice(("de", "es", "fr", "it"))
        form = lx.COLOURS[lang][c]
        word = form[0] if isinstance(form, tuple) else form
        question = f"what is the colour {lx.COLOUR_NAMES[c]} called in {LANGUAGE_NAMES[lang]}?"
        answer = f"In {LANGUAGE_NAMES[lang]} it is {word}."
    return [ChatTurn.user(question), ChatTurn.assistant(answer)]


def build_chats(facts: list[dict[str, Any]], count: int, split: str, seed: int
                ) -> list[ChatRecord]:
    """``count`` conversations over the split's items (cycled through the kinds)."""
    rng = random.Random(seed)
    speech = [f for f in facts if f["kind"] == "sentence"]
    others = [f for f in facts if f["kind"] in ("event", "scene", "note")]
    records = []
    for i in range(count):
        kind = i % 4
        if kind == 0 and speech:
            label, messages = "speech", speech_chat(rng.choice(speech), rng)
        elif kind == 1 and speech and others:
            label = "two_audios"
            messages = two_audio_chat(rng.choice(speech), rng.choice(others), rng)
        elif kind == 2 and others:
            fact, label = rng.choice(others), "sound"
            messages = [ChatTurn.user(AudioItem(fact["audio"]), "what can you hear in this audio?"),
                        ChatTurn.assistant(describe(fact))]
        else:
            label, messages = "text", text_only_turns(rng)
            if speech and rng.random() < 0.5:  # a text turn, then an audio turn
                label = "text_then_audio"
                messages += speech_chat(rng.choice(speech), rng)[:2]
        system = ChatTurn("system", (TextItem(SYSTEM_PROMPT),))
        records.append(ChatRecord(f"{split}-chat-{i:05d}", (system, *messages),
                                  meta={"kind": label}))
    return records
