"""Run the app under uvicorn: in the foreground (the CLI) or in a background thread (tests,
benchmarks, notebooks)."""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from collections.abc import Iterator
from types import TracebackType

import uvicorn

from qwen_audio.errors import ConfigError
from qwen_audio.infer.engine import Engine
from qwen_audio.serve.app import create_app
from qwen_audio.serve.settings import ServerSettings


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (IPv4 or IPv6, as the host resolves).

    Binding before the server is announced turns a busy port or a wrong host into a ConfigError
    the command line reports in one line (uvicorn would log it and exit with status 3).
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
        )[0]
        # proto must be IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only
        # then, and without it Nagle + delayed ACK add 40 ms to every keep-alive response.
        sock = socket.socket(family, kind, proto)
    except OSError as error:
        raise ConfigError(f"cannot listen on {host}:{port}: {error.strerror or error} (is the host name right?)") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {error.strerror or error} "
                          "(is another server using the port, or is the address not this machine's?)") from None
    return sock


class DrainingServer(uvicorn.Server):
    """uvicorn, but a SIGTERM is the normal way to stop: after the drain the process exits 0.

    uvicorn drains (stops accepting, lets requests in flight finish up to
    ``timeout_graceful_shutdown``, cancels the rest, runs the lifespan's shutdown) and then
    raises the signal again, so the process dies of SIGTERM (status 143), which supervisors log
    as a crash. SIGINT (Ctrl-C) is still re-raised.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            self._captured_signals = [s for s in self._captured_signals if s != signal.SIGTERM]


def uvicorn_config(engine: Engine, settings: ServerSettings, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(create_app(engine, settings), log_level=log_level, lifespan="on",
                          timeout_graceful_shutdown=settings.shutdown_grace_s)  # type: ignore[arg-type] - a float works


def serve(engine: Engine, settings: ServerSettings | None = None, *, log_level: str = "info",
          sock: socket.socket | None = None) -> None:
    """Serve ``engine`` until interrupted (Ctrl-C) or terminated (SIGTERM: requests in flight get
    ``shutdown_grace_s`` to finish, then the call returns), on ``sock`` or a socket bound to the
    settings' host and port. One process: the batcher, not workers, scales."""
    settings = settings or ServerSettings()
    sock = sock or bind_socket(settings.host, settings.port)
    DrainingServer(uvicorn_config(engine, settings, log_level)).run(sockets=[sock])


class BackgroundServer:
    """``with BackgroundServer(engine, settings) as server: … server.url …``.

    Binds the socket before starting uvicorn, so ``port=0`` picks a free port without a race.
    """

    def __init__(self, engine: Engine, settings: ServerSettings | None = None, *, start_timeout: float = 10.0) -> None:
        self.settings = settings or ServerSettings(port=0)
        config = uvicorn_config(engine, self.settings, "warning")
        self.app = config.app
        self._server = DrainingServer(config)
        self._socket = bind_socket(self.settings.host, self.settings.port)
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
