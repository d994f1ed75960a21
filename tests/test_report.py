"""The demo's HTML report draws per-frame scores: overlapping clips averaged per frame, as
``fusewatch eval`` scores frames, not one point per clip."""

from __future__ import annotations

import re

import numpy as np

from fusewatch.engines.evaluation.metrics import expand_to_frames
from fusewatch.engines.evaluation.report import frame_scores, write_report
from fusewatch.engines.serving.pipeline import ClipRecord, StreamResult


def test_report_timeline_is_per_frame(tmp_path):
    # clips of 16 frames every 4 frames (overlapping); one high clip in the middle
    scores = [0.1] * 5 + [0.9] + [0.1] * 5
    clips = [ClipRecord(i, s, 4 * i, 4 * i + 15, 0.4 * i, 0.4 * i + 1.5, 0.0) for i, s in enumerate(scores)]
    n = clips[-1].frame_end + 1
    fs = frame_scores(clips, n)
    np.testing.assert_allclose(fs, expand_to_frames(scores, [(c.frame_start, c.frame_end) for c in clips], n))
    # frame 22 is covered by clips 2..5 (one high), frame 0 by clip 0 alone
    assert fs[0] == 0.1 and abs(fs[22] - (0.1 * 3 + 0.9) / 4) < 1e-12
    res = StreamResult(clips={"cam": clips})
    html = write_report(tmp_path / "r.html", res, {}).read_text()
    pts = re.search(r'<polyline points="([^"]+)"', html).group(1).split()
    assert len(pts) == n  # one point per frame (short video: no thinning), not one per clip
    ys = np.array([float(p.split(",")[1]) for p in pts])
    h = 160
    drawn = 1 - (ys - 10) / (h - 30)  # back to scores
    np.testing.assert_allclose(drawn, fs, atol=0.01)
    assert "per-frame score" in html
