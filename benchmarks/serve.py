"""Server throughput and a soak test.

Levels (the default): requests/s and p50/p95/p99 latency with 1, 8 and 32 concurrent clients; each
level is bounded by a request count and a wall-clock limit. Loopback only.

    python benchmarks/serve.py [--model PATH] [--task chat|transcribe] [--requests 64]
    python benchmarks/serve.py --stream mixed   # chat: half the requests streamed (SSE), timed apart
    python benchmarks/serve.py --fake      # no model: a simulated engine (measures the server alone)
    python benchmarks/serve.py --engine vllm [--vllm-python .venv-vllm/bin/python] [--vllm-args "..."]

``--engine vllm`` measures the same chat requests on the same model twice in one run: against a
``qwen-audio serve`` process (the built-in engine), then against vLLM's OpenAI server running the
``qwen_audio.vllm`` plugin (started here from vLLM's own environment, scripts/setup-vllm-env.sh),
each in its own process, and prints vLLM's req/s over the built-in engine's per level. On a GPU pass e.g.
``--vllm-args "--dtype float16 --tensor-parallel-size 2"``; the default, float32, is the CPU's.

The fake engine sleeps ``--fake-call-ms`` per batched call plus ``--fake-item-ms`` per request,
the cost shape of a model on an accelerator, so the figures show what batching buys.

Soak (issue 20's "done means"): ``max(--clients)`` clients mix streamed and non-streamed chats
for ``--soak SECONDS`` against a ``qwen-audio serve`` process started here (or ``--url``), a
``--disconnect-fraction`` of them hanging up mid-request. It checks 0 errors (dropped
connections are deliberate, not errors), no 503 once load stops, the server's RSS back within
10 % of its level after warm-up, and streamed p50 within 2x non-streamed:

    python benchmarks/serve.py --soak 120 [--model PATH] [--disconnect-fraction 0.1]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

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

    def chat_batch(self, requests: Sequence[ChatRequest]) -> list[ChatReply]:
        self._cost(len(requests))
        return [ChatReply("a simulated answer", 100, 4) for _ in requests]

    def stream_chat(self, request: ChatRequest) -> Iterator[str]:
        self._cost(1)
        yield "a simulated answer"

    def transcribe_batch(self, requests: Sequence[TranscriptionRequest]) -> list[Transcript]:
        self._cost(len(requests))
        return [Transcript("simulated words", "en", r.audio.size / 16_000) for r in requests]


def load_engine(args: argparse.Namespace) -> tuple[Engine, str]:
    if args.fake:
        engine = SimulatedEngine(args.fake_call_ms, args.fake_item_ms)
        return engine, f"FAKE engine (simulated: {args.fake_call_ms:g} ms per call + {args.fake_item_ms:g} ms per request)"
    try:
        from qwen_audio.serve.cli import load_engine as load_served  # type: ignore[import-not-found]
    except ModuleNotFoundError:
        raise SystemExit("qwen_audio is not available: pass --fake to measure the server on a simulated engine") from None
    engine = load_served(args.model)  # as `qwen-audio serve` loads it: on the thread that decodes
    return engine, f"model {engine.model_id} ({args.model or 'default'})"


def test_audio(seconds: float) -> bytes:
    t = np.arange(int(seconds * 16_000)) / 16_000
    buffer = io.BytesIO()
    sf.write(buffer, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16_000, format="WAV")
    return buffer.getvalue()


def make_request(task: str, audio: bytes, stream: bool = False) -> dict:
    if task == "chat":
        part = {"type": "input_audio", "input_audio": {"data": base64.b64encode(audio).decode(), "format": "wav"}}
        messages = [{"role": "user", "content": [part, {"type": "text", "text": "What is this sound?"}]}]
        body = {"model": "qwen-audio", "messages": messages, "max_tokens": 32, "temperature": 0, "stream": stream}
        return {"method": "POST", "url": "/v1/chat/completions", "json": body}
    return {"method": "POST", "url": "/v1/audio/transcriptions", "files": {"file": ("a.wav", audio, "audio/wav")},
            "data": {"model": "qwen-audio"}}


# ---------------------------------------------------------------------------- one request, timed


@dataclass
class Outcome:
    streamed: bool
    status: str  # "ok", "dropped" (we hung up on purpose), "503", or what went wrong
    seconds: float = 0.0  # to the last byte (a stream: to its [DONE])
    first_piece: float | None = None  # a stream: to its first content piece
    pieces: int = 0


def send(http: httpx.Client, request: dict, hang_up_after: float | None = None) -> Outcome:
    """One request, timed. With ``hang_up_after`` we drop the connection on purpose: when no byte
    came for that long, or at a stream's first piece."""
    streamed = bool(request.get("json", {}).get("stream"))
    start = time.perf_counter()
    outcome = Outcome(streamed, "ok")
    timeout = httpx.Timeout(http.timeout.read, read=hang_up_after) if hang_up_after else http.timeout
    try:
        with http.stream(**request, timeout=timeout) as response:
            if response.status_code != 200:
                response.read()
                outcome.status = "503" if response.status_code == 503 else f"HTTP {response.status_code}: {response.text[:120]}"
                return outcome
            if not streamed:
                response.read()
                body = json.loads(response.content)  # well-formed: a transcription's text, a chat's message
                body["text"] if request["url"].endswith("/transcriptions") else body["choices"][0]["message"]["content"]  # noqa: B018
            elif not read_stream(response, outcome, start, hang_up_after is not None):
                return outcome
    except httpx.TimeoutException:
        outcome.status = "dropped" if hang_up_after else "timeout"
    except (httpx.HTTPError, ValueError, KeyError) as error:
        outcome.status = f"{type(error).__name__}: {error}"[:160]
    outcome.seconds = time.perf_counter() - start
    return outcome


def read_stream(response: httpx.Response, outcome: Outcome, start: float, hang_up: bool) -> bool:
    """Read SSE events to ``[DONE]``; False (and ``outcome.status`` says why) when it ended otherwise."""
    for line in response.iter_lines():
        if not line.startswith("data: "):
            continue
        if line == "data: [DONE]":
            return True
        event = json.loads(line[6:])
        if "error" in event:
            outcome.status = f"in-band error: {event['error'].get('message', '')[:120]}"
            return False
        if event["choices"] and event["choices"][0]["delta"].get("content"):
            outcome.pieces += 1
            if outcome.first_piece is None:
                outcome.first_piece = time.perf_counter() - start
            if hang_up:
                outcome.status = "dropped"
                return False
    outcome.status = "stream ended without [DONE]"
    return False


def run_level(base_url: str, clients: int, total: int, max_seconds: float, requests: Sequence[dict],
              disconnect_fraction: float = 0.0, seed: int = 0) -> tuple[list[Outcome], float]:
    """Each client sends one of ``requests`` at random until ``total`` are sent or time is up."""
    outcomes: list[Outcome] = []
    issued = 0
    lock = threading.Lock()
    deadline = time.monotonic() + max_seconds

    def worker(number: int) -> None:
        nonlocal issued
        rng = random.Random(seed * 1000 + number)
        with httpx.Client(base_url=base_url, timeout=max(120.0, max_seconds)) as http:
            while time.monotonic() < deadline:
                with lock:
                    if issued >= total:
                        return
                    issued += 1
                hang_up = rng.uniform(0.05, 2.0) if rng.random() < disconnect_fraction else None
                outcome = send(http, rng.choice(requests), hang_up)
                with lock:
                    outcomes.append(outcome)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max_seconds + 180)
    return outcomes, time.perf_counter() - began


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def latencies(outcomes: Sequence[Outcome], streamed: bool) -> list[float]:
    return [o.seconds for o in outcomes if o.status == "ok" and o.streamed == streamed]


def request_kinds(args: argparse.Namespace, audio: bytes) -> list[dict]:
    if args.task != "chat" or args.stream == "off":
        return [make_request(args.task, audio)]
    if args.stream == "on":
        return [make_request(args.task, audio, stream=True)]
    return [make_request(args.task, audio), make_request(args.task, audio, stream=True)]


# ---------------------------------------------------------------------------- levels


def run_levels(args: argparse.Namespace) -> None:
    if args.engine == "vllm":
        compare_with_vllm(args)
        return
    engine, description = load_engine(args)
    settings = ServerSettings(port=0, max_batch_size=args.max_batch_size, batch_wait_ms=args.batch_wait_ms,
                              max_queue=max(64, 2 * max(args.clients)))
    kinds = request_kinds(args, test_audio(args.audio_seconds))
    print(f"engine: {description}")
    print(f"task: {args.task}, stream {args.stream}, {args.audio_seconds:g} s audio, batch ≤ {args.max_batch_size}, "
          f"wait {args.batch_wait_ms:g} ms, loopback")
    with BackgroundServer(engine, settings) as server:
        batcher = server.app.state.qwen.chat if args.task == "chat" else server.app.state.qwen.transcribe
        measure_levels(server.url, args, kinds, batcher.batch_sizes)


def compare_with_vllm(args: argparse.Namespace) -> None:
    """The built-in engine (``qwen-audio serve``) and vLLM's server, each in its own process, one after the other."""
    kinds = request_kinds(args, test_audio(args.audio_seconds))
    print(f"task: chat, stream {args.stream}, {args.audio_seconds:g} s audio, max_tokens 32, greedy, loopback; "
          f"model {args.model or 'bundled default'}")
    process, url = start_server(args)
    try:
        print(f"engine: qwen-audio serve (built-in, batch ≤ {args.max_batch_size}, wait {args.batch_wait_ms:g} ms)")
        builtin = measure_levels(url, args, kinds)
    finally:
        stop(process)
    process, url, command = start_vllm_server(args)
    try:
        print(f"engine: vLLM {' '.join(command[2:])}")
        served = measure_levels(url, args, kinds)
    finally:
        stop(process)
    print("vLLM / built-in req/s: " + ", ".join(
        f"{c} clients {v / b:.2f}x" if b else f"{c} clients n/a" for c, b, v in zip(args.clients, builtin, served)))


def measure_levels(url: str, args: argparse.Namespace, kinds: list[dict], batch_sizes: list[int] | None = None) -> list[float]:
    """The table of one server: a warm-up, then one line per concurrency level; returns req/s per level."""
    run_level(url, 1, 2, args.max_seconds, kinds)  # warm-up: imports, caches, first call
    print(f"{'clients':>7} {'requests':>8} {'failed':>6} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
          + (f" {'mean batch':>10}" if batch_sizes is not None else "")
          + (f" {'stream p50':>10} {'plain p50':>10}" if args.stream == "mixed" else ""))
    rates = []
    for clients in args.clients:
        seen = len(batch_sizes) if batch_sizes is not None else 0
        outcomes, wall = run_level(url, clients, args.requests, args.max_seconds, kinds)
        done = [o.seconds for o in outcomes if o.status == "ok"]
        rates.append(len(done) / wall)
        line = (f"{clients:>7} {len(done):>8} {len(outcomes) - len(done):>6} {len(done) / wall:>8.1f} "
                f"{percentile(done, 50) * 1000:>8.1f} {percentile(done, 95) * 1000:>8.1f} {percentile(done, 99) * 1000:>8.1f}")
        if batch_sizes is not None:
            sizes = batch_sizes[seen:]
            line += f" {statistics.fmean(sizes) if sizes else float('nan'):>10.2f}"
        if args.stream == "mixed":
            line += (f" {percentile(latencies(outcomes, True), 50) * 1000:>10.1f}"
                     f" {percentile(latencies(outcomes, False), 50) * 1000:>10.1f}")
        failures = sorted({o.status for o in outcomes if o.status != "ok"})
        print(line + (f"  failures: {failures[:3]}" if failures else ""))
    return rates


def start_vllm_server(args: argparse.Namespace) -> tuple[subprocess.Popen, str, list[str]]:
    """vLLM's OpenAI server on the same model, from vLLM's environment, once it answers /health.

    Through its module: the CPU wheel's ``vllm`` command needs a distribution named "vllm"."""
    import shlex

    from qwen_audio.api import default_model_path
    from qwen_audio.checkpoints.bases import assemble, is_delta_model

    python = Path(args.vllm_python)
    if not python.is_file():
        raise SystemExit(f"no {python}: build vLLM's environment with scripts/setup-vllm-env.sh, or pass --vllm-python")
    port = free_port()
    model = Path(args.model) if args.model else default_model_path()
    model = assemble(model) if is_delta_model(model) else model  # vLLM reads whole weights, not a delta on bases
    command = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
               "--served-model-name", "qwen-audio", "--host", "127.0.0.1", "--port", str(port), *shlex.split(args.vllm_args)]
    environment = {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_NO_USAGE_STATS": "1", **os.environ}  # KV GiB on a CPU
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"vllm-serve-{port}.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
    url = f"http://127.0.0.1:{port}"
    if wait_healthy(process, url, 600, 1.0, lambda: f"vLLM's server exited {process.returncode}; its log: {log.name}"):
        return process, url, command
    stop(process)
    raise SystemExit(f"vLLM's server did not answer /health within 600 s; its log: {log.name}")


def wait_healthy(process: subprocess.Popen, url: str, seconds: float, poll: float, exited: Callable[[], str]) -> bool:
    """True once ``url``/health answers 200 within ``seconds``; SystemExit(``exited()``) if the process dies first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(exited())
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(poll)
    return False


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# ---------------------------------------------------------------------------- soak


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    """``qwen-audio serve`` in its own process (its RSS is the server's alone), once it answers /health."""
    script = Path(sys.executable).parent / "qwen-audio"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "qwen_audio.cli"]
    port = free_port()
    command += ["serve", "--port", str(port), "--max-batch-size", str(args.max_batch_size),
                "--batch-wait-ms", str(args.batch_wait_ms), "--max-queue", str(args.max_queue), "--log-level", "warning"]
    if args.model:
        command += ["--model", args.model]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    if wait_healthy(process, url, 300, 0.5,
                    lambda: f"qwen-audio serve exited {process.returncode}: {process.stderr.read()[-2000:]}"):
        return process, url
    process.terminate()
    raise SystemExit("qwen-audio serve did not answer /health within 300 s")


@dataclass
class RssSampler:
    pid: int
    samples: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.samples.append(rss_mib(self.pid))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_soak(args: argparse.Namespace) -> None:
    process, url = (None, args.url.rstrip("/")) if args.url else start_server(args)
    pid = args.server_pid or (process.pid if process else None)
    try:
        kinds = request_kinds(args, test_audio(args.audio_seconds))
        clients = max(args.clients)
        where = f"{url} (pid {pid})" if pid else url
        print(f"soak: {clients} clients, {args.soak:g} s, stream {args.stream}, {args.disconnect_fraction:.0%} hang up "
              f"at random, {args.audio_seconds:g} s audio, max_tokens 32, batch ≤ {args.max_batch_size}, "
              f"wait {args.batch_wait_ms:g} ms, max queue {args.max_queue}; server {args.model or 'bundled default model'} at {where}")

        def rss() -> float:
            return rss_mib(pid) if pid else float("nan")

        rss_start = rss()
        warm, _ = run_level(url, clients, 10**9, args.warmup, kinds, args.disconnect_fraction, seed=1)
        time.sleep(2.0)
        rss_warm = rss()
        sampler = RssSampler(pid) if pid else None
        outcomes, wall = run_level(url, clients, 10**9, args.soak, kinds, args.disconnect_fraction, seed=2)
        if sampler:
            sampler.stop()
        time.sleep(args.settle)  # streams cut by a hang-up finish their batch; slots come back
        with httpx.Client(base_url=url, timeout=120) as http:
            after = [send(http, kinds[i % len(kinds)]) for i in range(8)]
        rss_after = rss()

        errors: dict[str, int] = {}
        for outcome in warm + outcomes:
            if outcome.status not in ("ok", "dropped"):
                errors[outcome.status] = errors.get(outcome.status, 0) + 1
        ok = [o for o in outcomes if o.status == "ok"]
        streamed, plain = latencies(outcomes, True), latencies(outcomes, False)
        firsts = [o.first_piece for o in ok if o.streamed and o.first_piece is not None]
        pieces = [o.pieces for o in ok if o.streamed]
        p50_ratio = percentile(streamed, 50) / percentile(plain, 50) if streamed and plain else float("nan")
        after_bad = [o.status for o in after if o.status != "ok"]
        rss_change = (rss_after - rss_warm) / rss_warm if pid else float("nan")

        print(f"warm-up {args.warmup:g} s: {len(warm)} requests; soak {wall:.1f} s: {len(outcomes)} requests, "
              f"{len(ok)} ok ({len(ok) / wall:.2f}/s), {sum(o.status == 'dropped' for o in outcomes)} dropped on purpose")
        print(f"errors (warm-up + soak, not counting dropped): {sum(errors.values())}"
              + "".join(f"\n  {count} x {status}" for status, count in sorted(errors.items(), key=lambda kv: -kv[1])))
        print(f"latency p50/p95 ms: streamed {percentile(streamed, 50) * 1000:.0f}/{percentile(streamed, 95) * 1000:.0f} "
              f"({len(streamed)}; first piece p50 {percentile(firsts, 50) * 1000:.0f}, pieces per stream p50 "
              f"{percentile(pieces, 50):.0f}), non-streamed {percentile(plain, 50) * 1000:.0f}/{percentile(plain, 95) * 1000:.0f} "
              f"({len(plain)}); streamed/non-streamed p50 = {p50_ratio:.2f} (want ≤ 2)")
        print(f"after load stopped ({args.settle:g} s settle): {len(after) - len(after_bad)}/{len(after)} requests ok"
              + (f", failures: {after_bad}" if after_bad else "") + f", 503s: {sum(s == '503' for s in after_bad)}")
        if pid:
            peak = max(sampler.samples) if sampler and sampler.samples else float("nan")
            print(f"server RSS MiB: start {rss_start:.0f}, after warm-up {rss_warm:.0f}, peak during soak {peak:.0f}, "
                  f"after load {rss_after:.0f} ({rss_change:+.1%} vs after warm-up; want within ±10 %)")
        verdict = {"0 errors": not errors, "no 503 after load": not after_bad,
                   "RSS within 10 %": abs(rss_change) <= 0.10 if pid else None, "streamed p50 ≤ 2x": p50_ratio <= 2.0}
        print("verdict: " + ", ".join(f"{name} {'PASS' if good else 'n/a' if good is None else 'FAIL'}"
                                      for name, good in verdict.items()))
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint folder (default: the bundled model)")
    parser.add_argument("--fake", action="store_true", help="use a simulated engine instead of the model (levels only)")
    parser.add_argument("--engine", choices=("builtin", "vllm"), default="builtin",
                        help="vllm: the built-in engine, then vLLM's server on the same model, in one run (chat only)")
    parser.add_argument("--vllm-python", default=str(Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin" / "python"),
                        help="python of vLLM's environment (scripts/setup-vllm-env.sh)")
    parser.add_argument("--vllm-args", default="--dtype float32", help="more arguments for vLLM's server, one string")
    parser.add_argument("--fake-call-ms", type=float, default=20.0)
    parser.add_argument("--fake-item-ms", type=float, default=2.0)
    parser.add_argument("--task", choices=("chat", "transcribe"), default="chat")
    parser.add_argument("--stream", choices=("off", "on", "mixed"), default=None,
                        help="chat: streamed requests (SSE) — none, all, or half at random; default off (soak: mixed)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=64, help="requests per concurrency level")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="time limit per level")
    parser.add_argument("--audio-seconds", type=float, default=5.0)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-wait-ms", type=float, default=10.0)
    soak = parser.add_argument_group("soak")
    soak.add_argument("--soak", type=float, metavar="SECONDS", help="run the soak test for this long instead of levels")
    soak.add_argument("--disconnect-fraction", type=float, default=0.1, help="requests whose client hangs up at random")
    soak.add_argument("--warmup", type=float, default=15.0, help="seconds of the same load before RSS is taken")
    soak.add_argument("--settle", type=float, default=5.0, help="seconds after the load before the checks")
    soak.add_argument("--max-queue", type=int, default=64, help="the server's --max-queue")
    soak.add_argument("--url", help="soak a server already running there instead of starting qwen-audio serve")
    soak.add_argument("--server-pid", type=int, help="with --url: the server's pid, for its RSS")
    args = parser.parse_args()
    if args.engine == "vllm" and (args.task != "chat" or args.fake or args.soak is not None):
        parser.error("--engine vllm measures chat on a real model (no --fake, --soak, --task transcribe)")
    if args.soak is not None:
        if args.task != "chat" or args.fake:
            parser.error("--soak runs chat against qwen-audio serve (no --fake, --task chat)")
        args.stream = args.stream or "mixed"
        run_soak(args)
    else:
        args.stream = args.stream or "off"
        run_levels(args)


if __name__ == "__main__":
    main()
