"""Replay: files as live cameras, deterministic output (byte-identical across runs), loops,
real-time pacing, anchors, errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import numpy as np
import pytest

from fusewatch.stream.config import load_config
from fusewatch.stream.extractors.base import Extractor
from fusewatch.stream.paths import shared_data  # noqa: E402
from fusewatch.stream.replay import replay
from fusewatch.stream.schema import decode_features
from fusewatch.stream.sources import SourceError, file_anchor
from fusewatch.stream.stats import ReplayResult
from fusewatch.stream.transport import BusTransport, InProcessBus
from fusewatch.testing import MeanRGB

PED2 = shared_data("ped2")
FFMPEG = shutil.which("ffmpeg")

pytestmark = pytest.mark.skipif(not PED2.is_dir(), reason=f"shared data not found at {PED2}")


class Energy(Extractor):
    """Second stand-in: frame-difference energy (depends on frame order and content)."""

    name, dim, version = "energy", 2, "t1"

    def extract(self, frames, audio, audio_rate):
        a = np.stack(frames)[:, ::4, ::4].astype(np.float32)
        d = np.abs(np.diff(a, axis=0)).mean()
        return np.array([d, a.std()], np.float32)


def by_camera(bus: InProcessBus, topic: str = "fusewatch.features") -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for p in bus.partitions_for(topic):
        for r in bus.read((topic, p), 0, 1_000_000):
            out.setdefault(r.key.decode(), []).append(r.value)
    return out


def run_replay(files, **kw) -> tuple[ReplayResult, dict[str, list[bytes]]]:
    bus = InProcessBus()
    stats = replay(
        files,
        load_config(env={}),
        transport=BusTransport(bus),
        extractors=kw.pop("extractors", lambda: [MeanRGB(), Energy()]),
        **kw,
    )
    return stats, by_camera(bus)


def test_two_replays_produce_byte_identical_messages():
    files = [PED2 / "test_02.mp4", PED2 / "train_06.mp4"]
    s1, m1 = run_replay(files, speed=None)
    s2, m2 = run_replay(files, speed=None)
    assert set(m1) == {"test_02", "train_06"}
    assert m1 == m2  # every message of every camera, byte for byte
    assert s1.clips_published == sum(len(v) for v in m1.values()) == s2.clips_published
    for cam, f in zip(("test_02", "train_06"), files):
        msgs = [decode_features(b) for b in m1[cam]]
        anchor = file_anchor(f)
        assert [m.clip for m in msgs] == list(range(len(msgs)))
        assert msgs[0].wall_start == pytest.approx(anchor)
        assert all(m.produced == m.wall_end for m in msgs)
        assert s1.cameras[cam].frames_dropped == 0


def test_loop_continues_clip_indices_and_timestamps():
    stats, msgs = run_replay([PED2 / "train_01.mp4"], speed=None, loop=3, camera_ids=["lobby"])
    ms = [decode_features(b) for b in msgs["lobby"]]
    assert stats.cameras["lobby"].frames_decoded == 360
    assert len(ms) == 360 // 16 == 22
    assert [m.clip for m in ms] == list(range(22))
    assert [(m.frame_start, m.frame_end) for m in ms] == [(16 * k, 16 * k + 15) for k in range(22)]
    assert np.allclose([m.pts_start for m in ms], np.arange(22) * 1.6)
    walls = [m.wall_start for m in ms]
    assert all(b > a for a, b in zip(walls, walls[1:]))


def test_realtime_pacing_follows_speed():
    t0 = time.monotonic()
    stats, msgs = run_replay([PED2 / "train_01.mp4"], speed=8.0)  # 12 s of video at 8x: >= 1.5 s
    wall = time.monotonic() - t0
    assert 1.4 <= wall < 15 and len(msgs["train_01"]) == 7
    t0 = time.monotonic()
    run_replay([PED2 / "train_01.mp4"], speed=None)
    assert time.monotonic() - t0 < wall


def test_paced_and_max_speed_replays_are_identical():
    _, fast = run_replay([PED2 / "train_01.mp4"], speed=None)
    _, paced = run_replay([PED2 / "train_01.mp4"], speed=20.0)
    assert fast == paced


def test_shared_extractor_list_is_serialised_across_workers():
    shared = [MeanRGB()]
    _, a = run_replay([PED2 / "train_07.mp4", PED2 / "train_08.mp4"], speed=None, extractors=shared)
    _, b = run_replay([PED2 / "train_07.mp4", PED2 / "train_08.mp4"], speed=None, extractors=lambda: [MeanRGB()])
    assert a == b


def test_camera_ids_and_errors(tmp_path):
    with pytest.raises(SourceError, match="duplicate camera"):
        replay(
            [PED2 / "test_02.mp4", PED2 / "test_02.mp4"],
            load_config(env={}),
            transport=BusTransport(InProcessBus()),
            extractors=lambda: [MeanRGB()],
        )
    with pytest.raises(SourceError, match="camera ids"):
        replay(
            [PED2 / "test_02.mp4"],
            load_config(env={}),
            camera_ids=["a", "b"],
            transport=BusTransport(InProcessBus()),
            extractors=lambda: [MeanRGB()],
        )
    with pytest.raises(SourceError, match="no such file"):
        replay(
            [tmp_path / "nope.mp4"],
            load_config(env={}),
            transport=BusTransport(InProcessBus()),
            extractors=lambda: [MeanRGB()],
        )
    with pytest.raises(SourceError, match="only video files"):
        replay(
            ["rtsp://127.0.0.1:1/x"],
            load_config(env={}),
            transport=BusTransport(InProcessBus()),
            extractors=lambda: [MeanRGB()],
        )
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 1000)
    t0 = time.monotonic()
    with pytest.raises(SourceError):
        replay(
            [PED2 / "train_09.mp4", bad],
            load_config(env={}),
            speed=None,
            transport=BusTransport(InProcessBus()),
            extractors=lambda: [MeanRGB()],
        )
    assert time.monotonic() - t0 < 20
    stats = replay(
        [PED2 / "train_09.mp4", bad],
        load_config(env={}),
        speed=None,
        raise_errors=False,
        transport=BusTransport(InProcessBus()),
        extractors=lambda: [MeanRGB()],
    )
    n_frames = json.loads((PED2 / "labels.json").read_text())["train_09"]["frames"]
    assert set(stats.errors) == {"bad"} and stats.cameras["train_09"].clips_published == n_frames // 16


@pytest.mark.skipif(not FFMPEG, reason="ffmpeg not installed")
def test_anchor_from_container_creation_time(tmp_path):
    out = tmp_path / "stamped.mp4"
    subprocess.run(
        [
            FFMPEG,
            "-v",
            "error",
            "-y",
            "-i",
            str(PED2 / "train_10.mp4"),
            "-c",
            "copy",
            "-metadata",
            "creation_time=2021-03-04T05:06:07Z",
            str(out),
        ],
        check=True,
        timeout=60,
    )
    assert file_anchor(out) == 1614834367.0
    _, msgs = run_replay([out], speed=None)
    first = decode_features(msgs["stamped"][0])
    assert first.wall_start == 1614834367.0 and first.produced == first.wall_end
