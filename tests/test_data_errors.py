"""Bad feature data is a one-line :class:`DatasetError` naming the file and the field, never a
traceback; feature files that ``meta.json`` does not list are not dropped without a warning."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fusewatch.cli.demo import read_demo_labels
from fusewatch.engines.data.arrays import load_feature_array
from fusewatch.engines.data.formats.fusewatch_dir import load_fusewatch_dir
from fusewatch.engines.data.ground_truth import read_labels_json
from fusewatch.errors import DataNotFoundError, DatasetError

DIMS = {"flow": 4, "objects": 3}
CLIPS, CLIP_LEN = 5, 16
VIDEOS = ("test_01", "test_02", "train_01")


def make_layout(root: Path) -> Path:
    """A small ``fusewatch extract`` folder: meta.json, <rep>/<video>.npy (CLIPS×dim), labels.json."""
    rng = np.random.default_rng(0)
    meta: dict = {
        "clip_len": CLIP_LEN,
        "clip_stride": CLIP_LEN,
        "representations": {r: {"dim": d, "version": "test"} for r, d in DIMS.items()},
        "videos": {},
    }
    labels = {}
    frames = CLIPS * CLIP_LEN
    for v in VIDEOS:
        for r, d in DIMS.items():
            (root / r).mkdir(parents=True, exist_ok=True)
            np.save(root / r / f"{v}.npy", rng.normal(size=(CLIPS, d)).astype(np.float32))
        meta["videos"][v] = {
            "clips": CLIPS,
            "frames": frames,
            "fps": 10.0,
            "clip_frames": [[t * CLIP_LEN, t * CLIP_LEN + CLIP_LEN - 1] for t in range(CLIPS)],
        }
        labels[v] = {"frames": frames, "fps": 10, "labels": ("01" if v.startswith("test") else "00") * (frames // 2)}
    (root / "meta.json").write_text(json.dumps(meta))
    (root / "labels.json").write_text(json.dumps(labels))
    return root


def edit_json(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    path.write_text(json.dumps(fn(data) or data))


# -- defect 1: unreadable feature files -----------------------------------------------------------


def _empty(p: Path) -> None:
    p.write_bytes(b"")


def _directory(p: Path) -> None:
    p.mkdir()


def _strings(p: Path) -> None:
    np.save(p, np.array([["a", "b"]]))


def _truncated(p: Path) -> None:
    np.save(p, np.ones((20, 4), np.float32))
    p.write_bytes(p.read_bytes()[:150])


@pytest.mark.parametrize(
    "make,needle",
    [(_empty, "empty or truncated"), (_directory, "directory"), (_strings, "numbers"), (_truncated, "unreadable")],
)
def test_bad_feature_file_is_dataset_error(tmp_path, make, needle):
    p = tmp_path / "x.npy"
    make(p)
    with pytest.raises(DatasetError) as ei:
        load_feature_array(p)
    assert not isinstance(ei.value, DataNotFoundError)
    assert str(p) in str(ei.value) and needle in str(ei.value)


def test_missing_feature_file_is_not_found(tmp_path):
    with pytest.raises(DataNotFoundError, match="not found"):
        load_feature_array(tmp_path / "nope.npy")


def test_bad_feature_file_in_layout_names_the_file(tmp_path):
    root = make_layout(tmp_path / "feats")
    _empty(root / "flow" / "test_02.npy")
    with pytest.raises(DatasetError, match=r"flow/test_02\.npy: empty or truncated"):
        load_fusewatch_dir(root)


# -- defect 2: labels.json field types ------------------------------------------------------------


@pytest.mark.parametrize(
    "field,value,shown",
    [
        ("labels", [0, "x"], "'labels[1]'"),
        ("labels", 5, "'labels'"),
        ("labels", "01x", "'labels'"),
        ("frames", "abc", "'frames'"),
        ("frames", -3, "'frames'"),
        ("fps", "ten", "'fps'"),
        ("label", "abnormal", "'label'"),
    ],
)
def test_labels_json_wrong_type_names_file_video_field(tmp_path, field, value, shown):
    root = make_layout(tmp_path / "feats")
    lab = root / "labels.json"
    edit_json(lab, lambda d: d["test_02"].update({field: value}))
    for load in (read_labels_json, lambda p: load_fusewatch_dir(p.parent)):
        with pytest.raises(DatasetError) as ei:
            load(lab)
        msg = str(ei.value)
        assert str(lab) in msg and "'test_02'" in msg and shown in msg and "\n" not in msg


def test_labels_json_number_list_still_read(tmp_path):
    lab = tmp_path / "labels.json"
    lab.write_text(json.dumps({"v.mp4": {"labels": [0, 1, 0.5, 0], "frames": 4, "fps": 25, "label": 1}}))
    rec = read_labels_json(lab)["v"]
    assert rec["frame_gt"].tolist() == [0, 1, 1, 0] and rec["frames"] == 4 and rec["label"] == 1


# -- defect 3: meta.json field types --------------------------------------------------------------


def _set(*keys, value):
    def fn(m):
        for k in keys[:-1]:
            m = m[k]
        m[keys[-1]] = value

    return fn


@pytest.mark.parametrize(
    "fn,field",
    [
        (lambda m: [], "expected a JSON object"),
        (lambda m: m.update(representations=list(m["representations"])), "'representations'"),
        (lambda m: m.update(videos=["test_01"]), "'videos'"),
        (_set("clip_len", value="x"), "'clip_len'"),
        (_set("representations", "flow", "dim", value="eighty"), "'representations.flow.dim'"),
        (_set("videos", "test_02", "clip_frames", value=[[0]] * CLIPS), "'videos.test_02.clip_frames[0]'"),
        (_set("videos", "test_02", "clip_frames", value=7), "'videos.test_02.clip_frames'"),
        (_set("videos", "test_02", "clips", value="5"), "'videos.test_02.clips'"),
    ],
)
def test_meta_json_wrong_type_names_file_field(tmp_path, fn, field):
    root = make_layout(tmp_path / "feats")
    meta = root / "meta.json"
    data = json.loads(meta.read_text())
    new = fn(data)
    meta.write_text(json.dumps(data if new is None else new))
    with pytest.raises(DatasetError) as ei:
        load_fusewatch_dir(root)
    assert str(meta) in str(ei.value) and field in str(ei.value)


def test_good_layout_loads(tmp_path):
    ds = load_fusewatch_dir(make_layout(tmp_path / "feats"))
    assert sorted(v.name for v in ds) == sorted(VIDEOS)


# -- defect 4: feature files meta.json does not list ----------------------------------------------


def test_unlisted_feature_files_warned(tmp_path, caplog):
    root = make_layout(tmp_path / "feats")
    edit_json(root / "meta.json", lambda m: m["videos"].pop("test_02") and None)
    with caplog.at_level(logging.WARNING, logger="fusewatch.datasets"):
        ds = load_fusewatch_dir(root)
    assert sorted(v.name for v in ds) == ["test_01", "train_01"]
    msgs = [r.getMessage() for r in caplog.records if "meta.json does not list" in r.getMessage()]
    assert len(msgs) == 1, caplog.text
    assert "2 feature file(s)" in msgs[0] and "flow/test_02.npy" in msgs[0] and "objects/test_02.npy" in msgs[0]
    assert "fusewatch extract" in msgs[0]


def test_no_unlisted_warning_when_all_listed(tmp_path, caplog):
    root = make_layout(tmp_path / "feats")
    with caplog.at_level(logging.WARNING, logger="fusewatch.datasets"):
        load_fusewatch_dir(root)
    assert "meta.json does not list" not in caplog.text


# -- defect 5: demo --videos DIR with a broken labels.json ----------------------------------------


def test_read_demo_labels(tmp_path):
    assert read_demo_labels(tmp_path) == {}
    (tmp_path / "labels.json").write_text(
        json.dumps({"a.mp4": {"labels": [0, 1, 1], "fps": 10}, "b": {"labels": "010"}, "c": {"frames": 9}})
    )
    got = read_demo_labels(tmp_path)
    assert {k: v["labels"] for k, v in got.items()} == {"a": "011", "b": "010"}  # c: no frame labels
    (tmp_path / "labels.json").write_text('{"a": ')
    with pytest.raises(DatasetError, match="labels.json: invalid JSON"):
        read_demo_labels(tmp_path)


@pytest.mark.parametrize("text", ['{"test_02": ', json.dumps({"test_02": {"labels": [0, "x"]}})])
def test_demo_broken_labels_fails_before_replay(tmp_path, text):
    vdir = tmp_path / "videos"
    vdir.mkdir()
    (vdir / "test_02.mp4").write_bytes(b"")
    (vdir / "labels.json").write_text(text)
    r = subprocess.run(
        [sys.executable, "-m", "fusewatch", "demo", "--videos", str(vdir), "--model", str(tmp_path / "none.pt")]
        + ["--cameras", "test_02", "--evidence", "none", "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    err = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("fusewatch: error:")]
    # the labels error, not the missing model's: the file is checked before anything else runs
    assert len(err) == 1 and "labels.json" in err[0] and "none.pt" not in err[0], r.stderr[-2000:]
    assert not (tmp_path / "out").exists()
