"""A server started as a subprocess for the vLLM tests: a free port, its log, ready once /health answers."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

STARTUP_SECONDS = 420  # two busy cores: an engine's first start imports torch twice and profiles


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running(command: Sequence[str], url: str, log: Path, what: str) -> Iterator[str]:
    """Run ``command`` until the block ends (SIGTERM, then SIGKILL after a minute); yields ``url`` once
    ``url/health`` answers 200. Fails the test with the log's tail if it exits or never answers."""
    import httpx

    with open(log, "wb") as output:
        process = subprocess.Popen(list(command), stdout=output, stderr=subprocess.STDOUT, env=os.environ.copy())
        try:
            deadline = time.monotonic() + STARTUP_SECONDS
            while True:
                if process.poll() is not None:
                    pytest.fail(f"{what} exited with {process.returncode}:\n{log.read_text()[-4000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    pytest.fail(f"{what} did not answer /health in {STARTUP_SECONDS} s:\n{log.read_text()[-4000:]}")
                time.sleep(2)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
