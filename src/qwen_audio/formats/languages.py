"""The languages of the tag format (spec §Tokenizer), listed once."""

from __future__ import annotations

# The eight language tags of the vocabulary, in its id order.
LANGUAGES: tuple[str, ...] = ("en", "zh", "de", "es", "ko", "fr", "ja", "it")
# <|zh_tr|> (traditional Chinese) is a text language only; <|unknown|> marks non-speech audio.
TEXT_LANGUAGES: tuple[str, ...] = (*LANGUAGES, "zh_tr")
NO_SPEECH = "unknown"  # the audio language of non-speech: no words to transcribe
AUDIO_LANGUAGES: tuple[str, ...] = (*LANGUAGES, NO_SPEECH)
# Written without spaces between words: SRWT joins their words with "", WER scores them by character.
UNSPACED_LANGUAGES: frozenset[str] = frozenset({"zh", "ja", "zh_tr"})


def word_separator(language: str | None) -> str:
    """What goes between two words of ``language``: ``""`` for zh/ja/zh_tr, a space otherwise."""
    return "" if language in UNSPACED_LANGUAGES else " "
