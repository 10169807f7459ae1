"""Real speech: Asterisk's studio voice prompts (Debian ``asterisk-core-sounds-*``, CC-BY-SA-3.0).

One professional voice per language recorded the prompts as 16 kHz G.722 (``*-g722`` packages);
the texts ship beside them as ``core-sounds-<lang>.txt.gz`` lines ``name: text``. We decode each
prompt to 16 kHz mono FLAC and pair it with its cleaned text.

The split is binding and seed-independent (issue 16): a prompt whose *base name* (no folder, no
extension) has an md5 hex digest starting with c, d, e or f is validation, never training. Other
voice-prompt packages (``asterisk-prompt-*``) are reserved for independent evaluation: never trained
on, they are read only by :func:`build_other_voices`, which keeps their reserved prompts as a test of
other speakers (``DIR/asterisk/other-voices.jsonl``).
"""

from __future__ import annotations

import gzip
import hashlib
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from qwen_audio.data.manifest import ManifestRecord
from qwen_audio.errors import QwenAudioError

LANGUAGES = ("en", "es", "fr", "it")
SOUNDS_ROOT = Path("/usr/share/asterisk/sounds")
DOC_ROOT = Path("/usr/share/doc")
LICENSE = "CC-BY-SA-3.0"
# The core packages' one voice per language (asterisk-core-sounds-<lang>-g722 installs it).
CORE_VOICES = {"en": "en_US_f_Allison", "es": "es_MX_f_Allison", "fr": "fr_CA_f_June", "it": "it_IT_m_Carlo"}
VALIDATION_DIGITS = frozenset("cdef")  # first md5 hex digit of a validation prompt's base name

# Italian's text file lost its accented vowels to "?" in places; these are the words it hit.
# A "?" standing alone between words was "è" ("La conferenza ? piena").
_ITALIAN_REPAIRS = {"pu?": "può", "cos?": "così", "sar?": "sarà", "pi?": "più"}
_BRACKETED = re.compile(r"\[[^\]]*\]|\([^)]*\)|<[^>]*>")
# Prompts that are sounds, whatever their description says ("un suono beep").
SOUND_PROMPTS = frozenset({"beep", "beeperr", "ascending-2tone", "descending-2tone", "tt-monkeys",
                           "confbridge-join", "confbridge-leave"})


class AsteriskError(QwenAudioError):
    """The Asterisk sound packages or ffmpeg are missing, or a prompt failed to decode."""


@dataclass(frozen=True)
class Prompt:
    """One recorded prompt: its name as in the text file (``digits/1``) and its cleaned text."""

    language: str
    name: str
    text: str
    source: Path  # the recorded file (.g722 for the core sets, .gsm for the other voices)

    @property
    def base_name(self) -> str:
        return prompt_base_name(self.name)

    @property
    def split(self) -> str:
        return prompt_split(self.name)


def prompt_base_name(name: str) -> str:
    """``digits/1.g722`` → ``1``: the name without folder and extension."""
    base = name.rsplit("/", 1)[-1]
    return base[: -len(".g722")] if base.endswith(".g722") else base


def prompt_split(name: str) -> str:
    """"validation" when md5(base name) starts with c, d, e or f, else "train" (issue 16's rule)."""
    digest = hashlib.md5(prompt_base_name(name).encode("utf-8")).hexdigest()
    return "validation" if digest[0] in VALIDATION_DIGITS else "train"


def clean_prompt_text(text: str, language: str) -> str | None:
    """The spoken words of a prompt's description, or None when it is not (only) plain speech.

    Brackets holding no letters mark a symbol ("dot [.]") and are dropped; bracketed, angled
    or parenthesised words either describe a sound ("[ascending tones]", "(beep)") or leave it
    unknown whether they were spoken ("Spiacente, [quello] non è…"), so such prompts are skipped.
    """
    text = " ".join(text.replace("\ufeff", "").split())
    if language == "it":
        text = " ".join(_ITALIAN_REPAIRS.get(w, "è" if w == "?" else w) for w in text.split())
    text = text.replace("exclaimation-point", "exclamation point")
    if any(re.search(r"\w", part[1:-1]) for part in _BRACKETED.findall(text)):
        return None
    text = " ".join(_BRACKETED.sub(" ", text).split())
    return text if re.search(r"\w", text) else None


def read_prompt_texts(language: str, doc_root: Path = DOC_ROOT) -> dict[str, str]:
    """name → raw text from ``core-sounds-<lang>.txt.gz`` (comments and blank lines skipped)."""
    path = doc_root / f"asterisk-core-sounds-{language}" / f"core-sounds-{language}.txt.gz"
    if not path.exists():
        raise AsteriskError(f"{path} is missing; run `apt-get install asterisk-core-sounds-{language}`")
    texts: dict[str, str] = {}
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.replace("\ufeff", "").strip()
            if not line or line.startswith(";") or ": " not in line and not line.endswith(":"):
                continue
            name, _, text = line.partition(":")
            texts[name.strip()] = text.strip()
    return texts


def voice_folder(language: str, sounds_root: Path = SOUNDS_ROOT) -> Path:
    """The folder of the language's core G.722 prompts (e.g. ``en_US_f_Allison``).

    Named, not globbed: an installed ``asterisk-prompt-*`` set (another speaker, reserved for
    evaluation) also lands in ``<language>_*`` (``it_IT_f_Menardi`` sorts before the core ``it_IT_m_Carlo``)."""
    folder = sounds_root / CORE_VOICES[language]
    if not folder.is_dir():
        raise AsteriskError(f"{folder} is missing; run `apt-get install asterisk-core-sounds-{language}-g722`")
    return folder


def iter_prompts(language: str, sounds_root: Path = SOUNDS_ROOT, doc_root: Path = DOC_ROOT
                 ) -> Iterator[Prompt]:
    """Every G.722 prompt of the language that has speakable text, sorted by name."""
    return prompts_in(voice_folder(language, sounds_root), language, "g722", doc_root)


def prompts_in(folder: Path, language: str, extension: str, doc_root: Path = DOC_ROOT) -> Iterator[Prompt]:
    """Every ``*.<extension>`` recording under ``folder`` whose name has speakable text in the
    language's core text file, sorted by name."""
    texts = read_prompt_texts(language, doc_root)
    for path in sorted(folder.rglob(f"*.{extension}")):
        name = path.relative_to(folder).with_suffix("").as_posix()
        raw = texts.get(name)
        if not raw or name in SOUND_PROMPTS or name.startswith("silence/"):
            continue
        text = clean_prompt_text(raw, language)
        if text:
            yield Prompt(language, name, text, path)


def decode_prompt(source: Path, target: Path, container: str = "g722") -> float:
    """Decode a raw G.722 (or ``container``: "gsm") file to 16 kHz mono 16-bit FLAC; returns its
    duration in seconds."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise AsteriskError("ffmpeg is not installed; run `apt-get install ffmpeg`")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp.flac")
    cmd = [exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-f", container, "-i", str(source),
           "-ar", "16000", "-ac", "1", "-sample_fmt", "s16", "-map_metadata", "-1",
           "-fflags", "+bitexact", "-flags:a", "+bitexact", "-y", str(tmp)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise AsteriskError(f"ffmpeg could not decode {source}: {result.stderr.strip()}")
    tmp.replace(target)
    return round(sf.info(str(target)).frames / 16000, 3)


def decoded(source: Path, target: Path) -> float:
    """``source`` (its container named by its suffix) as 16 kHz FLAC at ``target`` (decoded once, then
    reused); returns its duration."""
    if target.exists():
        return round(sf.info(str(target)).frames / 16000, 3)
    return decode_prompt(source, target, source.suffix.lstrip("."))


def prompt_record(prompt: Prompt, audio: Path, duration: float) -> ManifestRecord:
    lang = prompt.language
    return ManifestRecord(
        id=f"asterisk-{lang}-{prompt.name.replace('/', '-')}", audio=str(audio), task="asr",
        audio_language=lang, text_language=lang, text=prompt.text, duration=duration,
        meta={"source": f"asterisk-core-sounds-{lang}", "prompt": prompt.name,
              "voice": prompt.source.parents[prompt.name.count("/")].name,
              "license": LICENSE, "split": prompt.split})


# One encoder window (30 s): a longer prompt (ten demo monologues of up to 86 s) would be cut to its
# first 30 s while its target keeps the whole text, teaching the model to invent the rest.
MAX_PROMPT_SECONDS = 30.0


def build_asterisk(out_dir: Path, languages: tuple[str, ...] = LANGUAGES, log=print,
                   sounds_root: Path = SOUNDS_ROOT, doc_root: Path = DOC_ROOT
                   ) -> dict[str, list[ManifestRecord]]:
    """Decode every prompt under ``out_dir/<lang>/`` and return split → records (sorted)."""
    by_split: dict[str, list[ManifestRecord]] = {"train": [], "validation": []}
    for lang in languages:
        prompts = list(iter_prompts(lang, sounds_root, doc_root))
        for i, prompt in enumerate(prompts):
            target = out_dir / lang / f"{prompt.name}.flac"
            duration = decoded(prompt.source, target)
            if duration <= MAX_PROMPT_SECONDS:
                by_split[prompt.split].append(prompt_record(prompt, target.resolve(), duration))
            if (i + 1) % 100 == 0 or i + 1 == len(prompts):
                log(f"asterisk {lang}: {i + 1}/{len(prompts)} prompts decoded")
    return by_split


# Other speakers (issue 16 reserves these packages for independent evaluation): a Colombian Spanish
# and a French voice, recorded as 8 kHz GSM (telephone quality: another speaker *and* another channel).
# The packages ship no texts; the prompts share their names with the core sets, whose texts they read
# (a voice set's wording can differ here and there, which costs both systems of a comparison alike).
# Only the md5-reserved names are kept, so no sentence of this test was ever trained on.
OTHER_VOICES = {"es": "asterisk-prompt-es-co", "fr": "asterisk-prompt-fr-armelle"}


def unpack_package(package: str, folder: Path) -> Path:
    """``apt-get download`` one Debian package and extract it under ``folder/package`` (once).

    Extracted, not installed: these sets would take over ``/usr/share/asterisk/sounds/<lang>``."""
    target = folder / package
    if (target / "usr").is_dir():
        return target
    for exe in ("apt-get", "dpkg-deb"):
        if shutil.which(exe) is None:
            raise AsteriskError(f"{exe} is needed to fetch {package}; this needs a Debian-like system")
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["apt-get", "download", package], cwd=folder, capture_output=True, text=True, check=False)
    debs = sorted(folder.glob(f"{package}_*.deb"))
    if result.returncode != 0 or not debs:
        raise AsteriskError(f"apt-get download {package} failed: {result.stderr.strip()[-300:]}")
    partial = folder / f"{package}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(partial)], check=True)
    partial.replace(target)
    return target


def build_other_voices(out_dir: Path, voices: dict[str, str] = OTHER_VOICES, log=print,
                       doc_root: Path = DOC_ROOT) -> list[ManifestRecord]:
    """The reserved prompts other speakers recorded, decoded under ``out_dir/other/<package>/``.

    Their texts are the core package's for the same prompt name (these packages ship none), and the
    speakers often read another script ("Identification de l'agent, s'il vous plaît…" for "Ouverture de
    session…"): WER against them is an upper bound. Whisper base scores 77.8 % (es) and 159.7 % (fr)
    on all of them (``runs/s20/whisper_other.py``)."""
    records = []
    for lang, package in voices.items():
        root = unpack_package(package, out_dir / "packages") / "usr" / "share" / "asterisk" / "sounds" / lang
        for prompt in prompts_in(root, lang, "gsm", doc_root):
            if prompt.split != "validation":
                continue
            target = out_dir / "other" / package / f"{prompt.name}.flac"
            duration = decoded(prompt.source, target)
            if duration <= MAX_PROMPT_SECONDS:
                records.append(ManifestRecord(
                    id=f"{package}-{prompt.name.replace('/', '-')}", audio=str(target.resolve()), task="asr",
                    audio_language=lang, text_language=lang, text=prompt.text, duration=duration,
                    meta={"source": package, "prompt": prompt.name, "text_from": f"asterisk-core-sounds-{lang}",
                          "license": "see the package's copyright file", "split": "independent"}))
        log(f"other voices: {package}: {sum(r.meta['source'] == package for r in records)} reserved prompts")
    return records
