"""Converters from the on-disk layouts of the paper's datasets into task manifests.

Each is ``convert_<name>(root, split, **options) -> Iterator[ManifestRecord]``, streaming (no
corpus held in memory), and raises ManifestError naming the missing file when the layout is
not what it expects. ``CONVERTERS`` maps a dataset name to its converter; `convert` runs one
and writes the manifest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from qwen_audio.data.converters.music import convert_nsynth
from qwen_audio.data.converters.sound import (
    convert_audiocaps,
    convert_clotho,
    convert_clotho_aqa,
    convert_cochlscene,
    convert_tut2017,
    convert_vocalsound,
)
from qwen_audio.data.converters.speech import (
    convert_aishell1,
    convert_aishell2,
    convert_covost2,
    convert_librispeech,
    convert_meld,
)
from qwen_audio.data.manifest import ManifestRecord, write_manifest
from qwen_audio.errors import ManifestError

Converter = Callable[..., Iterator[ManifestRecord]]

CONVERTERS: dict[str, Converter] = {
    "librispeech": convert_librispeech,
    "aishell1": convert_aishell1,
    "aishell2": convert_aishell2,
    "covost2": convert_covost2,
    "clotho": convert_clotho,
    "clotho_aqa": convert_clotho_aqa,
    "cochlscene": convert_cochlscene,
    "tut2017": convert_tut2017,
    "vocalsound": convert_vocalsound,
    "meld": convert_meld,
    "nsynth": convert_nsynth,
    "audiocaps": convert_audiocaps,
}


def get_converter(name: str) -> Converter:
    try:
        return CONVERTERS[name]
    except KeyError:
        raise ManifestError(
            f"no converter named {name!r}; available: {', '.join(sorted(CONVERTERS))}"
        ) from None


def convert(
    name: str, root: str | Path, split: str, out: str | Path, *,
    relative_paths: bool = True, **options: Any,
) -> int:
    """Convert one split of a dataset and write it as a manifest; returns the record count."""
    records = get_converter(name)(Path(root), split, **options)
    return write_manifest(records, out, relative_paths=relative_paths)


__all__ = [
    "CONVERTERS", "Converter", "convert", "get_converter", "write_manifest",
    "convert_aishell1", "convert_aishell2", "convert_audiocaps", "convert_clotho",
    "convert_clotho_aqa", "convert_cochlscene", "convert_covost2", "convert_librispeech",
    "convert_meld", "convert_nsynth", "convert_tut2017", "convert_vocalsound",
]
