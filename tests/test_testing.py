"""fusewatch.testing: the public helpers work as documented (real decoding, real worker)."""

from __future__ import annotations

import numpy as np
import pytest

from fusewatch.stream.clips import Frame
from fusewatch.stream.config import load_config
from fusewatch.stream.sources import EndOfStream, VideoSource, probe
from fusewatch.testing import MeanRGB, box_left, collect_features, moving_box_video


def _frames(path) -> list[Frame]:
    s = VideoSource(str(path), wall_anchor=0.0).start()
    out = []
    while True:
        it = s.get(10)
        assert it is not None, "source did not end"
        if isinstance(it, EndOfStream):
            assert it.error is None
            return out
        if isinstance(it, Frame):
            out.append(it)


def test_moving_box_video_is_still_then_moving(tmp_path):
    path = moving_box_video(tmp_path / "box.mp4")
    info = probe(str(path))
    assert (info["fps"], info["width"], info["height"], info["frames"]) == (10, 96, 64, 40)
    frames = _frames(path)
    assert len(frames) == 40 and frames[0].image.shape == (64, 96, 3)
    lefts = []
    for f in frames:
        bright = np.nonzero(f.image.mean(2) > 200)  # the white square (codec noise aside)
        assert 200 < bright[0].size < 330  # ≈ 16×16 pixels
        lefts.append(int(bright[1].min()))
    expected = [box_left(i) for i in range(40)]
    assert max(abs(a - b) for a, b in zip(lefts, expected)) <= 1
    assert len(set(lefts[:21])) == 1 and lefts[-1] == 96 - 16 - 8 and lefts[21] > lefts[20]  # moves after 2 s


def test_moving_box_video_rejects_odd_sizes(tmp_path):
    with pytest.raises(ValueError, match="even"):
        moving_box_video(tmp_path / "x.mp4", width=95)


def test_collect_features_runs_the_real_worker(tmp_path):
    path = moving_box_video(tmp_path / "box.mp4")
    msgs = collect_features(path, [MeanRGB()], camera="cam-1", wall_anchor=1000.0)
    assert [m.clip for m in msgs] == [0, 1] and {m.camera for m in msgs} == {"cam-1"}
    assert [(m.frame_start, m.frame_end) for m in msgs] == [(0, 15), (16, 31)]
    assert msgs[0].wall_start == pytest.approx(1000.0) and msgs[1].pts_start == pytest.approx(1.6)
    rgb = msgs[0].rep("meanrgb")
    assert rgb.shape == (3,) and rgb.dtype == np.float32
    share = 16 * 16 / (96 * 64)  # white box on grey 128
    assert rgb == pytest.approx(128 + share * (255 - 128), abs=2.0)
    cfg = load_config(env={}, overrides={"clips.clip_len": 8, "clips.clip_stride": 8})
    assert len(collect_features(path, [MeanRGB()], cfg)) == 5
