"""Load tests against the real broker: a flood of malformed messages, a slow engine (lag grows,
memory does not), a slow worker (drop_oldest drops and counts, clips keep flowing)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import msgpack
import numpy as np
import pytest

from fusewatch.stream.config import load_config
from fusewatch.stream.schema import FeatureMessage, Representation, decode_dead_letter, decode_features
from tests.integration.kafka_helpers import committed_total, drain_topic, save_plain_lego

pytestmark = [pytest.mark.kafka]

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
DIMS = {"a": 12, "b": 5}
WINDOW = 8


# ---------------------------------------------------------------------------------------------
# helpers
@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("load-model") / "lego.pt"
    save_plain_lego(p, WINDOW, DIMS)
    return p


def feature(cam: str, clip: int, rng, pad: int = 0) -> FeatureMessage:
    reps = [
        Representation("a", rng.normal(size=DIMS["a"]).astype(np.float32), "a", "1"),
        Representation("b", rng.normal(size=DIMS["b"]).astype(np.float32), "b", "1"),
    ]
    if pad:  # a representation the model does not use: realistic message size (CNN embeddings)
        reps.append(Representation("pad", rng.normal(size=pad).astype(np.float32), "pad", "1"))
    t = 1.7e9 + clip * 1.6
    return FeatureMessage(
        cam, clip, clip * 1.6, clip * 1.6 + 1.5, t, t + 1.5, clip * 16, clip * 16 + 15, reps, produced=t + 1.5
    )


def fresh_cfg(bootstrap: str, model_path, _created_topics, tag: str, partitions: int = 3, **over):
    from fusewatch.stream.topics import create_topics

    run = uuid.uuid4().hex[:10]
    o = {
        "kafka.bootstrap_servers": bootstrap,
        "kafka.connect_timeout_s": 15,
        "topics.features": f"fwtest.{tag}.features.{run}",
        "topics.alerts": f"fwtest.{tag}.alerts.{run}",
        "topics.dead_letter": f"fwtest.{tag}.dlq.{run}",
        "engine.group_id": f"fwtest.{tag}.engine.{run}",
        "engine.model": str(model_path),
        "engine.backend": "torch",
    }
    o.update(over)
    cfg = load_config(env={}, overrides=o)
    create_topics(cfg, partitions=partitions)
    _created_topics.extend([cfg.topics.features, cfg.topics.alerts, cfg.topics.dead_letter])
    return cfg


def rss_mb(pid: int | None = None) -> float:
    """Resident set size (MiB) of ``pid`` (default: this process), from /proc/PID/status."""
    with open(f"/proc/{pid or 'self'}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("VmRSS not found")


# ---------------------------------------------------------------------------------------------
# 10,000 malformed messages
def malformed(n: int, cams: list[str], seed: int = 3) -> list[tuple[bytes | None, bytes, str]]:
    """``n`` malformed messages as (key, payload, expected dead-letter reason), kinds mixed."""
    rng = np.random.default_rng(seed)

    def good_map(cam: str, clip: int) -> dict:
        return msgpack.unpackb(feature(cam, clip, rng).encode(), raw=False)

    def with_rep(cam: str, clip: int, **change) -> bytes:
        d = good_map(cam, clip)
        d["reps"][0].update(change)
        return msgpack.packb(d, use_bin_type=True)

    def oversized(cam, clip) -> bytes:  # a well-formed message over max_message_bytes (1 MiB)
        m = feature(cam, clip, rng, pad=(1_048_576 + 8192) // 4)
        return m.encode()

    kinds = {
        "truncated": (
            "undecodable",
            lambda c, i: (lambda b: b[: int(rng.integers(1, len(b)))])(feature(c, i, rng).encode()),
        ),
        "garbage": ("undecodable", lambda c, i: b"\xc1" + rng.bytes(int(rng.integers(0, 300)))),
        "empty": ("empty", lambda c, i: b""),
        "not_a_map": ("not_a_map", lambda c, i: msgpack.packb([1, "features", c, i])),
        "new_version": (
            "unsupported_version",
            lambda c, i: msgpack.packb({**good_map(c, i), "v": 2}, use_bin_type=True),
        ),
        "no_version": (
            "missing_version",
            lambda c, i: msgpack.packb({k: v for k, v in good_map(c, i).items() if k != "v"}, use_bin_type=True),
        ),
        "wrong_kind": (
            "wrong_kind",
            lambda c, i: msgpack.packb({**good_map(c, i), "kind": "alert"}, use_bin_type=True),
        ),
        "int_dtype": ("bad_dtype", lambda c, i: with_rep(c, i, dtype="<i4")),
        "short_data": ("size_mismatch", lambda c, i: with_rep(c, i, data=b"\0" * 40)),
        "nan": ("non_finite", lambda c, i: with_rep(c, i, data=np.full(DIMS["a"], np.nan, "<f4").tobytes())),
        "wrong_dim": ("dim_mismatch", lambda c, i: with_rep(c, i, shape=[7], data=np.ones(7, "<f4").tobytes())),
        "unknown_rep": (
            "no_known_representation",
            lambda c, i: msgpack.packb(
                {**good_map(c, i), "reps": [good_map(c, i)["reps"][1] | {"name": "zzz"}]}, use_bin_type=True
            ),
        ),
    }
    names = list(kinds)
    n_big = 8
    out = []
    for j in range(n):
        cam = cams[j % len(cams)]
        key = None if j % 17 == 0 else cam.encode()
        if j % (n // n_big) == n // n_big - 1:
            out.append((key, oversized(cam, 10_000 + j), "too_large"))
            continue
        reason, make = kinds[names[j % len(names)]]
        out.append((key, make(cam, 10_000 + j), reason))
    return out


@pytest.mark.timeout(180)
def test_malformed_flood_dead_lettered_while_valid_traffic_is_scored(
    kafka_bootstrap, model_path, _created_topics, make_transport
):
    """10,000 malformed messages (truncated, garbage, empty, not a map, wrong/missing version, wrong
    kind, bad dtype, short data, NaN, wrong dimension, unknown representation, 8 oversized > 1 MiB)
    interleaved with 1,000 valid clips of 4 cameras, produced with batching (linger 50 ms). The
    engine routes every malformed one to the dead-letter topic with its reason and keeps scoring:
    scored == 1,000 valid clips, dead letters == 10,000, reasons match per message."""
    from fusewatch.engines.serving.runtime import load_serving_model
    from fusewatch.engines.serving.service import EngineService, ScoreSink

    cfg = fresh_cfg(kafka_bootstrap, model_path, _created_topics, "flood", **{"engine.max_batch": 500})
    cams = [f"cam-{i}" for i in range(4)]
    n_bad, per_valid = 10_000, 10
    bad = malformed(n_bad, cams)
    expected = Counter(r for _, _, r in bad)
    assert sum(expected.values()) == n_bad and len(expected) == 12  # truncated, garbage: undecodable
    by_payload: dict[tuple[bytes, int], str] = {}
    for _, raw, reason in bad:
        k = (raw[:65536], len(raw))
        assert by_payload.setdefault(k, reason) == reason, "two kinds built the same payload"
    rng = np.random.default_rng(5)
    valid = [feature(cams[j % 4], j // 4, rng) for j in range(n_bad // per_valid)]

    t0 = time.monotonic()
    prod = make_transport(cfg, consume=False, producer_kwargs={"linger_ms": 50, "batch_size": 256 * 1024})
    for j, m in enumerate(valid):
        prod.produce(cfg.topics.features, m.camera, m.encode())
        for key, raw, _ in bad[j * per_valid : (j + 1) * per_valid]:
            prod.produce(cfg.topics.features, key, raw)
    prod.flush(timeout=60)
    produce_s = time.monotonic() - t0

    class Scored(ScoreSink):
        def __init__(self):
            self.keys = []

        def on_score(self, camera, msg, score):
            self.keys.append((camera, msg.clip))

    sink = Scored()
    t = make_transport(cfg, group_id=cfg.engine.group_id)
    svc = EngineService(cfg, load_serving_model(cfg), t, sink=sink)
    svc.start()
    t0 = time.monotonic()
    deadline = t0 + 120
    total = n_bad + len(valid)
    while svc.stats.records < total and time.monotonic() < deadline:
        svc.step(timeout=0.5)
    t.flush(timeout=30)
    engine_s = time.monotonic() - t0
    st = svc.stats
    print(
        f"produced {total} records in {produce_s:.1f}s; engine: {st.records} records in {engine_s:.1f}s, "
        f"{st.scored} scored, {st.dead_letters} dead letters {dict(st.dead_letter_reasons)}"
    )
    assert st.records == total
    assert st.scored == len(valid), "valid traffic was not all scored"
    assert sorted(sink.keys) == sorted((m.camera, m.clip) for m in valid)
    assert st.dead_letters == n_bad and Counter(st.dead_letter_reasons) == expected

    recs = drain_topic(cfg, cfg.topics.dead_letter)
    assert len(recs) == n_bad
    got = Counter()
    where = set()
    for r in recs:
        d = decode_dead_letter(r.value)
        assert dict(r.headers)["reason"].decode() == d["reason"]
        assert d["topic"] == cfg.topics.features and r.key == d["key"] and d["detail"]
        assert by_payload[(d["payload"], d["size"])] == d["reason"], (d["reason"], d["detail"])
        assert d["truncated"] == (d["size"] > 65536)
        where.add((d["partition"], d["offset"]))
        got[d["reason"]] += 1
    assert got == expected
    assert len(where) == n_bad, "a malformed record was dead-lettered twice"


# ---------------------------------------------------------------------------------------------
# slow engine: lag grows, memory does not
@pytest.mark.timeout(180)
def test_slow_engine_lag_grows_memory_bounded(kafka_bootstrap, model_path, _created_topics, make_transport, tmp_path):
    """A ``fusewatch engine`` process slowed with ``--delay 0.5`` (16 records per batch: at most 32
    records/s) faces 8 cameras producing 300 msg/s of ~16 KiB messages for 15 s. The group's lag
    (end offsets − committed) must grow to thousands of records (> 50 MiB unread) while the
    engine's RSS (VmRSS from /proc/PID/status, sampled every second) grows less than 32 MiB above
    its warm level: the consumer fetches as it goes instead of buffering the topic."""
    cfg = fresh_cfg(kafka_bootstrap, model_path, _created_topics, "slow", **{"engine.max_batch": 16})
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUSEWATCH_") or k == "FUSEWATCH_CACHE"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [
        sys.executable,
        "-X",
        "faulthandler",
        "-m",
        "fusewatch",
        "engine",
        "--transport",
        "kafka",
        "--bootstrap",
        kafka_bootstrap,
        "--model",
        str(model_path),
        "--backend",
        "torch",
        "--group",
        cfg.engine.group_id,
        "--delay",
        "0.5",
    ]
    for k in ("topics.features", "topics.alerts", "topics.dead_letter", "engine.max_batch"):
        sec, f = k.split(".")
        cmd += ["--set", f"{k}={getattr(getattr(cfg, sec), f)}"]
    cams = [f"cam-{i}" for i in range(8)]
    rng = np.random.default_rng(11)
    pad = 4000  # floats: ~16 KiB per message
    prod = make_transport(cfg, consume=False, producer_kwargs={"linger_ms": 20})
    monitor = make_transport(cfg, group_id=cfg.engine.group_id, produce=False)  # never subscribes
    clip = [0]

    def produce(n: int) -> None:
        for _ in range(n):
            c = cams[clip[0] % len(cams)]
            m = feature(c, clip[0] // len(cams), rng, pad=pad)
            prod.produce(cfg.topics.features, c, m.encode())
            clip[0] += 1

    produce(200)
    prod.flush(timeout=30)
    msg_bytes = len(feature("cam-0", 0, rng, pad=pad).encode())
    log = open(tmp_path / "engine.log", "w+")
    eng = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    samples: list[tuple[float, int, float]] = []  # (t, lag, rss MiB)
    try:
        deadline = time.monotonic() + 60
        while committed_total(monitor, cfg.topics.features)[0] < 48 and time.monotonic() < deadline:
            if eng.poll() is not None:
                log.seek(0)
                pytest.fail(f"engine exited with {eng.returncode}: {log.read()[-3000:]}")
            time.sleep(0.2)
        if committed_total(monitor, cfg.topics.features)[0] < 48:
            eng.send_signal(signal.SIGABRT)  # faulthandler: every thread's stack into the log
            eng.wait(10)
            log.seek(0)
            pytest.fail(f"engine did not start consuming within 60 s: {log.read()[-6000:]}")
        base_rss = rss_mb(eng.pid)  # warm: model loaded, several batches scored and committed

        stop = threading.Event()
        rate, seconds = 300.0, 15.0

        total = int(rate * seconds)  # a fixed count, paced at `rate` (a loaded machine only paces it slower)

        def producer():
            t0 = time.monotonic()
            i = 0
            while not stop.is_set() and i < total and time.monotonic() - t0 < 4 * seconds:
                due = min(total, int((time.monotonic() - t0) * rate))
                if due > i:
                    produce(due - i)
                    i = due
                time.sleep(0.01)
            prod.flush(timeout=30)

        th = threading.Thread(target=producer, daemon=True)
        t0 = time.monotonic()
        th.start()
        while th.is_alive() or time.monotonic() - t0 < seconds + 2:
            com, end = committed_total(monitor, cfg.topics.features)
            samples.append((time.monotonic() - t0, end - com, rss_mb(eng.pid)))
            assert eng.poll() is None, "engine died"
            time.sleep(1.0)
        stop.set()
        th.join(30)
        eng.send_signal(signal.SIGTERM)
        assert eng.wait(60) == 0
    finally:
        if eng.poll() is None:
            eng.kill()
            eng.wait(10)
        log.close()
    lags = [s[1] for s in samples]
    rss = [s[2] for s in samples]
    half = len(samples) // 2
    growth = max(rss) - base_rss
    backlog_mib = lags[-1] * msg_bytes / 2**20
    print(
        f"{len(samples)} samples over {samples[-1][0]:.0f}s: lag {lags[0]} -> {lags[-1]} records "
        f"({backlog_mib:.0f} MiB unread), RSS {base_rss:.0f} -> max {max(rss):.0f} MiB "
        f"(+{growth:.1f} MiB); lag/RSS per sample: {[(lag, round(r)) for _, lag, r in samples]}"
    )
    assert lags[-1] >= 3000, "lag did not build up: engine not slow enough or producer too slow"
    assert np.mean(lags[half:]) > np.mean(lags[:half]) + 1000, "lag not growing"
    assert backlog_mib > 50
    assert growth < 32, f"engine RSS grew {growth:.1f} MiB while lagging"
    assert max(rss) < 2048


# ---------------------------------------------------------------------------------------------
# slow worker: drop_oldest drops and counts, clips keep being published
@pytest.mark.timeout(120)
def test_worker_drop_oldest_under_overload(kafka_cfg, make_topic, make_transport):
    """A camera worker whose extractor (a sleeping stand-in, 0.6 s per clip) is slower than the
    frames arrive (vtest.avi paced at 4× real time = 40 sampled frames/s, queue of 4 frames,
    policy drop_oldest) publishes to a Kafka topic for 8 s: frames are dropped and counted
    clips keep being published throughout,
    every published clip is on the topic, and the dropped frames show as gaps between the clips'
    frame ranges.
    (frames_processed + frames_dropped == frames_sampled up to the ≤ 4 frames still queued at stop.)"""
    from fusewatch.stream.extractors.base import Extractor
    from fusewatch.stream.worker import Worker

    video = DATA / "cctv" / "vtest.avi"
    if not video.is_file():
        pytest.skip(f"{video} not found")

    class SlowMeanRGB(Extractor):
        name, dim, version = "meanrgb", 3, "t1"

        def extract(self, frames, audio, audio_rate):
            time.sleep(0.6)
            return np.stack(frames)[:, ::8, ::8].reshape(-1, 3).mean(0).astype(np.float32)

    topic = make_topic("drop", partitions=1)
    cfg = load_config(
        env={},
        overrides={
            "kafka.bootstrap_servers": kafka_cfg.kafka.bootstrap_servers,
            "topics.features": topic,
            "source.queue_size": 4,
            "source.overflow": "drop_oldest",
        },
    )
    t = make_transport(cfg, consume=False)
    stamps: list[float] = []

    class Stamped:  # records when each clip was produced (the worker's transport)
        def __getattr__(self, k):
            return getattr(t, k)

        def produce(self, topic, *a, **kw):
            if topic == cfg.topics.features:  # (the worker also publishes thumbnails)
                stamps.append(time.monotonic())
            return t.produce(topic, *a, **kw)

    w = Worker(
        cfg,
        "overloaded",
        str(video),
        transport=Stamped(),
        extractors=[SlowMeanRGB()],
        realtime=True,
        speed=4.0,
        serve_metrics=False,
    )
    res: dict = {}
    th = threading.Thread(target=lambda: res.update(w.run().as_dict()), daemon=True)
    t0 = time.monotonic()
    th.start()
    time.sleep(8.0)
    w.stop()
    th.join(30)
    assert not th.is_alive()
    run_s = time.monotonic() - t0
    print(
        f"{run_s:.1f}s: {res['frames_sampled']} sampled, {res['frames_processed']} processed, "
        f"{res['frames_dropped']} dropped, {res['clips_published']} clips published"
    )
    assert res["frames_dropped"] > 0
    # every sampled frame was processed or dropped, except those still queued when stopped
    left = res["frames_sampled"] - res["frames_processed"] - res["frames_dropped"]
    assert 0 <= left <= cfg.source.queue_size
    assert res["clips_published"] >= 4 and res["publish_errors"] == 0
    assert any(s - t0 > 0.6 * run_s for s in stamps), "clips stopped being published"

    recs = drain_topic(cfg, topic)
    msgs = sorted((decode_features(r.value) for r in recs), key=lambda m: m.clip)
    assert len(msgs) == res["clips_published"] == len(stamps)
    assert [m.clip for m in msgs] == list(range(len(msgs)))
    assert all(m.camera == "overloaded" and m.rep("meanrgb").shape == (3,) for m in msgs)
    # frames dropped while a clip was being extracted are missing between the clips' frame ranges
    gaps = [b.frame_start - a.frame_end - 1 for a, b in zip(msgs, msgs[1:])]
    assert all(g >= 0 for g in gaps) and sum(gaps) > 0, f"no frames missing between clips: {gaps}"
