"""Feature dataset loaders: fusewatch layout, .npy + list files (crop averaging), UCF-Crime C3D text."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from fusewatch.engines import data as D
from fusewatch.stream.paths import shared_data  # noqa: E402

SHARED = shared_data()
UCF = SHARED / "ucf_c3d_sample"


def _write_fusewatch(root: Path, mismatch: bool = False, missing_audio: bool = False) -> dict:
    """Two videos, representations rgb (6-d) and audio (3-d), clips of 4 frames, stride 4."""
    rng = np.random.default_rng(0)
    (root / "rgb").mkdir(parents=True)
    (root / "audio").mkdir()
    videos = {"cam_a": 5, "cam_b": 3}
    meta = {
        "clip_len": 4,
        "clip_stride": 4,
        "sample_fps": 10.0,
        "representations": {"rgb": {"dim": 6, "version": "r1"}, "audio": {"dim": 3, "version": "a1"}},
        "videos": {},
    }
    arrays = {}
    for name, T in videos.items():
        x = rng.normal(size=(T, 6)).astype(np.float32)
        a = rng.normal(size=(T + (1 if mismatch and name == "cam_a" else 0), 3)).astype(np.float32)
        np.save(root / "rgb" / f"{name}.npy", x)
        if not (missing_audio and name == "cam_b"):
            np.save(root / "audio" / f"{name}.npy", a)
        arrays[name] = (x, a)
        nf = 4 * T + 2
        meta["videos"][name] = {
            "clips": T,
            "frames": nf,
            "fps": 10.0,
            "clip_frames": [[4 * t, 4 * t + 3] for t in range(T)],
        }
    (root / "meta.json").write_text(json.dumps(meta))
    labels = {
        "cam_a": {"frames": 22, "fps": 10, "abnormal_frames": 4, "labels": "0" * 8 + "1" * 4 + "0" * 10},
        "cam_b": {"frames": 14, "fps": 10, "abnormal_frames": 0, "labels": "0" * 14},
    }
    (root / "labels.json").write_text(json.dumps(labels))
    return arrays


def test_fusewatch_layout(tmp_path):
    arrays = _write_fusewatch(tmp_path)
    ds = D.load_dataset(tmp_path)
    assert ds.layout == "fusewatch" and ds.dims == {"rgb": 6, "audio": 3}
    v = ds.by_name()["cam_a"]
    assert v.num_clips == 5 and v.video_label == 1 and v.frames() == 22 and v.fps == 10.0
    np.testing.assert_array_equal(v.feats["rgb"], arrays["cam_a"][0])
    assert v.clip_ranges() == [(0, 3), (4, 7), (8, 11), (12, 15), (16, 19)]
    assert v.frame_gt.dtype == np.uint8 and np.flatnonzero(v.frame_gt).tolist() == [8, 9, 10, 11]
    assert ds.by_name()["cam_b"].video_label == 0
    assert ds.info["versions"] == {"rgb": "r1", "audio": "a1"}
    # representation selection keeps the given order; unknown names are one-line ValueErrors
    sel = D.load_dataset(tmp_path, representations=["audio"])
    assert sel.representations == ["audio"] and list(sel[0].feats) == ["audio"]
    with pytest.raises(ValueError, match="unknown representation flow"):
        D.load_dataset(tmp_path, representations=["flow"])


def test_clip_count_mismatch_truncates_with_warning(tmp_path, caplog):
    _write_fusewatch(tmp_path, mismatch=True)
    with caplog.at_level(logging.WARNING, logger="fusewatch.datasets"):
        ds = D.load_dataset(tmp_path)
    v = ds.by_name()["cam_a"]
    assert v.feats["rgb"].shape == (5, 6) and v.feats["audio"].shape == (5, 3)
    assert any("clip counts differ" in r.getMessage() and "truncated" in r.getMessage() for r in caplog.records)


def test_large_count_mismatch_resamples_to_reference(caplog):
    feats = {"i3d": np.arange(40, dtype=np.float32).reshape(20, 2), "vggish": np.ones((10, 3), np.float32)}
    with caplog.at_level(logging.WARNING, logger="fusewatch.datasets"):
        out, T = D.align_clip_counts("v", feats, reference="i3d")
    assert T == 20 and out["vggish"].shape == (20, 3) and out["i3d"].shape == (20, 2)
    assert any("resampled to 20" in r.getMessage() for r in caplog.records)


def test_missing_representation_is_absent_not_dropped(tmp_path, caplog):
    _write_fusewatch(tmp_path, missing_audio=True)
    with caplog.at_level(logging.WARNING, logger="fusewatch.datasets"):
        ds = D.load_dataset(tmp_path)
    assert set(ds.by_name()["cam_b"].feats) == {"rgb"}
    assert any("lack some representation" in r.getMessage() for r in caplog.records)


def test_mismatched_dims_and_missing_dirs_are_user_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        D.load_dataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no videos"):
        D.load_dataset(tmp_path / "empty")
    d = tmp_path / "npy" / "clip"
    d.mkdir(parents=True)
    np.save(d / "Normal_1.npy", np.zeros((4, 512), np.float32))
    np.save(d / "Arson_2.npy", np.zeros((4, 256), np.float32))
    with pytest.raises(ValueError, match="mismatched feature dims"):
        D.load_dataset(tmp_path / "npy")


def test_crop_averaging_and_per_crop_files(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(7, 10, 16)).astype(np.float32)  # RTFM I3D: T × 10 crops × D
    np.save(tmp_path / "a.npy", x)
    np.testing.assert_allclose(D.load_feature_array(tmp_path / "a.npy"), x.mean(axis=1), rtol=1e-6)
    y = rng.normal(size=(5, 12, 16)).astype(np.float32)  # crops × T × D (T > 10)
    np.save(tmp_path / "b.npy", y)
    np.testing.assert_allclose(D.load_feature_array(tmp_path / "b.npy"), y.mean(axis=0), rtol=1e-6)
    np.save(tmp_path / "c.npy", x.transpose(1, 0, 2))
    np.testing.assert_allclose(D.load_feature_array(tmp_path / "c.npy", crop_axis=0), x.mean(axis=1), rtol=1e-6)
    # XD-Violence style: one file per crop, averaged into one video
    for k in range(3):
        np.save(tmp_path / f"v1__{k}.npy", x[:, k])
    (tmp_path / "xd.list").write_text("".join(f"v1__{k}.npy\n" for k in range(3)))
    ds = D.load_lists({"i3d": tmp_path / "xd.list"})
    assert len(ds) == 1 and ds[0].name == "v1"
    np.testing.assert_allclose(ds[0].feats["i3d"], x[:, :3].mean(axis=1), rtol=1e-6)


def test_list_files_labels_and_rtfm_ground_truth(tmp_path):
    rng = np.random.default_rng(2)
    feats = tmp_path / "feats"
    feats.mkdir()
    clips = {"Arson011_x264": 3, "Normal_Videos_003_x264": 2, "scene_07": 4}
    for n, T in clips.items():
        np.save(feats / f"{n}_i3d.npy", rng.normal(size=(T, 10, 8)).astype(np.float32))
        np.save(feats / f"{n}_clip.npy", rng.normal(size=(T, 5)).astype(np.float32))
    (tmp_path / "ucf-i3d-test.list").write_text("".join(f"feats/{n}_i3d.npy\n" for n in clips))
    (tmp_path / "ucf-clip-test.list").write_text("".join(f"{feats}/{n}_clip.npy\n" for n in clips))
    (tmp_path / "ucf-i3d.list").write_text(
        "feats/Arson011_x264_i3d.npy\nfeats/Normal_Videos_003_x264_i3d.npy\nfeats/scene_07_i3d.npy 1\n"
    )
    # RTFM gt: concatenated frame labels, 16 frames per clip, in list order
    gt = np.zeros(16 * sum(clips.values()), np.uint8)
    gt[16:40] = 1  # inside Arson011 (clips 0..2 → frames 0..47)
    np.save(tmp_path / "gt-ucf.npy", gt)

    test = D.load_dataset(tmp_path, split="test")
    assert test.layout == "list" and test.dims == {"i3d": 8, "clip": 5}
    by = test.by_name()
    assert list(by) == list(clips)
    assert by["Arson011_x264"].feats["i3d"].shape == (3, 8)  # 10 crops averaged
    assert by["Arson011_x264"].video_label == 1 and by["Normal_Videos_003_x264"].video_label == 0
    assert by["Arson011_x264"].frames() == 48 and int(by["Arson011_x264"].frame_gt.sum()) == 24
    assert by["scene_07"].video_label == 0  # from its (all-zero) GT
    assert by["scene_07"].clip_ranges()[1] == (16, 31)

    train = D.load_dataset(tmp_path)  # default split: train lists
    assert train.representations == ["i3d"]
    labs = {v.name: v.video_label for v in train}
    assert labs == {"Arson011_x264": 1, "Normal_Videos_003_x264": 0, "scene_07": 1}  # name rule + column

    # a single list file; a GT .npy whose length does not match is a clear error
    one = D.load_dataset(tmp_path / "ucf-i3d.list")
    assert len(one) == 3 and one.representations == ["i3d"]
    np.save(tmp_path / "bad.npy", np.zeros(5))
    with pytest.raises(ValueError, match="clip_len"):
        D.load_lists({"i3d": tmp_path / "ucf-i3d-test.list"}, gt=tmp_path / "bad.npy")


def test_npy_folder_with_labels_json(tmp_path):
    d = tmp_path / "mobilenetv2"
    d.mkdir()
    np.save(d / "test_02.npy", np.ones((3, 4), np.float32))
    (tmp_path / "labels.json").write_text(
        json.dumps({"test_02": {"frames": 40, "fps": 10, "abnormal_frames": 5, "labels": "0" * 35 + "1" * 5}})
    )
    ds = D.load_dataset(tmp_path)
    v = ds[0]
    assert ds.layout == "npy" and v.video_label == 1 and v.frames() == 40
    assert v.clip_ranges() == [(0, 15), (16, 31), (32, 39)]


def test_names_and_labels_from_names():
    assert D.video_name("/x/Abuse028_x264_i3d.npy") == "Abuse028_x264"
    assert D.video_name("v5__label_A__3.npy") == "v5__label_A"
    assert D.label_from_name("Normal_Videos_003_x264") == 0
    assert D.label_from_name("Arson011_x264") == 1
    assert D.label_from_name("A.Beautiful.Mind.2001__#00-25-20_00-29-20_label_A") == 0
    assert D.label_from_name("Bad.Boys__#01-11-55_01-12-40_label_G-B2-B6") == 1
    assert D.label_from_name("train_01") == -1
    assert D.rep_name_from_file("shanghai-i3d-test-10crop.list") == "i3d"


@pytest.mark.skipif(not UCF.exists(), reason=f"{UCF} not available (../shared missing)")
def test_ucf_c3d_sample():
    ds = D.load_dataset(UCF)
    assert ds.layout == "ucf_c3d_txt" and ds.dims == {"c3d": 4096} and len(ds) == 10
    counts = {}
    for line in (UCF / "UCF_Annotation.txt").read_text().splitlines():
        tok = line.split()
        if tok:
            counts[Path(tok[0]).stem] = int(tok[1])
    for v in ds:
        assert v.num_clips == 32 and v.frames() == counts[v.name]
        assert v.video_label == (0 if v.name.startswith("Normal") else 1)
        assert v.clip_ranges()[0][0] == 0 and v.clip_ranges()[-1][1] == v.frames() - 1
    e = ds.by_name()["Explosion008_x264"]  # annotated 1005..1245 (1-based, inclusive)
    assert np.flatnonzero(e.frame_gt)[[0, -1]].tolist() == [1004, 1244]
    assert int(e.frame_gt.sum()) == 241


def test_fusewatch_layout_empty_video_and_representation_without_files(tmp_path, caplog):
    _write_fusewatch(tmp_path)
    meta = json.loads((tmp_path / "meta.json").read_text())
    meta["representations"]["flow"] = {"dim": 4, "version": "f1"}  # no flow/ folder at all
    meta["videos"]["cam_c"] = {"clips": 0, "frames": 3, "fps": 10.0, "clip_frames": []}
    np.save(tmp_path / "rgb" / "cam_c.npy", np.zeros((0, 6), np.float32))
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="fusewatch.datasets"):
        ds = D.load_dataset(tmp_path)
    assert ds.representations == ["rgb", "audio"] and [v.name for v in ds] == ["cam_a", "cam_b"]
    msgs = " ".join(r.getMessage() for r in caplog.records)
    assert "flow has no feature files" in msgs and "no clips" in msgs
    with pytest.raises(ValueError, match="representation flow: no feature files"):
        D.load_dataset(tmp_path, representations=["rgb", "flow"])
