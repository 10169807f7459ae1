"""Run the app under uvicorn: in the foreground (the CLI) or in a background thread (tests,
benchmarks, notebooks)."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

import uvicorn

from qwen_audio.infer.engine import Engine
from qwen_audio.serve.app import create_app
from qwen_audio.serve.settings import ServerSettings


def serve(engine: Engine, settings: ServerSettings | None = None, *, log_level: str = "info") -> None:
    """Serve ``engine`` until interrupted (Ctrl-C). One process: the batcher, not workers, scales."""
    settings = settings or ServerSettings()
    uvicorn.run(create_app(engine, settings), host=settings.host, port=settings.port, log_level=log_level,
                workers=1, timeout_graceful_shutdown=10)


class BackgroundServer:
    """``with BackgroundServer(engine, settings) as server: … server.url …``.

    Binds the socket before starting uvicorn, so ``port=0`` picks a free port without a race.
    """

    def __init__(self, engine: Engine, settings: ServerSettings | None = None, *, start_timeout: float = 10.0) -> None:
        self.settings = settings or ServerSettings(port=0)
        self.app = create_app(engine, self.settings)
        config = uvicorn.Config(self.app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
        self._server = uvicorn.Server(config)
        # proto must be IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only
        # then, and without it Nagle + delayed ACK add 40 ms to every keep-alive response.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((self.settings.host, self.settings.port))
        self.port: int = self._socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)
        self._start_timeout = start_timeout

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    def start(self) -> "BackgroundServer":
        self._thread.start()
        deadline = time.monotonic() + self._start_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the server did not start; see the log above")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._socket.close()

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.stop()
