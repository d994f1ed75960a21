"""``fusewatch calibrate --source`` on a live stream (a real ffmpeg HTTP MPEG-TS server looping a
video in real time, so it never ends): ``--minutes K`` stops the burn-in after K minutes of stream
time; a live source without ``--minutes`` is a one-line error."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fusewatch.stream.config import Config
from fusewatch.testing import moving_box_video
from tests.test_worker_model import _model, _versions

ROOT = Path(__file__).resolve().parents[1]
SETS = ["--set", "features.extractors=flow,flow_grid", "--set", "clips.clip_stride=8", "--set", "source.sample_fps=10"]


def _calibrate(tmp: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUSEWATCH_")}
    env.update(FUSEWATCH_CACHE=str(tmp / "cache"), PYTHONPATH=str(ROOT), COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "fusewatch", "calibrate", "--camera", "gate", *args, *SETS],
        env=env,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.network
@pytest.mark.timeout(300)
@pytest.mark.skipif(not shutil.which("ffmpeg"), reason="ffmpeg not installed")
def test_calibrate_on_a_live_stream_stops_after_minutes(tmp_path):
    from tests.media_servers import FFmpegHTTPServer

    model = _model(tmp_path / "m.pt", versions=_versions(Config()))
    video = moving_box_video(tmp_path / "box.mp4", seconds=4.0, fps=10)
    th = tmp_path / "thresholds.json"

    p = _calibrate(tmp_path, "--source", "http://127.0.0.1:9/", "--model", str(model), "--out", str(th))
    err = [ln for ln in p.stderr.splitlines() if ln.startswith("fusewatch:")]
    assert p.returncode == 2 and len(err) == 1 and "--minutes: need K > 0 for a live source" in err[0], p.stderr
    assert "Traceback" not in p.stderr and not th.exists()

    srv = FFmpegHTTPServer(video, loop=True).start()  # real time, forever: only --minutes ends the burn-in
    try:
        t0 = time.monotonic()
        p = _calibrate(tmp_path, "--source", srv.url, "--model", str(model), "--minutes", "0.2", "--out", str(th))
        wall = time.monotonic() - t0
    finally:
        srv.stop()
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    cam = json.loads(th.read_text())["cameras"]["gate"]
    # 0.2 min = 12 s of stream time; a clip adds clip_stride / sample_fps = 0.8 s → 15 clips
    assert abs(cam["clips"] - 15) <= 1 and cam["minutes"] == pytest.approx(cam["clips"] * 0.8 / 60, abs=1e-3), cam
    assert cam["sources"] == [srv.url] and 0 <= cam["off"] <= cam["on"] <= 1
    assert wall < 200, wall  # bounded: the stream itself never ends
    assert "camera gate: on=" in p.stdout
