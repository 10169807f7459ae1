"""Template sentences over the lexicon: new combinations of known words, with their meaning kept.

A sentence is 1–3 clauses of three frames (a thing's colour, someone counting, someone doing
something to a thing), realised per language with articles, gender agreement and particles.
English also gets a richer frame so its vocabulary is large enough for ASR to be a real task. The
concepts used are kept as slots, so templated questions have exact answers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from qwen_audio.data.synth import lexicon as lx
from qwen_audio.formats.languages import word_separator


@dataclass(frozen=True)
class SpokenWord:
    """One word as written in the label and as handed to espeak-ng."""

    text: str
    spoken: str


@dataclass(frozen=True)
class Sentence:
    language: str
    words: tuple[SpokenWord, ...]
    colours: tuple[str, ...] = ()  # English concept names, in order of mention
    nouns: tuple[str, ...] = ()
    numbers: tuple[int, ...] = ()
    frames: tuple[str, ...] = field(default=())

    @property
    def text(self) -> str:
        return join_words([w.text for w in self.words], self.language)


def join_words(words: list[str], language: str) -> str:
    """Written form of a word sequence: no spaces in Chinese and Japanese."""
    return word_separator(language).join(words)


def _w(entry: str) -> SpokenWord:
    return SpokenWord(lx.text_of(entry), lx.spoken_of(entry))


def _words(*entries: str) -> list[SpokenWord]:
    out: list[SpokenWord] = []
    for entry in entries:
        if "|" in entry or len(entry.split()) == 1:
            out.append(_w(entry))
        else:
            out += [_w(e) for e in entry.split()]
    return out


def _has_batchim(hangul: str) -> bool:
    """Whether a Korean word ends in a consonant (picks 은/는, 을/를, 이다/다)."""
    code = ord(hangul[-1]) - 0xAC00
    return 0 <= code < 11172 and code % 28 != 0


def _article(language: str, noun: str, gender: str, accusative: bool = False) -> list[str]:
    """Definite article (+ noun) as words; French/Italian elide before a vowel."""
    if language == "de":
        art = {"m": "den" if accusative else "der", "f": "die", "n": "das"}[gender]
        return [art, noun]
    if language == "es":
        return ["el" if gender == "m" else "la", noun]
    if language in ("fr", "it") and noun[0].lower() in "aeiouéèh":
        return ["l'" + noun]
    if language == "fr":
        return ["le" if gender == "m" else "la", noun]
    if language == "it":
        return ["il" if gender == "m" else "la", noun]
    return ["the", noun]


def _colour_form(language: str, colour: int, gender: str) -> str:
    form = lx.COLOURS[language][colour]
    if isinstance(form, tuple):
        return form[1] if gender == "f" else form[0]
    return form


def colour_clause(language: str, noun: int, colour: int) -> list[SpokenWord]:
    """"the cat is red" in ``language``."""
    entry = lx.NOUNS[language][noun]
    n, g, c = lx.text_of(entry), lx.gender_of(entry), lx.COLOURS[language][colour]
    if language == "zh":
        return _words(entry, "是|shi4", str(c), "的|de5")
    if language == "ja":
        return _words(entry, "は|わ", str(c), "です")
    if language == "ko":
        return _words(n + ("은" if _has_batchim(n) else "는"), f"{c}이다")
    copula = {"en": "is", "de": "ist", "es": "es", "fr": "est", "it": "è"}[language]
    return _words(*_article(language, n, g), copula, _colour_form(language, colour, g))


def count_clause(language: str, name: int, number: int) -> list[SpokenWord]:
    """"tom counts to seven" in ``language``."""
    who, num = lx.NAMES[language][name], lx.NUMBERS[language][number - 1]
    if language == "zh":
        return _words(who, "数到|shu3 dao4", num)
    if language == "ja":
        return _words(who, "は|わ", num, "まで", "かぞえる")
    if language == "ko":
        return _words(who + ("은" if _has_batchim(who) else "는"), num + "까지", "센다")
    verb = {"en": "counts to", "de": "zählt bis", "es": "cuenta hasta", "fr": "compte jusqu'à",
            "it": "conta fino a"}[language]
    return _words(who, verb, num)


def verb_clause(language: str, name: int, verb: int, noun: int) -> list[SpokenWord]:
    """"tom sees the cat" in ``language``."""
    who, v, entry = lx.NAMES[language][name], lx.VERBS[language][verb], lx.NOUNS[language][noun]
    n, g = lx.text_of(entry), lx.gender_of(entry)
    if language == "zh":
        return _words(who, v, entry)
    if language == "ja":
        return _words(who, "は|わ", entry, "を", v)
    if language == "ko":
        return _words(who + ("은" if _has_batchim(who) else "는"),
                      n + ("을" if _has_batchim(n) else "를"), v)
    return _words(who, v, *_article(language, n, g, accusative=True))


def english_rich_clause(rng: random.Random) -> tuple[list[SpokenWord], dict[str, list]]:
    """"tom found three big red balls in the garden yesterday" (optional parts vary)."""
    number = rng.randint(2, 20)
    nouns = [(n, p) for n, p in zip(lx.NOUN_NAMES, lx.EN_PLURALS)] + list(lx.EN_EXTRA_NOUNS)
    noun, plural = rng.choice(nouns)
    colour = rng.randrange(len(lx.COLOUR_NAMES)) if rng.random() < 0.6 else None
    parts = [rng.choice(lx.NAMES["en"]), rng.choice(lx.EN_PAST_VERBS), lx.NUMBERS["en"][number - 1]]
    if rng.random() < 0.4:
        parts.append(rng.choice(lx.EN_SIZES))
    if colour is not None:
        parts.append(lx.COLOUR_NAMES[colour])
    parts += [plural, rng.choice(lx.EN_PREPOSITIONS), "the", rng.choice(lx.EN_PLACES)]
    if rng.random() < 0.4:
        parts.append(rng.choice(lx.EN_TIMES))
    slots = {"colours": [] if colour is None else [lx.COLOUR_NAMES[colour]], "nouns": [noun],
             "numbers": [number]}
    return _words(*parts), slots


def sample_sentence(language: str, rng: random.Random) -> Sentence:
    """A random sentence of 1–3 clauses (English: often the richer frame)."""
    words: list[SpokenWord] = []
    slots: dict[str, list] = {"colours": [], "nouns": [], "numbers": []}
    frames: list[str] = []
    n_clauses = rng.choice((1, 1, 2, 2, 3)) if language != "en" else rng.choice((1, 1, 2))
    clauses: set[tuple[SpokenWord, ...]] = set()
    while len(frames) < n_clauses:
        kind = rng.choice(("colour", "count", "verb", "rich") if language == "en"
                          else ("colour", "count", "verb"))
        clause, extra = _clause(language, kind, rng)
        if tuple(clause) in clauses:  # "tom counts to five and tom counts to five"
            continue
        clauses.add(tuple(clause))
        if frames:
            words += _words(lx.AND[language])
        words += clause
        for key in slots:
            slots[key] += extra[key]
        frames.append(kind)
    return Sentence(language, tuple(words), tuple(slots["colours"]), tuple(slots["nouns"]),
                    tuple(slots["numbers"]), tuple(frames))


def _clause(language: str, kind: str, rng: random.Random
            ) -> tuple[list[SpokenWord], dict[str, list]]:
    """One clause of frame ``kind`` and the concepts it mentions."""
    slots: dict[str, list] = {"colours": [], "nouns": [], "numbers": []}
    if kind == "rich":
        return english_rich_clause(rng)
    if kind == "colour":
        noun, colour = rng.randrange(len(lx.NOUN_NAMES)), rng.randrange(len(lx.COLOUR_NAMES))
        slots["nouns"].append(lx.NOUN_NAMES[noun])
        slots["colours"].append(lx.COLOUR_NAMES[colour])
        return colour_clause(language, noun, colour), slots
    if kind == "count":
        number = rng.randint(1, 20)
        slots["numbers"].append(number)
        return count_clause(language, rng.randrange(len(lx.NAMES[language])), number), slots
    noun = rng.randrange(len(lx.NOUN_NAMES))
    slots["nouns"].append(lx.NOUN_NAMES[noun])
    words = verb_clause(language, rng.randrange(len(lx.NAMES[language])),
                        rng.randrange(len(lx.VERBS[language])), noun)
    return words, slots


def number_sequence(language: str, numbers: list[int]) -> Sentence:
    """A spoken list of numbers ("seven twelve three"): the source of number translation."""
    words = _words(*[lx.NUMBERS[language][n - 1] for n in numbers])
    return Sentence(language, tuple(words), numbers=tuple(numbers), frames=("numbers",))


def number_words(numbers: tuple[int, ...], language: str) -> str:
    """The written number words of ``numbers`` in ``language`` (translation targets)."""
    return join_words([lx.text_of(lx.NUMBERS[language][n - 1]) for n in numbers], language)


def all_entries(language: str) -> list[SpokenWord]:
    """Every word form a sentence of ``language`` can contain (for espeak-ng coverage checks)."""
    rng = random.Random(0)
    seen: dict[str, SpokenWord] = {}
    for noun in range(len(lx.NOUN_NAMES)):
        for colour in range(len(lx.COLOUR_NAMES)):
            for w in colour_clause(language, noun, colour):
                seen[w.spoken] = w
        for name in range(len(lx.NAMES[language])):
            for verb in range(len(lx.VERBS[language])):
                for w in verb_clause(language, name, verb, noun):
                    seen[w.spoken] = w
    for name in range(len(lx.NAMES[language])):
        for number in range(1, 21):
            for w in count_clause(language, name, number):
                seen[w.spoken] = w
    for w in _words(lx.AND[language]):
        seen[w.spoken] = w
    if language == "en":
        for _ in range(2000):
            for w in english_rich_clause(rng)[0]:
                seen[w.spoken] = w
    return list(seen.values())
