"""Pick the README demo's bundled samples from the default model's held-out world data.

Real recordings the default model never trained on: two Asterisk prompts of the md5-reserved
validation split (the same message read in English and in French; CC-BY-SA-3.0, Digium), and a
snare drum of a held-out Hydrogen kit (ColomboAcousticDrumkit, GPL-2+, Marcos Guglielmetti).
Written as 16 kHz FLAC into ``src/qwen_audio/assets/samples`` with ``references.json`` (text or
label, language, source and licence of each; the tests read the references from it).

    python scripts/bundle_samples.py [--data world-data]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import soundfile as sf

from qwen_audio.audio import load_audio
from qwen_audio.data.manifest import read_manifest

SAMPLES = Path(__file__).resolve().parent.parent / "src" / "qwen_audio" / "assets" / "samples"
# The kit's own licence (the package's copyright file), narrower than the package-wide list in the manifest.
KIT_LICENCE = "GPL-2+ (ColomboAcousticDrumkit, 2006 Marcos Guglielmetti; hydrogen-drumkits copyright file)"
CHOSEN = {  # sample file → (manifest under --data, record id)
    "speech_en.flac": ("asterisk/validation.jsonl", "asterisk-en-vm-rec-temp"),
    "speech_fr.flac": ("asterisk/validation.jsonl", "asterisk-fr-vm-rec-temp"),
    "drum.flac": ("sounds/test.jsonl", "drum-colomboacousticdrumkit-snare1-snare-opaque-normal-mic-normal-shot2-event"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("world-data"))
    args = parser.parse_args()
    for old in SAMPLES.glob("*.flac"):
        old.unlink()
    references = {}
    for name, (manifest, record_id) in CHOSEN.items():
        record = next(r for r in read_manifest(args.data / manifest) if r.id == record_id)
        sf.write(SAMPLES / name, load_audio(record.resolve_audio(args.data / Path(manifest).parent)), 16_000, format="FLAC")
        meta = record.meta or {}
        references[name] = {"task": record.task, "text": record.text, "language": record.audio_language,
                            "source": meta.get("source"), "licence": KIT_LICENCE if name == "drum.flac" else meta.get("license"), "id": record.id}
        print(f"{name}: {record.id} ({record.duration:.2f} s) “{record.text}”")
    (SAMPLES / "references.json").write_text(json.dumps(references, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
