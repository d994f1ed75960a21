"""Live model rollout on the real broker (issue 13 item 4).

Two engines in one consumer group score a paced replay (6 cameras spread over 3 partitions).
While it streams: ``fusewatch models publish`` puts model v2 on the compacted models topic → both
engines load it in the background and switch every camera; a rolling upgrade restarts engine A,
then engine B (each new process comes up on the deployed v2 from the manifest and rebuilds its
cameras from the log) while the other keeps scoring (its scored count must grow, by more than one
clip per camera, while its peer is down); ``fusewatch models rollback`` returns both
to v1; a manifest with a wrong sha256 is refused by both (counted) and v1 keeps serving.

Asserted: committed offsets == end offsets; every clip scored, once per group (a duplicate is
only tolerated where a commit failed during a rebalance — at-least-once); per camera the versions
that scored its clips run v1 → v2 → v1; every alert record carries the version that scored its
``end_clip``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

import pytest

pytest.importorskip("torch")

from fusewatch.cli import main as cli_main  # noqa: E402
from fusewatch.cli.engine import _deployed_model  # noqa: E402
from fusewatch.cli.models import current_manifest, publish  # noqa: E402
from fusewatch.engines.serving.manifest import Manifest  # noqa: E402
from fusewatch.engines.serving.service import EngineService, ScoreSink  # noqa: E402
from fusewatch.stream.alert_schema import decode_alert  # noqa: E402
from fusewatch.stream.topics import create_topics  # noqa: E402
from tests.integration.conftest import make_cfg  # noqa: E402
from tests.integration.kafka_helpers import committed_total, drain_topic  # noqa: E402
from tests.test_rollout import OVR, messages, save_model  # noqa: E402

pytestmark = [pytest.mark.kafka]
ROWS = 200


class VersionScores(ScoreSink):
    """(camera, clip) → [model version that scored it, ...] (shared by all engines of the test)."""

    def __init__(self, lock, out):
        self.lock, self.out, self.svc = lock, out, None

    def on_score(self, camera, msg, score):
        with self.lock:
            self.out.setdefault((camera, msg.clip), []).append(self.svc.scored_by)


def wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out ({timeout:.0f} s) waiting for {what}")
        time.sleep(0.1)


@pytest.mark.timeout(420)
def test_rollout_rolling_upgrade_and_rollback_on_the_broker(kafka_bootstrap, make_transport, _created_topics, tmp_path):
    run = uuid.uuid4().hex[:10]
    topics = {
        "topics.features": f"fwtest.ro.features.{run}",
        "topics.alerts": f"fwtest.ro.alerts.{run}",
        "topics.dead_letter": f"fwtest.ro.dlq.{run}",
        "topics.models": f"fwtest.ro.models.{run}",
        "engine.group_id": f"fwtest.ro.engine.{run}",
    }
    v1p, v2p = save_model(tmp_path / "v1.pt", 0, 0), save_model(tmp_path / "v2.pt", 1, 16)
    cfg = make_cfg(kafka_bootstrap, **{**OVR, **topics, "engine.model": v1p, "engine.model_poll_s": 0.2})
    cfg.transport = "kafka"
    create_topics(cfg, partitions=3)
    _created_topics.extend([cfg.topics.features, cfg.topics.alerts, cfg.topics.dead_letter, cfg.topics.models])
    prod = make_transport(cfg, consume=False)
    cams: list[str] = []
    for p in range(3):  # two cameras per partition: each engine owns some
        cams += [c for c in (f"cam-{k}" for k in range(200)) if prod.partition_of(c.encode(), 3) == p][:2]
    msgs = messages(0, ROWS, cams=tuple(cams))
    monitor = make_transport(cfg, group_id=cfg.engine.group_id, produce=False)
    cli = ["--transport", "kafka", "--bootstrap", kafka_bootstrap, "--set", f"topics.models={cfg.topics.models}"]
    assert cli_main(cli + ["models", "publish", "--model", v1p]) == 0
    v1 = current_manifest(cfg, "default").version

    lock, scored = threading.Lock(), {}
    engines: dict[str, tuple] = {}
    log = logging.getLogger("fusewatch.engine")

    def start(name):
        watcher, model = _deployed_model(cfg, log)
        assert model is not None and watcher is not None
        sink = VersionScores(lock, scored)
        svc = EngineService(cfg, model, make_transport(cfg, group_id=cfg.engine.group_id), sink=sink, watcher=watcher)
        sink.svc = svc
        th = threading.Thread(target=svc.run, name=f"engine-{name}", daemon=True)
        th.start()
        engines[name] = (svc, th)
        return svc

    def stop(name):
        svc, th = engines.pop(name)
        svc.stop()
        th.join(60)
        assert not th.is_alive()
        svc.t.close()
        return svc

    gate = [40]

    def produce():
        for i in range(ROWS):
            while i >= gate[0]:
                time.sleep(0.05)
            for m in msgs[i * len(cams) : (i + 1) * len(cams)]:
                prod.produce(cfg.topics.features, m.camera, m.encode())
            prod.flush(timeout=30)
            time.sleep(0.05)

    try:
        a, b = start("a"), start("b")

        assert a.stats.model_version == v1
        wait(lambda: a.t.assignment() and b.t.assignment(), 60, "both engines assigned")
        feeder = threading.Thread(target=produce, daemon=True)
        feeder.start()
        wait(lambda: committed_total(monitor, cfg.topics.features)[0] >= 20 * len(cams), 60, "first clips scored")

        # 1. publish v2 while the replay streams: both engines switch every camera
        gate[0] = 90
        assert cli_main(cli + ["models", "publish", "--model", v2p]) == 0
        v2 = current_manifest(cfg, "default").version
        assert v2 != v1
        for s in (a, b):  # (an engine whose cameras all arrived after staging starts them on v2: no switch)
            wait(lambda s=s: s.stats.model_version == v2 and not s.rollout.rolling, 60, "both engines on v2")
        assert a.stats.model_switches + b.stats.model_switches > 0, "no camera switched at a clip boundary"

        # 2. rolling upgrade: restart A, then B; the other keeps scoring; new processes start on v2
        stop("a")
        n_b = b.stats.scored  # while A is down, B takes its partitions over and keeps scoring
        gate[0] = 130  # new clips arrive only now, while A is down
        wait(lambda: b.stats.scored > n_b + len(cams), 60, "engine B scoring while A restarts")
        a2 = start("a2")
        assert a2.stats.model_version == v2
        wait(lambda: a2.t.assignment() and a2.ready, 90, "restarted engine A assigned and rebuilt")
        stop("b")
        n_a = a2.stats.scored
        gate[0] = 150
        wait(lambda: a2.stats.scored > n_a + len(cams), 60, "engine A scoring while B restarts")
        b2 = start("b2")
        wait(lambda: b2.t.assignment() and b2.ready, 90, "restarted engine B assigned and rebuilt")

        # 3. rollback on command: both back to v1
        gate[0] = 185
        assert cli_main(cli + ["models", "rollback"]) == 0
        for s in (a2, b2):
            wait(
                lambda s=s: s.stats.model_version == v1 and s.stats.model_switches > 0 and not s.rollout.rolling,
                60,
                "both engines back on v1",
            )

        # 4. a bad model (sha256 mismatch): refused and counted, v1 keeps serving
        cur = current_manifest(cfg, "default")
        publish(cfg, Manifest("default", v2, str(v2p), "0" * 64, time.time(), False, cur.brief()))
        for s in (a2, b2):
            wait(lambda s=s: s.stats.model_load_failures.get("sha256_mismatch") == 1, 60, "bad model refused")
        gate[0] = ROWS
        feeder.join(120)
        wait(
            lambda: committed_total(monitor, cfg.topics.features) == (len(msgs), len(msgs)),
            120,
            "committed offsets == end offsets",
        )
        time.sleep(1.0)
        finals = [stop(n) for n in list(engines)]
        assert all(s.stats.model_version == v1 for s in finals)

    finally:
        for n in list(engines):
            engines[n][0].stop()
            engines[n][1].join(60)

    # every clip scored, once per group (at-least-once: duplicates only where a commit failed)
    assert set(scored) == {(m.camera, m.clip) for m in msgs}, "clips never scored"
    dups = {k: v for k, v in scored.items() if len(v) > 1}
    failures = sum(s.stats.commit_failures for s in (a, b, a2, b2))
    assert not dups or failures, f"{len(dups)} clips scored twice without a failed commit: {sorted(dups)[:5]}"
    for c in cams:
        seq = [scored[(c, i)][-1] for i in range(ROWS)]
        runs = [v for k, v in enumerate(seq) if k == 0 or seq[k - 1] != v]
        assert runs == [v1, v2, v1], (c, runs)
    alerts = [decode_alert(r.value) for r in drain_topic(cfg, cfg.topics.alerts)]
    assert {x.model_version for x in alerts} == {v1, v2}
    for x in alerts:
        assert x.model_version in scored[(x.camera, x.end_clip)], (x.camera, x.type, x.end_clip, x.model_version)
    print(f"switches {[s.stats.model_switches for s in (a, b, a2, b2)]}, duplicates {len(dups)}, alerts {len(alerts)}")
