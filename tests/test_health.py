"""Camera health (issue 14 item 2): frozen, black, tamper and offline events on the alerts topic,
from real decoded video (files, and a live HTTP MPEG-TS source that disappears)."""

from __future__ import annotations

import shutil
import threading
import time

import pytest

from fusewatch.stream.config import load_config
from fusewatch.stream.paths import shared_data
from fusewatch.stream.records import decode_record, record_kind
from fusewatch.stream.transport import BusTransport, InProcessBus
from fusewatch.stream.worker import Worker
from fusewatch.testing import MeanRGB, scene_video

PED2 = shared_data("ped2")


def health_records(bus, cfg) -> list[dict]:
    t = cfg.topics.alerts
    recs = [r for p in bus.partitions_for(t) for r in bus.read((t, p), 0, 1 << 20)]
    return sorted(
        (decode_record(r.value, "health") for r in recs if record_kind(r.value) == "health"),
        key=lambda r: r["produced"],
    )


def run_file(video, cfg, camera="cam"):
    bus = InProcessBus()
    w = Worker(
        cfg,
        camera,
        str(video),
        transport=BusTransport(bus),
        extractors=[MeanRGB()],
        wall_anchor=100.0,
        serve_metrics=False,
    )
    st = w.run()
    return st, health_records(bus, cfg)


def test_frozen_black_tamper_and_recovery_from_a_file(tmp_path):
    video = scene_video(tmp_path / "s.mp4", (("moving", 3), ("frozen", 3), ("black", 3), ("moving", 2), ("shifted", 5)))
    cfg = load_config(env={})
    cfg.health.frozen_after_s, cfg.health.black_after_s = 1.0, 1.0
    st, recs = run_file(video, cfg)
    assert [(r["previous"], r["state"]) for r in recs] == [
        ("ok", "frozen"),
        ("frozen", "black"),
        ("black", "ok"),
        ("ok", "tamper"),
    ]
    assert st.health_events == 4
    frozen, black, ok, tamper = recs
    assert frozen["since"] == pytest.approx(100.0 + 2.9, abs=0.15)  # the last moving frame repeats
    assert black["since"] == pytest.approx(106.0, abs=0.15) and "blank" in black["detail"]
    assert ok["since"] == pytest.approx(109.0, abs=0.15)
    assert tamper["since"] == pytest.approx(111.0, abs=0.15)
    assert all(r["camera"] == "cam" and r["v"] == 2 for r in recs)


@pytest.mark.skipif(not PED2.is_dir(), reason="shared Ped2 data not found")
def test_normal_footage_raises_no_health_event():
    cfg = load_config(env={})
    for stem in ("test_02", "train_01"):
        st, recs = run_file(PED2 / f"{stem}.mp4", cfg)
        assert recs == [] and st.health_events == 0


@pytest.mark.network
@pytest.mark.timeout(120)
@pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg not installed")
def test_live_source_that_freezes_goes_black_and_disappears(tmp_path):
    from tests.media_servers import FFmpegHTTPServer

    video = scene_video(tmp_path / "s.mp4", (("moving", 2), ("frozen", 2.5), ("black", 2.5)))
    cfg = load_config(env={})
    cfg.health.frozen_after_s, cfg.health.black_after_s, cfg.health.offline_after_s = 1.0, 1.0, 2.0
    cfg.source.stall_timeout, cfg.source.reconnect_initial, cfg.source.reconnect_max = 2.0, 0.2, 0.5
    srv = FFmpegHTTPServer(video).start()  # plays once in real time, then is gone
    bus = InProcessBus()
    w = Worker(cfg, "live", srv.url, transport=BusTransport(bus), extractors=[MeanRGB()], serve_metrics=False)
    th = threading.Thread(target=w.run, daemon=True)
    th.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(r["state"] == "offline" for r in health_records(bus, cfg)):
            time.sleep(0.2)
    finally:
        w.stop()
        th.join(15)
        srv.stop()
    states = [r["state"] for r in health_records(bus, cfg)]
    assert states == ["frozen", "black", "offline"], states
    off = health_records(bus, cfg)[-1]
    assert off["previous"] == "black" and "no frame" in off["detail"]
    assert w.counters["health_events"] == 3


def test_records_render_in_the_alerts_table():
    import json

    from fusewatch.cli.engine import record_line
    from fusewatch.stream.records import encode_evidence, encode_health

    h = decode_record(encode_health("gate/1", "offline", "ok", 1.7e9, "no frame for 30.0 s"), "health")
    assert "offline" in record_line(h).plain and "gate/1" in record_line(h).plain
    e = decode_record(
        encode_evidence(
            "abc",
            "gate/1",
            {"url": "/evidence/x.mp4", "duration": 7.5},
            None,
            {"start_time": 1.0, "end_time": 2.0, "peak": 0.9},
        ),
        "evidence",
    )
    assert "/evidence/x.mp4" in record_line(e).plain and "7.5s" in record_line(e).plain
    assert record_kind(json.dumps({"v": 2, "kind": "alert"}).encode()) == "alert"
    assert record_kind(b"\x85\xa1v\x01") is None
    with pytest.raises(ValueError):
        encode_health("c", "melted", "ok", 0.0)
