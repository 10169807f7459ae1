"""The web UI page (served at ``/``) in headless Chromium, and the ``serve`` command's wiring."""

from __future__ import annotations

import asyncio
import shutil
import struct
import subprocess
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from fastapi.responses import HTMLResponse, Response

from qwen_audio.serve import BackgroundServer, ServerSettings
from qwen_audio.serve import cli as serve_cli
from qwen_audio.serve.webui import static_dir
from tests.serve_fixtures import FakeEngine, wav_bytes

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FORM_IDS = ("chat-form", "prompt", "audio-file", "record", "send", "mode", "chat-log", "word-table", "api-key")


def test_page_and_assets_are_served() -> None:
    with BackgroundServer(FakeEngine(), ServerSettings(port=0)) as server:
        page = httpx.get(server.url + "/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        for element in FORM_IDS:
            assert f'id="{element}"' in page.text
        assert "http" not in page.text.replace("http-equiv", "")  # no CDN: everything is local
        assert httpx.get(server.url + "/static/app.js").text.count("/v1/chat/completions") == 1
        assert httpx.get(server.url + "/static/style.css").status_code == 200


def _chromium(user_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
        f"--user-data-dir={user_dir}", "--window-size=1100,760", "--virtual-time-budget=5000",
    ]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=90)


def _chat_log(dom: str) -> str:
    """The part of a dumped page worth reading when an assertion fails."""
    start = dom.find('id="chat-log"')
    return dom[start : start + 1500] if start >= 0 else dom[-1500:]


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (Debian package: chromium)")
def test_webui_in_headless_chromium(tmp_path: Path) -> None:
    with BackgroundServer(FakeEngine(), ServerSettings(port=0)) as server:
        shot = tmp_path / "webui.png"
        taken = _chromium(tmp_path / "profile-shot", f"--screenshot={shot}", server.url + "/")
        assert shot.is_file(), taken.stderr[-2000:]
        dom = _chromium(tmp_path / "profile-dom", "--dump-dom", server.url + "/").stdout
    data = shot.read_bytes()
    assert _png_size(data) == (1100, 760) and len(data) > 10_000  # a blank page compresses to ~3 kB
    for element in FORM_IDS:
        assert f'id="{element}"' in dom
    # The script ran and reached the API: it writes the served model's name into the header.
    assert f"model: {FakeEngine.model_id}" in dom


# Drives the page as a user would: attach a clip (the page's own attach()), pick the task, submit,
# wait until the Send button is enabled again. Chromium's virtual-time budget stands still while a
# fetch is pending, so the "hold" request keeps the page alive until "release" (no sleeps).
_DRIVER = """<script>
window.addEventListener("load", async () => {
  fetch("/test/hold/%(task)s");
  const blob = await (await fetch("/test/tone.wav")).blob();
  await attach(new Blob([blob], { type: "audio/wav" }), "tone.wav");
  document.getElementById("mode").value = "%(task)s";
  document.getElementById("prompt").value = "what is this?";
  const send = document.getElementById("send");
  const finished = new Promise((resolve) => new MutationObserver(() => { if (!send.disabled) resolve(); })
    .observe(send, { attributes: true }));
  document.getElementById("chat-form").requestSubmit();
  await finished;
  await fetch("/test/release/%(task)s");
});
</script></body>"""


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (Debian package: chromium)")
def test_webui_chat_and_word_timestamps_in_chromium(tmp_path: Path) -> None:
    server = BackgroundServer(FakeEngine(), ServerSettings(port=0))
    page = (static_dir() / "index.html").read_text()
    done: dict[str, asyncio.Event] = {}

    @server.app.get("/test/{action}/{task}")
    async def control(action: str, task: str) -> Response:  # test-only routes: hold until released
        event = done.setdefault(task, asyncio.Event())
        if action == "release":
            event.set()
        else:
            await asyncio.wait_for(event.wait(), timeout=30)
        return Response(status_code=204)

    @server.app.get("/test/{task}")
    async def driven_page(task: str) -> Response:  # the page plus the driver script
        if task == "tone.wav":
            return Response(wav_bytes(2.0), media_type="audio/wav")
        return HTMLResponse(page.replace("</body>", _DRIVER % {"task": task}))

    with server:
        chat_dom = _chromium(tmp_path / "p1", "--dump-dom", server.url + "/test/chat").stdout
        words_dom = _chromium(tmp_path / "p2", "--dump-dom", server.url + "/test/transcribe").stdout
    # The streamed reply, assembled from SSE chunks by the page, names the attached 2 s clip.
    assert "echo: what is this? | audios=1 [2.00] | turns=1" in chat_dom, _chat_log(chat_dom)
    assert "<td>hello</td><td>0.00</td><td>0.40</td>" in words_dom, _chat_log(words_dom)
    assert "<td>qwen</td><td>1.50</td><td>1.90</td>" in words_dom


def test_serve_command_builds_settings_and_serves(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    served: list[tuple[object, ServerSettings]] = []
    monkeypatch.setattr(serve_cli, "load_engine", lambda model: FakeEngine())
    monkeypatch.setattr(serve_cli, "bind", lambda settings: None)  # binding is tested in test_cli_hardening
    monkeypatch.setattr(serve_cli, "serve", lambda engine, settings, log_level, sock: served.append((engine, settings)))
    app = typer.Typer()
    app.command("serve")(serve_cli.serve_command)
    app.command("other")(lambda: None)  # two commands, so "serve" is a subcommand as in qwen-audio
    args = ["serve", "--port", "9123", "--api-key", "k", "--max-upload-mb", "1", "--allow-local-files",
            "--allowed-local-dir", str(tmp_path), "--allowed-host", "a.example", "--allowed-host", "b.example:80",
            "--shutdown-grace", "2.5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    engine, settings = served[0]
    assert isinstance(engine, FakeEngine)
    assert (settings.port, settings.api_key, settings.max_upload_bytes) == (9123, "k", 1024 * 1024)
    assert settings.allowed_local_dir == tmp_path.resolve()
    assert settings.allowed_hosts == ("a.example", "b.example") and settings.shutdown_grace_s == 2.5

    bad = CliRunner().invoke(app, ["serve", "--port", "70000"])
    assert bad.exit_code == 1 and "port must be 0–65535" in bad.output and len(served) == 1
