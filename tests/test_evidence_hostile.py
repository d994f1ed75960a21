"""The evidence writer against hostile alert records (review s19, FINDINGS items 2-6): every
decoded field is untrusted, so most tests swap in a lenient decoder (the one before the decoder
was tightened: no id/range checks, a 400-digit integer raises OverflowError) to show that the
writer is safe on its own. Real footage: a 6 s scene recorded once into camera c1's packet buffer
by the worker (PyAV), copied into each test's store; records go through the in-process bus."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import pytest

import fusewatch.stream.evidence.writer as W
from fusewatch.errors import SchemaError
from fusewatch.stream.alert_schema import AlertMessage
from fusewatch.stream.config import load_config
from fusewatch.stream.evidence.writer import EvidenceWriter, apply_retention
from fusewatch.stream.transport import BusTransport, InProcessBus
from fusewatch.stream.worker import Worker
from fusewatch.testing import MeanRGB, scene_video

pytestmark = pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg not installed")
ANCHOR = 1_000.0
UNSAFE = "alert with an unsafe camera or id refused"
CAPPED = "too many open alerts: the least recently updated dropped"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """An evidence store whose buffer holds 6 s of camera c1 (capture times ANCHOR .. ANCHOR + 6)."""
    work = tmp_path_factory.mktemp("rec")
    cfg = load_config(env={})
    cfg.evidence.enabled, cfg.evidence.dir = True, str(work / "store")
    video = scene_video(work / "scene.mp4", (("moving", 6.0),))
    bus = BusTransport(InProcessBus())
    Worker(cfg, "c1", str(video), transport=bus, extractors=[MeanRGB()], wall_anchor=ANCHOR, serve_metrics=False).run()
    return work / "store"


def lenient_decode(data, max_bytes=0) -> AlertMessage:
    """The decoder before it was tightened: any id/camera, bigints → OverflowError, missing → KeyError."""
    try:
        o = json.loads(bytes(data))
    except ValueError as e:
        raise SchemaError("bad_json", str(e)) from None
    m = o["model"]
    return AlertMessage(
        id=o["id"],
        type=o["type"],
        camera=o["camera"],
        score=float(o["score"]),
        peak=float(o["peak"]),
        start_clip=o["start_clip"],
        end_clip=o["end_clip"],
        start_time=float(o["start_time"]),
        end_time=float(o["end_time"]),
        model_name=m["name"],
        model_version=m["version"],
        backend=m["backend"],
        anomaly_map=o.get("anomaly_map"),
    )


@pytest.fixture
def lenient(monkeypatch):
    monkeypatch.setattr(W, "decode_alert", lenient_decode)


def setup(tmp_path, recorded, **ev):
    """``(cfg, bus, producer)`` on a copy of the recorded store (pre-roll 1 s, wait 0.3 s)."""
    store = tmp_path / "store"
    shutil.copytree(recorded, store)
    cfg = load_config(env={})
    cfg.evidence.enabled, cfg.evidence.dir = True, str(store)
    cfg.evidence.pre_seconds, cfg.evidence.wait_s = 1.0, 0.3
    for k, v in ev.items():
        setattr(cfg.evidence, k, v)
    bus = InProcessBus(partitions=1)
    return cfg, bus, BusTransport(bus)


def alert(aid, typ, camera="c1", start=2.0, end=4.0, **kw) -> bytes:
    """A v2 alert record as JSON (``\\udfff`` escapes and huge integers pass through)."""
    d = {
        "v": 2,
        "kind": "alert",
        "id": aid,
        "type": typ,
        "camera": camera,
        "epoch": 0,
        "score": 0.9,
        "peak": 0.9,
        "start_clip": 0,
        "end_clip": 1,
        "start_time": ANCHOR + start,
        "end_time": ANCHOR + end,
        "model": {"name": "m", "version": "1", "backend": "ort"},
        "evidence": [],
        "produced": ANCHOR + end,
    }
    d.update(kw)
    return json.dumps(d).encode()


def send(cfg, prod, *records: bytes) -> None:
    for r in records:
        prod.produce(cfg.topics.alerts, "c1", r)


def drive(w: EvidenceWriter, until, secs: float = 15.0) -> None:
    """Step (exceptions propagate: the writer must not raise) until ``until()`` or ``secs`` pass."""
    deadline = time.monotonic() + secs
    while not until() and time.monotonic() < deadline:
        w.step(0.05)
    assert until(), "condition not reached in time"


def committed(cfg, bus) -> tuple[int | None, int]:
    tp = (cfg.topics.alerts, 0)
    return bus.committed(cfg.evidence.group_id, tp), bus.bounds(tp)[1]


def at_end(cfg, bus) -> bool:
    c, end = committed(cfg, bus)
    return c == end


def test_traversal_ids_stay_inside_the_store(tmp_path, recorded, lenient):  # item 2
    cfg, bus, prod = setup(tmp_path, recorded)
    store = Path(cfg.evidence.dir)
    outside = tmp_path / "abs_target"
    outside.mkdir()
    ids = ["../../escaped_rel", str(outside / "escaped_abs"), "sub/dir/x", "..", ".hidden", "ok1"]
    bad = ["\udfff", "x" * 900, ""]  # no safe file name: refused, counted
    (store / "c1").mkdir()
    (outside / "secret.mp4").write_bytes(b"secret")
    (store / "c1" / "link1.mp4").symlink_to(outside / "secret.mp4")  # a link leading out: refused
    for aid in ids + bad + ["link1"]:
        send(cfg, prod, alert(aid, "new"), alert(aid, "end"))
    w = EvidenceWriter(cfg, BusTransport(bus), from_beginning=True)
    drive(w, lambda: len(w.records) == len(ids) and not w.jobs and at_end(cfg, bus))
    media = [p for p in tmp_path.rglob("*") if p.suffix in (".mp4", ".jpg") and ".buffer" not in p.parts]
    files = [p for p in media if p.is_file() and not p.is_symlink() and p.name != "secret.mp4"]
    assert len(files) == 2 * len(ids) and {p.parent for p in files} == {store / "c1"}
    assert {r["alert_id"] for r in w.records} == set(ids) and (outside / "secret.mp4").read_bytes() == b"secret"
    assert len(w.failures) == 1 and w.failures[0].startswith("link1: clip not written")
    assert "outside the evidence folder" in w.failures[0]
    for r in w.records:
        for f in (r["clip"], r["snapshot"]):
            assert (
                ".." not in Path(f["path"]).parts and (store / f["path"]).resolve().parent == (store / "c1").resolve()
            )
    paths = {r["alert_id"]: r["clip"]["path"] for r in w.records}
    assert paths["../../escaped_rel"] == "c1/%2E.%2F..%2Fescaped_rel.mp4" and paths["ok1"] == "c1/ok1.mp4"
    assert paths["sub/dir/x"] == "c1/sub%2Fdir%2Fx.mp4" and paths[".."] == "c1/%2E..mp4"
    assert w.counts[UNSAFE] == 2 * len(bad)
    old = time.time() - 40 * 86400
    for p in files:
        os.utime(p, (old, old))
    assert apply_retention(store, max_age_days=30, max_total_mb=1e6) == 2 * len(ids)  # retention finds them all


def test_poison_record_between_valid_ones_loses_nothing(tmp_path, recorded, lenient, caplog):  # item 3
    cfg, bus, prod = setup(tmp_path, recorded)
    send(
        cfg,
        prod,
        alert("before", "new"),
        alert("before", "end"),
        alert("bad", "new", score=10**400),  # OverflowError in the decoder
        b'{"kind": "alert", "v": 2}',  # KeyError in the decoder
        alert("after", "new"),
        alert("after", "end"),
    )
    w = EvidenceWriter(cfg, BusTransport(bus), from_beginning=True)
    with caplog.at_level(logging.WARNING, logger="fusewatch"):
        drive(w, lambda: len(w.records) == 2 and at_end(cfg, bus))
    assert [r["alert_id"] for r in w.records] == ["before", "after"]
    assert w.counts["record failed (OverflowError)"] == 1 and w.counts["record failed (KeyError)"] == 1
    assert sum("record failed (OverflowError)" in r.getMessage() for r in caplog.records) == 1


def test_a_job_raising_in_process_does_not_stall_the_writer(tmp_path, recorded, lenient, monkeypatch):  # item 4
    cfg, bus, prod = setup(tmp_path, recorded)
    real_cut, calls = W.cut_clip, []

    def cut(bdir, segs, start, end, out, *a):
        calls.append(out.name)
        if out.name == "boom.mp4":
            raise RuntimeError("unexpected")
        return real_cut(bdir, segs, start, end, out, *a)

    monkeypatch.setattr(W, "cut_clip", cut)
    send(
        cfg,
        prod,
        alert("bad", "end", camera="\udfff"),  # camera_dir_name raised on every step before
        alert("boom", "new"),
        alert("boom", "end"),
        alert("after", "new"),
        alert("after", "end"),
    )
    w = EvidenceWriter(cfg, BusTransport(bus), from_beginning=True)
    drive(w, lambda: len(w.records) == 1 and not w.jobs and at_end(cfg, bus))
    assert w.records[0]["alert_id"] == "after" and w.failures == ["boom: job failed (RuntimeError): unexpected"]
    assert w.counts["job failed (RuntimeError)"] == 1 and w.counts[UNSAFE] == 1
    send(cfg, prod, alert("boom", "end"))  # a redelivery of the failed alert is not cut again
    drive(w, lambda: at_end(cfg, bus))
    assert calls.count("boom.mp4") == 1 and w.counts["event of an alert already handled ignored"] == 1


def test_open_alerts_are_bounded_and_expire(tmp_path, recorded):  # item 5
    cfg, bus, prod = setup(tmp_path, recorded, pre_seconds=0.0, max_seconds=1.0)
    cfg.alerts.update_interval = 0.5  # expiry: wait_s + max_seconds + alerts.update_interval = 1.8 s
    ended = [f"n{i}" for i in range(5)]
    send(cfg, prod, alert("never_ends", "new", start=2.0, end=2.5))
    for a in ended:
        send(cfg, prod, alert(a, "new", start=3.0, end=3.5), alert(a, "end", start=3.0, end=3.8))
    written = []
    w = EvidenceWriter(cfg, BusTransport(bus), from_beginning=True, on_evidence=lambda r: written.append(r["alert_id"]))
    t0 = time.monotonic()
    w.step(0.5)
    assert written == ended and committed(cfg, bus)[0] == 0  # the open alert holds the commit ...
    drive(w, lambda: "never_ends" in written and at_end(cfg, bus))  # ... until it expires: cut at its last end
    assert time.monotonic() - t0 >= 1.8 and w.expire_s == pytest.approx(1.8)
    assert w.records[-1]["alert_id"] == "never_ends" and w.records[-1]["clip"]["end_time"] >= ANCHOR + 2.4
    assert w.counts["open alert expired: cut at its last known end"] == 1
    send(cfg, prod, *(alert(f"flood{i}", "new", start=500.0, end=500.5) for i in range(600)))
    w.step(0.5), w.step(0.5)  # 500 records a poll
    assert len(w.jobs) == 512 and w.counts[CAPPED] == 88
    assert committed(cfg, bus)[0] < committed(cfg, bus)[1]
    drive(w, lambda: not w.jobs and at_end(cfg, bus))  # expired too (no footage): the commit moves on
    assert w.counts["no buffered footage for the alert"] == 512
    # what is done is bounded too: a writer replaying the topic keeps the newest records / keys / failures
    again = []
    w2 = EvidenceWriter(
        cfg,
        BusTransport(bus),
        group_id="replay",
        from_beginning=True,
        on_evidence=lambda r: again.append(r["alert_id"]),
        max_jobs=20,
        max_records=2,
        max_finished=3,
        max_failures=50,
    )
    drive(w2, lambda: len(again) == len(ended) and len(w2.jobs) == 20 and len(w2.failures) == 50)
    assert len(w2.records) == 2 and list(w2.finished) == [("c1", a) for a in ended[-3:]]
    assert w2.counts[CAPPED] >= 50


def test_a_forged_earlier_alert_does_not_preempt_the_real_one(tmp_path, recorded, caplog):  # item 6
    cfg, bus, prod = setup(tmp_path, recorded)  # the real decoder: these records are valid
    w = EvidenceWriter(cfg, BusTransport(bus), from_beginning=True)
    send(cfg, prod, alert("a1", "end", start=500.0, end=501.0))  # forged, seen and failed first
    send(cfg, prod, alert("c1x", "new", camera="c2"), alert("c1x", "end", camera="c2"))  # same id, other camera
    drive(w, lambda: not w.jobs and at_end(cfg, bus))
    assert len(w.failures) == 2 and not w.records
    send(cfg, prod, alert("a1", "new"), alert("a1", "end"))  # the real alerts
    send(cfg, prod, alert("b1", "end", start=500.0, end=501.0), alert("b1", "new"), alert("b1", "end"))  # one batch
    send(cfg, prod, alert("c1x", "new"), alert("c1x", "end"))
    with caplog.at_level(logging.INFO, logger="fusewatch"):
        drive(w, lambda: not w.jobs and at_end(cfg, bus))
        assert [(r["alert_id"], r["camera"]) for r in w.records] == [("a1", "c1"), ("b1", "c1"), ("c1x", "c1")]
        assert all(r["alert"]["start_time"] == ANCHOR + 2.0 for r in w.records)
        assert all(r["clip"]["start_time"] <= ANCHOR + 1.0 + 1e-6 for r in w.records)
        send(cfg, prod, alert("a1", "end"), alert("a1", "end", start=600.0, end=601.0))  # late and forged
        drive(w, lambda: at_end(cfg, bus))
    assert w.counts["event of an alert already handled ignored"] == 2 and len(w.records) == 3
    assert sum("already handled ignored" in r.getMessage() for r in caplog.records) == 1
