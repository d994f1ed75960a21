"""Clip windows: counts, indices, frame ranges, timestamps, audio coverage — synthetic and on real
Ped2 decoding."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from fusewatch.stream.clips import AudioBuffer, AudioChunk, ClipBuilder, Frame, clip_windows
from fusewatch.stream.config import SourceConfig
from fusewatch.stream.paths import shared_data  # noqa: E402
from fusewatch.stream.sampling import expected_clips
from fusewatch.stream.sources import EndOfStream, VideoSource

PED2 = shared_data("ped2")


def frames(n: int, fps: float = 10.0, anchor: float = 5000.0, index_step: int = 1) -> list[Frame]:
    return [
        Frame(index=i * index_step, pts=i / fps, wall=anchor + i / fps, image=np.full((4, 4, 3), i % 256, np.uint8))
        for i in range(n)
    ]


@pytest.mark.parametrize(
    "n,length,stride",
    [(180, 16, 16), (179, 16, 16), (15, 16, 16), (16, 16, 16), (100, 16, 8), (100, 8, 16), (33, 1, 1), (50, 16, 20)],
)
def test_clip_counts_indices_and_frame_ranges(n, length, stride):
    clips = clip_windows(frames(n, index_step=3), length, stride)
    assert len(clips) == expected_clips(n, length, stride)
    assert [c.index for c in clips] == list(range(len(clips)))
    for k, c in enumerate(clips):
        first = k * stride
        assert len(c.frames) == length
        assert c.frame_start == 3 * first and c.frame_end == 3 * (first + length - 1)
        assert c.frame_indices == [3 * (first + j) for j in range(length)]
        assert c.pts_start == pytest.approx(first / 10) and c.pts_end == pytest.approx((first + length - 1) / 10)
        assert c.wall_start == pytest.approx(5000 + first / 10) and c.wall_end == pytest.approx(5000 + c.pts_end)
        assert int(c.frames[0][0, 0, 0]) == first % 256
        assert c.audio is None and c.audio_rate is None


def test_reset_drops_the_partial_window_but_keeps_numbering():
    b = ClipBuilder(4, 4, 10)
    fr = frames(20)
    out = []
    for f in fr[:6]:
        out += b.push(f)
    b.reset()
    for f in fr[10:18]:
        out += b.push(f)
    assert [c.index for c in out] == [0, 1, 2]
    assert [(c.frame_start, c.frame_end) for c in out] == [(0, 3), (10, 13), (14, 17)]


def test_audio_buffer_cuts_zero_fills_and_discards():
    buf = AudioBuffer()
    assert buf.get(0, 1) is None
    buf.add(AudioChunk(0.0, np.ones(100, np.float32), 100))  # [0, 1)
    buf.add(AudioChunk(1.5, np.full(50, 2.0, np.float32), 100))  # [1.5, 2)
    a = buf.get(0.5, 2.0)
    assert a.shape == (150,) and a.dtype == np.float32
    assert (a[:50] == 1).all() and (a[50:100] == 0).all() and (a[100:] == 2).all()
    assert buf.get(3.0, 4.0) is None
    buf.discard_before(1.2)
    assert len(buf.chunks) == 1 and buf.end == pytest.approx(2.0)


def test_clip_audio_covers_pts_start_to_pts_end_plus_one_slot():
    rate = 1000
    b = ClipBuilder(4, 2, sample_fps=10)
    t = np.arange(3 * rate) / rate
    b.add_audio(AudioChunk(0.0, t.astype(np.float32), rate))  # sample value = its own time
    clips = []
    for f in frames(10):
        clips += b.push(f)
    assert len(clips) == 4
    for c in clips:
        assert c.audio_rate == rate
        assert c.audio.size == int(round((c.pts_end + 0.1 - c.pts_start) * rate)) == 400
        assert c.audio[0] == pytest.approx(c.pts_start, abs=1e-3)
        assert c.audio[-1] == pytest.approx(c.pts_end + 0.1 - 1 / rate, abs=1e-3)


def _real_clips(path: Path, clip_len: int, stride: int, sample_fps: float):
    cfg = SourceConfig(sample_fps=sample_fps, overflow="block")
    s = VideoSource(str(path), cfg, wall_anchor=1_700_000_000.0).start()
    b = ClipBuilder(clip_len, stride, sample_fps)
    clips, n_sampled = [], 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        it = s.get(0.5)
        if isinstance(it, EndOfStream):
            break
        if isinstance(it, Frame):
            n_sampled += 1
            clips += b.push(it)
    s.stop()
    return clips, n_sampled, s


@pytest.mark.skipif(not PED2.is_dir(), reason="shared Ped2 data missing")
def test_real_ped2_clip_windows_match_labels_frame_count():
    labels = json.loads((PED2 / "labels.json").read_text())
    clips, n, s = _real_clips(PED2 / "test_02.mp4", 16, 16, 10)
    assert n == labels["test_02"]["frames"] == s.counts["decoded"]
    assert len(clips) == n // 16 == 11
    assert [(c.frame_start, c.frame_end) for c in clips] == [(16 * k, 16 * k + 15) for k in range(11)]
    for k, c in enumerate(clips):
        assert c.index == k
        assert c.pts_start == pytest.approx(1.6 * k) and c.pts_end == pytest.approx(1.6 * k + 1.5)
        assert c.wall_start == pytest.approx(1_700_000_000.0 + 1.6 * k)
        assert len(c.frames) == 16 and c.frames[0].shape == (240, 360, 3) and c.frames[0].dtype == np.uint8
    # frames differ over time (real decoded content, not a constant)
    assert not np.array_equal(clips[0].frames[0], clips[-1].frames[-1])


@pytest.mark.skipif(not PED2.is_dir(), reason="shared Ped2 data missing")
def test_real_ped2_overlapping_windows_at_lower_sample_rate():
    clips, n, s = _real_clips(PED2 / "test_04.mp4", 8, 4, 5)
    decoded = s.counts["decoded"]
    assert n == (decoded + 1) // 2
    assert len(clips) == expected_clips(n, 8, 4)
    for k, c in enumerate(clips):
        assert c.frame_start == 8 * k and c.frame_end == 8 * k + 14  # sampled every 2nd frame
        assert c.pts_end - c.pts_start == pytest.approx(1.4)
