"""Overlapping clips (``clip_stride`` 4 < ``clip_len`` 16): streamed == offline.

The other streamed-vs-offline tests (``test_ped2_stream``, ``test_worker``) run at stride == length.
Here, on two generated videos (70 and 50 frames at 10 fps → 14 and 9 clips of 16 frames every 4):

* features published by the camera worker on the in-process bus (per-frame parts on and off) ==
  ``fusewatch extract``'s ``.npy`` files == each extractor run on the clip's own decoded frames;
* per-clip scores of the streaming engine (ONNX Runtime and torch backends, one replay; window 4, so
  the ring buffer wraps; default ``context`` motion prior; z-scored features) == the offline causal
  scorer :func:`~fusewatch.engines.evaluation.scoring.score_video`, within 1e-4;
* per-frame scores (:func:`~fusewatch.engines.evaluation.metrics.expand_to_frames`: each frame the mean
  of the up to 4 clips covering it) agree whichever path scored the clips, and ``eval --data`` and
  ``eval --videos --stream`` report the same frames and AUC.
"""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from fusewatch.stream.config import load_config
from fusewatch.stream.extract import extract_videos
from fusewatch.stream.extractors import build_extractors
from fusewatch.testing import collect_features, moving_box_video, scene_video

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("torch_one_thread")

CLIP_LEN, STRIDE, WINDOW = 16, 4, 4
VIDEOS = {"cam_a": 70, "normal_b": 50}  # name → frames (10 fps); cam_a's last 30 frames are labelled abnormal
TOL = 1e-4
OVERRIDES = {
    "features.extractors": "flow,objects",  # flow: per-frame parts (pairs); objects: whole clip
    "clips.clip_len": str(CLIP_LEN),
    "clips.clip_stride": str(STRIDE),
    "model.window": str(WINDOW),
    "model.representations": "flow,objects",
    "train.epochs": "2",
    "train.val_fraction": "0",
    "train.seed": "0",
}


def _cfg(**over):
    return load_config(env={}, overrides={**OVERRIDES, **over})


def _clips(frames: int) -> int:
    return (frames - CLIP_LEN) // STRIDE + 1


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("overlap") / "videos"
    d.mkdir()
    scene_video(d / "cam_a.mp4", (("moving", 2.5), ("frozen", 1.5), ("moving", 3.0)))
    moving_box_video(d / "normal_b.mp4", seconds=5.0)
    labels = {
        "cam_a": {"frames": 70, "fps": 10, "labels": "0" * 40 + "1" * 30},
        "normal_b": {"frames": 50, "fps": 10, "labels": "0" * 50},
    }
    (d / "labels.json").write_text(json.dumps(labels))
    return d


@pytest.fixture(scope="module")
def offline(videos, tmp_path_factory):
    """``fusewatch extract``'s code path → the feature folder and its dataset."""
    from fusewatch.engines.data import load_dataset

    feats = extract_videos([videos], tmp_path_factory.mktemp("feats"), _cfg(), progress=False)
    return feats, load_dataset(feats)


@pytest.fixture(scope="module")
def model(offline, tmp_path_factory):
    """A LEGO model trained for 2 epochs on the overlapping clips + its offline causal clip scores."""
    from fusewatch.engines.evaluation.scoring import score_video
    from fusewatch.engines.training.checkpoint import load_model
    from fusewatch.engines.training.loop import train

    _, ds = offline
    path = tmp_path_factory.mktemp("model") / "m.pt"
    train(ds, _cfg(), path, progress=False)
    m, meta = load_model(path)
    assert meta.get("clip_stride") == STRIDE and meta.get("clip_len") == CLIP_LEN
    assert (m.motion_prior or {}).get("mode") == "context" and m.feature_norm  # both applied on both paths
    return path, {v.name: score_video(m, v.feats) for v in ds.videos}


@pytest.fixture(scope="module")
def streamed(videos, model):
    """One replay of both videos (worker → in-process bus) into one engine per backend."""
    from fusewatch.engines.bench.ped2_stream import stream_models
    from fusewatch.engines.serving.runtime import load_serving_model

    cfg = _cfg()
    path, _ = model
    serving = {b: load_serving_model(cfg, path, backend=b) for b in ("onnxruntime", "torch")}
    return stream_models([videos / f"{v}.mp4" for v in VIDEOS], cfg, serving, camera_ids=list(VIDEOS))


def _decoded(path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_offline_clips_overlap(offline):
    feats, ds = offline
    meta = json.loads((feats / "meta.json").read_text())
    assert (meta["clip_len"], meta["clip_stride"]) == (CLIP_LEN, STRIDE)
    for v in ds.videos:
        n = _clips(VIDEOS[v.name])
        assert v.num_clips == n and v.frames() == VIDEOS[v.name]
        assert v.clip_ranges() == [(STRIDE * k, STRIDE * k + CLIP_LEN - 1) for k in range(n)]


@pytest.mark.parametrize("per_frame", ["true", "false"])
def test_streamed_features_equal_offline_extract(videos, offline, per_frame):
    feats, ds = offline
    cfg = _cfg(**{"worker.per_frame": per_frame})
    ex = build_extractors(cfg.features)
    for v in ds.videos:
        msgs = collect_features(videos / f"{v.name}.mp4", ex, cfg, camera=v.name)
        assert [(m.clip, m.frame_start, m.frame_end) for m in msgs] == [
            (k, s, e) for k, (s, e) in enumerate(v.clip_ranges())
        ]
        for e in ex:
            got = np.stack([m.rep(e.name) for m in msgs])
            np.testing.assert_allclose(got, np.load(feats / e.name / f"{v.name}.npy"), atol=TOL, rtol=0)
    if per_frame == "false":
        return
    # independent reference: each extractor on the clip's own frames (10 fps video: every frame sampled)
    frames = _decoded(videos / "cam_a.mp4")
    by = ds.by_name()
    for k, (s, e) in enumerate(by["cam_a"].clip_ranges()):
        for x in ex:
            np.testing.assert_allclose(by["cam_a"].feats[x.name][k], x.extract(frames[s : e + 1]), atol=TOL, rtol=0)


def test_streamed_scores_equal_offline(offline, model, streamed):
    from fusewatch.engines.bench.ped2_stream import compare_scores

    _, ds = offline
    _, off = model
    ranges = {v.name: v.clip_ranges() for v in ds.videos}
    assert max(len(s) for s in off.values()) > WINDOW  # the engine's window ring wraps
    for backend, clips in streamed["clips"].items():
        cmp = compare_scores(clips, off, ranges)
        assert not (cmp["missing"] or cmp["count_mismatch"] or cmp["range_mismatch"]), (backend, cmp)
        assert cmp["clips"] == sum(_clips(n) for n in VIDEOS.values())
        assert cmp["max_abs_diff"] <= TOL, f"{backend}: streamed vs offline differ by {cmp['max_abs_diff']:.3g}"
        assert streamed["engines"][backend]["scored"] == cmp["clips"]


def test_frame_scores_agree_whichever_path_scored_the_clips(
    videos, offline, model, streamed, tmp_path, restore_logging
):
    from fusewatch.cli import main
    from fusewatch.engines.evaluation.metrics import expand_to_frames

    feats, ds = offline
    path, off = model
    for v in ds.videos:
        n = v.frames()
        fo = expand_to_frames(off[v.name], v.clip_ranges(), n)
        for backend, clips in streamed["clips"].items():
            recs = sorted(clips[v.name], key=lambda c: c.clip)
            rg = [(c.frame_start, c.frame_end) for c in recs]
            assert rg == v.clip_ranges(), (backend, v.name)
            fs = expand_to_frames([c.score for c in recs], rg, n)
            assert fs.shape == fo.shape == (n,)
            np.testing.assert_allclose(fs, fo, atol=TOL, rtol=0, err_msg=f"{backend} {v.name}")
        # overlaps are averaged: frame 20 lies in clips 2..5 (frames 8–23 … 20–35); frame 0 in clip 0 only
        np.testing.assert_allclose(fo[20], np.mean(off[v.name][2:6], dtype=np.float64), rtol=1e-12)
        assert fo[0] == pytest.approx(off[v.name][0])
    # the command contract at overlap: `eval --data` (offline) == `eval --videos --stream`
    off_json, st_json = tmp_path / "eval.json", tmp_path / "eval-stream.json"
    assert main(["eval", "--model", str(path), "--data", str(feats), "--json", str(off_json)]) == 0
    sets = [a for k, val in OVERRIDES.items() if k.startswith(("clips.", "features.")) for a in ("--set", f"{k}={val}")]
    assert main(["eval", "--model", str(path), "--videos", str(videos), "--stream", "--json", str(st_json), *sets]) == 0
    off_rep, st_rep = json.loads(off_json.read_text()), json.loads(st_json.read_text())
    assert off_rep["frames"] == st_rep["frames"] == sum(VIDEOS.values())
    assert off_rep["videos"] == st_rep["videos"]
    assert off_rep["auc"] is not None and abs(off_rep["auc"] - st_rep["auc"]) < 1e-6
