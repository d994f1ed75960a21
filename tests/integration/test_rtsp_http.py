"""Workers against real network sources (marker ``network``).

* RTSP: a real MediaMTX server (built from the Go module, see ``tests/media_servers.py``) fed by
  ``ffmpeg -re -stream_loop -1 -i FILE -c copy -f rtsp``; the server is killed mid-stream and
  restarted, and frozen (SIGSTOP) to exercise the stall watchdog: the worker must reconnect and
  resume publishing.
* HTTP: ``ffmpeg -listen 1`` serving MPEG-TS over HTTP.

The camera stream is a Ped2 video re-encoded once with a 1 s GOP (``-g 10``) like a real camera:
the dataset mp4s hold a single keyframe, so a reader joining mid-stream would wait up to a whole
loop (18 s) for the next one. Publishing itself uses ``-c copy``.

Skipped, with the reason, only when MediaMTX cannot be found or built (no Go toolchain / module
proxy refused) or ffmpeg is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from fusewatch.stream.config import load_config
from fusewatch.stream.paths import shared_data  # noqa: E402
from fusewatch.stream.schema import decode_features
from fusewatch.stream.transport import BusTransport, InProcessBus
from fusewatch.stream.worker import Worker
from fusewatch.testing import MeanRGB
from tests.media_servers import FFmpegHTTPServer, FFmpegPublisher, MediaMTX, MediaServerUnavailable, ensure_mediamtx

PED2 = shared_data("ped2")
FFMPEG = shutil.which("ffmpeg")

pytestmark = [
    pytest.mark.network,
    pytest.mark.skipif(not FFMPEG, reason="ffmpeg not installed"),
    pytest.mark.skipif(not PED2.is_dir(), reason=f"shared data not found at {PED2}"),
]


@pytest.fixture(scope="module")
def mediamtx() -> Path:
    try:
        return ensure_mediamtx()
    except (MediaServerUnavailable, subprocess.TimeoutExpired, OSError) as e:
        pytest.skip(f"mediamtx unavailable: {e}")


@pytest.fixture(scope="module")
def camera_file(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cam") / "cam.mp4"
    subprocess.run(
        [
            FFMPEG,
            "-v",
            "error",
            "-y",
            "-i",
            str(PED2 / "test_02.mp4"),
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            "10",
            "-bf",
            "0",
            "-pix_fmt",
            "yuv420p",
            str(out),
        ],
        check=True,
        timeout=60,
    )
    return out


def live_cfg(socket_timeout: float = 1.0):
    return load_config(
        env={},
        overrides={
            "source.stall_timeout": "2",
            "source.socket_timeout": str(socket_timeout),
            "source.reconnect_initial": "0.2",
            "source.reconnect_max": "1",
        },
    )


class Running:
    """A worker in a thread publishing to its own bus."""

    def __init__(self, camera: str, uri: str, socket_timeout: float = 1.0):
        self.bus = InProcessBus()
        self.worker = Worker(
            live_cfg(socket_timeout), camera, uri, transport=BusTransport(self.bus), extractors=[MeanRGB()]
        )
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.worker.run()
        except BaseException as e:  # pragma: no cover - reported by the test
            self.error = e

    @property
    def clips(self) -> int:
        return self.worker.counters["clips_published"]

    def wait_clips(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.clips >= n:
                return True
            assert self.error is None, self.error
            time.sleep(0.05)
        return False

    def messages(self):
        out = []
        for p in self.bus.partitions_for("fusewatch.features"):
            out += self.bus.read(("fusewatch.features", p), 0, 100000)
        return out

    def stop(self):
        self.worker.stop()
        self.thread.join(10)
        assert not self.thread.is_alive(), "worker did not stop"


def wait_publishing(srv: MediaMTX, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "is publishing to path" in srv.log_tail(100000).split("listener opened")[-1]:
            return
        time.sleep(0.05)
    raise AssertionError(f"publisher did not start: {srv.log_tail()}")


def check_stream(run: Running, camera: str) -> None:
    recs = run.messages()
    assert recs and {r.key for r in recs} == {camera.encode()}
    msgs = [decode_features(r.value) for r in recs]
    clips = [m.clip for m in msgs]
    assert clips == list(range(len(clips)))
    for a, b in zip(msgs, msgs[1:]):
        assert b.frame_start > a.frame_end and b.pts_start > a.pts_end and b.wall_start > a.wall_end


@pytest.mark.timeout(1500)  # includes building mediamtx on first use
def test_rtsp_worker_reconnects_after_server_restart(mediamtx, camera_file, tmp_path):
    srv = MediaMTX(mediamtx, workdir=tmp_path).start()
    pub = FFmpegPublisher(camera_file, srv.url("cam"), log_path=tmp_path / "pub.log").start()
    run = None
    t_start = time.monotonic()
    try:
        wait_publishing(srv)
        run = Running("rtsp-cam", srv.url("cam"))
        assert run.wait_clips(2, 20), f"no clips from RTSP: {run.worker.counters}"
        before = run.clips
        srv.stop(kill=True)  # the server dies mid-stream
        pub.stop(kill=True)
        time.sleep(2.5)
        assert run.worker.counters["reconnects"] >= 1
        srv = MediaMTX(mediamtx, port=srv.port, workdir=tmp_path).start()
        pub = FFmpegPublisher(camera_file, srv.url("cam"), log_path=tmp_path / "pub2.log").start()
        assert run.wait_clips(before + 2, 30), f"no clips after restart: {run.worker.counters}"
        c = run.worker.counters
        assert c["reconnects"] >= 1 and c["clips_published"] >= before + 2
        run.stop()
        check_stream(run, "rtsp-cam")
    finally:
        if run is not None and run.thread.is_alive():
            run.worker.stop()
        pub.stop()
        srv.stop()
    assert time.monotonic() - t_start < 60


@pytest.mark.timeout(1500)
def test_rtsp_stall_watchdog_reconnects_when_the_server_freezes(mediamtx, camera_file, tmp_path, caplog):
    """Socket timeout (10 s) > stall_timeout (2 s): the watchdog, not FFmpeg, must notice the freeze
    and abandon the blocked decoder thread."""
    caplog.set_level("WARNING", logger="stream")
    srv = MediaMTX(mediamtx, workdir=tmp_path).start()
    pub = FFmpegPublisher(camera_file, srv.url("cam"), log_path=tmp_path / "pub.log").start()
    run = None
    t_start = time.monotonic()
    try:
        wait_publishing(srv)
        run = Running("frozen-cam", srv.url("cam"), socket_timeout=10)
        assert run.wait_clips(1, 20), f"no clips from RTSP: {run.worker.counters}"
        os.kill(srv.proc.pid, signal.SIGSTOP)  # connection stays open, no data: a stall
        time.sleep(3.5)
        os.kill(srv.proc.pid, signal.SIGCONT)
        assert run.worker.counters["reconnects"] >= 1, "watchdog did not fire"
        reasons = [getattr(r, "fields", {}).get("reason") for r in caplog.records]
        assert "stall" in reasons, reasons
        before = run.clips
        if not pub.alive():
            pub = FFmpegPublisher(camera_file, srv.url("cam"), log_path=tmp_path / "pub2.log").start()
        assert run.wait_clips(before + 1, 30), f"no clips after the stall: {run.worker.counters}"
        run.stop()
        check_stream(run, "frozen-cam")
    finally:
        if srv.proc is not None and srv.proc.poll() is None:
            os.kill(srv.proc.pid, signal.SIGCONT)
        if run is not None and run.thread.is_alive():
            run.worker.stop()
        pub.stop()
        srv.stop()
    assert time.monotonic() - t_start < 60


@pytest.mark.timeout(120)
def test_http_mpegts_source_publishes_clips():
    srv = FFmpegHTTPServer(PED2 / "test_04.mp4").start()
    run = None
    t_start = time.monotonic()
    try:
        run = Running("http-cam", srv.url)
        assert run.wait_clips(2, 25), f"no clips from HTTP: {run.worker.counters}"
        run.stop()
        check_stream(run, "http-cam")
        m = decode_features(run.messages()[0].value)
        assert m.frame_start == 0 and m.frame_end == 15 and m.pts_end - m.pts_start == pytest.approx(1.5, abs=0.05)
    finally:
        if run is not None and run.thread.is_alive():
            run.worker.stop()
        srv.stop()
    assert time.monotonic() - t_start < 60
