"""The explorer's HTTP server: one static page and a JSON API over an :class:`~diffscm.service.explorer.Explorer`.

* ``GET /``: the page;
* ``GET /api/model``: the graph, the supports and the defaults;
* ``GET /api/images``: the test images (PNG, base64) with their factual values;
* ``POST /api/counterfactual``: ``{"index": int | "image": PNG base64, "do": {name: value}, "options": {...},
  "observed": {name: value}}`` -> ``{"counterfactual": PNG base64, "values": {...}, "seconds": float, ...}``.

Bad requests get a 4xx and ``{"error": one line}``; a full queue gets 503. The body is read with a size limit before
anything is parsed, and nothing a client sends is written outside the explorer's temporary folder.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import DiffSCMError
from .explorer import Busy, Explorer

MAX_BODY = 4 * 1024 * 1024
BODY_KEYS = ("index", "image", "do", "options", "observed")


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(explorer: Explorer, max_body: int = MAX_BODY) -> FastAPI:
    """The ASGI application; run it with uvicorn (``diffscm explore`` does)."""
    app = FastAPI(title="diffscm explorer", docs_url=None, redoc_url=None, openapi_url=None)
    page = (resources.files("diffscm.service") / "static" / "explore.html").read_text()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request, exc):  # 404/405 as one line, like every other error
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def internal_error(_request, exc):  # the server keeps running; the client gets one line
        return error(500, f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return HTMLResponse(page)

    @app.get("/api/model")
    async def model():
        return explorer.model_info()

    @app.get("/api/images")
    async def images():
        return {"images": explorer.image_list()}

    @app.post("/api/counterfactual")
    async def counterfactual(request: Request):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body):
            return error(413, f"request body over {max_body} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body:
                return error(413, f"request body over {max_body} bytes")
            chunks.append(chunk)
        try:
            body = json.loads(b"".join(chunks) or b"null")
        except (ValueError, UnicodeDecodeError, RecursionError):
            return error(400, "the body is not valid JSON")
        if not isinstance(body, dict):
            return error(400, "the body must be a JSON object")
        unknown = sorted(set(body) - set(BODY_KEYS))
        if unknown:
            return error(400, f"unknown field {unknown[0]!r} (use {', '.join(BODY_KEYS)})")
        if ("index" in body) == ("image" in body):
            return error(400, "give exactly one of index or image")
        try:
            if "index" in body:
                if body.get("observed") is not None:
                    return error(400, "observed goes with image; test images carry their own values")
                factual = explorer.factual(body["index"])
            else:
                factual = await run_in_threadpool(explorer.upload, body["image"], body.get("observed"))
            result = await run_in_threadpool(explorer.counterfactual, factual, body.get("do"), body.get("options"))
        except DiffSCMError as exc:
            return error(400, str(exc).splitlines()[0])
        except Busy as exc:
            return error(503, str(exc))
        if factual.notes:
            result["notes"] = factual.notes
        return result

    return app


@contextmanager
def running(explorer: Explorer, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0):
    """Serve in a background thread for the ``with`` block (notebooks, scripts, tests); yields the base URL.
    ``port`` 0 picks a free port."""
    import threading
    import time

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(create_app(explorer), host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    t0 = time.time()
    while not server.started:
        if not thread.is_alive() or time.time() - t0 > timeout:
            raise DiffSCMError(f"the explorer server did not start on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{'[' + host + ']' if ':' in host else host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout)
