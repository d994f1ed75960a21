"""The engine's site hooks: per-clip score records on ``topics.scores`` (``engine.publish_scores``)
and per-camera thresholds from ``alerts.camera_thresholds_file`` (``fusewatch calibrate``)."""

from __future__ import annotations

import json

import pytest

from fusewatch.errors import ConfigError
from fusewatch.stream.live import decode_score
from fusewatch.stream.transport import BusTransport, InProcessBus
from tests.test_engine_service import Scores, alerts_on, make_cfg, model_path, publish, run_engine, thresholds  # noqa: F401


def _scores_on(bus):
    t = BusTransport(bus)
    t.subscribe(["fusewatch.scores"], "score-reader")
    return [decode_score(r.value) for r in t.poll(100000, 0.2)]


def test_scores_topic_and_camera_thresholds(model_path, tmp_path):  # noqa: F811
    on, off = thresholds(model_path)
    bus = InProcessBus(partitions=3)
    publish(bus)
    sink = Scores()
    th = tmp_path / "thresholds.json"
    th.write_text(json.dumps({"cameras": {"c1": {"on": 1.0, "off": 1.0}}}))  # c1 can never alert
    run_engine(
        make_cfg(
            model_path,
            **{
                "alerts.thresholds": "config",
                "alerts.on": str(on),
                "alerts.off": str(off),
                "alerts.camera_thresholds_file": str(th),
            },
        ),
        bus,
        sink=sink,
    )
    recs = _scores_on(bus)
    assert len(recs) == 120 == len(sink.s)
    assert all(r["score"] == pytest.approx(sink.s[(r["camera"], r["clip"])], abs=1e-5) for r in recs)
    assert {r["camera"] for r in recs} == {"c1", "c2"} and all(r["frame_end"] == r["clip"] * 16 + 15 for r in recs)
    cams = {a.camera for a in alerts_on(bus)}
    assert cams == {"c2"}  # c2 alerts with the config thresholds, c1 is held back

    bus2 = InProcessBus(partitions=3)
    publish(bus2, clips=10)
    run_engine(make_cfg(model_path, **{"engine.publish_scores": "false"}), bus2)
    assert _scores_on(bus2) == []


def test_bad_thresholds_file(model_path, tmp_path):  # noqa: F811
    from fusewatch.engines.serving.site import camera_thresholds

    p = tmp_path / "t.json"
    p.write_text(json.dumps({"cameras": {"c1": {"on": 0.2, "off": 0.5}}}))
    with pytest.raises(ConfigError, match="off <= on"):
        camera_thresholds(make_cfg(model_path, **{"alerts.camera_thresholds_file": str(p)}))
    with pytest.raises(ConfigError, match="not found"):
        camera_thresholds(make_cfg(model_path, **{"alerts.camera_thresholds_file": str(tmp_path / "nope.json")}))
