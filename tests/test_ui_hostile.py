"""The web UI against hostile records and requests: one record never stops the feed thread, stored
records never make an API call fail (NaN, lone surrogates), odd paths and bodies get 4xx, evidence
of cameras like ``"cam 1"`` is found where the evidence writer stores it, and the alert store stays
bounded (open alerts included)."""

from __future__ import annotations

import http.client
import json
import logging
import struct

import pytest

from fusewatch.errors import SchemaError
from fusewatch.stream.config import load_config
from fusewatch.stream.evidence.segments import camera_dir_name
from fusewatch.stream.live import THUMB_MAGIC, decode_score, decode_thumbnail, encode_score
from fusewatch.stream.transport import BusTransport, InProcessBus
from tests.test_ui_api import _alert, _wait

pytest.importorskip("uvicorn")
from fusewatch.ui.server import UiServer  # noqa: E402
from fusewatch.ui.state import LiveState  # noqa: E402


def _raw_alert(**kw) -> bytes:
    d = {
        "v": 2,
        "kind": "alert",
        "id": "x1",
        "type": "new",
        "camera": "cam1",
        "epoch": 0,
        "score": 0.9,
        "peak": 0.9,
        "start_clip": 0,
        "end_clip": 1,
        "start_time": 1000.0,
        "end_time": 1003.0,
        "model": {"name": "m", "version": "1", "backend": "ort"},
        "evidence": [],
        "produced": 1000.0,
    }
    d.update(kw)
    return json.dumps(d, separators=(",", ":")).encode()


def _thumb(header: bytes) -> bytes:
    return THUMB_MAGIC + struct.pack(">I", len(header)) + header + b"\xff\xd8"


def _req(srv, path: str, method: str = "GET", body: bytes | None = None) -> tuple[int, bytes]:
    """One raw request (the path is sent as given); ``(status, body)``."""
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        c.request(method, path, body=body, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def _server(tmp_path, **over):
    cfg = load_config(
        overrides={
            "ui.port": "0",
            "ui.data_dir": str(tmp_path / "ui"),
            "ui.evidence_dir": str(tmp_path / "ev"),
            "ui.access_log": "false",
            **over,
        }
    )
    bus = InProcessBus(partitions=1)
    return cfg, BusTransport(bus), UiServer(cfg, BusTransport(bus)).start()


@pytest.fixture
def site(tmp_path):
    cfg, prod, srv = _server(tmp_path)
    yield cfg, prod, srv
    srv.stop()


KILLERS = {
    "deep_json_alert": ("alerts", b'{"v":2,"kind":"alert","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    "bigint_alert_score": ("alerts", _raw_alert(id="big", score=10**400)),
    "bigint_score_time": (
        "scores",
        b'{"v":1,"kind":"score","camera":"c","clip":1,"time":' + b"9" * 400 + b',"score":0.5}',
    ),
    "bigint_thumbnail_time": ("thumbnails", _thumb(b'{"camera":"c","time":' + b"9" * 400 + b',"width":1,"height":1}')),
}


@pytest.mark.parametrize("case", sorted(KILLERS))
def test_feed_survives_a_killer_record(site, case):
    cfg, prod, srv = site
    topic, payload = KILLERS[case]
    prod.produce(getattr(cfg.topics, topic), "c", payload)
    prod.produce(cfg.topics.alerts, "cam1", _alert("after").encode())
    _wait(lambda: "after" in srv.state.alerts, 5)
    assert srv.feed.thread.is_alive() and srv.feed.skipped == 1 and sum(srv.feed.reasons.values()) == 1
    st, body = _req(srv, "/api/alerts")
    assert st == 200 and [a["id"] for a in json.loads(body)["alerts"]] == ["after"]


def test_a_bad_record_is_counted_and_logged_once(site, caplog):
    cfg, prod, srv = site
    caplog.set_level(logging.WARNING, logger="fusewatch.ui")
    for _ in range(3):
        prod.produce(cfg.topics.scores, "c", b'{"v":1,"kind":"score","camera":"c","clip":1,"time":NaN,"score":0.5}')
    prod.produce(cfg.topics.alerts, "cam1", _alert("after").encode())
    _wait(lambda: "after" in srv.state.alerts, 5)
    assert srv.feed.reasons == {"non_finite": 3}
    assert sum("skipped a record" in r.getMessage() for r in caplog.records) == 1


def test_non_finite_and_bad_text_records_never_cause_500(site):
    cfg, prod, srv = site
    prod.produce(cfg.topics.alerts, "cam1", _alert("a1").encode())
    _wait(lambda: "a1" in srv.state.alerts, 5)
    hostile = [
        (
            cfg.topics.alerts,
            b'{"v":2,"kind":"health","camera":"cam1","state":"frozen","previous":"ok","since":NaN,'
            b'"detail":"","produced":1}',
        ),
        (
            cfg.topics.alerts,
            b'{"v":2,"kind":"evidence","alert_id":"a1","camera":"cam1","clip":{},"snapshot":null,"alert":{},'
            b'"produced":Infinity}',
        ),
        (cfg.topics.scores, b'{"v":1,"kind":"score","camera":"cam2","clip":1,"time":NaN,"score":0.5}'),
        (cfg.topics.thumbnails, _thumb(b'{"camera":"cam3","time":NaN,"width":1,"height":1}')),
    ]
    for topic, payload in hostile:
        prod.produce(topic, "k", payload)
    prod.produce(cfg.topics.alerts, "cam1", _alert("after").encode())
    _wait(lambda: "after" in srv.state.alerts, 5)
    # records that reach the state by another path are checked there too
    with pytest.raises(SchemaError):
        srv.state.add_alert(json.loads(_raw_alert(id="S")) | {"id": "\ud800"})
    with pytest.raises(SchemaError):
        srv.state.add_health({"camera": "cam1", "since": float("inf")})
    for path in ("/api/cameras", "/api/alerts", "/api/alerts/a1", "/api/status"):
        st, body = _req(srv, path)
        assert st == 200, (path, body[:200])
    assert srv.feed.thread.is_alive() and srv.feed.skipped == len(hostile)
    assert "\ud800" not in srv.state.alerts and srv.state.health == {} and srv.state.evidence == {}


def test_live_decoders_reject_non_finite_and_out_of_range():
    assert decode_score(encode_score("c", 1, 1000.0, 0.5))["score"] == 0.5
    for bad in (
        b'{"v":1,"kind":"score","camera":"c","clip":1,"time":NaN,"score":0.5}',
        b'{"v":1,"kind":"score","camera":"c","clip":1,"time":1.0,"score":Infinity}',
        b'{"v":1,"kind":"score","camera":"c","clip":1,"time":1e999,"score":0.5}',
        b'{"v":1,"kind":"score","camera":"c","clip":1,"time":' + b"9" * 400 + b',"score":0.5}',
        b'{"v":1,"kind":"score","camera":"c","clip":' + b"9" * 400 + b',"time":1.0,"score":0.5}',
        b'{"v":1,"kind":"score","camera":"\\ud800","clip":1,"time":1.0,"score":0.5}',
        b'{"v":1,"kind":"score","camera":"c","clip":1,"time":1.0,"score":0.5,"anomaly_map":[[NaN]]}',
    ):
        with pytest.raises(SchemaError):
            decode_score(bad)
    for head in (
        b'{"camera":"c","time":NaN,"width":1,"height":1}',
        b'{"camera":"c","time":' + b"9" * 400 + b',"width":1,"height":1}',
        b'{"camera":"c","time":1.0,"width":' + b"9" * 400 + b',"height":1}',
        b'{"camera":"c","time":1.0,"width":-1,"height":1}',
        b"[" * 50_000,
    ):
        with pytest.raises(SchemaError):
            decode_thumbnail(_thumb(head))


def test_odd_requests_get_4xx(site, tmp_path):
    cfg, prod, srv = site
    (tmp_path / "ev" / "cam1").mkdir(parents=True)
    prod.produce(cfg.topics.alerts, "cam1", _alert("a1").encode())
    _wait(lambda: "a1" in srv.state.alerts, 5)
    st, _ = _req(srv, "/api/evidence/cam1/" + "x" * 5000 + ".jpg")
    assert 400 <= st < 500
    st, _ = _req(srv, "/api/evidence/%2Ebuffer/index.jpg")
    assert 400 <= st < 500
    deep = b'{"label":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    for path, method, body in (
        ("/api/alerts/a1/label", "POST", deep),
        ("/api/alerts/a1/label", "POST", b'{"label":' + b"[" * 50 + b"]" * 50 + b"}"),
        ("/api/alerts/a1/label", "POST", b'{"label":"ack","note":"\\ud800"}'),
        ("/api/alerts/a1/label", "POST", b"[1]"),
        ("/api/zones/cam1", "PUT", b'{"polygons":' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    ):
        st, out = _req(srv, path, method, body)
        assert st == 400, (path, body[:30], out[:200])
    assert srv.store.all() == {}
    st, out = _req(srv, "/api/alerts/a1/label", "POST", b'{"label":"ack","note":"ok"}')
    assert st == 200 and srv.store.all()["a1"]["note"] == "ok"


def test_evidence_of_cameras_with_odd_names(site, tmp_path):
    cfg, prod, srv = site
    for i, cam in enumerate(("cam 1", "gate/1")):
        d = tmp_path / "ev" / camera_dir_name(cam)  # where the evidence writer stores the files
        d.mkdir(parents=True)
        (d / f"e{i}.mp4").write_bytes(b"clip %d" % i)
        prod.produce(cfg.topics.alerts, cam, _alert(f"e{i}", cam=cam).encode())
    _wait(lambda: "e1" in srv.state.alerts, 5)
    for i, url in enumerate(("/api/evidence/cam%25201/e0.mp4", "/api/evidence/gate%252F1/e1.mp4")):
        st, body = _req(srv, f"/api/alerts/e{i}")
        assert st == 200 and json.loads(body)["files"] == {"mp4": url}
        st, body = _req(srv, url)
        assert st == 200 and body == b"clip %d" % i
    prod.produce(cfg.topics.thumbnails, "gate/1", _thumb(b'{"camera":"gate/1","time":1000.0,"width":1,"height":1}'))
    _wait(lambda: srv.state.thumbnail("gate/1"), 5)
    assert _req(srv, "/api/cameras/gate%2F1/thumbnail.jpg") == (200, b"\xff\xd8")


def test_open_alerts_are_trimmed(tmp_path):
    cfg, prod, srv = _server(tmp_path, **{"ui.max_alerts": "10"})
    try:
        for i in range(30):  # never closed, each from its own camera
            prod.produce(
                cfg.topics.alerts, "k", _alert(f"o{i:02d}", cam=f"c{i}", start=1000 + i, end=1001 + i).encode()
            )
        _wait(lambda: srv.feed.records >= 30, 5)
        assert sorted(srv.state.alerts) == [f"o{i}" for i in range(20, 30)]  # the newest are kept
        st, body = _req(srv, "/api/cameras")
        cams = json.loads(body)["cameras"]
        assert st == 200 and sum(c["open_alerts"] for c in cams) == 10
    finally:
        srv.stop()


def test_state_trims_closed_first_and_bounds_cameras():
    st = LiveState(max_alerts=10, max_cameras=5)

    def rec(aid, typ, t, cam="c"):
        return json.loads(_raw_alert(id=aid, type=typ, camera=cam, start_time=t, end_time=t + 1))

    for i in range(10):
        st.add_alert(rec(f"a{i}", "new", 1000.0 + i))
    st.add_alert(rec("a5", "end", 1005.0))
    st.add_alert(rec("a3", "end", 1003.0))
    st.add_alert(rec("late", "new", 900.0))  # 11 alerts: the oldest closed one goes
    assert "a3" not in st.alerts and "a5" in st.alerts and len(st.alerts) == 10
    for i in range(20):
        st.add_alert(rec(f"b{i}", "new", 2000.0 + i, cam=f"k{i}"))
    assert len(st.alerts) == 10 and all(a["id"].startswith("b") for a in st.alerts.values())
    assert sorted(st.scores) == [f"k{i}" for i in range(15, 20)]
    assert sum(c["open_alerts"] for c in st.cameras()) == 5  # the others' cameras were dropped
