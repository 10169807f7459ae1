"""`qwen-audio make-corpus`: the typer command (the main CLI registers `make_corpus_command`)."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from qwen_audio.data.synth.config import FAMILIES, SIZES, SPLITS, SYSTEM_PACKAGES, CorpusConfig
from qwen_audio.data.synth.corpus import make_corpus, missing_system_tools
from qwen_audio.data.synth.lexicon import LANGUAGES
from qwen_audio.errors import ConfigError


def make_corpus_command(
    out_dir: Path = typer.Argument(..., help="Folder to write the corpus into (created)."),
    size: str = typer.Option("default", help=f"Corpus size: {', '.join(SIZES)}."),
    seed: int = typer.Option(0, help="Random seed; the corpus is a pure function of it."),
    workers: int = typer.Option(
        min(4, os.cpu_count() or 1), help="Worker processes rendering audio in parallel."),
    augment: bool = typer.Option(True, help="Noise, reverberation and level changes on speech."),
    scale: float = typer.Option(1.0, help="Multiply every item count of the size preset."),
    split: list[str] = typer.Option(
        list(SPLITS), "--split", help="Split(s) to generate (repeat the option)."),
    family: list[str] = typer.Option(
        list(FAMILIES), "--family", help=f"Families to generate: {', '.join(FAMILIES)}."),
    language: list[str] = typer.Option(
        list(LANGUAGES), "--language", help="Speech languages to generate."),
) -> None:
    """Generate the offline multi-task training corpus (speech, notes, sounds, scenes, chat)."""
    console = Console(stderr=True)
    missing = missing_system_tools()
    if missing:
        console.print(f"[red]missing system packages: {', '.join(missing)}[/red]\n"
                      f"install them with: apt-get install {' '.join(SYSTEM_PACKAGES)}")
        raise typer.Exit(code=1)
    try:
        config = CorpusConfig(size=size, seed=seed, workers=workers, augment=augment, scale=scale,
                              splits=tuple(split), families=tuple(family),
                              languages=tuple(language))
    except ConfigError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(code=2) from error
    summary = make_corpus(out_dir, config)
    table = Table(title=f"corpus in {out_dir} ({summary.elapsed_seconds:.0f} s)")
    for column in ("split", "manifest", "records by task", "audio files", "hours"):
        table.add_column(column)
    for split, manifests in summary.counts.items():
        for i, (name, tasks) in enumerate(manifests.items()):
            table.add_row(split if i == 0 else "", name,
                          ", ".join(f"{t} {n}" for t, n in tasks.items()),
                          str(summary.audio_files[split]) if i == 0 else "",
                          f"{summary.audio_seconds[split] / 3600:.2f}" if i == 0 else "")
    Console().print(table)


app = typer.Typer(add_completion=False)
app.command(name="make-corpus")(make_corpus_command)

if __name__ == "__main__":
    app()
