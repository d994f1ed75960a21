"""Sources: URI parsing, sampling math, real decoding (Ped2 mp4, vtest.avi), queue overflow, broken
files, watchdog/reconnect (with a scripted reader), audio, loops, OpenCV fallback."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from fusewatch.stream.clips import AudioChunk, Frame
from fusewatch.stream.config import SourceConfig
from fusewatch.stream.paths import shared_data  # noqa: E402
from fusewatch.stream.sampling import FrameSampler, expected_clips, sample_indices
from fusewatch.stream.sources import (
    Discontinuity,
    EndOfStream,
    FrameQueue,
    Reader,
    SourceError,
    VideoEvent,
    VideoSource,
    backoff_delay,
    decoding,
    file_anchor,
    opener,
    parse_source,
    probe,
)
from fusewatch.testing import tone_video  # noqa: E402

SHARED = shared_data()
PED2 = SHARED / "ped2"
VTEST = SHARED / "cctv" / "vtest.avi"
FFMPEG = shutil.which("ffmpeg")

pytestmark = pytest.mark.skipif(not PED2.is_dir(), reason=f"shared data not found at {SHARED}")


def drain(source: VideoSource, timeout: float = 30.0) -> tuple[list, EndOfStream]:
    """All items of a started source until EndOfStream (bounded in time)."""
    items = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        it = source.get(0.2)
        if it is None:
            continue
        if isinstance(it, EndOfStream):
            return items, it
        items.append(it)
    raise AssertionError(f"source did not end within {timeout} s")


def frames_of(items) -> list[Frame]:
    return [i for i in items if isinstance(i, Frame)]


# -- URI parsing ------------------------------------------------------------------------------
@pytest.mark.parametrize("uri", ["ftp://x/video.mp4", "foo://", "foo://bar", "gopher://host/x"])
def test_unsupported_scheme_is_a_clear_error(uri):
    with pytest.raises(SourceError) as ei:
        parse_source(uri, SourceConfig())
    msg = str(ei.value)
    assert "\n" not in msg and "unsupported URI scheme" in msg and uri in msg


def test_missing_file_and_device_errors(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        parse_source(str(tmp_path / "nope.mp4"))
    with pytest.raises(SourceError, match="directory"):
        parse_source(str(tmp_path))
    with pytest.raises(SourceError, match="no such device"):
        parse_source("/dev/video987")
    with pytest.raises(SourceError, match="no such device"):
        parse_source("v4l2://987")
    with pytest.raises(SourceError, match="missing host"):
        parse_source("rtsp://")


def test_network_options_in_microseconds():
    cfg = SourceConfig(socket_timeout=2.5, rtsp_transport="udp")
    s = parse_source("rtsp://127.0.0.1:8554/cam", cfg)
    assert s.kind == "rtsp" and s.live
    assert s.options["rtsp_transport"] == "udp" and s.options["timeout"] == "2500000"
    h = parse_source("https://example.invalid/live.m3u8", cfg)
    assert h.kind == "http" and h.options["rw_timeout"] == "2500000" and h.options["timeout"] == "2500000"
    f = parse_source(str(PED2 / "test_02.mp4"), cfg)
    assert f.kind == "file" and not f.live and f.options == {}
    assert parse_source("file://" + str(PED2 / "test_02.mp4")).kind == "file"


def test_backoff_is_exponential_jittered_and_capped():
    rng = random.Random(1)
    for attempt in range(12):
        d = backoff_delay(attempt, 0.5, 8.0, rng)
        base = min(8.0, 0.5 * 2**attempt)
        assert max(0.5, base * 0.5) <= d <= base + 1e-9
    assert len({round(backoff_delay(3, 0.5, 8.0, rng), 6) for _ in range(20)}) > 1  # jittered


# -- sampling math ----------------------------------------------------------------------------
def test_sampler_downsamples_by_timestamp():
    pts30 = [i / 30 for i in range(90)]
    assert sample_indices(pts30, 10) == list(range(0, 90, 3))
    pts10 = [i / 10 for i in range(50)]
    assert sample_indices(pts10, 10) == list(range(50))  # same rate: keep all
    assert sample_indices(pts10, 20) == list(range(50))  # never duplicates
    assert sample_indices(pts10, 5) == list(range(0, 50, 2))
    assert sample_indices(pts10, 2) == list(range(0, 50, 5))  # never the frame before an instant
    assert sample_indices([i / 30 for i in range(300)], 7.5) == [i for i in range(300) if i % 4 == 0]
    pts25 = [i / 25 for i in range(250)]  # 10 s at 25 fps
    assert len(sample_indices(pts25, 10)) == 100
    pts15 = [i / 15 for i in range(150)]
    assert len(sample_indices(pts15, 10)) == 100


def test_sampler_tolerates_jitter_and_restarts_after_gaps():
    rng = np.random.default_rng(0)
    jittered = [i / 10 + rng.uniform(-0.012, 0.012) for i in range(1000)]
    assert sample_indices(jittered, 10) == list(range(1000))
    gap = [i / 10 for i in range(10)] + [5.0 + i / 10 for i in range(10)]
    kept = sample_indices(gap, 10)
    assert kept == list(range(20))  # no burst, no loss after the gap
    s = FrameSampler(10)
    assert [s.keep(t) for t in (0.0, 0.05, 0.1, 0.12, 0.2)] == [True, False, True, False, True]


def test_expected_clips():
    assert expected_clips(180, 16, 16) == 11
    assert expected_clips(15, 16, 16) == 0
    assert expected_clips(16, 16, 8) == 1
    assert expected_clips(40, 16, 8) == 4
    assert expected_clips(100, 8, 16) == 6


# -- real decoding ----------------------------------------------------------------------------
def test_decode_ped2_indices_pts_wall_rgb():
    path = PED2 / "test_02.mp4"
    s = VideoSource(str(path), SourceConfig(overflow="block"), wall_anchor=1000.0).start()
    items, end = drain(s)
    s.stop()
    fr = frames_of(items)
    assert end.error is None and end.warning is None
    assert len(fr) == 180 and s.counts["decoded"] == 180 and s.counts["dropped"] == 0
    assert [f.index for f in fr] == list(range(180))
    assert np.allclose([f.pts for f in fr], np.arange(180) / 10, atol=1e-6)
    assert np.allclose([f.wall for f in fr], 1000.0 + np.arange(180) / 10, atol=1e-6)
    f0 = fr[0].image
    assert f0.dtype == np.uint8 and f0.shape == (240, 360, 3)
    cap = cv2.VideoCapture(str(path))  # independent decode: RGB order
    ok, bgr = cap.read()
    cap.release()
    assert ok
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(int)
    assert np.abs(rgb - f0.astype(int)).mean() < 2.0
    assert s.info["fps"] == 10 and s.info["width"] == 360 and s.info["backend"] == "pyav"


def test_live_anchor_is_wall_clock_at_first_frame():
    t0 = time.time()
    s = VideoSource(str(PED2 / "train_01.mp4"), SourceConfig(overflow="block")).start()
    items, _ = drain(s)
    fr = frames_of(items)
    assert t0 - 1 <= fr[0].wall <= time.time() and fr[0].pts == 0.0
    assert abs((fr[-1].wall - fr[0].wall) - fr[-1].pts) < 1e-6


def test_sample_fps_applied_before_queue():
    s = VideoSource(str(PED2 / "test_04.mp4"), SourceConfig(sample_fps=5, overflow="block"), wall_anchor=0).start()
    items, _ = drain(s)
    fr = frames_of(items)
    n = s.counts["decoded"]
    assert s.counts["sampled"] == len(fr) == (n + 1) // 2
    assert [f.index for f in fr] == list(range(0, n, 2))


def test_vtest_avi_decodes_all_frames():
    if not VTEST.exists():
        pytest.skip(f"{VTEST} missing")
    s = VideoSource(str(VTEST), SourceConfig(sample_fps=2, overflow="block"), wall_anchor=0).start()
    items, end = drain(s, 60)
    assert end.error is None and s.counts["decoded"] == 795
    fr = frames_of(items)
    assert len(fr) == 159 and fr[0].image.shape == (288, 384, 3)  # source.max_width = 384
    assert fr[-1].index == 790 and abs(fr[-1].pts - 79.0) < 1e-6


def test_max_width_downscales_at_decode_with_area_interpolation():
    """``source.max_width``: frames wider than it come out downscaled (aspect kept) and close to an
    area resize of the full frame; 0 keeps the full resolution; narrower sources are untouched."""
    if not VTEST.exists():
        pytest.skip(f"{VTEST} missing")

    def first(path, **kw):
        s = VideoSource(str(path), SourceConfig(sample_fps=2, overflow="block", **kw), wall_anchor=0).start()
        items, end = drain(s, 60)
        assert end.error is None
        return frames_of(items)[0].image

    full = first(VTEST, max_width=0)
    small = first(VTEST, max_width=384)
    assert full.shape == (576, 768, 3) and small.shape == (288, 384, 3)
    ref = cv2.resize(full, (384, 288), interpolation=cv2.INTER_AREA).astype(np.int16)
    assert float(np.abs(small - ref).mean()) < 3.0
    assert first(VTEST, max_width=500).shape == (376, 500, 3)  # 375 rounded to even
    assert first(PED2 / "test_02.mp4", max_width=384).shape == (240, 360, 3)


def test_scaled_size():
    from fusewatch.stream.sources.reader import scaled_size

    assert scaled_size(1920, 1080, 384) == (384, 216)
    assert scaled_size(384, 288, 384) is None and scaled_size(1920, 1080, 0) is None
    assert scaled_size(4000, 2, 100) == (100, 2)


def test_loop_continues_indices_and_timestamps():
    s = VideoSource(str(PED2 / "train_01.mp4"), SourceConfig(overflow="block"), wall_anchor=0, loop=3).start()
    items, end = drain(s)
    fr = frames_of(items)
    assert end.error is None and len(fr) == 360
    assert [f.index for f in fr] == list(range(360))
    assert np.allclose(np.diff([f.pts for f in fr]), 0.1, atol=1e-6)


def test_probe_and_file_anchor_from_mtime(tmp_path):
    info = probe(str(PED2 / "test_02.mp4"))
    assert info["fps"] == 10 and info["frames"] == 180 and info["audio_rate"] is None
    dst = tmp_path / "x.mp4"
    shutil.copyfile(PED2 / "test_02.mp4", dst)
    os.utime(dst, (1_600_000_000, 1_600_000_000))
    assert file_anchor(dst) == 1_600_000_000


# -- queue overflow ---------------------------------------------------------------------------
def _frame(i: int) -> Frame:
    return Frame(index=i, pts=i / 10, wall=i / 10, image=np.zeros((2, 2, 3), np.uint8))


def test_queue_drop_oldest_counts_drops():
    q = FrameQueue(4, "drop_oldest")
    for i in range(10):
        assert q.put(_frame(i))
    assert q.dropped == 6 and q.frames == 4
    assert [q.get(0).index for _ in range(4)] == [6, 7, 8, 9]
    assert q.get(0.01) is None


def test_queue_drop_oldest_drops_audio_queued_before_the_dropped_frame():
    q = FrameQueue(1, "drop_oldest")
    q.put(AudioChunk(0.0, np.zeros(10, np.float32), 100))
    q.put(_frame(0))
    q.put(_frame(1))
    assert q.dropped == 1 and q.dropped_audio == 1 and q.get(0).index == 1


def test_queue_block_loses_nothing():
    q = FrameQueue(2, "block")
    got = []

    def consumer():
        while len(got) < 50:
            it = q.get(1.0)
            if it is not None:
                got.append(it.index)
                time.sleep(0.001)

    t = threading.Thread(target=consumer)
    t.start()
    for i in range(50):
        assert q.put(_frame(i))
        assert q.frames <= 2
    t.join(10)
    assert got == list(range(50)) and q.dropped == 0


def test_queue_block_put_gives_up_when_not_alive():
    q = FrameQueue(1, "block")
    q.put(_frame(0))
    t0 = time.monotonic()
    assert q.put(_frame(1), alive=lambda: time.monotonic() - t0 < 0.2) is False
    assert time.monotonic() - t0 < 2


def test_source_drop_oldest_with_a_stalled_consumer():
    cfg = SourceConfig(queue_size=4, overflow="drop_oldest")
    s = VideoSource(str(PED2 / "test_02.mp4"), cfg, wall_anchor=0, overflow="drop_oldest").start()
    deadline = time.monotonic() + 20
    while s._supervisor.is_alive() and time.monotonic() < deadline:  # never read while it decodes
        time.sleep(0.05)
    items, end = drain(s)
    fr = frames_of(items)
    assert len(fr) == 4 and s.counts["dropped"] == 176 == s.queue.dropped
    assert [f.index for f in fr] == [176, 177, 178, 179]


def test_source_block_with_a_slow_consumer_loses_none():
    cfg = SourceConfig(queue_size=2, overflow="drop_oldest")
    s = VideoSource(str(PED2 / "train_02.mp4"), cfg, wall_anchor=0).start()  # unpaced file: block
    assert s.queue.policy == "block"
    got = []
    while True:
        it = s.get(5)
        assert it is not None
        if isinstance(it, EndOfStream):
            break
        got.append(it.index)
        if len(got) % 20 == 0:
            time.sleep(0.05)
    assert got == list(range(s.counts["decoded"])) and s.counts["dropped"] == 0


# -- broken inputs ----------------------------------------------------------------------------
def test_corrupt_file_is_a_clear_error_not_a_hang(tmp_path):
    bad = tmp_path / "random.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes())
    t0 = time.monotonic()
    with pytest.raises(SourceError) as ei:
        list(VideoSource(str(bad), SourceConfig()))
    assert time.monotonic() - t0 < 10
    assert "\n" not in str(ei.value) and str(bad) in str(ei.value)


def test_truncated_mp4_without_index_is_a_clear_error(tmp_path):
    data = (PED2 / "test_06.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.3)])  # moov atom is at the end: unreadable
    t0 = time.monotonic()
    with pytest.raises(SourceError):
        list(VideoSource(str(cut), SourceConfig()))
    assert time.monotonic() - t0 < 10


def test_empty_file_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(SourceError):
        list(VideoSource(str(empty), SourceConfig()))


@pytest.mark.skipif(not FFMPEG, reason="ffmpeg not installed")
def test_truncated_faststart_mp4_ends_cleanly_with_a_warning(tmp_path):
    fs = tmp_path / "fs.mp4"
    subprocess.run(
        [
            FFMPEG,
            "-v",
            "error",
            "-y",
            "-i",
            str(PED2 / "test_02.mp4"),
            "-c",
            "copy",
            "-movflags",
            "+faststart",
            str(fs),
        ],
        check=True,
        timeout=60,
    )
    data = fs.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.3)])
    t0 = time.monotonic()
    s = VideoSource(str(cut), SourceConfig(overflow="block"), wall_anchor=0).start()
    items, end = drain(s)
    assert time.monotonic() - t0 < 10
    assert end.error is None and end.warning
    assert 0 < len(frames_of(items)) < 180 and s.counts["decode_errors"] >= 1


def test_truncated_avi_ends_cleanly_with_a_warning(tmp_path):
    if not VTEST.exists():
        pytest.skip(f"{VTEST} missing")
    data = VTEST.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: int(len(data) * 0.3)])
    s = VideoSource(str(cut), SourceConfig(sample_fps=1, overflow="block"), wall_anchor=0).start()
    items, end = drain(s)
    assert end.error is None and "truncated" in (end.warning or "")
    assert 0 < s.counts["decoded"] < 795 and s.counts["decode_errors"] >= 1


# -- OpenCV fallback ---------------------------------------------------------------------------
def test_opencv_fallback_when_pyav_cannot_open(monkeypatch):
    def refuse(*a, **k):
        raise RuntimeError("PyAV refused")  # files fall back on any PyAV open failure

    monkeypatch.setattr(opener, "PyAVReader", refuse)
    s = VideoSource(str(PED2 / "train_03.mp4"), SourceConfig(overflow="block"), wall_anchor=0).start()
    items, end = drain(s)
    fr = frames_of(items)
    assert end.error is None and s.info["backend"] == "opencv"
    assert len(fr) == s.counts["decoded"] > 100 and fr[0].image.shape == (240, 360, 3)
    assert np.allclose(np.diff([f.pts for f in fr]), 0.1, atol=2e-3)


# -- watchdog / reconnect with a scripted reader -----------------------------------------------
class ScriptedReader(Reader):
    """Yields ``n`` frames at 10 fps (fast), then either ends, stalls (blocks) or raises."""

    backend = "scripted"
    fps = 10.0
    width, height = 8, 8

    def __init__(self, n: int, then: str, release: threading.Event):
        self.n, self.then, self.release = n, then, release

    def __iter__(self):
        img = np.zeros((8, 8, 3), np.uint8)
        for i in range(self.n):
            yield VideoEvent(100.0 + i / 10, lambda: img)
        if self.then == "stall":
            self.release.wait(30)
        elif self.then == "raise":
            raise OSError("connection reset by peer")


def _scripted(monkeypatch, script: list):
    release = threading.Event()
    calls = {"n": 0}

    def fake_open(spec, cfg, want_audio=True):
        i = calls["n"]
        calls["n"] += 1
        step = script[min(i, len(script) - 1)]
        if step == "refuse":
            raise SourceError(f"source {spec.uri}: cannot open (Connection refused)")
        n, then = step
        return ScriptedReader(n, then, release)

    monkeypatch.setattr(decoding, "open_reader", fake_open)
    return calls, release


def test_watchdog_abandons_a_stalled_decoder_and_reconnects(monkeypatch):
    calls, release = _scripted(monkeypatch, [(20, "stall"), "refuse", (20, "raise"), (30, "stall")])
    cfg = SourceConfig(stall_timeout=0.5, socket_timeout=0.1, reconnect_initial=0.05, reconnect_max=0.2)
    s = VideoSource("rtsp://127.0.0.1:9/cam", cfg).start()
    got, disc = [], 0
    deadline = time.monotonic() + 20
    while len(got) < 70 and time.monotonic() < deadline:
        it = s.get(0.2)
        if isinstance(it, Frame):
            got.append(it)
        elif isinstance(it, Discontinuity):
            disc += 1
        assert not isinstance(it, EndOfStream)
    s.stop()
    release.set()
    assert len(got) == 70, "worker did not resume after stall/refusal/error"
    assert s.counts["reconnects"] >= 3 and calls["n"] >= 4 and disc >= 2
    assert [f.index for f in got] == list(range(70))  # indices continue
    pts = [f.pts for f in got]
    assert all(b > a for a, b in zip(pts, pts[1:]))  # timeline monotonic across reconnects


def test_max_reconnects_gives_up_with_a_clear_error(monkeypatch):
    _scripted(monkeypatch, ["refuse"])
    cfg = SourceConfig(reconnect_initial=0.01, reconnect_max=0.02, max_reconnects=3)
    s = VideoSource("rtsp://127.0.0.1:9/cam", cfg)
    t0 = time.monotonic()
    with pytest.raises(SourceError, match="gave up after 3 reconnect"):
        list(s)
    assert s.counts["reconnects"] == 3 and time.monotonic() - t0 < 10


def test_stop_interrupts_a_live_source_quickly(monkeypatch):
    _scripted(monkeypatch, [(5, "stall")])
    s = VideoSource("rtsp://127.0.0.1:9/cam", SourceConfig(stall_timeout=30)).start()
    assert isinstance(s.get(5), Frame)
    t0 = time.monotonic()
    s.stop()
    assert not s._supervisor.is_alive() and time.monotonic() - t0 < 3


# -- audio ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def av_clip(tmp_path_factory) -> Path:
    if not FFMPEG:
        pytest.skip("ffmpeg not installed")
    return tone_video(tmp_path_factory.mktemp("av") / "tone.mp4", FFMPEG)


def test_audio_is_decoded_to_mono_float32_alongside(av_clip):
    s = VideoSource(str(av_clip), SourceConfig(overflow="block"), wall_anchor=0).start()
    items, end = drain(s)
    chunks = [i for i in items if isinstance(i, AudioChunk)]
    fr = frames_of(items)
    assert chunks and fr and s.info["audio_rate"] == 16000
    assert all(c.samples.dtype == np.float32 and c.samples.ndim == 1 and c.rate == 16000 for c in chunks)
    total = sum(c.samples.size for c in chunks) / 16000
    assert 3.0 < total < 4.0
    # every frame is delivered after the audio covering its sampling slot (or at the end)
    first_frame_pos = next(i for i, it in enumerate(items) if isinstance(it, Frame))
    assert isinstance(items[0], AudioChunk) and first_frame_pos > 0
    s2 = VideoSource(str(av_clip), SourceConfig(overflow="block"), wall_anchor=0, want_audio=False).start()
    items2, _ = drain(s2)
    assert not any(isinstance(i, AudioChunk) for i in items2)
