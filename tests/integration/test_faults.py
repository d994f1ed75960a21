"""Fault tests against a real broker: the alert stream survives a broker crash/restart and an
engine killed with SIGKILL.

Both tests replay the same recorded stream of synthetic feature messages (4 cameras × 80 clips,
each camera a noisy sinusoid so scores rise and fall) into a tiny random LEGO model whose alert
thresholds are the 0.55/0.45 quantiles of the scores it gives this stream. The reference is a
clean, uninterrupted :class:`EngineService` run over the same messages (in-process bus: same
engine code, alert ids depend only on camera, start clip and model version). After a fault the
alerts read back from the alert topic, deduplicated as the set of ``(id, type, end_clip)``
(at-least-once: re-processing re-emits the same ids), must equal the reference set.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from fusewatch.cli.engine import STALL_EXIT  # noqa: E402
from fusewatch.engines.serving.runtime import load_serving_model
from fusewatch.engines.serving.service import EngineService, ScoreSink
from fusewatch.stream.alert_schema import decode_alert
from fusewatch.stream.config import load_config
from fusewatch.stream.schema import FeatureMessage, Representation
from fusewatch.stream.transport import BusTransport, InProcessBus
from tests.integration.kafka_helpers import committed_total, drain_topic, save_plain_lego

pytestmark = [pytest.mark.kafka]

ROOT = Path(__file__).resolve().parents[2]
DIMS = {"a": 12, "b": 5}
WINDOW = 8
CAMS = tuple(f"cam-{i}" for i in range(4))
CLIPS = 80
ENGINE_OVERRIDES = {
    "engine.backend": "torch",
    "engine.max_batch": 16,
    "engine.rebuild_history": 64,
    "alerts.thresholds": "config",
    "alerts.min_duration": 0,
    "alerts.cooldown": 0,
    "alerts.update_interval": 3,
}


# ---------------------------------------------------------------------------------------------
# helpers
def stream_messages(cams=CAMS, clips=CLIPS, seed=7) -> list[FeatureMessage]:
    """Recorded stream, in capture order (clip-major, cameras interleaved)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(clips):
        for k, c in enumerate(cams):
            phase = np.sin(i / 5.0 + 1.3 * k)
            reps = [
                Representation("a", (rng.normal(size=DIMS["a"]) + 3 * phase).astype(np.float32), "a", "1"),
                Representation("b", (rng.normal(size=DIMS["b"]) * (1 + phase)).astype(np.float32), "b", "1"),
            ]
            t = 1.7e9 + i * 1.6
            out.append(
                FeatureMessage(c, i, i * 1.6, i * 1.6 + 1.5, t, t + 1.5, i * 16, i * 16 + 15, reps, produced=t + 1.5)
            )
    return out


def topic_overrides(tag: str) -> dict:
    run = uuid.uuid4().hex[:10]
    return {
        "topics.features": f"fwtest.{tag}.features.{run}",
        "topics.alerts": f"fwtest.{tag}.alerts.{run}",
        "topics.dead_letter": f"fwtest.{tag}.dlq.{run}",
        "engine.group_id": f"fwtest.{tag}.engine.{run}",
    }


class _Scores(ScoreSink):
    def __init__(self):
        self.s = {}

    def on_score(self, camera, msg, score):
        self.s[(camera, msg.clip)] = score


def run_on_bus(cfg, msgs, sink=None) -> tuple[EngineService, set]:
    """Clean uninterrupted run on the in-process bus → (service, deduplicated alert set)."""
    bus = InProcessBus(partitions=3)
    p = BusTransport(bus)
    for m in msgs:
        p.produce(cfg.topics.features, m.camera, m.encode())
    t = BusTransport(bus)
    svc = EngineService(cfg, load_serving_model(cfg), t, sink=sink)
    svc.run(idle_exit_s=0.3)
    t.close()
    r = BusTransport(bus)
    r.subscribe([cfg.topics.alerts], "reader")
    alerts = {(a.id, a.type, a.end_clip) for a in (decode_alert(x.value) for x in r.poll(1_000_000, 0.2))}
    return svc, alerts


def thread_stacks(prefix: str) -> str:
    """Stacks of this process's threads whose name starts with ``prefix`` (diagnostics)."""
    import traceback

    names = {t.ident: t.name for t in threading.enumerate()}
    return "\n".join(
        f"--- {names[i]}\n" + "".join(traceback.format_stack(f))
        for i, f in sys._current_frames().items()
        if names.get(i, "").startswith(prefix)
    )


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("faults-model") / "lego.pt"
    save_plain_lego(p, WINDOW, DIMS)
    return p


@pytest.fixture(scope="module")
def reference(model_path):
    """Thresholds from this stream's score quantiles and the clean run's alert set."""
    msgs = stream_messages()
    base = load_config(env={}, overrides={**ENGINE_OVERRIDES, "engine.model": str(model_path)})
    sink = _Scores()
    run_on_bus(base, msgs, sink)
    v = np.array(list(sink.s.values()))
    assert len(v) == len(msgs)
    on, off = float(np.quantile(v, 0.55)), float(np.quantile(v, 0.45))
    alerts_over = {**ENGINE_OVERRIDES, "engine.model": str(model_path), "alerts.on": on, "alerts.off": off}
    cfg = load_config(env={}, overrides=alerts_over)
    _, ref = run_on_bus(cfg, msgs)
    types = {t for _, t, _ in ref}
    assert {"new", "end"} <= types, f"reference run has no complete alert: {sorted(ref)[:5]}"
    assert len({i for i, _, _ in ref}) >= len(CAMS), "too few alerts for a meaningful comparison"
    return {"msgs": msgs, "overrides": alerts_over, "alerts": ref}


# ---------------------------------------------------------------------------------------------
@pytest.mark.timeout(240)
def test_broker_crash_restart_mid_replay(private_kafka, reference, make_transport):
    """The private broker is SIGKILLed after ~1/4 of the stream and restarted on the same data while
    a producer keeps replaying the recorded stream at a steady 20 msg/s. Two in-process engines keep
    stepping through the outage, neither client is recreated (they must reconnect by themselves):

    * engine A (the real one) is slowed to ~17 msg/s, so it lags and has fetched-but-unprocessed
      records when the broker dies;
    * engine B (a second consumer group, thresholds at 1.0 so it never has an alert to flush) is
      slowed to 8 msg/s until the broker is back: it keeps processing its fetched backlog and
      committing while the broker is down, which is exactly when a commit fails.

    Every clip is scored by both, both groups' committed offsets reach the end, and A's
    deduplicated alert set equals the clean run's."""
    import copy

    from fusewatch.stream.topics import create_topics

    cfg = private_kafka.cfg(
        **{**reference["overrides"], **topic_overrides("restart"), "kafka.connect_timeout_s": 30, "engine.max_batch": 8}
    )
    create_topics(cfg, partitions=3)
    cfg_b = copy.deepcopy(cfg)
    cfg_b.engine.group_id += ".noalerts"
    cfg_b.alerts.on = cfg_b.alerts.off = 1.0
    msgs = reference["msgs"]
    every_clip = {(m.camera, m.clip) for m in msgs}
    assert private_kafka.status().ready

    stop = threading.Event()
    errors: list[str] = []
    engines: dict[str, tuple[EngineService, _Scores]] = {}
    threads = []
    for name, c, delay in (("A", cfg, 0.4), ("B", cfg_b, 1.0)):
        sink = _Scores()
        svc = EngineService(
            c, load_serving_model(c), make_transport(c, group_id=c.engine.group_id), sink=sink, delay_s=delay
        )
        svc.start()
        engines[name] = (svc, sink)

        def engine_loop(svc=svc, name=name):
            try:
                while not stop.is_set():
                    svc.step()
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(f"engine {name} died: {type(e).__name__}: {e}")

        threads.append(threading.Thread(target=engine_loop, name=f"engine-{name}", daemon=True))

    producer = make_transport(cfg, consume=False)
    produced = [0]
    rate = 20.0  # messages/s: 320 messages ≈ 16 s of stream

    def producer_loop():
        try:
            t0 = time.monotonic()
            for i, m in enumerate(msgs):
                delay = t0 + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                producer.produce(cfg.topics.features, m.camera, m.encode())
                produced[0] = i + 1
            producer.flush(timeout=90)
        except BaseException as e:  # noqa: BLE001
            errors.append(f"producer failed: {type(e).__name__}: {e}")

    threads.append(threading.Thread(target=producer_loop, name="producer", daemon=True))
    for th in threads:
        th.start()
    svc_a, sink_a = engines["A"]
    svc_b, sink_b = engines["B"]
    try:
        deadline = time.monotonic() + 30
        while produced[0] < len(msgs) // 4 and time.monotonic() < deadline and not errors:
            time.sleep(0.05)
        assert produced[0] >= len(msgs) // 4 and not errors, errors
        while not (svc_a.stats.scored and svc_b.stats.scored) and time.monotonic() < deadline + 15:
            time.sleep(0.05)
        if not (svc_a.stats.scored and svc_b.stats.scored):
            pytest.fail(
                "an engine scored nothing before the crash (stuck joining its group?): " + thread_stacks("engine-")
            )
        before = {"produced": produced[0], "A": svc_a.stats.scored, "B": svc_b.stats.scored}
        t_crash = time.monotonic()
        private_kafka.down(kill=True)  # crash
        time.sleep(1.0)
        private_kafka.up()  # same data dir: topics, offsets kept
        restart_s = time.monotonic() - t_crash
        produced_in_outage = produced[0] - before["produced"]
        assert private_kafka.status().ready
        svc_b.delay_s = 0.0
        threads[-1].join(timeout=120)
        assert not threads[-1].is_alive(), "producer did not finish (flush stuck?)"
        monitor = make_transport(cfg, group_id=cfg.engine.group_id, produce=False)  # never subscribes
        monitor_b = make_transport(cfg_b, group_id=cfg_b.engine.group_id, produce=False)
        deadline = time.monotonic() + 90
        done = (len(msgs), len(msgs))
        while time.monotonic() < deadline and not errors:
            if committed_total(monitor, cfg.topics.features) == done == committed_total(monitor_b, cfg.topics.features):
                break
            time.sleep(0.2)
    finally:
        stop.set()
        for th in threads[:2]:
            th.join(timeout=20)
    print(
        f"broker down+up {restart_s:.1f}s, {produced_in_outage} messages produced meanwhile; scored "
        f"before the crash A {before['A']} B {before['B']}; in all A {svc_a.stats.scored} "
        f"B {svc_b.stats.scored}; A produced {svc_a.stats.alerts} alerts"
    )
    assert not errors, f"did not survive the broker restart: {errors}"
    assert 0 < before["A"] < len(msgs) and 0 < before["B"] < before["A"], before
    assert produced_in_outage > 0, "nothing was produced while the broker was down"
    for name, mon, c in (("A", monitor, cfg), ("B", monitor_b, cfg_b)):
        assert committed_total(mon, c.topics.features) == done, f"engine {name}: offsets not committed"
    assert set(sink_a.s) == every_clip and set(sink_b.s) == every_clip, "clips lost across the restart"
    assert svc_a.stats.dead_letters == svc_b.stats.dead_letters == 0 and svc_b.stats.alerts == 0

    recs = drain_topic(cfg, cfg.topics.alerts)
    got = {(a.id, a.type, a.end_clip) for a in (decode_alert(r.value) for r in recs)}
    assert got == reference["alerts"], (
        f"missing {sorted(reference['alerts'] - got)[:5]}, unexpected {sorted(got - reference['alerts'])[:5]}"
    )


# ---------------------------------------------------------------------------------------------
ENGINE_WRAPPER = """
import faulthandler, sys
faulthandler.enable()  # SIGABRT from the test: every thread's stack into the log
from fusewatch.cli import main
sys.exit(main(sys.argv[1:]))
"""


def engine_cmd(cfg, model_path, overrides: dict, delay: float = 0.0) -> list[str]:
    cmd = [
        sys.executable,
        "-c",
        ENGINE_WRAPPER,
        "engine",
        "--transport",
        "kafka",
        "--bootstrap",
        cfg.kafka.bootstrap_servers,
        "--model",
        str(model_path),
        "--backend",
        "torch",
        "--group",
        cfg.engine.group_id,
        "--delay",
        str(delay),
        # the default session timeout (30 s) would make the surviving engine wait 30 s for the
        # dead member's partitions; lower it for these tests
        "--set",
        "kafka.session_timeout_ms=6000",
        "--set",
        "kafka.heartbeat_interval_ms=1000",
    ]
    for k, v in overrides.items():
        if k not in ("engine.model", "engine.group_id"):
            cmd += ["--set", f"{k}={v}"]
    return cmd


def clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUSEWATCH_") or k == "FUSEWATCH_CACHE"}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def stacks_and_log(p: subprocess.Popen, log: Path) -> str:
    """Tail of an engine's log, with every thread's stack first dumped into it if it still runs."""
    if p.poll() is None:
        p.send_signal(signal.SIGABRT)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
    return log.read_text()[-6000:]


def wait_exit(p: subprocess.Popen, timeout: float) -> int:
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(10)
        raise


@pytest.mark.timeout(330)
def test_engine_sigkill_second_engine_takes_over(
    kafka_cfg, reference, model_path, make_transport, _created_topics, tmp_path
):
    """A slowed-down ``fusewatch engine`` process (``--delay``) is SIGKILLed once it has committed
    ~1/4 of the stream; a second engine process in the same consumer group takes the partitions
    over, rebuilds the cameras' windows from the log and finishes the stream. The deduplicated
    alert set equals the clean run's."""
    from fusewatch.stream.topics import create_topics

    over = {**reference["overrides"], **topic_overrides("sigkill"), "engine.max_batch": 8}
    cfg = load_config(env={}, overrides={**over, "kafka.bootstrap_servers": kafka_cfg.kafka.bootstrap_servers})
    create_topics(cfg, partitions=3)
    _created_topics.extend([cfg.topics.features, cfg.topics.alerts, cfg.topics.dead_letter])
    msgs = reference["msgs"]
    prod = make_transport(cfg, consume=False)
    for m in msgs:
        prod.produce(cfg.topics.features, m.camera, m.encode())
    prod.flush(timeout=30)
    monitor = make_transport(cfg, group_id=cfg.engine.group_id, produce=False)  # never subscribes
    assert committed_total(monitor, cfg.topics.features) == (0, len(msgs))

    env = clean_env()
    logs = [open(tmp_path / f"engine{i}.log", "w+") for i in (1, 2)]
    # The test plays the engines' supervisor: an engine whose liveness watchdog fires
    # (exit STALL_EXIT, e.g. a Kafka client wedged in poll) is restarted, as systemd/k8s would.
    over = {**over, "engine.stall_timeout": 20}
    start1 = lambda: subprocess.Popen(
        engine_cmd(cfg, model_path, over, delay=0.25),
        env=env,  # noqa: E731
        cwd=ROOT,
        stdout=logs[0],
        stderr=subprocess.STDOUT,
    )
    e1 = start1()
    e2 = None
    restarts = 0
    try:
        deadline = time.monotonic() + 150
        com = 0
        while time.monotonic() < deadline:
            if e1.poll() is not None:
                if e1.returncode == STALL_EXIT and restarts < 3:
                    restarts += 1
                    e1 = start1()
                    continue
                break
            com, _ = committed_total(monitor, cfg.topics.features)
            if com >= len(msgs) // 4:
                break
            time.sleep(0.1)
        assert e1.poll() is None, f"engine 1 exited early: {(tmp_path / 'engine1.log').read_text()[-2000:]}"
        if com < len(msgs) // 4:
            pytest.fail(
                f"engine 1 committed {com} of {len(msgs)} within 150 s: {stacks_and_log(e1, tmp_path / 'engine1.log')}"
            )
        assert com < len(msgs), "engine 1 finished the stream before it could be killed"
        e1.send_signal(signal.SIGKILL)
        assert wait_exit(e1, 10) == -signal.SIGKILL
        com_at_kill, _ = committed_total(monitor, cfg.topics.features)
        assert com_at_kill < len(msgs), "engine 1 finished the stream before it was killed"

        t_take = time.monotonic()
        start2 = lambda: subprocess.Popen(
            engine_cmd(cfg, model_path, over),
            env=env,
            cwd=ROOT,  # noqa: E731
            stdout=logs[1],
            stderr=subprocess.STDOUT,
        )
        e2 = start2()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if e2.poll() is not None:
                if e2.returncode == STALL_EXIT and restarts < 3:
                    restarts += 1
                    e2 = start2()
                    continue
                break
            com, end = committed_total(monitor, cfg.topics.features)
            if com == end == len(msgs):
                break
            time.sleep(0.2)
        takeover_s = time.monotonic() - t_take
        assert e2.poll() is None, f"engine 2 exited: {(tmp_path / 'engine2.log').read_text()[-2000:]}"
        if com != len(msgs):
            pytest.fail(
                f"engine 2: {com} of {len(msgs)} committed within 120 s: {stacks_and_log(e2, tmp_path / 'engine2.log')}"
            )
        e2.send_signal(signal.SIGTERM)  # graceful: flush, leave the group
        assert wait_exit(e2, 60) == 0
    finally:
        for p in (e1, e2):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)
        for f in logs:
            f.close()
    log2 = (tmp_path / "engine2.log").read_text()
    summary = [ln[ln.index("engine: ") :] for ln in log2.splitlines() if "engine: " in ln and " records, " in ln]
    assert summary, log2[-2000:]
    print(
        f"engine 1 killed at {com_at_kill}/{len(msgs)} committed; engine 2 done in {takeover_s:.1f}s "
        f"({restarts} watchdog restarts): "
        f"{summary[-1]}"
    )
    assert "0 dead letters" in summary[-1]
    assert "rebuilt" in log2, "engine 2 did not rebuild camera state from the log"

    recs = drain_topic(cfg, cfg.topics.alerts)
    got = {(a.id, a.type, a.end_clip) for a in (decode_alert(r.value) for r in recs)}
    assert got == reference["alerts"], (
        f"missing {sorted(reference['alerts'] - got)[:5]}, unexpected {sorted(got - reference['alerts'])[:5]}"
    )
