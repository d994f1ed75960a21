"""Alert evidence (issue 14 item 1): the worker's packet buffer, clips cut on alert records from
the alerts topic, snapshots, privacy masks, retention. Real video (PyAV/FFmpeg), real records on
the in-process bus; `ffprobe` checks what a browser would get."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from fusewatch.stream.alert_schema import AlertMessage
from fusewatch.stream.config import load_config
from fusewatch.stream.evidence.segments import read_index
from fusewatch.stream.evidence.writer import EvidenceWriter, apply_retention
from fusewatch.stream.paths import shared_data
from fusewatch.stream.records import decode_record, record_kind
from fusewatch.stream.transport import BusTransport, InProcessBus
from fusewatch.stream.worker import Worker
from fusewatch.testing import MeanRGB, scene_video

PED2 = shared_data("ped2")
FFMPEG, FFPROBE = shutil.which("ffmpeg"), shutil.which("ffprobe")
pytestmark = pytest.mark.skipif(not (FFMPEG and FFPROBE), reason="ffmpeg/ffprobe not installed")
ANCHOR = 1_000.0


def probe(path: Path) -> dict:
    out = subprocess.run(
        [
            FFPROBE,
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,duration:format=format_name",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


def faststart(path: Path) -> bool:
    """moov before mdat (the browser can start playing before the download ends)."""
    data = path.read_bytes()[: 1 << 20]
    return 0 <= data.find(b"moov") < data.find(b"mdat")


def record_and_alert(tmp_path, video, camera, alerts, **ev):
    cfg = load_config(env={})
    cfg.evidence.enabled, cfg.evidence.dir = True, str(tmp_path / "store")
    for k, v in ev.items():
        setattr(cfg.evidence, k, v)
    bus = InProcessBus()
    Worker(
        cfg,
        camera,
        str(video),
        transport=BusTransport(bus),
        extractors=[MeanRGB()],
        wall_anchor=ANCHOR,
        serve_metrics=False,
    ).run()
    writer = EvidenceWriter(cfg, BusTransport(bus), from_beginning=True)
    prod = BusTransport(bus)
    for i, (aid, typ, start, end, score, amap) in enumerate(alerts):
        prod.produce(
            cfg.topics.alerts,
            camera,
            AlertMessage(
                id=aid,
                type=typ,
                camera=camera,
                score=score,
                peak=score,
                start_clip=0,
                end_clip=i,
                start_time=ANCHOR + start,
                end_time=ANCHOR + end,
                model_name="m",
                model_version="1",
                backend="onnxruntime",
                anomaly_map=amap,
            ).encode(),
        )
    deadline = time.monotonic() + 60
    want = len({a[0] for a in alerts})
    while len(writer.records) < want and time.monotonic() < deadline:
        writer.step(0.1)
    recs = [r for p in bus.partitions_for(cfg.topics.alerts) for r in bus.read((cfg.topics.alerts, p), 0, 1 << 20)]
    ev_recs = [decode_record(r.value, "evidence") for r in recs if record_kind(r.value) == "evidence"]
    return cfg, writer, ev_recs


@pytest.mark.skipif(not PED2.is_dir(), reason="shared Ped2 data not found")
def test_ped2_clip_covers_the_alert_and_snapshot_exists(tmp_path):
    alerts = [
        ("a1", "new", 6.0, 7.6, 0.7, None),
        ("a1", "update", 6.0, 9.2, 0.95, [[0.0, 1.0], [0.2, 0.0]]),
        ("a1", "end", 6.0, 11.0, 0.5, None),
    ]
    cfg, writer, recs = record_and_alert(tmp_path, PED2 / "test_02.mp4", "gate/1", alerts, pre_seconds=2.0)
    assert writer.failures == [] and len(recs) == 1
    r = recs[0]
    store = Path(cfg.evidence.dir)
    clip, snap = store / r["clip"]["path"], store / r["snapshot"]["path"]
    assert r["clip"]["path"] == "gate%2F1/a1.mp4" and r["clip"]["url"] == "/evidence/gate%252F1/a1.mp4"
    info = probe(clip)
    assert info["streams"][0]["codec_name"] == "h264" and "mp4" in info["format"]["format_name"]
    dur = float(info["streams"][0]["duration"])
    span = 11.0 - 6.0 + 2.0  # alert span + pre-roll
    assert span - 1.6 <= dur <= span + 1.6  # ± 1 clip (16 frames at 10 fps)
    assert r["clip"]["start_time"] <= ANCHOR + 6.0 - 2.0 + 1e-6 and r["clip"]["end_time"] >= ANCHOR + 11.0 - 1e-6
    assert faststart(clip)
    import hashlib

    assert r["clip"]["sha256"] == hashlib.sha256(clip.read_bytes()).hexdigest()
    # Ped2 is one 18 s GOP: copying whole segments would be far longer than the window → re-encoded
    assert r["clip"]["reencoded"] is True
    assert snap.read_bytes()[:3] == b"\xff\xd8\xff" and r["snapshot"]["anomaly_map"] is True
    assert r["snapshot"]["time"] == pytest.approx(ANCHOR + 9.2 - 0.8)  # middle of the highest-scored clip
    # the anomaly map (top-right cell = 1.0) is drawn: that corner is redder than the same corner of the frame
    import cv2

    img = cv2.imread(str(snap))[:, :, ::-1].astype(int)
    tr, bl = img[:40, -60:], img[-40:, :60]
    assert (tr[..., 0] - tr[..., 1]).mean() > (bl[..., 0] - bl[..., 1]).mean() + 40
    # its own evidence record is read back and ignored; a redelivered alert is not cut again
    writer.step(0.1)
    assert len(writer.records) == 1 and not writer.jobs


def test_h264_with_short_gops_is_copied_and_buffer_rotates(tmp_path):
    video = scene_video(tmp_path / "scene.mp4", (("moving", 12.0),))  # keyframe every second
    alerts = [("b1", "new", 5.0, 6.0, 0.8, None), ("b1", "end", 5.0, 8.0, 0.8, None)]
    cfg, writer, recs = record_and_alert(
        tmp_path, video, "c2", alerts, pre_seconds=1.0, segment_seconds=1.0, buffer_seconds=10.0
    )
    assert writer.failures == [] and len(recs) == 1 and recs[0]["clip"]["reencoded"] is False
    clip = Path(cfg.evidence.dir) / recs[0]["clip"]["path"]
    dur = float(probe(clip)["streams"][0]["duration"])
    assert 4.0 - 1e-3 <= dur <= 4.0 + 2 * 1.0 + 0.2 and faststart(clip)
    segs, done = read_index(Path(cfg.evidence.dir) / ".buffer" / "c2")
    assert done and len(segs) >= 9
    assert segs[-1].end - segs[0].end <= 10.0 + 1e-6  # older segments deleted (buffer_seconds)
    files = sorted(p.name for p in (Path(cfg.evidence.dir) / ".buffer" / "c2").glob("seg-*.mkv"))
    assert files == [s.file for s in segs] and "seg-000001.mkv" not in files


def test_non_h264_source_and_privacy_mask_are_reencoded(tmp_path):
    src = scene_video(tmp_path / "scene.mp4", (("moving", 6.0),))
    avi = tmp_path / "scene.avi"  # MS-MPEG4 in AVI, like vtest.avi
    subprocess.run(
        [FFMPEG, "-v", "error", "-y", "-i", str(src), "-c:v", "msmpeg4", "-q:v", "3", str(avi)], check=True, timeout=60
    )
    alerts = [("c1", "new", 2.0, 3.0, 0.9, None), ("c1", "end", 2.0, 4.0, 0.9, None)]
    cfg, writer, recs = record_and_alert(tmp_path, avi, "c3", alerts, pre_seconds=1.0, masks=["0.5:0:0.5:1"])
    assert writer.failures == [] and len(recs) == 1 and recs[0]["clip"]["reencoded"] is True
    clip = Path(cfg.evidence.dir) / recs[0]["clip"]["path"]
    assert probe(clip)["streams"][0]["codec_name"] == "h264"
    import av

    with av.open(str(clip)) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="gray").astype(float)
    left, right = frame[:, 8:56], frame[:, 72:120]  # the checkerboard left, its blurred half right
    assert np.abs(np.diff(left, axis=1)).mean() > 3 * np.abs(np.diff(right, axis=1)).mean()
    import cv2

    snap = cv2.imread(str(Path(cfg.evidence.dir) / recs[0]["snapshot"]["path"]), cv2.IMREAD_GRAYSCALE).astype(float)
    assert np.abs(np.diff(snap[:, 8:56], axis=1)).mean() > 3 * np.abs(np.diff(snap[:, 72:120], axis=1)).mean()


def test_store_retention_deletes_the_oldest_beyond_the_limits(tmp_path):
    now = time.time()
    for i in range(5):
        for ext, size in ((".mp4", 400_000), (".jpg", 100_000)):
            p = tmp_path / "cam" / f"alert{i}{ext}"
            p.parent.mkdir(exist_ok=True)
            p.write_bytes(b"x" * size)
            os.utime(p, (now - 100 + i, now - 100 + i))
    (tmp_path / ".buffer" / "cam").mkdir(parents=True)
    (tmp_path / ".buffer" / "cam" / "seg-000001.mkv").write_bytes(b"y" * 5_000_000)  # not evidence
    assert apply_retention(tmp_path, max_age_days=30, max_total_mb=1.6) == 4  # 2.5 MB → 1.5 MB
    assert sorted(p.name for p in (tmp_path / "cam").iterdir()) == [
        "alert2.jpg",
        "alert2.mp4",
        "alert3.jpg",
        "alert3.mp4",
        "alert4.jpg",
        "alert4.mp4",
    ]
    old = now - 40 * 86400
    os.utime(tmp_path / "cam" / "alert2.mp4", (old, old))
    os.utime(tmp_path / "cam" / "alert2.jpg", (old, old))
    assert apply_retention(tmp_path, max_age_days=30, max_total_mb=100) == 2
    assert (tmp_path / ".buffer" / "cam" / "seg-000001.mkv").is_file()
    assert sorted(p.stem for p in (tmp_path / "cam").iterdir()) == ["alert3", "alert3", "alert4", "alert4"]
