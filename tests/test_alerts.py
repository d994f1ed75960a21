"""Alert state machine: hysteresis, min duration, cool-down, update rate, stable ids."""

from fusewatch.engines.serving.alerts import AlertTracker, ClipScore, alert_id
from fusewatch.stream.config import AlertsConfig
from fusewatch.stream.schema import Evidence


def run(scores, **cfg):
    t = AlertTracker("cam", AlertsConfig(**cfg), "lego", "v1", "onnxruntime")
    out = []
    for i, s in enumerate(scores):
        out += t.step(ClipScore(i, s, i * 1.0, i * 1.0 + 1.0, 100 + i, 101 + i, Evidence("f", 0, i)))
    return out


def test_hysteresis_new_update_end_share_id():
    msgs = run(
        [0.1, 0.7, 0.7, 0.5, 0.5, 0.5, 0.45, 0.3, 0.1], on=0.6, off=0.4, min_duration=1.5, cooldown=0, update_interval=2
    )
    assert [m.type for m in msgs] == ["new", "update", "update", "end"]
    assert len({m.id for m in msgs}) == 1 and msgs[0].id == alert_id("cam", 1, "v1")
    assert msgs[0].start_clip == 1 and msgs[-1].end_clip == 7
    assert msgs[-1].peak == 0.7 and msgs[0].start_time == 101
    assert msgs[0].evidence[0].offset == 1


def test_min_duration_filters_blips():
    assert run([0.9, 0.1, 0.9, 0.1], on=0.6, off=0.4, min_duration=1.5) == []


def test_cooldown_suppresses_reopen_and_ids_differ_after():
    scores = [0.9, 0.9, 0.1, 0.9, 0.9, 0.1, 0.1, 0.1, 0.9, 0.9]
    msgs = run(scores, on=0.6, off=0.4, min_duration=1.5, cooldown=4, update_interval=100)
    news = [m for m in msgs if m.type == "new"]
    assert [m.start_clip for m in news] == [0, 8]
    assert news[0].id != news[1].id


def test_deterministic_replay():
    s = [0.2, 0.8, 0.9, 0.3, 0.7, 0.8, 0.8, 0.1] * 5
    assert run(s, min_duration=1) == run(s, min_duration=1)
