"""Second adversarial review of the engine (in-process bus; the real-broker case of the large key is
in tests/integration/test_hostile_kafka.py): one test per class of defect it found."""

import numpy as np
import pytest

from fusewatch.engines.fusion.factory import build_model
from fusewatch.engines.serving import pipeline
from fusewatch.engines.serving.runtime import MAX_MODEL_INPUT, load_serving_model
from fusewatch.engines.serving.service import EngineService
from fusewatch.engines.training.checkpoint import save_checkpoint
from fusewatch.errors import DeliveryError
from fusewatch.stream.config import load_config
from fusewatch.stream.schema import DEAD_LETTER_KEY_BYTES, Representation, decode_dead_letter
from fusewatch.stream.stats import ReplayResult, WorkerStats
from fusewatch.stream.transport import BusTransport, InProcessBus
from fusewatch.stream.transport.base import RecordTooLargeError
from tests.test_engine_hostile import DIMS, accounted, dead, drain, engine, make_cfg, model_path, msg, put, read

__all__ = ["model_path"]  # the module-scoped fixture, shared


@pytest.fixture(scope="module")
def serving(model_path):
    return load_serving_model(make_cfg(model_path))


class SizeLimitedBus(BusTransport):
    """A bus transport that refuses records above ``limit`` bytes (key + value), as a Kafka
    producer refuses records above ``max.request.size``."""

    def __init__(self, bus, limit):
        super().__init__(bus)
        self.limit = limit

    def produce(self, topic, key, value, headers=None, *, on_delivery=None):
        size = len(value) + (len(key) if key is not None else 0)
        if size > self.limit:
            raise RecordTooLargeError(f"{size} bytes > {self.limit}")
        return super().produce(topic, key, value, headers, on_delivery=on_delivery)


def scores_of(svc_sink):
    return {c: s for _, c, s in svc_sink.scores}


class Sink:
    def __init__(self):
        self.scores = []

    def on_score(self, camera, m, s):
        self.scores.append((camera, m.clip, s))

    def on_alert(self, a):
        pass


def test_a_huge_key_is_dead_lettered_within_limits_and_the_engine_goes_on(model_path, serving):
    """A valid clip under a 600 KB key: its dead letter used to carry the key twice (1.2 MB) and
    fail to produce, ending the engine on every restart. Now ≤ 1 KiB of the key is kept."""
    bus = InProcessBus(partitions=1)
    for i in range(3):
        put(bus, msg("c1", i))
    put(bus, msg("c1", 3), key=b"k" * 600_000)
    for i in range(3, 6):
        put(bus, msg("c1", i))
    svc = EngineService(make_cfg(model_path), serving, SizeLimitedBus(bus, 1_114_112))
    drain(svc)
    assert svc.stats.scored == 6 and accounted(svc.stats) == svc.stats.records == 7
    (rec,) = read(bus, "fusewatch.deadletter")
    dl = decode_dead_letter(rec.value)
    assert dl["reason"] == "key_mismatch" and dl["key_size"] == 600_000 and dl["key_truncated"]
    assert len(dl["key"]) == len(rec.key) == DEAD_LETTER_KEY_BYTES and len(dl["detail"]) < 500


def test_a_dead_letter_a_size_limit_refuses_goes_again_without_its_payload(model_path, serving):
    bus = InProcessBus(partitions=1)
    m = msg("victim", 0)
    m.reps.append(Representation("junk", np.zeros(20_000, np.float32)))  # 80 KB, ignored by the model
    put(bus, m, key="attacker")
    put(bus, msg("c1", 0))
    svc = drain(EngineService(make_cfg(model_path), serving, SizeLimitedBus(bus, 60_000)))
    assert svc.stats.scored == 1 and svc.stats.dead_letters == 1
    (dl,) = [decode_dead_letter(r.value) for r in read(bus, "fusewatch.deadletter")]
    assert dl["reason"] == "key_mismatch" and dl["payload"] == b"" and dl["truncated"] and dl["size"] > 80_000


@pytest.fixture(scope="module")
def mtn_serving(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    cfg = load_config(overrides={"model.window": "8", "model.representations": "a,b", "model.fusion": "mtn"}, env={})
    p = tmp_path_factory.mktemp("mtn") / "mtn.pt"
    save_checkpoint(build_model(cfg.model, DIMS), p)
    return p, load_serving_model(make_cfg(p))


@pytest.mark.parametrize("value", [3e38, -1e30, 2 * MAX_MODEL_INPUT])
def test_a_clip_that_would_overflow_a_window_model_never_enters_the_window(mtn_serving, value):
    """On a model that mixes the window's clips (mtn), one clip of finite but huge values used to
    give NaN for every later window holding it (7 real clips dead-lettered). Now it is rejected
    alone, and the others score exactly as if it had never been sent."""
    path, model = mtn_serving

    def run(hostile):
        bus = InProcessBus(partitions=1)
        for i in range(12):
            if i == 3:
                if hostile:
                    put(bus, msg("c1", 3, a=np.full(12, value)))
                continue
            put(bus, msg("c1", i))
        sink = Sink()
        svc = drain(engine(make_cfg(path), bus, model, sink=sink))
        return svc, bus, scores_of(sink)

    svc, bus, got = run(True)
    _, _, want = run(False)
    assert dead(bus) == ["invalid_features"] and svc.stats.scored == 11
    assert set(got) == set(want) and all(abs(got[c] - want[c]) < 1e-6 for c in want)


def test_a_clip_from_the_past_cannot_anchor_alert_timing(model_path, serving):
    """A clip 3500 s ahead (inside max_time_jump) followed by the real stream: the real clips used
    to be accepted 'back in time', with the alert cool-down anchored an hour ahead (no alert for the
    rest of the anomaly). Now they are ``time_regression`` until ``resync_after`` of them restart
    the camera, and alerts resume."""
    bus = InProcessBus(partitions=1)
    cfg = make_cfg(model_path, **{"alerts.cooldown": "5"})
    for i in range(5):
        put(bus, msg("c1", i))
    put(bus, msg("c1", 5, t0=3500.0))
    for i in range(6, 20):
        put(bus, msg("c1", i))
    svc = drain(engine(cfg, bus, serving))
    assert dead(bus) == ["time_regression"] * 3 and svc.stats.restarts == {"resync": 1}
    assert svc.stats.scored == 17 and svc.cams["c1"].last_clip == 19 and svc.cams["c1"].last_pts < 100


def test_a_stray_clip_of_an_earlier_epoch_costs_only_itself(model_path, serving):
    """One clip of another (earlier) epoch used to restart the camera twice (its window lost, its
    open alert ended, new alert ids). Now it is dead-lettered and the stream scores as if it never came."""

    def run(hostile):
        bus = InProcessBus(partitions=1)
        for i in range(16):
            if hostile and i == 10:
                put(bus, msg("c1", 0, epoch=3, at=10))
            put(bus, msg("c1", i, epoch=7))
        sink = Sink()
        svc = drain(engine(make_cfg(model_path), bus, serving, sink=sink))
        return svc, bus, scores_of(sink)

    svc, bus, got = run(True)
    _, _, want = run(False)
    assert dead(bus) == ["epoch_regression"] and svc.stats.restarts == {}
    assert got == want


def test_the_rebuild_ignores_keys_that_were_dead_lettered(model_path, serving):
    """Undecodable records under distinct keys after a camera's clips: the rebuild counted their keys
    as the most recent cameras, so with max_cameras = 5 the real camera was not replayed and scored
    differently after an engine restart."""
    cfg = make_cfg(model_path, **{"engine.max_cameras": "5"})

    def run(restart):
        bus = InProcessBus(partitions=1)
        for i in range(12):
            put(bus, msg("c1", i))
        for j in range(6):
            put(bus, b"\xc1junk", key=f"junk{j}")
        sink = Sink()
        svc = engine(cfg, bus, serving, sink=sink)
        drain(svc)
        for i in range(12, 20):
            put(bus, msg("c1", i))
        if restart:
            svc.t.close()
            sink = Sink()
            svc = drain(engine(cfg, bus, serving, sink=sink))
        else:
            for _ in range(20):
                svc.step(timeout=0.05)
        return svc, {c: s for c, s in scores_of(sink).items() if c >= 12}

    svc, got = run(True)
    _, want = run(False)
    assert svc.stats.cold_starts == {} and svc.stats.rebuilt_records == 18
    assert set(got) == set(want) == set(range(12, 20)) and all(abs(got[c] - want[c]) < 1e-6 for c in want)


def test_stream_videos_refuses_to_return_part_of_a_stream(model_path, serving, monkeypatch):
    """An engine too slow to consume every published clip within drain_timeout: the run used to
    return the scores of half the clips as a complete result."""
    n = 40

    def fake_replay(videos, cfg, transport, **kw):
        for i in range(n):
            transport.produce(cfg.topics.features, "cam1", msg("cam1", i).encode())
        return ReplayResult({"cam1": WorkerStats("cam1", "fake.mp4", clips_produced=n, clips_published=n)})

    class SlowEngine(EngineService):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.delay_s = 0.2

    monkeypatch.setattr("fusewatch.stream.replay.replay", fake_replay)
    monkeypatch.setattr(pipeline, "EngineService", SlowEngine)
    with pytest.raises(DeliveryError, match=r"consumed \d+ of 40 published clips"):
        pipeline.stream_videos(
            ["fake.mp4"], make_cfg(model_path, **{"engine.max_batch": "4"}), serving, drain_timeout=1.0
        )


def test_a_flood_of_new_camera_ids_evicts_its_own_ids_not_established_cameras(model_path, serving):
    """max_cameras distinct valid ids used to evict a real camera (its alert ended, its window lost,
    blind again at every flood). Cameras with fewer than ESTABLISHED_CLIPS clips go first."""
    bus = InProcessBus(partitions=1)
    for i in range(10):
        put(bus, msg("real", i))
    for j in range(12):
        put(bus, msg(f"flood{j}", 0))
    for i in range(10, 20):
        put(bus, msg("real", i))
    sink = Sink()
    svc = drain(
        engine(make_cfg(model_path, **{"engine.max_cameras": "5", "engine.max_batch": "1"}), bus, serving, sink)
    )
    assert svc.stats.evictions == {"lru": 8} and svc.stats.cold_starts == {} and "real" in svc.cams
    assert sorted(c for cam, c, _ in sink.scores if cam == "real") == list(range(20))
