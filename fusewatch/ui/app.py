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
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from fusewatch.errors import ConfigError
from fusewatch.ui.labels import LABELS, LabelStore, evidence_path
from fusewatch.ui.state import LiveState
from fusewatch.ui.zones import ZoneEditor

STATIC = Path(__file__).with_name("static")
access_log = logging.getLogger("fusewatch.ui.access")
COOKIE = "fusewatch_token"


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


def build_app(cfg, state: LiveState, store: LabelStore) -> Guard:
    evidence_dir = Path(cfg.ui.evidence_dir).expanduser()
    zones = ZoneEditor(cfg)
    for aid, lab in store.all().items():
        state.labels[aid] = {k: lab[k] for k in ("label", "note", "created")}

    async def page_index(_req):
        return FileResponse(STATIC / "index.html")

    async def page_alert(_req):
        return FileResponse(STATIC / "alert.html")

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
            return JSONResponse({"error": str(e)}, 400)
        state_f = q.get("state") or None
        if state_f not in (None, "open", "closed"):
            return JSONResponse({"error": "state must be open or closed"}, 400)
        return JSONResponse({"alerts": state.alert_list(q.get("camera") or None, since, until, state_f, limit)})

    async def api_alert(req):
        a = state.alert(req.path_params["id"])
        if a is None:
            return JSONResponse({"error": "unknown alert"}, 404)
        cam, aid = a["camera"], a["id"]
        try:
            files = {
                ext: f"/api/evidence/{cam}/{aid}.{ext}"
                for ext in ("mp4", "jpg")
                if evidence_path(evidence_dir, cam, aid, ext).is_file()
            }
        except ValueError:
            files = {}
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
            body = await req.json()
            label, note = body.get("label"), str(body.get("note", ""))
        except (ValueError, AttributeError):
            return JSONResponse({"error": 'expected a JSON object {"label": ...}'}, 400)
        if label not in LABELS:
            return JSONResponse({"error": f"label must be one of {', '.join(LABELS)}"}, 400)
        row = store.set(aid, a["camera"], label, note, a.get("record"))
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
            body = await req.json()
        except ValueError:
            return JSONResponse({"error": 'expected a JSON object {"polygons": [[[x, y], ...], ...]}'}, 400)
        try:
            polys = zones.save(cam, body)
        except ValueError as e:
            return JSONResponse({"error": str(e)}, 400)
        except ConfigError as e:
            return JSONResponse({"error": str(e)}, 500)
        return JSONResponse({"camera": cam, "zones": polys} | zones.info())

    async def api_evidence(req):
        cam, name = req.path_params["camera"], req.path_params["name"]
        stem, _, ext = name.rpartition(".")
        if ext not in ("mp4", "jpg"):
            return JSONResponse({"error": "evidence files are <alert id>.mp4 or .jpg"}, 404)
        try:
            p = evidence_path(evidence_dir, cam, stem, ext)
        except ValueError:
            return JSONResponse({"error": "bad path"}, 400)
        if not p.is_file():
            return JSONResponse({"error": "no such evidence file"}, 404)
        return FileResponse(p, media_type="video/mp4" if ext == "mp4" else "image/jpeg")

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
        Route("/api/cameras/{camera}/thumbnail.jpg", api_thumbnail),
        Route("/api/alerts", api_alerts),
        Route("/api/alerts/{id}", api_alert),
        Route("/api/alerts/{id}/label", api_label, methods=["POST", "DELETE"]),
        Route("/api/zones", api_zones),
        Route("/api/zones/{camera}", api_zones_put, methods=["PUT"]),
        Route("/api/evidence/{camera}/{name}", api_evidence),
        Route("/api/events", api_events),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Guard(Starlette(routes=routes), cfg.ui.token_value(), cfg.ui.access_log)
