"""Server limits and switches, fixed at start-up (a frozen dataclass, validated once)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from qwen_audio.errors import ConfigError


@dataclass(frozen=True)
class ServerSettings:
    """What the OpenAI-compatible server accepts.

    ``api_key``: when set, every ``/v1`` request needs ``Authorization: Bearer <key>``.
    ``max_upload_bytes`` bounds a whole request body (JSON with base64 audio, or multipart).
    ``max_queue`` bounds the requests admitted at once (waiting or running); past it: 503.
    ``max_prompt_tokens`` bounds a chat prompt (None: the engine's ``context_length``, when it
    tells one); ``max_audio_parts`` bounds the audios of one chat request, counted before decoding.
    Local paths in ``audio_url`` are refused unless ``allow_local_files``; then, when
    ``allowed_local_dir`` is set, only files that resolve (symlinks followed) inside it are read.
    ``allowed_hosts``: the names a request's ``Host`` header may give ("*": any). By default a
    server bound to an address answers to that address and this machine's loopback names only,
    so a web page whose name an attacker re-points at 127.0.0.1 (DNS rebinding) cannot read the
    API; a server bound to every interface (0.0.0.0, ::) answers to any name.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_upload_bytes: int = 25 * 1024 * 1024  # OpenAI's audio API limit
    max_audio_seconds: float = 30 * 60.0
    max_new_tokens: int = 512  # the most a request may ask for; also the default
    max_prompt_tokens: int | None = None
    max_audio_parts: int = 8
    max_batch_size: int = 8
    batch_wait_ms: float = 10.0
    body_timeout_s: float = 60.0  # a request body must arrive within this
    shutdown_grace_s: float = 10.0  # on SIGTERM, how long requests in flight may still take
    max_queue: int = 64
    allow_local_files: bool = False
    allowed_local_dir: Path | None = None
    allowed_hosts: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0–65535, got {self.port}")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("api_key must not be blank: leave it unset to serve without a key")
        for name in ("max_upload_bytes", "max_new_tokens", "max_batch_size", "max_queue", "max_prompt_tokens", "max_audio_parts"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be ≥ 1, got {getattr(self, name)}")
        # Written so that NaN fails too (every comparison with NaN is False: `nan <= 0` would pass).
        if not (math.isfinite(self.max_audio_seconds) and self.max_audio_seconds > 0):
            raise ConfigError(f"max_audio_seconds must be a finite number > 0, got {self.max_audio_seconds}")
        if not (math.isfinite(self.batch_wait_ms) and self.batch_wait_ms >= 0):
            raise ConfigError(f"batch_wait_ms must be a finite number ≥ 0, got {self.batch_wait_ms}")
        if not (math.isfinite(self.body_timeout_s) and self.body_timeout_s > 0):
            raise ConfigError(f"body_timeout_s must be a finite number > 0, got {self.body_timeout_s}")
        if not (math.isfinite(self.shutdown_grace_s) and self.shutdown_grace_s >= 0):
            raise ConfigError(f"shutdown_grace_s must be a finite number ≥ 0, got {self.shutdown_grace_s}")
        if self.allowed_hosts is not None:
            hosts = tuple(normal_host(_strip_port(h)) for h in self.allowed_hosts)  # a port given is any port
            if not hosts or not all(hosts):
                raise ConfigError("allowed_hosts must name at least one host, and no blank one (use '*' for any)")
            object.__setattr__(self, "allowed_hosts", hosts)
        if self.allowed_local_dir is not None:
            folder = Path(self.allowed_local_dir).expanduser().resolve()
            if not folder.is_dir():
                raise ConfigError(f"allowed_local_dir {folder} is not a directory")
            object.__setattr__(self, "allowed_local_dir", folder)
            if not self.allow_local_files:
                raise ConfigError("allowed_local_dir is set but allow_local_files is False: enable both")

    def host_allowed(self, host_header: str | None) -> bool:
        """Whether a request's ``Host`` header names this server (see ``allowed_hosts``)."""
        if host_header is None:  # HTTP/1.0 without Host: no browser sends that
            return True
        allowed = self.allowed_hosts if self.allowed_hosts is not None else default_allowed_hosts(self.host)
        return "*" in allowed or normal_host(_strip_port(host_header)) in allowed


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_ADDRESSES = ("", "0.0.0.0", "::")


def default_allowed_hosts(bind_host: str) -> tuple[str, ...]:
    host = normal_host(bind_host)
    return ("*",) if host in WILDCARD_ADDRESSES else (host, *LOOPBACK_NAMES)


def normal_host(host: str) -> str:
    """Lower case, without IPv6 brackets or a trailing dot: 'LocalHost.' and 'localhost' are one."""
    host = host.strip().lower().rstrip(".")
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _strip_port(host_header: str) -> str:
    host = host_header.strip()
    if host.startswith("["):  # [::1]:8000
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
