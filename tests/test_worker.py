"""Worker: real decoding → clips → extractors → FeatureMessages on the bus; metrics; stop/SIGTERM;
CLI commands; offline extract (same pipeline, collecting sink)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from fusewatch.cli.worker import add_commands
from fusewatch.stream.config import ConfigError, load_config
from fusewatch.stream.extract import extract_videos
from fusewatch.stream.extractors.base import Extractor
from fusewatch.stream.paths import shared_data  # noqa: E402
from fusewatch.stream.schema import decode_features
from fusewatch.stream.sources import SourceError
from fusewatch.stream.transport import BusTransport, InProcessBus
from fusewatch.stream.worker import Worker
from fusewatch.testing import MeanRGB
from fusewatch.testing import tone_video as make_tone_video

ROOT = Path(__file__).resolve().parents[1]
PED2 = shared_data("ped2")
FFMPEG = shutil.which("ffmpeg")

pytestmark = pytest.mark.skipif(not PED2.is_dir(), reason=f"shared data not found at {PED2}")


class AudioRMS(Extractor):
    name, dim, version, needs_audio = "audiorms", 1, "t1", True

    def extract(self, frames, audio, audio_rate):
        if audio is None:
            return None
        return np.array([np.sqrt(np.mean(audio.astype(np.float64) ** 2))], np.float32)


class Broken(Extractor):
    name, dim, version = "broken", 4, "t1"

    def extract(self, frames, audio, audio_rate):
        raise RuntimeError("boom")


def cfg_(**over):
    return load_config(env={}, overrides=over)


def records(bus: InProcessBus, topic: str = "fusewatch.features"):
    out = []
    for p in bus.partitions_for(topic):
        out += bus.read((topic, p), 0, 100000)
    return out


def test_worker_publishes_decodable_feature_messages_keyed_by_camera():
    bus = InProcessBus()
    cfg = cfg_(**{"source.overflow": "block"})
    st = Worker(
        cfg, "cam-7", str(PED2 / "test_02.mp4"), transport=BusTransport(bus), extractors=[MeanRGB(), Broken()]
    ).run()
    recs = records(bus)
    assert st.clips_published == len(recs) == 11 and st.frames_decoded == 180
    assert {r.key for r in recs} == {b"cam-7"} and len({r.partition for r in recs}) == 1
    msgs = [decode_features(r.value) for r in recs]
    assert [m.clip for m in msgs] == list(range(11))
    for k, m in enumerate(msgs):
        assert m.camera == "cam-7"
        assert (m.frame_start, m.frame_end) == (16 * k, 16 * k + 15)
        assert m.pts_start == pytest.approx(1.6 * k) and m.pts_end == pytest.approx(1.6 * k + 1.5)
        assert m.wall_end - m.wall_start == pytest.approx(1.5)
        assert [r.name for r in m.reps] == ["meanrgb"]  # failed extractor omitted
        r = m.reps[0]
        assert r.extractor == "meanrgb" and r.version == "t1" and r.array.shape == (3,)
        assert r.array.dtype == np.float32 and 0 < r.array.mean() < 255
    assert time.time() - 60 < msgs[0].wall_start <= time.time()  # live anchor: now-ish
    assert st.decode_errors == 0 and st.reconnects == 0


def test_unsupported_uri_and_missing_file_fail_before_work():
    cfg = cfg_()
    for uri in ("ftp://x/cam", "foo://", "/nonexistent/video.mp4"):
        with pytest.raises(SourceError) as ei:
            Worker(cfg, "c", uri, transport=BusTransport(InProcessBus()), extractors=[MeanRGB()])
        assert "\n" not in str(ei.value)


def test_corrupt_file_raises_source_error_from_run(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(os.urandom(50_000))
    w = Worker(cfg_(), "c", str(bad), transport=BusTransport(InProcessBus()), extractors=[MeanRGB()])
    t0 = time.monotonic()
    with pytest.raises(SourceError):
        w.run()
    assert time.monotonic() - t0 < 10


def test_metrics_per_worker_registries_and_plain_counters():
    bus = InProcessBus()
    cfg = cfg_(**{"source.overflow": "block"})
    ws = [
        Worker(cfg, f"m{i}", str(PED2 / f"train_0{i + 1}.mp4"), transport=BusTransport(bus), extractors=[MeanRGB()])
        for i in range(2)
    ]
    threads = [threading.Thread(target=w.run) for w in ws]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for w in ws:
        c = w.counters
        reg = w.metrics.registry
        assert reg is not ws[0].metrics.registry or w is ws[0]
        val = reg.get_sample_value("fusewatch_clips_published_total", {"camera": w.camera})
        assert val == c["clips_published"] > 0
        assert reg.get_sample_value("fusewatch_frames_decoded_total", {"camera": w.camera}) == c["frames_decoded"]
        assert reg.get_sample_value("fusewatch_publish_latency_seconds_count", {"camera": w.camera}) == val
        assert c["frames_dropped"] == 0 and "meanrgb" in c["extract_ms_per_clip"]


def test_metrics_http_endpoint():
    cfg = cfg_(**{"worker.metrics_port": "0", "source.overflow": "block"})
    w = Worker(
        cfg, "http-metrics", str(PED2 / "train_04.mp4"), transport=BusTransport(InProcessBus()), extractors=[MeanRGB()]
    )
    try:
        w.run()
        assert w.metrics_port and w.metrics_port > 0
        body = urllib.request.urlopen(f"http://127.0.0.1:{w.metrics_port}/metrics", timeout=5).read().decode()
        assert 'fusewatch_clips_published_total{camera="http-metrics"}' in body
        assert "fusewatch_publish_latency_seconds_bucket" in body and "fusewatch_reconnects_total" in body
    finally:
        w.metrics.set.shutdown()


def test_drop_oldest_counts_drops_when_extraction_is_slow():
    class Slow(MeanRGB):
        def extract(self, frames, audio, audio_rate):
            time.sleep(0.3)
            return super().extract(frames, audio, audio_rate)

    cfg = cfg_(**{"source.queue_size": "4", "source.overflow": "drop_oldest"})
    w = Worker(
        cfg,
        "slow",
        str(PED2 / "test_08.mp4"),
        transport=BusTransport(InProcessBus()),
        extractors=[Slow()],
        overflow="drop_oldest",
    )  # a file as a stand-in for a live camera
    st = w.run()
    assert st.frames_dropped > 0
    assert st.frames_processed + st.frames_dropped == st.frames_sampled == st.frames_decoded


def test_stop_returns_quickly_and_flushes():
    class CountingTransport(BusTransport):
        flushes = 0

        def flush(self, timeout=None):
            CountingTransport.flushes += 1

    t = CountingTransport(InProcessBus())
    w = Worker(
        cfg_(), "rt", str(PED2 / "test_10.mp4"), transport=t, extractors=[MeanRGB()], wall_anchor=0.0, realtime=True
    )
    th = threading.Thread(target=w.run)
    th.start()
    time.sleep(2.2)  # ~1 clip at real-time pace
    t0 = time.monotonic()
    w.stop()
    th.join(10)
    assert not th.is_alive() and time.monotonic() - t0 < 5
    assert CountingTransport.flushes >= 1 and 1 <= w.counters["clips_published"] <= 3


def test_sigterm_stops_the_worker_cleanly(tmp_path):
    script = tmp_path / "run_worker.py"
    script.write_text(
        textwrap.dedent(f"""
        import numpy as np
        from fusewatch.stream.config import load_config
        from fusewatch.stream.extractors.base import Extractor
        from fusewatch.stream.transport import BusTransport
        from fusewatch.stream.signals import install_signal_handlers
        from fusewatch.stream.worker import Worker

        class M(Extractor):
            name, dim, version = "m", 1, "1"
            def extract(self, frames, audio, rate):
                return np.array([frames[0].mean()], np.float32)

        class T(BusTransport):
            def flush(self, timeout=None):
                print("FLUSHED", flush=True)

        w = Worker(load_config(env={{}}), "sig", {str(PED2 / "test_12.mp4")!r}, transport=T(),
                   extractors=[M()], wall_anchor=0.0, realtime=True)
        install_signal_handlers(w.stop)
        print("READY", flush=True)
        st = w.run()
        print("DONE", st.clips_published, flush=True)
    """)
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    p = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert p.stdout.readline().strip() == "READY"
        time.sleep(2.0)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=15)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    assert "FLUSHED" in out and "DONE" in out


@pytest.fixture
def restore_logging():
    """CLI handlers install the project's log handler (propagate off); undo it for later tests."""
    import logging

    saved = {
        n: (list(logging.getLogger(n).handlers), logging.getLogger(n).propagate, logging.getLogger(n).level)
        for n in ("fusewatch", "kafka")
    }
    yield
    for n, (handlers, propagate, level) in saved.items():
        lg = logging.getLogger(n)
        lg.handlers[:] = handlers  # (kafka: also the level a DEBUG run set)
        lg.propagate = propagate
        lg.setLevel(level)


def test_cli_commands_registered_and_errors_are_one_line(tmp_path, restore_logging):
    parser = argparse.ArgumentParser(prog="fusewatch")
    sub = parser.add_subparsers(dest="command")
    add_commands(sub)
    a = parser.parse_args(["worker", "--camera", "c1", "--source", "foo://bar"])
    with pytest.raises(SourceError, match="unsupported URI scheme"):
        a.handler(a, cfg_())
    a = parser.parse_args(["replay", "a.mp4", "b.mp4", "--speed", "max", "--loop", "2"])
    assert a.files == ["a.mp4", "b.mp4"] and a.speed == "max" and a.loop == 2
    with pytest.raises(SourceError, match="no such file"):
        a.handler(a, cfg_())
    a = parser.parse_args(["extract", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    with pytest.raises(SourceError, match="no such file or directory"):
        a.handler(a, cfg_())


def test_fusewatch_entry_point_exit_code_2_for_bad_source(tmp_path, restore_logging):
    try:
        from fusewatch.cli import main
    except ImportError as e:  # pragma: no cover - CLI module owned elsewhere
        pytest.skip(f"fusewatch.cli not importable: {e}")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    assert main(["worker", "--camera", "c", "--source", "foo://x"]) == 2
    assert main(["replay", str(tmp_path / "nope.mp4")]) == 2


# -- real extractors through the default path -----------------------------------------------------
def test_worker_builds_real_extractors_from_config():
    pytest.importorskip("fusewatch.stream.extractors.flow")
    bus = InProcessBus()
    cfg = cfg_(**{"features.extractors": "flow", "source.overflow": "block"})
    st = Worker(cfg, "flowcam", str(PED2 / "train_05.mp4"), transport=BusTransport(bus)).run()
    msgs = [decode_features(r.value) for r in records(bus)]
    assert st.clips_published == len(msgs) > 0
    assert all(m.reps[0].name == "flow" and m.reps[0].array.shape == (80,) for m in msgs)


def test_unknown_extractor_is_a_config_error():
    cfg = cfg_()
    cfg.features.extractors = ["nope"]
    with pytest.raises(ConfigError):
        Worker(cfg, "c", str(PED2 / "test_02.mp4"), transport=BusTransport(InProcessBus()))


# -- audio through the worker -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tone_video(tmp_path_factory) -> Path:
    if not FFMPEG:
        pytest.skip("ffmpeg not installed")
    return make_tone_video(tmp_path_factory.mktemp("tone") / "tone.mp4", FFMPEG)


def test_clip_audio_reaches_audio_extractors_and_absent_audio_is_omitted(tone_video):
    bus = InProcessBus()
    cfg = cfg_(**{"source.overflow": "block"})
    Worker(cfg, "tone", str(tone_video), transport=BusTransport(bus), extractors=[MeanRGB(), AudioRMS()]).run()
    msgs = [decode_features(r.value) for r in records(bus)]
    assert len(msgs) == 2
    for m in msgs:
        rms = m.rep("audiorms")
        assert rms is not None and 0.05 < float(rms[0]) < 1.0  # a sine tone, not silence
    bus2 = InProcessBus()
    Worker(
        cfg, "silent", str(PED2 / "test_02.mp4"), transport=BusTransport(bus2), extractors=[MeanRGB(), AudioRMS()]
    ).run()
    msgs2 = [decode_features(r.value) for r in records(bus2)]
    assert msgs2 and all([r.name for r in m.reps] == ["meanrgb"] for m in msgs2)


# -- offline extract ----------------------------------------------------------------------------------
def test_extract_layout_meta_labels_and_same_features_as_worker(tmp_path, tone_video):
    vids = tmp_path / "videos"
    vids.mkdir()
    for stem in ("test_02", "train_01"):
        os.symlink(PED2 / f"{stem}.mp4", vids / f"{stem}.mp4")
    shutil.copyfile(PED2 / "labels.json", vids / "labels.json")
    out = tmp_path / "feats"
    cfg = cfg_()
    res = extract_videos([vids, tone_video], out, cfg, extractors=[MeanRGB(), AudioRMS()], progress=False)
    assert res == out
    meta = json.loads((out / "meta.json").read_text())
    assert meta["clip_len"] == 16 and meta["clip_stride"] == 16 and meta["sample_fps"] == 10
    assert meta["representations"] == {"meanrgb": {"dim": 3, "version": "t1"}, "audiorms": {"dim": 1, "version": "t1"}}
    v = meta["videos"]["test_02"]
    assert v["clips"] == 11 and v["frames"] == 180 and v["fps"] == 10
    assert v["clip_frames"] == [[16 * k, 16 * k + 15] for k in range(11)]
    assert meta["videos"]["train_01"]["clips"] == 7 and meta["videos"]["tone"]["clips"] == 2
    a = np.load(out / "meanrgb" / "test_02.npy")
    assert a.shape == (11, 3) and a.dtype == np.float32
    assert not (out / "audiorms" / "test_02.npy").exists()  # no audio track: not written
    assert np.load(out / "audiorms" / "tone.npy").shape == (2, 1)
    assert (out / "labels.json").read_bytes() == (PED2 / "labels.json").read_bytes()
    # the worker publishes exactly these features for the same video
    bus = InProcessBus()
    Worker(
        cfg_(**{"source.overflow": "block"}),
        "test_02",
        str(PED2 / "test_02.mp4"),
        transport=BusTransport(bus),
        extractors=[MeanRGB()],
    ).run()
    live = np.stack([decode_features(r.value).rep("meanrgb") for r in records(bus)])
    np.testing.assert_array_equal(live, a)


def test_extract_refuses_a_dir_with_other_settings_and_reports_missing_inputs(tmp_path):
    out = tmp_path / "f"
    extract_videos([PED2 / "train_01.mp4"], out, cfg_(), extractors=[MeanRGB()], progress=False)
    with pytest.raises(ConfigError, match="other clip settings"):
        extract_videos(
            [PED2 / "train_02.mp4"], out, cfg_(**{"clips.clip_len": "8"}), extractors=[MeanRGB()], progress=False
        )
    with pytest.raises(ConfigError, match=r"working resolution \(source.max_width\)"):
        extract_videos(
            [PED2 / "train_02.mp4"], out, cfg_(**{"source.max_width": "0"}), extractors=[MeanRGB()], progress=False
        )
    extract_videos([PED2 / "train_02.mp4"], out, cfg_(), extractors=[MeanRGB()], progress=False)
    meta = json.loads((out / "meta.json").read_text())
    assert set(meta["videos"]) == {"train_01", "train_02"} and meta["max_width"] == 384
    with pytest.raises(SourceError):
        extract_videos([tmp_path / "nothing"], out, cfg_(), extractors=[MeanRGB()], progress=False)


def test_structured_logs_text_and_json(restore_logging):
    import io

    from fusewatch.stream.logs import get_logger, setup_logging

    buf = io.StringIO()
    setup_logging("INFO", "json", stream=buf)
    get_logger("fusewatch.stream.worker", camera="c9").warning("source lost", extra={"fields": {"attempt": 2}})
    obj = json.loads(buf.getvalue().strip().splitlines()[-1])
    assert obj["msg"] == "source lost" and obj["camera"] == "c9" and obj["attempt"] == 2
    assert obj["level"] == "WARNING" and obj["logger"] == "fusewatch.stream.worker"
    buf = io.StringIO()
    setup_logging("INFO", "text", stream=buf)
    get_logger("fusewatch.stream.worker", camera="c9").info("clip", extra={"fields": {"detail": "a b"}})
    line = buf.getvalue().strip()
    assert line.endswith('INFO fusewatch.stream.worker clip camera=c9 detail="a b"')


def test_default_log_stream_follows_stderr(restore_logging, monkeypatch):
    """Without an explicit stream the handler writes to the current sys.stderr: a closed earlier
    stderr (a finished command's, a test's capture) is never written to."""
    import io
    import logging

    from fusewatch.stream.logs import setup_logging

    first = io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    setup_logging("INFO", "text", logger_names=("fusewatch", "kafka"))
    logging.getLogger("fusewatch.x").warning("one")
    first.close()
    second = io.StringIO()
    monkeypatch.setattr("sys.stderr", second)
    logging.getLogger("fusewatch.x").warning("two")
    logging.getLogger("kafka.x").warning("three")  # library loggers get the same handler
    assert second.getvalue().splitlines()[0].endswith("WARNING fusewatch.x two")
    assert "three" in second.getvalue() and "Logging error" not in second.getvalue()
