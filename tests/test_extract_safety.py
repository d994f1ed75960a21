"""Offline extraction and evaluation never lose data while reporting success (second review): a
re-extraction keeps other representations, one extraction at a time per folder, the folder scan
names what it skips, frame numbers survive decode errors, and eval refuses partial or mismatched
inputs with one line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import av
import numpy as np
import pytest

from fusewatch.engines.evaluation.evaluate import ScoredVideo, check_outputs, check_versions
from fusewatch.errors import DatasetError, UsageError
from fusewatch.stream.clips import Frame
from fusewatch.stream.config import ConfigError, load_config
from fusewatch.stream.extract import _lock, extract_videos
from fusewatch.stream.extractors.base import Extractor
from fusewatch.stream.paths import shared_data
from fusewatch.stream.sources import VideoSource
from fusewatch.testing import MeanRGB

PED2 = shared_data("ped2")


class MaxRGB(Extractor):
    """A second cheap stand-in extractor: per-channel maximum of the clip. (3,) float32."""

    name, dim, version = "maxrgb", 3, "t1"

    def extract(self, frames, audio=None, audio_rate=None):
        return np.stack(frames).reshape(-1, 3).max(0).astype(np.float32)


def cfg_(**over):
    return load_config(env={}, overrides=over)


def test_re_extracting_with_fewer_extractors_keeps_the_other_representations(tmp_path):
    out = tmp_path / "f"
    extract_videos([PED2 / "train_01.mp4"], out, cfg_(), extractors=[MeanRGB(), MaxRGB()], progress=False)
    before = np.load(out / "maxrgb" / "train_01.npy")
    extract_videos([PED2 / "train_01.mp4"], out, cfg_(), extractors=[MeanRGB()], progress=False)
    np.testing.assert_array_equal(np.load(out / "maxrgb" / "train_01.npy"), before)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["videos"]["train_01"]["representations"] == ["maxrgb", "meanrgb"]
    # another video under the same name: the other representation no longer matches and goes
    other = tmp_path / "v"
    other.mkdir()
    (other / "train_01.mp4").symlink_to(PED2 / "test_02.mp4")  # 180 frames, not 120
    extract_videos([other / "train_01.mp4"], out, cfg_(), extractors=[MeanRGB()], progress=False)
    assert not (out / "maxrgb" / "train_01.npy").exists()
    assert json.loads((out / "meta.json").read_text())["videos"]["train_01"]["representations"] == ["meanrgb"]


def test_one_extraction_at_a_time_per_folder(tmp_path):
    out = tmp_path / "f"
    out.mkdir()
    held = _lock(out)
    try:
        with pytest.raises(ConfigError, match="another fusewatch extract is writing there"):
            extract_videos([PED2 / "train_01.mp4"], out, cfg_(), extractors=[MeanRGB()], progress=False)
    finally:
        held.close()
    extract_videos([PED2 / "train_01.mp4"], out, cfg_(), extractors=[MeanRGB()], progress=False)
    assert (out / "meanrgb" / "train_01.npy").exists()


def test_folder_scan_names_what_it_does_not_extract_and_bad_inputs_fail_first(tmp_path, caplog):
    vids = tmp_path / "videos"
    (vids / "sub").mkdir(parents=True)
    (vids / "a.mp4").symlink_to(PED2 / "train_01.mp4")
    (vids / "sub" / "b.mp4").symlink_to(PED2 / "train_02.mp4")
    (vids / "clip.xyz").write_bytes(b"x")
    (vids / "notes.txt").write_text("ignored quietly")
    with caplog.at_level(logging.WARNING):
        extract_videos([vids], tmp_path / "f", cfg_(), extractors=[MeanRGB()], progress=False)
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "2 entries not extracted" in msg and "sub/" in msg and "clip.xyz" in msg and "notes.txt" not in msg
    # a broken labels.json beside a loose video: one line, before any extraction
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "c.mp4").symlink_to(PED2 / "train_01.mp4")
    (bad / "labels.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a readable JSON labels file"):
        extract_videos([bad / "c.mp4"], tmp_path / "g", cfg_(), extractors=[MeanRGB()], progress=False)
    assert not (tmp_path / "g").exists()
    with pytest.raises(ConfigError, match="cannot create the directory"):
        extract_videos([PED2 / "train_01.mp4"], bad / "c.mp4" / "sub", cfg_(), extractors=[MeanRGB()], progress=False)


def test_frames_lost_to_decode_errors_keep_later_frame_numbers(tmp_path):
    """An intra-only file whose frames 20..29 are unreadable: later frames used to be numbered 20,
    21, ... (every clip range and frame label after the damage shifted by 10)."""
    p = tmp_path / "damaged.avi"
    c = av.open(str(p), "w")
    s = c.add_stream("mjpeg", rate=10)
    s.width, s.height, s.pix_fmt = 64, 48, "yuvj420p"
    for i in range(64):
        img = np.full((48, 64, 3), 3 * i + 10, np.uint8)
        for pk in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            c.mux(pk)
    for pk in s.encode():
        c.mux(pk)
    c.close()
    with av.open(str(p)) as c:
        pos = [(pk.pos, pk.size) for pk in c.demux(video=0) if pk.size]
    b = bytearray(p.read_bytes())
    for k in range(20, 30):
        o, n = pos[k]
        b[o : o + n] = bytes(n)
    p.write_bytes(bytes(b))
    src = VideoSource(str(p), cfg_().source, wall_anchor=0.0, overflow="block", want_audio=False)
    pairs = [(f.index, round((float(f.image.mean()) - 10) / 3)) for f in src if isinstance(f, Frame)]
    assert len(pairs) == 54 and src.counts["missing"] == 10
    assert all(i == true for i, true in pairs) and pairs[-1] == (63, 63)


def test_eval_refuses_part_of_a_video_other_extractors_and_unwritable_outputs(tmp_path):
    gt = np.zeros(180, np.uint8)
    ranges = [(16 * k, 16 * k + 15) for k in range(5)]  # 80 of 180 labelled frames
    with pytest.raises(DatasetError, match="cover frames 0..79 of its 180 labelled frames"):
        ScoredVideo("v", np.zeros(5), ranges, gt)
    ScoredVideo("v", np.zeros(11), [(16 * k, 16 * k + 15) for k in range(11)], gt)  # a short tail is fine
    with pytest.raises(DatasetError, match="extractor flow-1-dis-w60, the model was trained on flow-1-farneback"):
        check_versions({"flow": "flow-1-farneback-w120"}, {"flow": "flow-1-dis-w60"}, ["flow"])
    check_versions({"flow": "a"}, {"flow": None}, ["flow"])  # unknown: nothing to compare
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UsageError, match="--json: cannot create the folder"):
        check_outputs(f / "r.json", None)
    with pytest.raises(UsageError, match="--plots: cannot create the folder"):
        check_outputs(None, f)
    check_outputs(tmp_path / "new" / "r.json", tmp_path / "plots")
    assert Path(tmp_path / "new").is_dir() and Path(tmp_path / "plots").is_dir()
