"""Ped2 over the real Kafka broker (marker ``kafka``): two real videos as two cameras → worker →
Kafka (fresh topics) → engine → alerts.

* streamed clip scores equal offline causal scoring of the extracted features (1e-4), clip by clip;
* with the alert threshold just above the normal video's highest offline score, alerts appear on
  the alerts topic for the anomalous video only, and the topic holds what the engine reported;
* an engine that dies mid-stream (after producing the alerts of a batch, before committing it) is
  replaced by a second engine in the same consumer group, which rebuilds the cameras' windows
  from the log: the deduplicated alert set ``(id, type, end_clip)`` read back from a fresh alert
  topic equals the clean run's.
"""

from __future__ import annotations

import copy
import json
import time
import uuid

import numpy as np
import pytest

from fusewatch.engines.bench import ped2 as B
from fusewatch.engines.bench import ped2_selection as SEL
from fusewatch.engines.bench import ped2_stream as STR
from fusewatch.engines.data import load_dataset
from fusewatch.engines.serving.pipeline import stream_videos
from fusewatch.engines.serving.runtime import load_serving_model
from fusewatch.engines.serving.service import EngineService
from fusewatch.stream.alert_schema import decode_alert
from fusewatch.stream.config import load_config
from fusewatch.stream.extract import extract_videos

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(420)]

from fusewatch.stream.paths import shared_data  # noqa: E402

PED2 = shared_data("ped2")
ANOMALOUS, NORMAL = "test_02", "train_01"
CAMS = (ANOMALOUS, NORMAL)


def _topics(tag: str) -> dict:
    run = uuid.uuid4().hex[:10]
    return {
        "topics.features": f"fwtest.{tag}.features.{run}",
        "topics.alerts": f"fwtest.{tag}.alerts.{run}",
        "topics.dead_letter": f"fwtest.{tag}.dlq.{run}",
        "engine.group_id": f"fwtest.{tag}.engine.{run}",
    }


def read_alerts(cfg, topic: str, want_min: int = 0, timeout: float = 20.0) -> list:
    """All alert messages of ``topic`` (fresh group, from the beginning) until the topic's end."""
    from fusewatch.stream.transport.kafka import KafkaTransport

    t = KafkaTransport(cfg, group_id=f"fwtest.reader.{uuid.uuid4().hex[:10]}", produce=False)
    try:
        t.subscribe([topic], t._group_id, from_beginning=True)
        out: list = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out += t.poll(1000, 0.3)
            if t.assignment():
                ends = {tp: t.end_offset(tp) for tp in t.assignment()}
                have: dict = {}
                for r in out:
                    have[r.tp] = max(have.get(r.tp, -1), r.offset)
                if all(have.get(tp, -1) >= e - 1 for tp, e in ends.items()) and len(out) >= want_min:
                    break
        return [decode_alert(r.value) for r in out]
    finally:
        t.close()


@pytest.fixture(scope="module")
def ped2_model(tmp_path_factory):
    """Features of the two videos (worker pipeline) and a LEGO model trained on their weak labels."""
    if not PED2.is_dir():
        pytest.skip(f"{PED2} not found: the shared data folder is absent")
    root = tmp_path_factory.mktemp("ped2kafka")
    vdir = root / "videos"
    vdir.mkdir()
    labels = json.loads((PED2 / "labels.json").read_text())
    for c in CAMS:
        (vdir / f"{c}.mp4").symlink_to(PED2 / f"{c}.mp4")
    (vdir / "labels.json").write_text(json.dumps({c: labels[c] for c in CAMS}))
    cfg = load_config(
        env={},
        overrides={
            "features.extractors": "mobilenetv2,flow",
            "model.window": 8,
            "model.order_p": 2,
            "model.order_q": 1,
            "train.epochs": 20,
            "train.seed": 0,
            "train.val_fraction": 0.0,
        },
    )
    feats = extract_videos([vdir], root / "feats", cfg, progress=False)
    ds = load_dataset(feats)
    path = root / "lego.pt"
    SEL.train_one(ds, ds.videos, SEL.model_cfg(cfg, "lego", "matrix", (2, 1)), path)
    offline = SEL.offline_scores(path, ds.videos)
    return {
        "cfg": cfg,
        "videos": vdir,
        "model": path,
        "offline": offline,
        "ranges": {v.name: v.clip_ranges() for v in ds.videos},
    }


@pytest.fixture(scope="module")
def kafka_run(ped2_model, kafka_bootstrap, _created_topics):
    """Replay both videos over Kafka (fresh topics) into one engine; thresholds from offline scores."""
    off = ped2_model["offline"]
    on = float(np.max(off[NORMAL])) + 1e-3  # the normal camera can never alert
    assert np.max(off[ANOMALOUS]) > on + 1e-3, (
        f"model does not separate the videos (max {ANOMALOUS} {np.max(off[ANOMALOUS]):.4f} vs "
        f"{NORMAL} {np.max(off[NORMAL]):.4f}): no sensible threshold"
    )
    over = {
        **_topics("ped2"),
        "transport": "kafka",
        "kafka.bootstrap_servers": kafka_bootstrap,
        "alerts.on": min(on, 1.0),
        "alerts.off": max(0.0, on - 1e-3),
        "alerts.min_duration": 0,
        "alerts.cooldown": 0,
        "alerts.update_interval": 1.0,
        "engine.max_batch": 4,
        "alerts.thresholds": "config",  # our thresholds, not the ones calibrated into the model
        "features.extractors": "mobilenetv2,flow",
    }
    cfg = load_config(env={}, overrides=over)
    _created_topics.extend([cfg.topics.features, cfg.topics.alerts, cfg.topics.dead_letter])
    serving = load_serving_model(cfg, ped2_model["model"])
    res = stream_videos(
        [ped2_model["videos"] / f"{c}.mp4" for c in CAMS], cfg, serving, camera_ids=list(CAMS), fresh_topics=False
    )
    return {"cfg": cfg, "res": res, "serving": serving, "over": over}


def test_ped2_over_kafka_streamed_equals_offline(ped2_model, kafka_run):
    res, off = kafka_run["res"], ped2_model["offline"]
    assert res.replay.clips_published == sum(len(s) for s in off.values())
    assert res.engine["dead_letters"] == 0
    cmp = STR.compare_scores(res.clips, off, ped2_model["ranges"])
    assert not (cmp["missing"] or cmp["count_mismatch"] or cmp["range_mismatch"]), cmp
    assert cmp["clips"] == sum(len(s) for s in off.values())
    assert cmp["max_abs_diff"] <= B.AGREEMENT_TOL, cmp


def test_ped2_alerts_on_the_alerts_topic(ped2_model, kafka_run):
    cfg, res = kafka_run["cfg"], kafka_run["res"]
    assert res.alerts, "the engine raised no alert for the anomalous camera"
    assert {a.camera for a in res.alerts} == {ANOMALOUS}
    assert any(a.type == "new" for a in res.alerts)
    on_topic = read_alerts(cfg, cfg.topics.alerts, want_min=len(res.alerts))
    assert {(a.id, a.type, a.end_clip) for a in on_topic} == {(a.id, a.type, a.end_clip) for a in res.alerts}
    # the alert covers clips the offline scores put above the threshold
    hot = {i for i, s in enumerate(ped2_model["offline"][ANOMALOUS]) if s >= cfg.alerts.on}
    first_new = min(a.start_clip for a in res.alerts if a.type == "new")
    assert first_new == min(hot)


def test_ped2_engine_dies_mid_stream_second_engine_same_alert_set(ped2_model, kafka_run, _created_topics):
    """Engine 1 (consumer group G) scores part of the stream, commits, then processes one more batch —
    its alerts produced — and dies before committing it. Engine 2 joins G, rebuilds the cameras'
    state from the log before the committed offsets and finishes. Alerts go to a fresh topic; the
    deduplicated set equals the clean run's."""
    from fusewatch.stream.topics import create_topics
    from fusewatch.stream.transport.kafka import KafkaTransport

    base = kafka_run["cfg"]
    cfg = copy.deepcopy(base)
    run = uuid.uuid4().hex[:10]
    cfg.topics.alerts = f"fwtest.ped2kill.alerts.{run}"
    cfg.engine.group_id = f"fwtest.ped2kill.engine.{run}"
    cfg.engine.max_batch = 2
    create_topics(cfg, names=[cfg.topics.alerts])
    _created_topics.append(cfg.topics.alerts)
    total = sum(len(s) for s in ped2_model["offline"].values())
    reference = {(a.id, a.type, a.end_clip) for a in kafka_run["res"].alerts}

    t1 = KafkaTransport(cfg, group_id=cfg.engine.group_id)
    e1 = EngineService(cfg, kafka_run["serving"], t1)
    e1.start()
    deadline = time.monotonic() + 60
    while e1.stats.records < total // 3 and time.monotonic() < deadline:
        e1.step(timeout=0.5)
    assert total // 3 <= e1.stats.records < total - 2, e1.stats
    # dies after producing this batch's alerts, before committing its offsets
    recs = []
    while not recs and time.monotonic() < deadline:
        recs = t1.poll(max_records=cfg.engine.max_batch, timeout=0.5)
    e1._process(recs, live=True)
    t1.flush()
    committed_by_1 = e1.stats.records
    t1.close()  # leaves the group without committing the last batch

    t2 = KafkaTransport(cfg, group_id=cfg.engine.group_id)
    e2 = EngineService(cfg, kafka_run["serving"], t2)
    try:
        e2.start()
        deadline = time.monotonic() + 90
        while e2.stats.records < total - committed_by_1 and time.monotonic() < deadline:
            e2.step(timeout=0.5)
        t2.flush()
    finally:
        t2.close()
    print(
        f"engine 1: {committed_by_1}/{total} committed, {len(recs)} more scored but not committed, "
        f"{e1.stats.alerts} alert messages; engine 2: rebuilt from {e2.stats.rebuilt_records} records, "
        f"{e2.stats.records} live, {e2.stats.alerts} alert messages; reference {sorted(reference)}"
    )
    assert e2.stats.records == total - committed_by_1, (e2.stats, committed_by_1, total)
    assert e2.stats.rebuilt_records > 0, "engine 2 did not rebuild camera state from the log"
    got = {(a.id, a.type, a.end_clip) for a in read_alerts(cfg, cfg.topics.alerts, want_min=len(reference))}
    assert got == reference, f"missing {sorted(reference - got)}, unexpected {sorted(got - reference)}"


def test_bench_ped2_over_kafka(tmp_path, kafka_bootstrap, _created_topics):
    """``bench ped2`` with ``transport=kafka`` on a tiny Ped2-like folder (flow only): one replay
    over fresh Kafka topics into one engine per model; streamed == offline for LEGO and baselines."""
    if not PED2.is_dir():
        pytest.skip(f"{PED2} not found: the shared data folder is absent")
    vdir = tmp_path / "videos"
    vdir.mkdir()
    stems = ("test_02", "test_12", "train_01", "train_08")
    labels = json.loads((PED2 / "labels.json").read_text())
    for s in stems:
        (vdir / f"{s}.mp4").symlink_to(PED2 / f"{s}.mp4")
    (vdir / "labels.json").write_text(json.dumps({s: labels[s] for s in stems}))
    cfg = load_config(
        env={},
        overrides={
            "kafka.bootstrap_servers": kafka_bootstrap,
            "features.extractors": "flow",
            "model.representations": "flow",
            "model.window": 8,
            "train.epochs": 3,
            **{k: v for k, v in _topics("ped2bench").items() if k.startswith("topics.")},
        },
    )
    rep = B.run_ped2(
        vdir,
        tmp_path / "lego.pt",
        cfg,
        work_dir=tmp_path / "work",
        expansions=("hadamard",),
        fusions=("lego", "concat", "add"),
        pq_grid=((1, 1),),
        folds=2,
        transport="kafka",
        progress=False,
    )
    assert rep["stream"]["transport"] == "kafka" and rep["stream"]["videos"] == len(stems)
    assert rep["agreement_ok"] is True, rep["agreement"]
    assert set(rep["results"]) == {"lego-hadamard", "concat", "add"}
    for k, r in rep["results"].items():
        assert abs(r["streamed"]["all"] - r["offline"]["all"]) < 1e-6, k
    _created_topics.extend(rep["stream"].get("topics", []))
