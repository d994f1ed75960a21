"""The web UI's server over a real in-process bus and a real uvicorn socket: REST API, SSE, token
auth, access log, bind guard, evidence files, labels in SQLite (persist across a restart), the
per-camera thresholds file and zones."""

from __future__ import annotations

import json
import logging
import socket
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from fusewatch.errors import ConfigError
from fusewatch.stream.alert_schema import AlertMessage
from fusewatch.stream.config import load_config
from fusewatch.stream.live import decode_score, decode_thumbnail, encode_score, encode_thumbnail
from fusewatch.stream.transport import BusTransport, InProcessBus

pytest.importorskip("uvicorn")
from fusewatch.ui.server import UiServer  # noqa: E402


def _alert(aid="a1", typ="new", cam="cam1", start=1000.0, end=1003.2, score=0.9):
    return AlertMessage(
        id=aid,
        type=typ,
        camera=cam,
        score=score,
        peak=score,
        start_clip=3,
        end_clip=5,
        start_time=start,
        end_time=end,
        model_name="lego",
        model_version="v1",
        backend="onnxruntime",
    )


def _get(url, token=None, method="GET", body=None):
    req = urllib.request.Request(
        url,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
    )
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.headers, r.read()


def _wait(pred, timeout=10.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture
def site(tmp_path):
    cfg = load_config(
        overrides={"ui.port": "0", "ui.data_dir": str(tmp_path / "ui"), "ui.evidence_dir": str(tmp_path / "ev")}
    )
    cfg.zones = {"cam1": [[[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]]}
    bus = InProcessBus(partitions=3)
    prod = BusTransport(bus)
    srv = UiServer(cfg, BusTransport(bus)).start()
    yield cfg, prod, srv
    srv.stop()


def test_rest_api_sse_labels_and_evidence(site, tmp_path, caplog):
    cfg, prod, srv = site
    caplog.set_level(logging.INFO, logger="fusewatch.ui.access")
    img = np.zeros((240, 360, 3), np.uint8)
    img[:, :, 0] = 200
    prod.produce(cfg.topics.thumbnails, "cam1", encode_thumbnail("cam1", img, 1000.0, 0, width=160))
    for i in range(8):
        prod.produce(
            cfg.topics.scores, "cam1", encode_score("cam1", i, 1000.0 + 1.6 * i, 0.1 * i, "v1", 16 * i, 16 * i + 15)
        )
    prod.produce(cfg.topics.alerts, "cam1", _alert().encode())
    prod.produce(cfg.topics.alerts, "cam2", _alert("b2", cam="cam2", start=2000, end=2001).encode())
    prod.produce(cfg.topics.alerts, "cam2", _alert("b2", "end", cam="cam2", start=2000, end=2005).encode())
    prod.produce(
        cfg.topics.alerts, "cam1", json.dumps({"v": 2, "kind": "health", "camera": "cam1", "state": "ok"}).encode()
    )
    prod.produce(cfg.topics.alerts, "cam1", b"\x00garbage")
    base = srv.url
    _wait(lambda: srv.state.alerts.get("b2", {}).get("state") == "closed" and "cam1" in srv.state.health)

    cams = json.loads(_get(base + "api/cameras")[2])
    c1 = next(c for c in cams["cameras"] if c["camera"] == "cam1")
    assert len(c1["scores"]) == 8 and c1["open_alerts"] == 1 and c1["health"]["state"] == "ok"
    assert c1["thumbnail"]["width"] == 160
    st, hdr, jpg = _get(base + "api/cameras/cam1/thumbnail.jpg")
    assert hdr["content-type"] == "image/jpeg" and jpg[:2] == b"\xff\xd8"

    al = json.loads(_get(base + "api/alerts")[2])["alerts"]
    assert [a["id"] for a in al] == ["a1", "b2"]  # open first, then recent
    assert [a["id"] for a in json.loads(_get(base + "api/alerts?camera=cam2")[2])["alerts"]] == ["b2"]
    assert [a["id"] for a in json.loads(_get(base + "api/alerts?since=1500")[2])["alerts"]] == ["b2"]
    assert [a["id"] for a in json.loads(_get(base + "api/alerts?until=1500")[2])["alerts"]] == ["a1"]
    with pytest.raises(urllib.error.HTTPError) as e:
        _get(base + "api/alerts?since=soon")
    assert e.value.code == 400

    a1 = json.loads(_get(base + "api/alerts/a1")[2])
    assert a1["state"] == "open" and a1["files"] == {} and a1["zones"] == cfg.zones["cam1"]
    assert [p[0] for p in a1["timeline"]] == list(range(8))
    with pytest.raises(urllib.error.HTTPError) as e:
        _get(base + "api/alerts/nope")
    assert e.value.code == 404

    # evidence files in <dir>/<camera>/<id>.jpg; a traversal attempt is refused
    (tmp_path / "ev" / "cam1").mkdir(parents=True)
    (tmp_path / "ev" / "cam1" / "a1.jpg").write_bytes(jpg)
    assert json.loads(_get(base + "api/alerts/a1")[2])["files"] == {"jpg": "/api/evidence/cam1/a1.jpg"}
    assert _get(base + "api/evidence/cam1/a1.jpg")[2] == jpg
    for bad in ("api/evidence/cam1/..%2Fx.jpg", "api/evidence/cam1/a1.txt", "api/evidence/cam1/zz.mp4"):
        with pytest.raises(urllib.error.HTTPError):
            _get(base + bad)
    # a clip is streamed with HTTP ranges (the player seeks); an oversized still is refused whole
    clip = bytes(range(256)) * 64
    (tmp_path / "ev" / "cam1" / "a1.mp4").write_bytes(clip)
    req = urllib.request.Request(base + "api/evidence/cam1/a1.mp4", headers={"Range": "bytes=100-199"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 206 and r.headers["content-type"] == "video/mp4" and r.read() == clip[100:200]
    with open(tmp_path / "ev" / "cam1" / "big.jpg", "wb") as f:
        f.truncate((16 << 20) + 1)  # sparse
    with pytest.raises(urllib.error.HTTPError) as e:
        _get(base + "api/evidence/cam1/big.jpg")
    assert e.value.code == 500 and b"over" in e.value.read()
    st, hdr, page = _get(base)
    assert hdr["content-type"].startswith("text/html") and b"<html" in page.lower()

    # SSE: a new score arrives as an event on an open stream
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(b"GET /api/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
    buf = b""
    while b": connected" not in buf:
        buf += s.recv(4096)
    prod.produce(cfg.topics.scores, "cam1", encode_score("cam1", 8, 1012.8, 0.77, "v1"))
    while b'"clip":8' not in buf:
        buf += s.recv(4096)
    assert b"event: score" in buf and b"text/event-stream" in buf
    s.close()

    # labels: stored in SQLite, validated, visible in the list
    with pytest.raises(urllib.error.HTTPError) as e:
        _get(base + "api/alerts/a1/label", method="POST", body={"label": "maybe"})
    assert e.value.code == 400
    st, _, body = _get(base + "api/alerts/a1/label", method="POST", body={"label": "false_positive", "note": "shadow"})
    assert json.loads(body)["label"] == "false_positive"
    assert json.loads(_get(base + "api/alerts?camera=cam1")[2])["alerts"][0]["label"] == "false_positive"
    assert srv.store.all()["a1"]["note"] == "shadow"
    lines = [r.getMessage() for r in caplog.records if r.name == "fusewatch.ui.access"]
    assert any(" POST /api/alerts/a1/label 200 " in m for m in lines)
    assert not any("since=" in m for m in lines)  # query strings never reach the log


def test_labels_survive_restart(tmp_path):
    cfg = load_config(overrides={"ui.port": "0", "ui.data_dir": str(tmp_path / "ui")})
    bus = InProcessBus(partitions=1)
    BusTransport(bus).produce(cfg.topics.alerts, "cam1", _alert().encode())
    srv = UiServer(cfg, BusTransport(bus)).start()
    _wait(lambda: "a1" in srv.state.alerts)
    _get(srv.url + "api/alerts/a1/label", method="POST", body={"label": "ack"})
    srv.stop()
    srv = UiServer(cfg, BusTransport(bus)).start()
    try:
        _wait(lambda: "a1" in srv.state.alerts)
        assert json.loads(_get(srv.url + "api/alerts/a1")[2])["label"] == "ack"
    finally:
        srv.stop()


def test_token_auth_and_bind_guard(tmp_path):
    cfg = load_config(overrides={"ui.port": "0", "ui.data_dir": str(tmp_path / "ui"), "ui.token": "s3cret"})
    srv = UiServer(cfg, BusTransport(InProcessBus())).start()
    try:
        with pytest.raises(urllib.error.HTTPError) as e:
            _get(srv.url + "api/alerts")
        assert e.value.code == 401
        with pytest.raises(urllib.error.HTTPError):
            _get(srv.url + "api/alerts", token="wrong")
        assert _get(srv.url + "api/alerts", token="s3cret")[0] == 200
        st, hdr, _ = _get(srv.url + "?token=s3cret")  # a page link with the token sets the cookie
        assert "fusewatch_token=s3cret" in hdr["set-cookie"] and "HttpOnly" in hdr["set-cookie"]
    finally:
        srv.stop()
    for over, msg in (
        ({"ui.host": "0.0.0.0"}, "needs ui.token and ui.tls_certfile"),
        ({"ui.host": "0.0.0.0", "ui.token": "t"}, "needs ui.tls_certfile"),
    ):
        c = load_config(overrides={"ui.data_dir": str(tmp_path / "ui"), **over})
        with pytest.raises(ConfigError, match=msg):
            UiServer(c, BusTransport(InProcessBus()))
    with pytest.raises(ConfigError, match="tls_certfile/tls_keyfile"):
        load_config(overrides={"ui.tls_certfile": "/x.pem"})
    assert "s3cret" in cfg.secrets() and cfg.redacted()["ui"]["token"] == "***"


def test_live_records_roundtrip():
    d = decode_score(encode_score("c", 3, 12.5, 0.25, "v9", 48, 63))
    assert (d["camera"], d["clip"], d["score"], d["frame_end"]) == ("c", 3, 0.25, 63)
    t = decode_thumbnail(encode_thumbnail("c", np.full((480, 640, 3), 90, np.uint8), 5.0, 7, width=320))
    assert (t.camera, t.width, t.height, t.frame) == ("c", 320, 240, 7) and t.jpeg[:2] == b"\xff\xd8"


def test_zones_schema_and_zone_score():
    from fusewatch.engines.serving.site import zone_score

    cfg = load_config(overrides={})
    from fusewatch.stream.config import Config

    z = Config.model_validate({"zones": {"cam1": [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]}}).zones["cam1"]
    with pytest.raises(ValueError):  # pydantic's ValidationError is a ValueError
        Config.model_validate({"zones": {"cam1": [[0, 0], [2, 0], [1, 1]]}})
    amap = [[0.1, 0.9], [0.2, 0.1]]  # the anomaly is in the right half
    assert zone_score(0.9, amap, z) == pytest.approx(0.2)  # left half only: the peak is excluded
    assert zone_score(0.9, None, z) == 0.9  # clip-level model: no-op
    assert zone_score(0.9, amap, None) == 0.9 and cfg.zones == {}
