"""Command line: one subcommand per stage of the pipeline."""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from qwen_audio.errors import QwenAudioError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Qwen-Audio: universal audio understanding.")
console = Console()
err_console = Console(stderr=True)


def bundled_samples() -> list[Path]:
    """The small sample files shipped inside the package (speech and a sound)."""
    folder = resources.files("qwen_audio") / "assets" / "samples"
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".flac"))


def _fail(error: Exception) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {error}")
    return typer.Exit(code=1)


@app.command()
def info(files: Annotated[list[Path], typer.Argument(help="Audio or video files.")]) -> None:
    """Decode files with the front end and show what the encoder will see."""
    from qwen_audio.audio import SAMPLE_RATE, audio_span, load_audio, log_mel_spectrogram, pad_or_trim

    table = Table("file", "seconds", "peak", "rms dBFS", "voiced %", "mel", "audio tokens")
    for path in files:
        try:
            samples = load_audio(path)
            span = audio_span(samples.size)
        except (QwenAudioError, ValueError) as error:
            raise _fail(error) from None
        mel = log_mel_spectrogram(pad_or_trim(samples))
        rms = float((samples.astype("float64") ** 2).mean() ** 0.5)
        frames = samples[: samples.size // 400 * 400].reshape(-1, 400)
        loud = (frames**2).mean(axis=1) ** 0.5 > max(rms * 0.3, 1e-4)
        table.add_row(
            path.name,
            f"{samples.size / SAMPLE_RATE:.2f}",
            f"{abs(samples).max():.3f}",
            f"{20 * math.log10(max(rms, 1e-10)):.1f}",
            f"{100 * loud.mean():.0f}",
            f"{tuple(mel.shape)} of which {span.mel_len} real",
            f"{span.span_tokens}" + (" (cut at 30 s)" if samples.size > span.num_samples else ""),
        )
    console.print(table)


@app.command()
def demo() -> None:
    """Run the main job on the bundled samples (front end only until the default model ships)."""
    samples = bundled_samples()
    if not samples:
        raise _fail(FileNotFoundError("the package's bundled samples are missing; reinstall qwen-audio"))
    console.print("[bold]qwen-audio demo[/]: front end on the bundled samples")
    info(samples)


if __name__ == "__main__":
    app()
