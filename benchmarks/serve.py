"""Server throughput: requests/s and p50/p95 latency with 1, 8 and 32 concurrent clients.

Loopback only; each level is bounded by a request count and a wall-clock limit.

    python benchmarks/serve.py [--model PATH] [--task chat|transcribe] [--requests 64]
    python benchmarks/serve.py --fake      # no model: a simulated engine (measures the server alone)

The fake engine sleeps ``--fake-call-ms`` per batched call plus ``--fake-item-ms`` per request,
the cost shape of a model on an accelerator, so the figures show what batching buys.
"""

from __future__ import annotations

import argparse
import base64
import io
import statistics
import threading
import time
from collections.abc import Iterator, Sequence

import httpx
import numpy as np
import soundfile as sf

from qwen_audio.infer.engine import ChatReply, ChatRequest, Engine, Transcript, TranscriptionRequest
from qwen_audio.serve import BackgroundServer, ServerSettings


class SimulatedEngine:
    """Answers instantly but sleeps like a batched model: a fixed cost per call, a small one per item."""

    model_id = "simulated-engine"

    def __init__(self, call_ms: float, item_ms: float) -> None:
        self.call_s, self.item_s = call_ms / 1000, item_ms / 1000

    def _cost(self, size: int) -> None:
        time.sleep(self.call_s + self.item_s * size)

    def chat(self, requests: Sequence[ChatRequest]) -> list[ChatReply]:
        self._cost(len(requests))
        return [ChatReply("a simulated answer", 100, 4) for _ in requests]

    def stream_chat(self, request: ChatRequest) -> Iterator[str]:
        self._cost(1)
        yield "a simulated answer"

    def transcribe(self, requests: Sequence[TranscriptionRequest]) -> list[Transcript]:
        self._cost(len(requests))
        return [Transcript("simulated words", "en", r.audio.size / 16_000) for r in requests]


def load_engine(args: argparse.Namespace) -> tuple[Engine, str]:
    if args.fake:
        engine = SimulatedEngine(args.fake_call_ms, args.fake_item_ms)
        return engine, f"FAKE engine (simulated: {args.fake_call_ms:g} ms per call + {args.fake_item_ms:g} ms per request)"
    try:
        from qwen_audio.api import QwenAudio  # type: ignore[import-not-found]
    except ModuleNotFoundError:
        raise SystemExit("qwen_audio.api is not available: pass --fake to measure the server on a simulated engine") from None
    engine = (QwenAudio.from_pretrained(args.model) if args.model else QwenAudio.from_pretrained()).engine()
    return engine, f"model {engine.model_id} ({args.model or 'default'})"


def test_audio(seconds: float) -> bytes:
    t = np.arange(int(seconds * 16_000)) / 16_000
    buffer = io.BytesIO()
    sf.write(buffer, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16_000, format="WAV")
    return buffer.getvalue()


def make_request(task: str, audio: bytes) -> dict:
    if task == "chat":
        part = {"type": "input_audio", "input_audio": {"data": base64.b64encode(audio).decode(), "format": "wav"}}
        messages = [{"role": "user", "content": [part, {"type": "text", "text": "What is this sound?"}]}]
        return {"url": "/v1/chat/completions", "json": {"model": "qwen-audio", "messages": messages, "max_tokens": 32}}
    return {"url": "/v1/audio/transcriptions", "files": {"file": ("a.wav", audio, "audio/wav")}, "data": {"model": "qwen-audio"}}


def run_level(base_url: str, clients: int, total: int, max_seconds: float, request: dict) -> tuple[list[float], int, float]:
    """Latencies of successful requests, the failure count and the wall time of one level."""
    latencies: list[float] = []
    failures = 0
    issued = 0
    lock = threading.Lock()
    deadline = time.monotonic() + max_seconds

    def worker() -> None:
        nonlocal issued, failures
        with httpx.Client(base_url=base_url, timeout=max(60.0, max_seconds)) as http:
            while time.monotonic() < deadline:
                with lock:
                    if issued >= total:
                        return
                    issued += 1
                start = time.perf_counter()
                ok = http.post(**request).status_code == 200
                elapsed = time.perf_counter() - start
                with lock:
                    if ok:
                        latencies.append(elapsed)
                    else:
                        failures += 1

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max_seconds + 120)
    return latencies, failures, time.perf_counter() - began


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint folder (default: the bundled model)")
    parser.add_argument("--fake", action="store_true", help="use a simulated engine instead of the model")
    parser.add_argument("--fake-call-ms", type=float, default=20.0)
    parser.add_argument("--fake-item-ms", type=float, default=2.0)
    parser.add_argument("--task", choices=("chat", "transcribe"), default="chat")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=64, help="requests per concurrency level")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="time limit per level")
    parser.add_argument("--audio-seconds", type=float, default=5.0)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-wait-ms", type=float, default=10.0)
    args = parser.parse_args()

    engine, description = load_engine(args)
    settings = ServerSettings(port=0, max_batch_size=args.max_batch_size, batch_wait_ms=args.batch_wait_ms,
                              max_queue=max(64, 2 * max(args.clients)))
    request = make_request(args.task, test_audio(args.audio_seconds))
    print(f"engine: {description}")
    print(f"task: {args.task}, {args.audio_seconds:g} s audio, batch ≤ {args.max_batch_size}, wait {args.batch_wait_ms:g} ms, loopback")
    with BackgroundServer(engine, settings) as server:
        batcher = server.app.state.qwen.chat if args.task == "chat" else server.app.state.qwen.transcribe
        run_level(server.url, 1, 2, args.max_seconds, request)  # warm-up: imports, caches, first call
        print(f"{'clients':>7} {'requests':>8} {'failed':>6} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'mean batch':>10}")
        for clients in args.clients:
            seen = len(batcher.batch_sizes)
            latencies, failures, wall = run_level(server.url, clients, args.requests, args.max_seconds, request)
            sizes = batcher.batch_sizes[seen:]
            print(
                f"{clients:>7} {len(latencies):>8} {failures:>6} {len(latencies) / wall:>8.1f} "
                f"{percentile(latencies, 50) * 1000:>8.1f} {percentile(latencies, 95) * 1000:>8.1f} "
                f"{statistics.fmean(sizes) if sizes else float('nan'):>10.2f}"
            )


if __name__ == "__main__":
    main()
