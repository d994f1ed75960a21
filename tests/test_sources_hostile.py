"""Hostile or unlucky video files (adversarial review of sources, /work/exp/s20/hostile2/FINDINGS.md):
damaged streams, timestamps that restart or jump, resolution changes mid-stream, display rotation,
files without video. Every file is written here with PyAV (no ffmpeg program); each frame carries
its number in 8 black/white bands, so a frame's index can be checked against what it shows."""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from fusewatch.stream.clips import Frame
from fusewatch.stream.config import SourceConfig
from fusewatch.stream.sources import SourceError, VideoSource
from fusewatch.testing import MeanRGB, collect_features

FPS = 10
NO_B = {"g": "5", "crf": "10", "bf": "0", "threads": "1"}
WITH_B = {"g": "5", "crf": "10", "threads": "1"}


def bands(n: int, w: int = 128, h: int = 64) -> np.ndarray:
    a = np.zeros((h, w, 3), np.uint8)
    for b in range(8):
        if (n >> b) & 1:
            a[:, b * (w // 8) : (b + 1) * (w // 8)] = 255
    return a


def drawn(image: np.ndarray) -> int:
    h, w, _ = image.shape
    bw = w // 8
    return sum(1 << b for b in range(8) if image[:, b * bw + bw // 4 : b * bw + 3 * bw // 4].mean() > 127)


def write(path: Path, numbers, pts=None, size=(128, 64), sizes=None, fmt=None, opts=NO_B) -> Path:
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream("libx264", rate=FPS)
        s.width, s.height = sizes[0] if sizes else size
        s.pix_fmt, s.options = "yuv420p", dict(opts)
        for i, n in enumerate(numbers):
            w, h = sizes[i] if sizes else size
            f = av.VideoFrame.from_ndarray(bands(n, w, h), format="rgb24")
            if pts is not None:
                f.pts, f.time_base = pts[i], Fraction(1, FPS)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    return path


def ts_concat(tmp: Path, name: str, first: Path, second: Path) -> Path:
    p = tmp / name
    p.write_bytes(first.read_bytes() + second.read_bytes())
    return p


def read_all(path: Path, **cfg) -> tuple[list[Frame], VideoSource]:
    src = VideoSource(str(path), SourceConfig(sample_fps=FPS, **cfg), wall_anchor=0.0, want_audio=False)
    frames = [f for f in src if isinstance(f, Frame)]
    return frames, src


def test_frames_lost_to_stream_damage_keep_their_numbers_and_times(tmp_path):
    """A transport stream with a run of mangled bytes: the demuxer drops packets (flagged corrupt,
    no decode error) and the recovering decoder gives two old frames late. Later frames used to be
    renumbered (index 46 showed frame 57) and their times shifted 2.6 s, silently."""
    p = write(tmp_path / "a.ts", range(60), fmt="mpegts", opts=WITH_B)
    b = bytearray(p.read_bytes())
    n = len(b) // 6
    b[len(b) // 2 : len(b) // 2 + n] = np.random.default_rng(1).integers(0, 256, n, dtype=np.uint8).tobytes()
    p.write_bytes(bytes(b))
    frames, src = read_all(p)
    assert src.counts["missing"] > 0 and src.counts["decode_errors"] > 0  # counted, not silent
    assert len(frames) + src.counts["missing"] == 60 and frames[-1].index == 59
    assert all(f.index == round(f.pts * FPS) for f in frames), [(f.index, f.pts) for f in frames]
    assert [f.index for f in frames] == sorted({f.index for f in frames})  # strictly increasing
    tail = [f for f in frames if f.index >= 45]  # past the damage the pictures are the file's frames
    assert tail and all(drawn(f.image) == f.index for f in tail)


@pytest.mark.parametrize("opts", [NO_B, WITH_B], ids=["clean_seam", "b_frames"])
def test_timestamps_restarting_mid_file_continue_the_timeline(tmp_path, opts):
    a = write(tmp_path / "a.ts", range(30), pts=list(range(30)), fmt="mpegts", opts=opts)
    b = write(tmp_path / "b.ts", range(30, 60), pts=list(range(30)), fmt="mpegts", opts=opts)
    frames, src = read_all(ts_concat(tmp_path, "back.ts", a, b))
    assert [f.index for f in frames] == list(range(60))
    assert all(drawn(f.image) == f.index for f in frames)
    assert all(np.diff([f.pts for f in frames]) > 0)
    assert src.counts["timestamp_jumps"] >= 1 and src.counts["missing"] == 0


def test_a_forward_timestamp_jump_is_counted_and_never_read_as_lost_frames(tmp_path):
    from fusewatch.stream.metrics import WorkerMetrics

    a = write(tmp_path / "a.ts", range(30), pts=list(range(30)), fmt="mpegts")
    b = write(tmp_path / "b.ts", range(30, 60), pts=[300_000 + i for i in range(30)], fmt="mpegts")
    m = WorkerMetrics("cam-j")
    src = VideoSource(
        str(ts_concat(tmp_path, "jump.ts", a, b)),
        SourceConfig(sample_fps=FPS),
        wall_anchor=0.0,
        want_audio=False,
        metrics=m,
    )
    frames = [f for f in src if isinstance(f, Frame)]
    assert [f.index for f in frames] == list(range(60)) and all(drawn(f.image) == f.index for f in frames)
    assert src.counts["timestamp_jumps"] == 1 and src.counts["missing"] == 0
    assert m.registry.get_sample_value("fusewatch_timestamp_jumps_total", {"camera": "cam-j"}) == 1  # Prometheus
    assert frames[30].pts - frames[29].pts > 1000  # the recording's gap is kept in its times


@pytest.mark.parametrize("opts", [NO_B, WITH_B], ids=["clean_seam", "b_frames"])
def test_resolution_change_mid_stream_never_mixes_frame_sizes_in_a_clip(tmp_path, opts):
    """Frame 30 on is 64×64 instead of 128×64. The clip spanning the change used to lose its
    flow_grid vector (extractor error, logged for the first clip only) and its flow read the
    change of framing as motion; now the partial clip is dropped as after a reconnect, counted
    and logged, and every clip holds frames of one size and all its representations."""
    from fusewatch.stream.config import load_config
    from fusewatch.stream.extractors import build_extractor

    a = write(tmp_path / "a.ts", range(30), pts=list(range(30)), fmt="mpegts", opts=opts)
    square = [(64, 64)] * 30
    b = write(tmp_path / "b.ts", range(30, 60), pts=list(range(30, 60)), sizes=square, fmt="mpegts", opts=opts)
    p = ts_concat(tmp_path, "res.ts", a, b)
    frames, src = read_all(p)
    assert [f.index for f in frames] == list(range(60)) and all(drawn(f.image) == f.index for f in frames)
    assert {f.image.shape for f in frames} == {(64, 128, 3), (64, 64, 3)}
    assert src.counts["resolution_changes"] == 1
    cfg = load_config(env={})
    ex = [MeanRGB()] + [build_extractor(n, cfg.features) for n in ("flow", "flow_grid")]
    msgs = collect_features(p, ex, cfg)
    assert [(m.frame_start, m.frame_end) for m in msgs] == [(0, 15), (30, 45)]
    assert all(sorted(r.name for r in m.reps) == ["flow", "flow_grid", "meanrgb"] for m in msgs)


def test_display_rotation_is_applied_as_players_show_it(tmp_path):
    """A phone's portrait video: the track matrix says "turn 90°"; frames used to come out lying on
    their side. The matrix below is what ``ffmpeg -metadata:s:v rotate=90`` writes, and FFmpeg's
    own autorotation shows such a frame as ``np.rot90(frame, 1)``."""
    p = write(tmp_path / "r.mp4", range(20))
    b = bytearray(p.read_bytes())
    i = b.index(b"tkhd")
    assert b[i + 4] == 0  # version 0: matrix after 4+20+8+8 bytes
    off = i + 4 + 4 + 20 + 8 + 8
    b[off : off + 36] = struct.pack(">9i", 0, -65536, 0, 65536, 0, 0, 0, 0, 1 << 30)
    p.write_bytes(bytes(b))
    frames, _ = read_all(p)
    assert len(frames) == 20 and frames[0].image.shape == (128, 64, 3)
    assert all(drawn(np.rot90(f.image, -1)) == f.index for f in frames)
    small, _ = read_all(p, max_width=32)  # the working width applies to the upright frame
    assert small[0].image.shape == (64, 32, 3)


def test_files_without_usable_video_are_one_line_errors(tmp_path):
    audio = tmp_path / "audio.mp4"
    with av.open(str(audio), "w") as c:
        s = c.add_stream("aac", rate=16000)
        s.layout = "mono"
        for i in range(10):
            fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            fr.sample_rate, fr.pts = 16000, i * 1024
            for pk in s.encode(fr):
                c.mux(pk)
        for pk in s.encode(None):
            c.mux(pk)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 40)
    cases = [
        (audio, "no video stream"),
        (text, "cannot open"),
        (tmp_path / "frames_%04d.png", "no such file"),
        ("ftp://host/v.mp4", "unsupported URI scheme"),
        ("/dev/video97", "no such device"),
    ]
    for uri, match in cases:
        with pytest.raises(SourceError, match=match) as ei:
            read_all(uri)
        assert "\n" not in str(ei.value) and str(uri).split("/")[-1] in str(ei.value)
