"""Dev lines for choosing between default-model candidates without reading the gated suite.

    python scripts/dev_lines.py MODEL OUT LINE[,LINE...] [--data world-data]

Each held-out line scores records of a suite line's manifest that the suite's own sample
(``spread_sample(records, 50)``, what ``qwen-audio eval --suite default --limit 50`` reads) leaves out,
decoded exactly as the suite decodes; so a stage can be kept or dropped on these and the suite line
stays a fresh measurement. Lines: ``en``, ``es``, ``fr``, ``it`` (25 reserved Asterisk prompts each,
WER %), ``open-en`` (40 open-vocabulary TTS utterances, WER %), ``instrument``, ``sound-event``
(66 held-out clips each, accuracy), ``train-instrument``, ``train-sound-event`` (66 TRAINING clips
each: whether the decoder learned the task at all), ``lid`` (60 reserved prompts' language, accuracy:
an "unknown" answer is wrong), ``no-speech`` (60 held-out no-speech clips: how often the answer is
"unknown", i.e. nothing is transcribed), ``tux-es``, ``tux-fr`` (50 of Tux Paint's read stamp
descriptions each, other real voices never trained on, WER %), ``alsa`` (ALSA's eight channel-test phrases,
a real voice never trained on: how many come out word for word). Predictions land in OUT.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELD_OUT = {"en": ("world-real-asr-en", 25), "es": ("world-real-asr-es", 25), "fr": ("world-real-asr-fr", 25),
            "it": ("world-real-asr-it", 25), "open-en": ("world-open-asr-en", 40),
            "instrument": ("world-instrument", 66), "sound-event": ("world-sound-event", 66),
            "lid": ("world-real-language-id", 60), "no-speech": ("world-no-speech", 60),
            "tux-es": ("world-tuxpaint-asr-es", 50), "tux-fr": ("world-tuxpaint-asr-fr", 50)}
TRAINING = {"train-instrument": ("world-instrument", "instrument"), "train-sound-event": ("world-sound-event", "sound_event")}
ALSA = Path("/usr/share/sounds/alsa")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("out", type=Path)
    parser.add_argument("lines")
    parser.add_argument("--data", type=Path, default=Path("world-data"))
    args = parser.parse_args()
    lines = args.lines.split(",")
    unknown = set(lines) - {*HELD_OUT, *TRAINING, "alsa"}
    if unknown:
        parser.error(f"unknown lines {sorted(unknown)}")

    from qwen_audio.api import QwenAudio
    from qwen_audio.data.manifest import read_manifest
    from qwen_audio.eval.runner import EvalSettings, run_benchmark, spread_sample
    from qwen_audio.eval.suite import WORLD_SUITE

    api = QwenAudio.from_pretrained(args.model)
    entries = {e.benchmark.name: e for e in WORLD_SUITE}
    results: dict[str, float] = {}
    for line in lines:
        if line == "alsa":
            phrases = sorted(p for p in ALSA.glob("*.wav") if p.stem != "Noise")
            said = [api.transcribe(str(p)).text for p in phrases]
            for path, text in zip(phrases, said):
                print(f"  {path.stem}: {text!r}")
            results[line] = sum(t.lower().strip(" .!?,") == p.stem.replace("_", " ").lower() for p, t in zip(phrases, said))
        else:
            name, size = HELD_OUT.get(line) or (TRAINING[line][0], 66)
            entry = entries[name]
            if line in TRAINING:
                manifest = args.data / "sounds" / "train.jsonl"
                records = spread_sample([r for r in read_manifest(manifest) if r.task == TRAINING[line][1]], size, seed=2)
            else:
                manifest = args.data / entry.manifest
                every = entry.records(manifest)
                scored = {r.id for r in spread_sample(every, 50)}
                records = spread_sample([r for r in every if r.id not in scored], size, seed=1)
            score = run_benchmark(api, entry.benchmark, records, args.out / line, EvalSettings(progress=False),
                                  root=manifest.parent)
            results[line] = round(entry.value_of(score), 4)
        print(line, results[line], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "dev.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
