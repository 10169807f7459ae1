"""Command line: one subcommand per stage of the pipeline (``qwen-audio --help``)."""

from __future__ import annotations

import gc
import json
import math
import os
import sys
from collections.abc import Callable
from functools import wraps
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from qwen_audio.errors import ConfigError, EmptyAudioError, QwenAudioError
from qwen_audio.formats.languages import NO_SPEECH

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Qwen-Audio: universal audio understanding.")
console = Console()
err_console = Console(stderr=True)


def emit(text: str, end: str = "\n") -> None:
    """A result onto stdout as it is: piped output is data, so no wrapping at the console's width
    (80 columns when not a terminal, which broke ``-f json``), no markup, emoji codes or highlighting."""
    console.out(text, end=end, highlight=False)

ModelOption = Annotated[str, typer.Option("--model", "-m", help="Model directory, or 'default' (the bundled model).")]
FilesArgument = Annotated[list[Path], typer.Argument(help="Audio or video files; - reads one from stdin.", show_default=False)]
STDIN = Path("-")  # ``ffmpeg … -f wav - | qwen-audio transcribe -``
MaxTokens = Annotated[int, typer.Option(help="Most tokens to generate per answer.")]


def bundled_samples() -> list[Path]:
    """The small sample files shipped inside the package (speech and a sound)."""
    folder = resources.files("qwen_audio") / "assets" / "samples"
    return sorted(Path(str(p)) for p in folder.iterdir() if p.name.endswith(".flac"))


def print_error(error: object) -> None:
    """One red line (not wrapped by rich: a long path stays whole); the message is escaped, since
    file names may hold rich markup such as ``[/]``."""
    err_console.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)


def friendly_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Our errors (bad audio, missing model…) and the file system's (a folder that cannot be
    written) become one red line and exit code 1, not a traceback."""

    @wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (QwenAudioError, OSError) as error:
            print_error(error)
            raise typer.Exit(code=1) from None

    return run


def _load(model: str):  # noqa: ANN202
    from qwen_audio.api import QwenAudio, default_model_path
    from qwen_audio.checkpoints.bases import assembled_path, is_delta_model

    location = default_model_path() if model == "default" else Path(model)
    message = f"loading model {escape(model)}…"
    if is_delta_model(location) and not (assembled_path(location) / "model.safetensors").is_file():
        message = f"assembling model {escape(model)} from its pretrained bases (once per machine)…"
    with err_console.status(message):
        return QwenAudio.from_pretrained(model)


Report = Callable[[int, int], None]  # (pieces done, pieces in all) of one long audio


def _for_each(files: list[Path], work: Callable[[Path, Report], None]) -> None:
    """``work(path, report)`` on each file under one progress display (files, and the pieces of a long
    one). A file that fails (audio that will not decode, a file that cannot be written) is one red line
    naming it and the others go on: a night's batch is not lost to its one corrupt file. Exit code 1 at
    the end when any failed; a single file's error is raised as it is (``friendly_errors``)."""
    failed: list[Path] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console, disable=not err_console.is_terminal, transient=True) as progress:
        overall = progress.add_task("working", total=len(files), visible=len(files) > 1)
        for path in files:
            progress.update(overall, description=path.name)
            pieces = progress.add_task(f"{path.name}: pieces", total=None, visible=False)

            def report(done: int, total: int, pieces: TaskID = pieces) -> None:
                progress.update(pieces, completed=done, total=total, visible=total > 1)

            try:
                work(path, report)
            except (QwenAudioError, OSError) as error:
                if len(files) == 1:
                    raise
                print_error(error if path.name in str(error) else f"{path}: {error}")  # each line names its file
                failed.append(path)
            progress.remove_task(pieces)
            progress.advance(overall)
    if failed:
        print_error(f"{len(failed)} of {len(files)} files failed: {', '.join(str(p) for p in failed)}")
        raise typer.Exit(code=1)


def _check_files(files: list[Path]) -> Callable[[Path], str | bytes]:
    """Check the named files before a model is loaded; returns what the model reads for each:
    its path, or for ``-`` the bytes piped in (read here, once)."""
    if files.count(STDIN) > 1:
        raise ConfigError("- (stdin) can be named once: it holds one audio")
    if STDIN in files and sys.stdin.isatty():
        raise ConfigError("- reads the audio from stdin, but nothing is piped in (e.g. `cat a.wav | qwen-audio transcribe -`)")
    for path in files:
        if path == STDIN:
            continue
        if path.is_dir():
            raise FileNotFoundError(f"{path}: a folder, not an audio file (name the files in it, e.g. {path}/*.wav)")
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
    piped = sys.stdin.buffer.read() if STDIN in files else b""
    if STDIN in files and not piped:
        raise EmptyAudioError("-: nothing was piped in (0 bytes)")
    return lambda path: piped if path == STDIN else str(path)


def _stem(path: Path) -> str:
    return "stdin" if path == STDIN else path.stem


def _check_output_dir(folder: Path, files: list[Path], extension: str) -> None:
    """Create ``folder`` and check it can be written, and that no two ``files`` would write the same
    ``<name>.<extension>`` there (the second would silently replace the first), before a model is
    loaded and audio decoded."""
    seen: dict[str, Path] = {}
    for path in files:
        other = seen.setdefault(_stem(path), path)
        if other != path:
            raise ConfigError(f"--output-dir: {other} and {path} would both write {_stem(path)}.{extension}; "
                              "transcribe them into different folders")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"--output-dir {folder}: cannot create it ({error.strerror or error})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"--output-dir {folder}: the folder is not writable")


# --------------------------------------------------------------------------- tasks


@app.command()
@friendly_errors
def transcribe(
    files: FilesArgument,
    language: Annotated[Optional[str], typer.Option(help="Spoken language (en zh de es ko fr ja it); detected if omitted.")] = None,
    timestamps: Annotated[str, typer.Option(help="'none' or 'word' (SRWT word timestamps).")] = "none",
    output_format: Annotated[str, typer.Option("--output-format", "-f", help=(
        "txt, json, srt or vtt. Several files printed: a txt line starts with its file's name, json is one "
        "object a line (JSON Lines, with 'file'); srt and vtt need --output-dir."))] = "txt",
    output_dir: Annotated[Optional[Path], typer.Option(help="Write <name>.<format> files here instead of printing.")] = None,
    model: ModelOption = "default",
    max_new_tokens: MaxTokens = 256,
    beams: Annotated[Optional[int], typer.Option(
        min=1, help="Beam width; default: the model's (4, rescored by its CTC, where it ships one; else greedy).")] = None,
) -> None:
    """Speech recognition, optionally with word-level timestamps (SRWT); any length of audio."""
    from qwen_audio.infer.engine import GenerationOptions
    from qwen_audio.infer.exports import to_json, to_srt, to_vtt

    if timestamps not in ("none", "word"):
        raise ConfigError("--timestamps must be 'none' or 'word'")
    if output_format not in ("txt", "json", "srt", "vtt"):
        raise ConfigError("--output-format must be txt, json, srt or vtt")
    # json, srt and vtt carry word times; plain text only when asked (--timestamps word).
    words = timestamps == "word" or output_format != "txt"
    audio = _check_files(files)
    if output_dir is not None:
        _check_output_dir(output_dir, files, output_format)
    elif len(files) > 1 and output_format in ("srt", "vtt"):
        raise ConfigError(f"several files' {output_format} subtitles need --output-dir (one file each)")
    several = len(files) > 1 and output_dir is None  # on stdout, each result says which file it is
    api = _load(model)
    options = GenerationOptions(max_new_tokens=max_new_tokens, num_beams=beams or api.speech_beams)

    def one(path: Path, report: Report) -> None:
        result = api.transcribe(audio(path), language=language, word_timestamps=words, options=options, progress=report)
        if result.language == NO_SPEECH:  # the result stays what it is (empty); the person reading is told why
            err_console.print(f"[yellow]note:[/] {escape(path.name)}: no speech heard", soft_wrap=True)
        if output_format == "txt":
            body = (f"{path.name}: " if several else "") + result.text + "\n"
            if timestamps == "word":
                body += "".join(f"[{w.start:6.2f} → {w.end:6.2f}] {w.word}\n" for w in result.words)
        elif output_format == "json":
            payload = json.loads(to_json(list(result.words), language=result.language, text=result.text))
            payload["duration"] = round(result.duration, 3)
            payload["words"] = [{"word": w.word, "start": w.start, "end": w.end} for w in result.words]
            if several:  # JSON Lines: one object a file, each naming it
                body = json.dumps({"file": str(path), **payload}, ensure_ascii=False) + "\n"
            else:
                body = json.dumps(payload, ensure_ascii=False, indent=2) + "\n"
        else:
            body = (to_srt if output_format == "srt" else to_vtt)(list(result.words))
        if output_dir is None:
            emit(body, end="")
        else:
            (output_dir / f"{_stem(path)}.{output_format}").write_text(body, encoding="utf-8")

    _for_each(files, one)


@app.command()
@friendly_errors
def translate(
    files: FilesArgument,
    to: Annotated[str, typer.Option(help="Target text language.")] = "en",
    language: Annotated[Optional[str], typer.Option(help="Spoken language; detected if omitted.")] = None,
    model: ModelOption = "default",
) -> None:
    """Speech translation (S2TT) into another language."""
    audio = _check_files(files)
    api = _load(model)
    several = len(files) > 1  # each result says which file it is, as transcribe's do
    _for_each(files, lambda path, report: emit((f"{path.name}: " if several else "")
                                               + api.translate(audio(path), to=to, language=language, progress=report).text))


@app.command()
@friendly_errors
def caption(
    files: FilesArgument,
    style: Annotated[str, typer.Option(help="plain, clotho, audiocaps or music.")] = "plain",
    model: ModelOption = "default",
) -> None:
    """Describe the sound (audio captioning)."""
    audio = _check_files(files)
    api = _load(model)
    _for_each(files, lambda path, _: emit(f"{path.name}: {api.caption(audio(path), style=style).text}"))


@app.command()
@friendly_errors
def classify(
    files: FilesArgument,
    task: Annotated[str, typer.Option(help="scene, sound_event, emotion, vocal_sound, gender, instrument, keyword, language.")] = "scene",
    model: ModelOption = "default",
) -> None:
    """Label the audio (scene, sound events, emotion, vocal sound, speaker, instrument, language)."""
    audio = _check_files(files)
    api = _load(model)

    def one(path: Path, _: Report) -> None:
        if task == "language":
            label = api.detect_language(audio(path))
        else:
            label = ", ".join(api.classify(audio(path), task=task).labels) or "(none)"
        emit(f"{path.name}: {label}")

    _for_each(files, one)


@app.command()
@friendly_errors
def ask(
    file: Annotated[Path, typer.Argument(help="Audio file.")],
    question: Annotated[str, typer.Argument(help="Question about the audio.")],
    model: ModelOption = "default",
) -> None:
    """Audio question answering."""
    audio = _check_files([file])
    emit(_load(model).ask(audio(file), question).answer)


@app.command()
@friendly_errors
def chat(model: ModelOption = "default", max_new_tokens: MaxTokens = 256) -> None:
    """Interactive Qwen-Audio-Chat. `/audio PATH` attaches audio, `/reset` forgets, `/quit` leaves."""
    from qwen_audio.formats.chatml import AudioItem, ChatTurn, TextItem
    from qwen_audio.infer.engine import GenerationOptions

    api = _load(model)
    history: list[ChatTurn] = []
    pending: list[AudioItem] = []
    options = GenerationOptions(max_new_tokens=max_new_tokens)
    interactive = sys.stdin.isatty()
    if interactive:
        console.print("[dim]/audio PATH to attach audio · /reset · /quit[/]")
    while True:
        if interactive:
            console.print("[bold green]you>[/] ", end="")
        line = sys.stdin.readline()
        if not line:
            break
        line = line.strip()
        if not line:
            continue
        if line in ("/quit", "/exit"):
            break
        if line == "/reset":
            history, pending = [], []
            console.print("[dim](conversation cleared)[/]")
            continue
        if line.startswith("/audio"):
            path = Path(line[len("/audio"):].strip()).expanduser()
            if not path.is_file():
                print_error(f"{path}: no such file")
                continue
            pending.append(AudioItem(str(path)))
            number = sum(len(t.audio_paths) for t in history) + len(pending)
            console.print(f"[dim](attached {escape(path.name)} as Audio {number})[/]")
            continue
        turn = ChatTurn("user", (*pending, TextItem(line)))
        pending = []
        reply = ""
        try:  # one bad audio costs its turn, not the conversation
            request = api.chat_request([*history, turn], options=options)
            console.print("[bold blue]assistant>[/] ", end="")
            for piece in api.stream_chat(request):
                reply += piece
                emit(piece, end="")
        except (QwenAudioError, OSError) as error:
            if reply:
                console.print()
            print_error(f"{error} (this turn is dropped; the conversation goes on)")
            continue
        console.print()
        history += [turn, ChatTurn.assistant(reply)]


# --------------------------------------------------------------------------- data, training, models


@app.command()
@friendly_errors
def train(recipe: Annotated[Path, typer.Argument(help="A YAML recipe, e.g. configs/pretrain.yaml.")],
          no_resume: Annotated[bool, typer.Option("--no-resume", help="Start over instead of resuming.")] = False) -> None:
    """Run a training recipe (stage 1 pre-training, stage 2 chat SFT, LoRA); torchrun-aware."""
    from qwen_audio.train.recipe import Recipe, run_recipe

    result = run_recipe(Recipe.load(recipe), resume=not no_resume)
    err_console.print(f"done: {result.steps} steps, final loss {result.final_loss:.4f}")


DTYPES = ("float32", "bfloat16", "float16")


@app.command()
@friendly_errors
def convert(
    src: Annotated[Path, typer.Argument(help="Checkpoint directory to convert.", show_default=False)],
    dst: Annotated[Path, typer.Argument(help="New (empty) directory to write.", show_default=False)],
    to: Annotated[Optional[str], typer.Option(help="'native' or 'official'; default: the other layout than src's.")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="Cast weights: float32, bfloat16 or float16.")] = None,
    max_shard_gb: Annotated[float, typer.Option(help="Largest shard, GiB.")] = 4.0,
) -> None:
    """Convert a checkpoint between the official Qwen-Audio layout and this package's, tensor by tensor."""
    import torch

    from qwen_audio.checkpoints import convert_checkpoint, is_official_checkpoint
    from qwen_audio.errors import CheckpointError

    if dtype is not None and dtype not in DTYPES:
        raise CheckpointError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    target = to or ("native" if is_official_checkpoint(src) else "official")
    cast = getattr(torch, dtype) if dtype else None
    out = convert_checkpoint(src, dst, target, dtype=cast, max_shard_bytes=int(max_shard_gb * 1024**3))  # type: ignore[arg-type]
    emit(f"wrote the {target} layout to {out}")


@app.command(name="make-shards")
@friendly_errors
def make_shards(
    manifest: Annotated[Path, typer.Argument(help="A task or chat manifest (.jsonl or .jsonl.gz).")],
    out_dir: Annotated[Path, typer.Argument(help="Folder for shard-*.tar and shards.json (created).")],
    max_samples_per_shard: Annotated[int, typer.Option(help="Most samples in one tar.")] = 1000,
    max_shard_mb: Annotated[float, typer.Option(help="Most megabytes in one tar.")] = 1024.0,
) -> None:
    """Pack a manifest and its audio into webdataset-style tar shards for streaming training."""
    from qwen_audio.data.shards import ShardIndex, write_shards

    paths = write_shards(manifest, out_dir, max_samples_per_shard=max_samples_per_shard,
                         max_bytes_per_shard=int(max_shard_mb * 1e6))
    index = ShardIndex.load(out_dir)
    hours = sum(sum(s.durations) for s in index.shards) / 3600
    console.print(f"{len(paths)} shards, {len(index)} samples, {hours:.2f} h of audio in {out_dir}; "
                  f"train on them with `- shards: {out_dir}` under data.train in a recipe", markup=False, highlight=False)


@app.command(name="build-tokenizer")
@friendly_errors
def build_tokenizer(
    manifests: Annotated[list[Path], typer.Argument(help="Task or chat manifests whose text the BPE learns from.")],
    out: Annotated[Path, typer.Option(help="The qwen.tiktoken file to write.")] = Path("qwen.tiktoken"),
    vocab_size: Annotated[int, typer.Option(help="BPE ranks (the special tokens come on top).")] = 2048,
) -> None:
    """Train byte-level BPE ranks for a small model from a corpus (the real Qwen file has 151,643)."""
    from qwen_audio.data.texts import build_corpus_tokenizer
    from qwen_audio.tokenizer import QwenAudioTokenizer

    path = build_corpus_tokenizer(manifests, vocab_size, out)
    tokenizer = QwenAudioTokenizer(path)
    console.print(f"{path}: {tokenizer.n_ranks} ranks + {len(tokenizer.special_tokens)} special tokens", markup=False)


def _register_stage_commands() -> None:
    """Subcommands whose modules live with their stage (corpus, server, eval). Their dependencies
    are hard ones: a broken install fails here, loudly, rather than losing a subcommand."""
    from qwen_audio.data.synth.cli import make_corpus_command
    from qwen_audio.eval.cli import eval_command
    from qwen_audio.serve.cli import serve_command

    app.command(name="make-corpus")(make_corpus_command)
    app.command(name="serve")(serve_command)
    app.command(name="eval")(friendly_errors(eval_command))


_register_stage_commands()


@app.command()
@friendly_errors
def info(files: FilesArgument) -> None:
    """Decode files with the front end and show what the encoder will see."""
    from qwen_audio.audio import SAMPLE_RATE, audio_span, load_audio, log_mel_spectrogram, pad_or_trim

    table = Table("file", "seconds", "peak", "rms dBFS", "voiced %", "mel", "audio tokens")
    audio = _check_files(files)
    for path in files:
        samples = load_audio(audio(path))
        span = audio_span(samples.size)
        mel = log_mel_spectrogram(pad_or_trim(samples))
        rms = float((samples.astype("float64") ** 2).mean() ** 0.5)
        frames = samples[: samples.size // 400 * 400].reshape(-1, 400)
        loud = (frames**2).mean(axis=1) ** 0.5 > max(rms * 0.3, 1e-4)
        table.add_row(
            escape(path.name), f"{samples.size / SAMPLE_RATE:.2f}", f"{abs(samples).max():.3f}",
            f"{20 * math.log10(max(rms, 1e-10)):.1f}", f"{100 * loud.mean():.0f}",
            f"{tuple(mel.shape)} of which {span.mel_len} real",
            f"{span.span_tokens}" + (" (cut at 30 s)" if samples.size > span.num_samples else ""),
        )
    console.print(table)


@app.command()
@friendly_errors
def demo(model: ModelOption = "default") -> None:
    """The main job on the bundled samples: transcript with word timestamps, and captions."""
    from qwen_audio.api import default_model_path

    samples = bundled_samples()
    if not samples:
        raise FileNotFoundError("the package's bundled samples are missing; reinstall qwen-audio")
    if model == "default" and not (default_model_path() / "config.json").is_file():
        console.print("[bold]qwen-audio demo[/]: the default model is not bundled yet; front end only")
        info(samples)
        return
    api = _load(model)
    for path in samples:
        console.rule(path.name)
        if path.name.startswith("speech"):  # speech: language, transcript and word times
            language = api.detect_language(str(path))
            result = api.transcribe(str(path), language=language, word_timestamps=True)
            emit(f"language: {language}")
            emit(f"transcript: {result.text}")
            for w in result.words:
                emit(f"  [{w.start:5.2f} → {w.end:5.2f}] {w.word}")
        else:  # a sound: what it is
            emit(f"caption: {api.caption(str(path)).text}")
            emit(f"sound event: {', '.join(api.classify(str(path), task='sound_event').labels)}")


def main() -> None:
    """The ``qwen-audio`` console script: the commands, then an exit that skips the collector.

    At exit Python's collector walks every object the imports made (torch, transformers: ~1 s on
    2 cores, a fifth of a cold ``qwen-audio transcribe``) only for the process to end. Freezing them
    first moves them out of its reach; atexit handlers, thread joins and file flushes still run.
    """
    try:
        app()
    finally:
        gc.freeze()


if __name__ == "__main__":
    main()
