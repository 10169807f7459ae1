"""``qwen-audio serve``: load the model, then run the OpenAI-compatible server.

Wire it with ``app.command("serve")(serve_command)``; the engine is looked up lazily so that
``--help`` stays fast and the server module imports without the model code.
"""

from __future__ import annotations

import math
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from qwen_audio.errors import ConfigError, QwenAudioError

if TYPE_CHECKING:
    from qwen_audio.infer.engine import Engine
    from qwen_audio.serve.settings import ServerSettings

err_console = Console(stderr=True)


VLLM_SETUP = ("set that up with `bash scripts/setup-vllm-env.sh` (it builds .venv-vllm in the repository) and start the "
              "server from there: `.venv-vllm/bin/qwen-audio serve --engine vllm …`")


def load_engine(model: str | None) -> Engine:
    """The model behind ``QwenAudio.from_pretrained(model)`` (the bundled one when ``model`` is
    None), seen through the batched ``Engine`` protocol the server calls; loaded on the thread that
    will decode with it (``serve.batching.EngineThread``)."""
    from qwen_audio.api import QwenAudio
    from qwen_audio.serve.batching import ENGINE_THREAD

    return ENGINE_THREAD.call(QwenAudio.from_pretrained, model or "default")


def load_vllm_engine(model: str | None, vllm_args: str = "") -> Engine:
    """The same tasks decoded by a vLLM engine (``qwen_audio.vllm.engine``), in vLLM's environment only."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise ConfigError(f"--engine vllm needs vLLM, which is not installed here: it runs in its own environment; {VLLM_SETUP}")
    from qwen_audio.vllm.engine import VllmQwenAudio

    return VllmQwenAudio.from_pretrained(model or "default", engine_args=vllm_args)


def bind(settings: ServerSettings) -> socket.socket:
    """Imported on use: FastAPI and uvicorn stay out of every other command's start-up."""
    from qwen_audio.serve.runner import bind_socket

    return bind_socket(settings.host, settings.port)


def serve(engine: Engine, settings: ServerSettings, log_level: str = "info", sock: socket.socket | None = None) -> None:
    from qwen_audio.serve.runner import serve as run

    run(engine, settings, log_level=log_level, sock=sock)


def serve_command(
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0 exposes it to the network).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    api_key: Annotated[Optional[str], typer.Option(envvar="QWEN_AUDIO_API_KEY", help="Require 'Authorization: Bearer KEY'.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Checkpoint folder; default: the bundled model.")] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest request body, in MiB.")] = 25.0,
    max_audio_seconds: Annotated[float, typer.Option(help="Longest audio accepted.")] = 1800.0,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens a request may ask for (and the default).")] = 512,
    max_prompt_tokens: Annotated[Optional[int], typer.Option(help="Longest chat prompt, in tokens; default: the model's context.")] = None,
    max_audio_parts: Annotated[int, typer.Option(help="Most audios in one chat request.")] = 8,
    max_batch_size: Annotated[int, typer.Option(help="Requests grouped into one model call.")] = 8,
    batch_wait_ms: Annotated[float, typer.Option(help="How long a request waits for others to batch with.")] = 10.0,
    max_queue: Annotated[int, typer.Option(help="Requests held at once; more get 503.")] = 64,
    shutdown_grace: Annotated[float, typer.Option(help="On SIGTERM, seconds requests in flight may take to finish.")] = 10.0,
    allow_local_files: Annotated[bool, typer.Option(help="Let audio_url name files on this machine.")] = False,
    allowed_local_dir: Annotated[Optional[Path], typer.Option(help="Only files under this folder (with --allow-local-files).")] = None,
    allowed_host: Annotated[Optional[list[str]], typer.Option(help="A Host name the server answers to (repeat it; '*': any). "
                                                              "Default: the bound address and localhost; any on 0.0.0.0.")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    engine: Annotated[str, typer.Option(help="What decodes: 'builtin' (this package) or 'vllm' (a vLLM engine in this "
                                        "process; run from vLLM's environment, see the README).")] = "builtin",
    vllm_args: Annotated[str, typer.Option(help="vLLM engine flags for --engine vllm, as `vllm serve` takes them "
                                           "(e.g. '--tensor-parallel-size 2 --dtype bfloat16').")] = "",
) -> None:
    """Serve the OpenAI-compatible API (chat, transcriptions, translations) and the web UI."""
    from qwen_audio.serve.settings import ServerSettings

    try:
        if not (math.isfinite(max_upload_mb) and max_upload_mb > 0):
            raise ConfigError(f"--max-upload-mb must be a positive number, got {max_upload_mb}")
        settings = ServerSettings(
            host=host,
            port=port,
            api_key=api_key,
            max_upload_bytes=max(int(max_upload_mb * 1024 * 1024), 1),
            max_audio_seconds=max_audio_seconds,
            max_new_tokens=max_new_tokens,
            max_prompt_tokens=max_prompt_tokens,
            max_audio_parts=max_audio_parts,
            max_batch_size=max_batch_size,
            batch_wait_ms=batch_wait_ms,
            max_queue=max_queue,
            shutdown_grace_s=shutdown_grace,
            allow_local_files=allow_local_files,
            allowed_local_dir=allowed_local_dir,
            allowed_hosts=tuple(allowed_host) if allowed_host else None,
        )
        if engine not in ("builtin", "vllm"):
            raise ConfigError(f"--engine is 'builtin' or 'vllm', not {engine!r}")
        if vllm_args and engine != "vllm":
            raise ConfigError("--vllm-args goes with --engine vllm")
        sock = bind(settings)  # before the model loads: a busy port is reported at once
        loaded = load_vllm_engine(model, vllm_args) if engine == "vllm" else load_engine(model)
    except (QwenAudioError, OSError) as error:
        err_console.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
        raise typer.Exit(code=1) from None
    err_console.print(f"serving [bold]{escape(loaded.model_id)}[/] on http://{escape(host)}:{port} (web UI at /)")
    serve(loaded, settings, log_level=log_level, sock=sock)
