"""The web UI: one static page (HTML + JS + CSS, no build step, no CDN) that talks to the API.

Serving it from the API server means the page needs no CORS and works offline on loopback.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles


def static_dir() -> Path:
    return Path(str(resources.files("qwen_audio.serve") / "static"))


def mount_webui(app: FastAPI) -> None:
    """``/`` serves the page, ``/static/…`` its script and style."""
    folder = static_dir()
    if not (folder / "index.html").is_file():  # a wheel built without the package data

        @app.get("/", include_in_schema=False)
        async def missing() -> Response:
            return PlainTextResponse("the web UI files are missing from this install; the API works", status_code=404)

        return
    app.mount("/static", StaticFiles(directory=folder), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(folder / "index.html", headers={"Cache-Control": "no-cache"})
