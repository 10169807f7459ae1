"""Language-ID records from ASR records: the same audio, the audio's language as the target.

The paper's LID task needs no new audio: every transcribed utterance already knows its language.
``python -m qwen_audio.data.world.lid OUT.jsonl IN.jsonl [IN.jsonl ...]`` writes one ``language_id``
record per ``asr`` record of the inputs (ids suffixed ``-lid``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path


def language_id_records(records: Iterable[dict]) -> Iterator[dict]:
    for record in records:
        if record.get("task") == "asr":
            out = {k: v for k, v in record.items() if k not in ("text", "words")}
            out.update(id=f"{record['id']}-lid", task="language_id", text_language=None)
            yield out


def write_language_id_manifest(out: str | Path, sources: Iterable[str | Path]) -> int:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(out, "w", encoding="utf-8") as handle:
        for source in sources:
            lines = Path(source).read_text(encoding="utf-8").splitlines()
            for record in language_id_records(json.loads(line) for line in lines if line.strip()):
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
    return count


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit("usage: python -m qwen_audio.data.world.lid OUT.jsonl IN.jsonl [IN.jsonl ...]")
    print(f"{write_language_id_manifest(sys.argv[1], sys.argv[2:])} language-ID records → {sys.argv[1]}")
