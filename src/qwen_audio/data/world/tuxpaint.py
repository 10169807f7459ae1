"""Independent real voices: Tux Paint's spoken stamp descriptions (Debian ``tuxpaint-stamps-default``, GPL-2).

Tux Paint, a children's drawing program, ships each stamp with a description in many languages
(``<stamp>.txt``: ``es.utf8=Un tucán.``) and, for some languages, the description read aloud by a volunteer
(``<stamp>_desc_<lang>.ogg``): real voices on other microphones in other rooms, everyday words ("Una flor
con gotas de rocío.", "Une jeune fille dans un fauteuil roulant."). Issue 16 reserves what educational and
game packages ship for independent evaluation, so these are never trained on; :func:`build_tuxpaint_voices`
decodes them into ``DIR/tuxpaint/voices.jsonl`` for the suite's ``tuxpaint-asr-*`` lines.

Spanish and French only: the English recordings say the stamp's bare name ("Duck!") where the text
reads "A duck.", so their reference is not what is said. A description with a digit is left out (its
reference writes "$1" where the voice says words), and a recording shipped under two stamps' names is kept once.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from qwen_audio.data.manifest import ManifestRecord
from qwen_audio.data.world.asterisk import MAX_PROMPT_SECONDS, decoded, unpack_package

PACKAGE = "tuxpaint-stamps-default"
LANGUAGES = ("es", "fr")
LICENSE = "GPL-2"
STAMPS = Path("usr") / "share" / "tuxpaint" / "stamps"
_RECORDING = re.compile(r"^(?P<stamp>.+)_desc_(?P<lang>[a-zA-Z_]+)\.ogg$")


def stamp_text(text_file: Path, language: str) -> str | None:
    """The stamp's description in ``language`` (its ``<lang>.utf8=`` line), or None."""
    if not text_file.is_file():
        return None
    for line in text_file.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith(f"{language}.utf8="):
            text = line.split("=", 1)[1].strip()
            return text or None
    return None


def read_voices(stamps: Path, languages: tuple[str, ...] = LANGUAGES) -> list[tuple[str, str, Path]]:
    """(language, text, recording) for every read description under ``stamps``, sorted by path; a
    recording whose bytes another stamp already ships is skipped, as is a text with a digit."""
    found: list[tuple[str, str, Path]] = []
    seen: set[str] = set()
    for recording in sorted(stamps.rglob("*_desc_*.ogg")):
        match = _RECORDING.match(recording.name)
        if match is None or match["lang"] not in languages:
            continue
        text = stamp_text(recording.with_name(f"{match['stamp']}.txt"), match["lang"])
        if text is None or any(ch.isdigit() for ch in text):
            continue
        digest = hashlib.md5(recording.read_bytes()).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        found.append((match["lang"], text, recording))
    return found


def build_tuxpaint_voices(out_dir: Path, languages: tuple[str, ...] = LANGUAGES, log=print,
                          package_root: Path | None = None) -> list[ManifestRecord]:
    """The read descriptions as 16 kHz FLAC under ``out_dir/<lang>/`` (decoded once), one ASR record each.
    ``package_root``: the extracted package (default: ``apt-get download`` it under ``out_dir/packages``)."""
    root = package_root if package_root is not None else unpack_package(PACKAGE, out_dir / "packages")
    stamps = root / STAMPS
    records = []
    for lang, text, recording in read_voices(stamps, languages):
        name = recording.relative_to(stamps).with_suffix("")
        target = out_dir / lang / name.with_suffix(".flac")
        duration = decoded(recording, target)
        if duration <= MAX_PROMPT_SECONDS:
            records.append(ManifestRecord(
                id=f"tuxpaint-{lang}-{str(name).replace('/', '-')}", audio=str(target.resolve()), task="asr",
                audio_language=lang, text_language=lang, text=text, duration=duration,
                meta={"source": PACKAGE, "stamp": str(name), "license": LICENSE, "split": "independent"}))
    for lang in languages:
        log(f"tuxpaint voices {lang}: {sum(r.audio_language == lang for r in records)} read descriptions")
    return records
