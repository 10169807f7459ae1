"""Open-vocabulary sentences cleaned from text that Debian packages ship (fortune cookies).

A *source* is a named set of fortune files of one language, from one package. Every language has
training sources and may have one test source that never feeds training: the open-vocabulary test
then measures words and phrasings the model has not seen. Test sentences that also occur in a
training source (quotes travel between collections) are dropped from the test set.

Cleaning keeps what a voice can read and a transcript can state unambiguously: one sentence of 3–20
words, starting with a capital and ending in . ! or ?, only the language's letters and plain
punctuation, no digits (the spoken form of a number is ambiguous), no ALL-CAPS words (acronyms and
Roman numerals), no URLs, code, dialogue or verse markers.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

FORTUNE_ROOT = Path("/usr/share/games/fortunes")

# Letters each espeak-ng voice reads as words of its language.
LETTERS = {
    "en": "",
    "de": "äöüÄÖÜß",
    "es": "áéíóúüñÁÉÍÓÚÜÑ",
    "it": "àèéìíòóùúÀÈÉÌÒÙ",
    "fr": "àâæçéèêëîïôœùûüÿÀÂÇÉÈÊËÎÏÔŒÙÛÜ",
}
PUNCTUATION = " .,;!?'-" + "¿¡"
MIN_WORDS, MAX_WORDS = 3, 20


@dataclass(frozen=True)
class TextSource:
    """Fortune files (relative to the fortune folder) of one language from one Debian package."""

    name: str
    language: str
    package: str
    files: tuple[str, ...]
    split: str  # "train" | "test"


# Technical, verse, dialogue, list and ASCII-art files are left out: they are not everyday speech.
SOURCES: tuple[TextSource, ...] = (
    TextSource("fortunes", "en", "fortunes", (
        "art", "cookie", "definitions", "drugs", "education", "ethnic", "food", "goedel",
        "humorists", "kids", "knghtbrd", "law", "love", "magic", "medicine", "men-women",
        "miscellaneous", "news", "paradoxum", "people", "pets", "platitudes", "politics",
        "pratchett", "science", "sports", "startrek", "tao", "wisdom", "work", "zippy"), "train"),
    TextSource("fortunes-min", "en", "fortunes-min", ("fortunes", "literature", "riddles"), "test"),
    TextSource("fortunes-de", "de", "fortunes-de", tuple(f"de/{n}" for n in (
        "zitate", "witze", "unfug", "infodrom", "fussball", "mathematiker", "stilblueten",
        "regeln", "sprueche", "wusstensie", "murphy",
        "sicherheitshinweise", "loewe", "doppelsinnig", "elefanten", "huhn", "tips",
        "lieberals", "warmduscher", "bahnhof", "holenlassen", "letzteworte")), "train"),
    TextSource("fortunes-de-kinder-sprichworte", "de", "fortunes-de", tuple(f"de/{n}" for n in (
        "kinderzitate", "sprichworte", "sprichwortev", "anekdoten")), "test"),
    TextSource("fortunes-es", "es", "fortunes-es", tuple(f"es/{n}.fortunes" for n in (
        "refranes", "sabiduria", "sentimientos", "arte", "humanos", "vida", "poder", "ciencia",
        "leydemurphy", "varios", "libertad", "filosofia", "verdad", "familia", "nietzsche",
        "amistad", "deprimente", "asimov", "famosos", "lao-tse", "schopenhauer")), "train"),
    TextSource("fortunes-es-proverbios", "es", "fortunes-es",
               ("es/proverbios.fortunes", "es/pintadas.fortunes"), "test"),
    TextSource("fortunes-it", "it", "fortunes-it", tuple(f"it/{n}" for n in (
        "italia", "zuse", "norm", "luke", "leggi", "itatrek", "paolotedeschi", "formiche",
        "definizioni", "jackfr", "adams")), "train"),
    TextSource("fortunes-it-luttazzi", "it", "fortunes-it", ("it/luttazzi",), "test"),
)

_URLISH = re.compile(r"https?:|www\.|\.com\b|\.org\b|@|\b[a-z]+\.[a-z]{2,3}/")
_CAPS_WORD = re.compile(r"\b[A-ZÄÖÜÀÈÉÌÒÙÁÍÓÚÑÇ]{2,}\b")
_ABBREVIATION = re.compile(r"\b(?:[A-Z]|Mr|Mrs|Ms|Dr|St|Jr|Sr|vs|etc|Prof|Hr|Fr|Sig|Sra|Sr)\.")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[¿¡\"'“‘«]?[A-ZÄÖÜÀÈÉÌÒÙÁÍÓÚÑÇ])")
_ATTRIBUTION = re.compile(r"^\s*(--|—|–)")
# Italian fortunes write accented final vowels with an apostrophe ("e'", "piu'", "perche'").
_IT_ACCENT = {"a": "à", "e": "è", "i": "ì", "o": "ò", "u": "ù"}
_IT_APOSTROPHE_WORDS = frozenset({"po'", "mo'", "de'", "be'", "va'", "di'", "fa'", "sta'", "da'"})


def read_fortunes(path: Path) -> list[str]:
    """Entries of a fortune file (separated by ``%`` lines), attribution lines removed."""
    raw = path.read_bytes()
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError:
        content = raw.decode("latin-1")
    entries, lines = [], []
    for line in content.splitlines() + ["%"]:
        if line.strip() == "%":
            if lines:
                entries.append(" ".join(lines))
            lines = []
        elif not _ATTRIBUTION.match(line):
            lines.append(line.strip())
    return entries


def _italian_accents(text: str) -> str:
    def fix(match: re.Match) -> str:
        word = match.group(0)
        if word.lower() in _IT_APOSTROPHE_WORDS:
            return word
        stem, vowel = word[:-2], word[-2]
        if vowel == "e" and stem.lower().endswith("ch") or word.lower() in ("ne'", "se'"):
            return stem + "é"  # perché, poiché, né, sé
        return stem + _IT_ACCENT.get(vowel.lower(), vowel)
    return re.sub(r"\b\w*[aeiou]'(?!\w)", fix, text)


def normalise(text: str, language: str) -> str:
    """Unify quotes and dashes, drop quotation marks, repair ASCII accents; whitespace collapsed."""
    text = unicodedata.normalize("NFC", text)
    for a, b in (("’", "'"), ("‘", "'"), ("`", "'"), ("´", "'"), ("“", '"'), ("”", '"'),
                 ("„", '"'), ("«", '"'), ("»", '"'), ("…", "..."), ("\u00a0", " ")):
        text = text.replace(a, b)
    text = re.sub(r"\s*(?:--+|—|–)\s*", ", ", text)
    text = text.replace('"', " ").replace("''", " ")
    if language == "it":
        text = _italian_accents(text)
    text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text) if language != "it" else text
    text = re.sub(r"\s+([,.;!?])", r"\1", text)
    return " ".join(text.split())


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def clean_sentence(sentence: str, language: str) -> str | None:
    """The sentence if a voice can read it and its transcript is unambiguous, else None."""
    s = sentence.strip().lstrip(",; ")
    s = re.sub(r"\.{3,}$", ".", s)
    s = re.sub(r"([!?])[.!?]+$", r"\1", s)
    allowed = set(PUNCTUATION) | set(LETTERS[language])
    if any(not (c.isascii() and c.isalpha()) and c not in allowed for c in s):
        return None  # digits, symbols, brackets, colons, ellipses inside, foreign letters
    if ".." in s or _URLISH.search(s) or _CAPS_WORD.search(s) or _ABBREVIATION.search(s):
        return None
    if not re.match(r"^[¿¡]?[A-ZÄÖÜÀÈÉÌÒÙÁÍÓÚÑÇ]", s) or s[-1] not in ".!?":
        return None
    if re.search(r"[.!?][^\s]", s[:-1]) or re.search(r"[,;][^\s]", s) or "-," in s:
        return None
    words = s.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return None
    if any(not re.search(r"\w", w) or w.startswith("-") or w.endswith("-") for w in words):
        return None
    capitalised = sum(w.lstrip("¿¡")[:1].isupper() for w in words[1:])
    if language != "de" and len(words) >= 4 and capitalised * 2 > len(words) - 1:
        return None  # headline or title case
    return s


def sentence_key(sentence: str) -> str:
    """Case- and punctuation-free form: two sentences with one key are one sentence."""
    return " ".join(re.sub(r"[^\w' ]", " ", sentence.lower()).split())


def words_of(sentence: str) -> list[str]:
    """Lower-cased words without punctuation (for vocabulary statistics)."""
    return [w.strip("'-") for w in sentence_key(sentence).split() if w.strip("'-")]


def source_sentences(source: TextSource, root: Path = FORTUNE_ROOT) -> Iterator[str]:
    """Clean sentences of one source, in file order (duplicates included)."""
    for name in source.files:
        path = root / name
        if not path.is_file():
            continue
        for entry in read_fortunes(path):
            for sentence in split_sentences(normalise(entry, source.language)):
                cleaned = clean_sentence(sentence, source.language)
                if cleaned:
                    yield cleaned


@dataclass(frozen=True)
class SentenceSet:
    """Deduplicated sentences of one language: ``train`` and ``test`` share no sentence key."""

    language: str
    train: tuple[tuple[str, str], ...]  # (sentence, source name)
    test: tuple[tuple[str, str], ...]

    def new_word_rate(self) -> tuple[float, float]:
        """(token share, type share) of test words that never occur in the training sentences."""
        vocabulary = {w for s, _ in self.train for w in words_of(s)}
        tokens = [w for s, _ in self.test for w in words_of(s)]
        if not tokens:
            return 0.0, 0.0
        types = set(tokens)
        return (sum(w not in vocabulary for w in tokens) / len(tokens),
                len(types - vocabulary) / len(types))


def build_sentence_set(language: str, sources: Iterable[TextSource] = SOURCES,
                       root: Path = FORTUNE_ROOT) -> SentenceSet:
    """Train and test sentences of ``language`` from its sources, deduplicated and disjoint."""
    pools: dict[str, list[tuple[str, str]]] = {"train": [], "test": []}
    seen: dict[str, set[str]] = {"train": set(), "test": set()}
    for source in sources:
        if source.language != language:
            continue
        for sentence in source_sentences(source, root):
            key = sentence_key(sentence)
            if key not in seen[source.split]:
                seen[source.split].add(key)
                pools[source.split].append((sentence, source.name))
    test = [(s, n) for s, n in pools["test"] if sentence_key(s) not in seen["train"]]
    return SentenceSet(language, tuple(pools["train"]), tuple(test))


def sample(items: tuple[tuple[str, str], ...], count: int, seed: int) -> list[tuple[str, str]]:
    """``count`` items drawn without replacement (all of them, shuffled, if fewer)."""
    chosen = list(items)
    random.Random(seed).shuffle(chosen)
    return chosen[:count]
