"""The UI's web application (Starlette): pages, JSON REST API, server-sent events, evidence files.

Pages: ``/`` (camera tiles + alert list), ``/alerts/{id}`` (clip player, snapshot, score timeline,
zones overlay and editor, acknowledge / false-positive). API: see README "Web UI". Every request passes the
token check (when ``ui.token`` is set) and the access log (``fusewatch.ui.access``).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import stat
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from fusewatch.errors import ConfigError, SchemaError
from fusewatch.ui.labels import LABELS, LabelStore, clean_note, evidence_file, evidence_url, find_evidence
from fusewatch.ui.state import LiveState, check_json
from fusewatch.ui.zones import ZoneEditor

STATIC = Path(__file__).with_name("static")
access_log = logging.getLogger("fusewatch.ui.access")
log = logging.getLogger("fusewatch.ui")
COOKIE = "fusewatch_token"
MAX_BODY = 8 << 20
"""Largest JSON request body (bytes)."""
MAX_STILL_BYTES = 16 << 20
"""Largest evidence still served (bytes); evidence JPEGs are one frame."""
LABEL_BODY = 'expected a JSON object {"label": ...}'
ZONES_BODY = 'expected a JSON object {"polygons": [[[x, y], ...], ...]}'


class Guard:
    """Pure ASGI middleware: token check (Bearer header, cookie, or ``?token=`` once → cookie) and
    one access-log line per request (query strings are never logged: they may hold the token)."""

    def __init__(self, app, token: str | None, log_enabled: bool = True):
        self.app, self.token, self.log_enabled = app, token, log_enabled

    def _ok(self, scope) -> tuple[bool, bool]:
        if not self.token:
            return True, False
        req = Request(scope)
        auth = req.headers.get("authorization", "")
        cands = [auth[7:] if auth.lower().startswith("bearer ") else "", req.cookies.get(COOKIE, "")]
        q = req.query_params.get("token", "")
        ok = any(c and hmac.compare_digest(c.encode(), self.token.encode()) for c in cands)
        if not ok and q and hmac.compare_digest(q.encode(), self.token.encode()):
            return True, True
        return ok, False

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = {"code": 0}
        ok, set_cookie = self._ok(scope)

        async def send_wrapped(msg):
            if msg["type"] == "http.response.start":
                status["code"] = msg["status"]
                if set_cookie:
                    msg.setdefault("headers", []).append(
                        (b"set-cookie", f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict; Secure".encode())
                    )
                if self.log_enabled:
                    client = (scope.get("client") or ("-", 0))[0]
                    access_log.info(
                        "%s %s %s %d %.1fms",
                        client,
                        scope["method"],
                        scope["path"],
                        msg["status"],
                        (time.perf_counter() - t0) * 1000,
                    )
            await send(msg)

        if not ok:
            return await JSONResponse(
                {"error": "unauthorized: token required"}, 401, headers={"WWW-Authenticate": "Bearer"}
            )(scope, receive, send_wrapped)
        await self.app(scope, receive, send_wrapped)


def _float(v: str | None) -> float | None:
    if v in (None, ""):
        return None
    try:
        return float(v)
    except ValueError:
        raise ValueError(f"not a number: {v!r}") from None


class BadBody(ValueError):
    """A request body that is not the JSON object expected (``status``: 400, or 413 when too large)."""

    def __init__(self, msg: str, status: int = 400):
        super().__init__(msg)
        self.status = status


async def json_object(req: Request, expected: str, max_bytes: int = MAX_BODY) -> dict:
    """The request body as a JSON object of plain, finite, shallow data (:func:`check_json`: at most
    16 levels deep); :class:`BadBody` otherwise (invalid JSON, deep nesting, lone surrogates, NaN)."""
    chunks, n = [], 0
    async for chunk in req.stream():
        n += len(chunk)
        if n > max_bytes:
            raise BadBody(f"request body over {max_bytes} bytes", 413)
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise BadBody(f"{expected} (invalid JSON: {type(e).__name__})") from None
    if not isinstance(body, dict):
        raise BadBody(expected)
    try:
        check_json(body, max_depth=16, max_nodes=2_000_000, max_text=100_000)
    except SchemaError as e:
        raise BadBody(f"{expected} ({e})"[:300]) from None
    return body


def build_app(cfg, state: LiveState, store: LabelStore) -> Guard:
    evidence_dir = Path(cfg.ui.evidence_dir).expanduser()
    zones = ZoneEditor(cfg)
    for aid, lab in store.all().items():
        state.labels[aid] = {k: lab[k] for k in ("label", "note", "created")}

    # The two pages ship with the package: read once, served from memory (no file I/O per request).
    pages = {name: (STATIC / name).read_bytes() for name in ("index.html", "alert.html")}

    async def page_index(_req):
        return Response(pages["index.html"], media_type="text/html")

    async def page_alert(_req):
        return Response(pages["alert.html"], media_type="text/html")

    async def api_cameras(_req):
        try:
            z = zones.all()
        except ConfigError:
            z = cfg.zones
        return JSONResponse({"cameras": state.cameras(), "zones": z})

    async def api_thumbnail(req):
        th = state.thumbnail(req.path_params["camera"])
        if th is None:
            return JSONResponse({"error": "no thumbnail yet"}, 404)
        return Response(th.jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    async def api_alerts(req):
        q = req.query_params
        try:
            since, until = _float(q.get("since")), _float(q.get("until"))
            limit = int(q.get("limit", 500))
        except ValueError as e:
            return JSONResponse({"error": str(e)[:200]}, 400)
        if limit < 0:
            return JSONResponse({"error": "limit must be >= 0"}, 400)
        state_f = q.get("state") or None
        if state_f not in (None, "open", "closed"):
            return JSONResponse({"error": "state must be open or closed"}, 400)
        return JSONResponse({"alerts": state.alert_list(q.get("camera") or None, since, until, state_f, limit)})

    async def api_alert(req):
        a = state.alert(req.path_params["id"])
        if a is None:
            return JSONResponse({"error": "unknown alert"}, 404)
        cam = a["camera"]
        files = {}
        for ext in ("mp4", "jpg"):
            p = find_evidence(evidence_dir, cam, a["id"], ext)
            if p is not None:
                files[ext] = evidence_url(p, evidence_dir)
        return JSONResponse(a | {"files": files, "zones": zones.for_camera(cam)})

    async def api_label(req):
        aid = req.path_params["id"]
        a = state.alert(aid)
        if a is None:
            return JSONResponse({"error": "unknown alert"}, 404)
        if req.method == "DELETE":
            store.delete(aid)
            state.set_label(aid, None)
            return JSONResponse({"id": aid, "label": None})
        try:
            body = await json_object(req, LABEL_BODY)
        except BadBody as e:
            return JSONResponse({"error": str(e)}, e.status)
        label, note = body.get("label"), body.get("note")
        if label not in LABELS:
            return JSONResponse({"error": f"label must be one of {', '.join(LABELS)}"}, 400)
        if not isinstance(note, (str, type(None))):
            return JSONResponse({"error": "note must be text"}, 400)
        row = store.set(aid, a["camera"], label, clean_note(note or ""), a.get("record"))
        state.set_label(aid, {"label": label, "note": row["note"], "created": row["created"]})
        return JSONResponse({"id": aid, "label": label, "note": row["note"], "created": row["created"]})

    async def api_zones(_req):
        try:
            return JSONResponse({"zones": zones.all()} | zones.info())
        except ConfigError as e:
            return JSONResponse({"error": str(e)}, 500)

    async def api_zones_put(req):
        cam = req.path_params["camera"]
        try:
            body = await json_object(req, ZONES_BODY)
        except BadBody as e:
            return JSONResponse({"error": str(e)}, e.status)
        try:
            polys = zones.save(cam, body)
        except (ValueError, RecursionError) as e:
            return JSONResponse({"error": str(e)}, 400)
        except ConfigError as e:
            return JSONResponse({"error": str(e)}, 500)
        return JSONResponse({"camera": cam, "zones": polys} | zones.info())

    async def api_evidence(req):
        cam, name = req.path_params["camera"], req.path_params["name"]
        stem, _, ext = name.rpartition(".")
        if ext not in ("mp4", "jpg") or not stem:
            return JSONResponse({"error": "evidence files are <alert id>.mp4 or .jpg"}, 404)
        try:
            p = evidence_file(evidence_dir, cam, name)
        except ValueError:
            return JSONResponse({"error": "bad path"}, 400)
        try:
            st = p.stat()
            found = stat.S_ISREG(st.st_mode)
        except OSError:  # missing, or e.g. a name too long for the file system
            found = False
        if not found:
            return JSONResponse({"error": "no such evidence file"}, 404)
        if ext == "mp4":  # clips: streamed, with HTTP ranges (the browser's player seeks)
            return FileResponse(p, media_type="video/mp4", stat_result=st)
        # a still: small, read whole (in a worker thread), so a read error is a clear 500, never a
        # 200 with a cut body
        if st.st_size > MAX_STILL_BYTES:
            return JSONResponse({"error": f"evidence image over {MAX_STILL_BYTES} bytes"}, 500)
        try:
            data = await run_in_threadpool(p.read_bytes)
        except OSError as e:
            log.warning("ui: cannot read evidence %s: %s", p, e)
            return JSONResponse({"error": f"cannot read evidence file: {e.strerror or e}"}, 500)
        return Response(data, media_type="image/jpeg")

    async def api_events(req):
        loop = asyncio.get_running_loop()
        q = state.subscribe(loop)

        async def gen():
            try:
                yield "retry: 2000\n: connected\n\n"
                while True:
                    try:
                        kind, data, _t = await asyncio.wait_for(q.get(), 15.0)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    yield f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
            finally:
                state.unsubscribe(q)

        return StreamingResponse(
            gen(), media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )

    async def api_status(_req):
        return JSONResponse({"cameras": len(state.scores), "alerts": len(state.alerts), "events": state.events})

    routes = [
        Route("/", page_index),
        Route("/alerts/{id}", page_alert),
        Route("/api/status", api_status),
        Route("/api/cameras", api_cameras),
        Route("/api/cameras/{camera:path}/thumbnail.jpg", api_thumbnail),  # camera ids may hold "/"
        Route("/api/alerts", api_alerts),
        Route("/api/alerts/{id}", api_alert),
        Route("/api/alerts/{id}/label", api_label, methods=["POST", "DELETE"]),
        Route("/api/zones", api_zones),
        Route("/api/zones/{camera:path}", api_zones_put, methods=["PUT"]),
        Route("/api/evidence/{camera}/{name}", api_evidence),
        Route("/api/events", api_events),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Guard(Starlette(routes=routes), cfg.ui.token_value(), cfg.ui.access_log)
