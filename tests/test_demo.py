"""``fusewatch demo`` (README command one) end to end in a fresh cache: features extracted, the
default model trained, cameras replayed through worker → bus → engine, report written; the cached
model is reused only while the settings it was trained with are unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fusewatch.stream.paths import shared_data

PED2 = shared_data("ped2")
STEMS = ("test_02", "test_12", "train_01", "train_02")
ROOT = Path(__file__).resolve().parents[1]


def run_demo(tmp_path: Path, *extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUSEWATCH_")}
    env.update(FUSEWATCH_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(ROOT), COLUMNS="200")
    cmd = [
        sys.executable,
        "-m",
        "fusewatch",
        "demo",
        "--videos",
        str(tmp_path / "videos"),
        "--cameras",
        "test_02,train_01",
        "--out",
        str(tmp_path / "out"),
        "--set",
        "features.extractors=mobilenetv2,flow",
        "--set",
        "train.epochs=15",
        "--set",
        "train.val_fraction=0",
        *extra,
    ]
    p = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout


def check_demo_evidence(ev_dir: Path, stdout: str) -> None:
    """Issue 14 item 1: for each demo alert a clip (H.264, covering the alert ± 1 clip) and a snapshot."""
    import re
    import shutil

    ids = set(re.findall(r"\bnew\s+camera=\S+.*id=([0-9a-f]+)", stdout))
    assert ids, stdout
    assert stdout.count("evidence camera=") == len(ids), stdout
    records = {r["alert_id"]: r for r in map(json.loads, (ev_dir / "evidence.jsonl").read_text().splitlines())}
    assert set(records) == ids
    for aid in ids:
        clips = list(ev_dir.glob(f"*/{aid}.mp4"))
        assert len(clips) == 1 and clips[0].with_suffix(".jpg").is_file(), aid
        if shutil.which("ffprobe"):
            p = subprocess.run(
                [
                    "ffprobe",
                    "-v",
                    "error",
                    "-select_streams",
                    "v",
                    "-show_entries",
                    "stream=codec_name,duration",
                    "-of",
                    "json",
                    str(clips[0]),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            st = json.loads(p.stdout)["streams"][0]
            rec = records[aid]
            span = rec["alert"]["end_time"] - rec["alert"]["start_time"]
            assert st["codec_name"] == "h264", st
            # + pre-roll (5 s), ± 1 clip; a stream copy may carry up to 2 × segment_seconds (2 s) of whole
            # segments beyond the window (stream/evidence/cut.py), e.g. a single-GOP source from its start
            assert span - 1.6 <= float(st["duration"]) <= span + 5.0 + 2 * 2.0 + 1.6, (st, rec)


@pytest.mark.timeout(900)
def test_demo_end_to_end_and_model_cache(tmp_path):
    if not PED2.is_dir():
        pytest.skip(f"{PED2} not found: the shared data folder is absent")
    vdir = tmp_path / "videos"
    vdir.mkdir()
    labels = json.loads((PED2 / "labels.json").read_text())
    for s in STEMS:
        (vdir / f"{s}.mp4").symlink_to(PED2 / f"{s}.mp4")
    (vdir / "labels.json").write_text(json.dumps({s: labels[s] for s in STEMS}))

    first = run_demo(tmp_path)
    assert "features: extracting" in first and "model: training lego" in first
    assert "2 cameras" in first and "0 dead letters" in first
    assert "18 clips scored" in first  # test_02 (180 frames: 11 clips) + train_01 (120: 7)
    assert "frame-level ROC-AUC of the streamed scores" in first
    report = (tmp_path / "out" / "report.html").read_text()
    assert "test_02" in report and "train_01" in report
    check_demo_evidence(tmp_path / "out" / "evidence", first)
    model = tmp_path / "cache" / "demo" / "model.pt"
    assert model.is_file() and (tmp_path / "cache" / "demo" / "model.pt.key").is_file()

    second = run_demo(tmp_path)
    assert "model: reusing" in second and "features: extracting" not in second
    assert "model: training" not in second

    third = run_demo(tmp_path, "--set", "model.representations=flow")
    assert "trained with other settings" in third and "model: training lego" in third
