"""Inductive evaluation protocol: leave-one-anomalous-video-out over a labelled video set.

What "inductive" means here: a video's frame scores come from a model whose training *and every
selection* (orders P, Q, thresholds, early stopping, feature choice, normalisation statistics) saw
neither that video's frames nor its label. Frame labels are read only to score held-out frames.

Folds (:func:`loao_folds`). One fold per anomalous video (a video with any abnormal frame); the
normal videos are shuffled with a fixed seed (``FOLD_SEED``, the same for every model and every
training seed, so all rows of a table share the folds) and dealt round-robin over the folds. For
UCSD Ped2's 18 shared videos: 6 folds of 1 anomalous + 2 normal videos; every video is held out
exactly once, so pooled figures cover all 18 videos' frames, each scored by a model that never saw it.

Per fold (:func:`run_fold`): the training videos are weak copies (video label only, no frame
labels); normalisation statistics (``Recipe.normalize`` → ``train.normalize``) are fitted by
:func:`fusewatch.engines.training.loop.train` on the training videos' clips only and stored in the
model, which applies them when scoring the held-out videos (the shipped path); the model is trained with ``train.val_fraction = 0`` unless ``Recipe.set``
says otherwise (no early stopping: the last epoch is kept, so nothing is selected); held-out clip scores come from the causal offline scorer
:func:`fusewatch.engines.training.train.score_video` (clip ``t`` = newest node of the window ``[t−N+1 .. t]``, what the
streaming engine computes).

Per-frame scores (:func:`frame_scores`): every frame gets the average score of the clips that cover
it (overlapping clips, ``clip_stride < clip_len``, give finer time), frames no clip covers take the
nearest clip's (:func:`fusewatch.engines.evaluation.metrics.expand_to_frames`); ``Recipe.smooth > 1`` then applies a
centred moving average over that many frames (a fixed post-processing, not fitted).

Metrics (:func:`fold_metrics`): frame-level ROC-AUC pooled over all held-out frames (``all``) and over
the anomalous videos only (``anomalous``); per fold (its held-out videos pooled); per anomalous video
the within-video AUC (NaN for a video abnormal from its first to its last frame). Over seeds:
mean ± sd (:func:`summarize`).

Features at several clip strides come from ONE extraction at the finest stride: a clip's features
depend only on its own frames, so the stride-16 clips are exactly the stride-4 clips that start at a
multiple of 16 (:func:`restride`).
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

FOLD_SEED = 0
NORMALIZATIONS = ("none", "zscore")


# --------------------------------------------------------------------------------------------------
# recipe
# --------------------------------------------------------------------------------------------------


@dataclass
class Recipe:
    """One row of an inductive table: features + clip stride + model + training + post-processing.

    ``set``: further ``"section.field": value`` overrides of :class:`fusewatch.stream.config.Config`."""

    name: str
    representations: list[str]
    fusion: str = "lego"
    stride: int = 16
    normalize: str = "none"
    smooth: int = 0
    set: dict[str, Any] = field(default_factory=dict)

    def config(self, seed: int):
        from fusewatch.engines.bench.ped2 import _set
        from fusewatch.stream.config import Config

        cfg = Config()
        cfg.model.fusion = self.fusion
        cfg.model.representations = list(self.representations)
        cfg.train.seed = int(seed)
        cfg.train.val_fraction = 0.0
        cfg.train.calibration = "none"  # AUCs only: alert thresholds (extra training runs) are not measured here
        cfg.train.normalize = self.normalize
        for k, v in self.set.items():
            _set(cfg, k, v)
        cfg.validate()
        return cfg

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------


def restride(ds, stride: int):
    """Copy of a dataset keeping the clips that start at a multiple of ``stride`` frames (clip frame
    ranges kept). With features extracted at stride 4, ``restride(ds, 16)`` is the stride-16 data."""
    from fusewatch.engines.data import FeatureDataset

    vids = []
    for v in ds.videos:
        r = v.clip_ranges()
        keep = [t for t, (s, _) in enumerate(r) if s % int(stride) == 0]
        feats = {k: a[keep] for k, a in v.feats.items()}
        vids.append(dataclasses.replace(v, feats=feats, clip_to_frames=[r[t] for t in keep]))
    info = dict(ds.info)
    info["clip_stride"] = int(stride)
    return FeatureDataset(vids, dict(ds.dims), ds.layout, ds.root, info)


def weak(videos) -> list:
    """Copies without frame ground truth (video labels only)."""
    return [dataclasses.replace(v, frame_gt=None) for v in videos]


def loao_folds(videos, seed: int = FOLD_SEED) -> list[dict[str, list[str]]]:
    """Leave-one-anomalous-video-out folds: ``[{"held": [...], "train": [...]}, ...]`` (module doc)."""
    names = [v.name for v in videos]
    abn = [v.name for v in videos if v.video_label == 1]
    nor = [v.name for v in videos if v.video_label == 0]
    if not abn:
        raise ValueError("loao_folds: no anomalous video")
    rng = np.random.default_rng(seed)
    held: list[list[str]] = [[a] for a in abn]
    for j, i in enumerate(rng.permutation(len(nor))):
        held[j % len(abn)].append(nor[i])
    return [{"held": sorted(h, key=names.index), "train": [n for n in names if n not in set(h)]} for h in held]


def fit_normalizer(videos, names: Sequence[str], mode: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-representation feature statistics from the given (training) videos' clips."""
    if mode not in NORMALIZATIONS:
        raise ValueError(f"normalize: one of {NORMALIZATIONS} (got {mode!r})")
    if mode == "none":
        return {}
    out = {}
    for n in names:
        x = np.concatenate([v.feats[n] for v in videos if n in v.feats]).astype(np.float64)
        out[n] = (x.mean(0).astype(np.float32), (x.std(0) + 1e-3).astype(np.float32))
    return out


def apply_normalizer(videos, stats) -> list:
    if not stats:
        return list(videos)
    return [
        dataclasses.replace(
            v,
            feats={
                k: ((a - stats[k][0]) / stats[k][1]).astype(np.float32) if k in stats else a for k, a in v.feats.items()
            },
        )
        for v in videos
    ]


# --------------------------------------------------------------------------------------------------
# training and scoring
# --------------------------------------------------------------------------------------------------


def run_fold(
    ds, fold: Mapping[str, Sequence[str]], recipe: Recipe, seed: int, work_dir: str | Path | None = None
) -> dict[str, np.ndarray]:
    """Train ``recipe`` on the fold's training videos (weak labels) and return causal clip scores
    ``{held-out video: (T,)}``."""
    from fusewatch.engines.data import FeatureDataset
    from fusewatch.engines.evaluation.scoring import score_video
    from fusewatch.engines.training.checkpoint import load_model
    from fusewatch.engines.training.loop import train

    reps = list(recipe.representations)
    sub = ds.select(reps)
    by = sub.by_name()
    tr = [by[n] for n in fold["train"]]
    held = [by[n] for n in fold["held"]]
    tr = weak(tr)  # normalisation: fitted by train() on these clips, stored in the model, applied by score_video
    cfg = recipe.config(seed)
    with tempfile.TemporaryDirectory(dir=work_dir) as td:
        out = Path(td) / "model.pt"
        train(
            FeatureDataset(tr, dict(sub.dims), sub.layout, sub.root, dict(sub.info)),
            cfg,
            out,
            fusion=recipe.fusion,
            representations=reps,
            progress=False,
        )
        model, _ = load_model(out)
    return {v.name: score_video(model, v.feats) for v in held}


def frame_scores(video, clip_scores: np.ndarray, smooth: int = 0) -> np.ndarray:
    """Per-frame scores of one video from its clip scores (module doc)."""
    from fusewatch.engines.evaluation import metrics as M
    from fusewatch.engines.evaluation.motion_baseline import smooth as _smooth

    n = video.frames()
    f = M.expand_to_frames(clip_scores, video.clip_ranges(), n)
    return _smooth(f, smooth) if smooth and smooth > 1 else f


def _auc(scores: Sequence[np.ndarray], gts: Sequence[np.ndarray]) -> float:
    from fusewatch.engines.evaluation import metrics as M

    if not scores:
        return math.nan
    return M.roc_auc(
        np.concatenate([np.asarray(g).ravel() for g in gts]),
        np.concatenate([np.asarray(s, np.float64).ravel() for s in scores]),
    )


def fold_metrics(
    frame: Mapping[str, np.ndarray], gts: Mapping[str, np.ndarray], folds: Sequence[Mapping[str, Sequence[str]]]
) -> dict[str, Any]:
    """Pooled and per-fold frame AUCs and within-video AUCs of per-frame scores ``frame``."""
    names = [n for f in folds for n in f["held"]]
    anom = [n for n in names if np.asarray(gts[n]).any()]
    out: dict[str, Any] = {
        "all": _auc([frame[n] for n in names], [gts[n] for n in names]),
        "anomalous": _auc([frame[n] for n in anom], [gts[n] for n in anom]),
        "folds": [],
        "within": {},
    }
    for f in folds:
        h = list(f["held"])
        out["folds"].append({"held": h, "all": _auc([frame[n] for n in h], [gts[n] for n in h])})
    for n in anom:
        out["within"][n] = _auc([frame[n]], [gts[n]])
    return out


def run_recipe(ds, recipe: Recipe, seeds: Sequence[int], folds=None, work_dir=None, log=None) -> dict[str, Any]:
    """All folds × seeds of one recipe → ``{"recipe", "folds", "seeds": [{seed, metrics, clip}]}``
    (``clip``: held-out clip scores per video, for re-scoring with other post-processing)."""
    d = restride(ds, recipe.stride) if recipe.stride != int(ds.info.get("clip_stride") or 0) else ds
    folds = folds or loao_folds(d.videos)
    gts = {v.name: v.frame_gt for v in d.videos}
    by = d.by_name()
    runs = []
    for seed in seeds:
        clip: dict[str, np.ndarray] = {}
        for f in folds:
            clip.update(run_fold(d, f, recipe, seed, work_dir))
        frame = {n: frame_scores(by[n], s, recipe.smooth) for n, s in clip.items()}
        m = fold_metrics(frame, gts, folds)
        runs.append({"seed": int(seed), "metrics": m, "clip": {n: s.tolist() for n, s in clip.items()}})
        if log:
            log(f"{recipe.name} seed {seed}: all {m['all']:.4f} anomalous {m['anomalous']:.4f}")
    return {"recipe": recipe.as_dict(), "folds": folds, "seeds": runs}


def rescore(result: Mapping[str, Any], ds, smooth: int) -> list[dict[str, Any]]:
    """Metrics of a :func:`run_recipe` result with another frame smoothing (no retraining)."""
    d = restride(ds, result["recipe"]["stride"])
    by = d.by_name()
    gts = {v.name: v.frame_gt for v in d.videos}
    out = []
    for r in result["seeds"]:
        frame = {n: frame_scores(by[n], np.asarray(s), smooth) for n, s in r["clip"].items()}
        out.append(fold_metrics(frame, gts, result["folds"]))
    return out


def mean_sd(xs: Iterable[float]) -> tuple[float, float]:
    a = np.asarray([x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))], np.float64)
    if a.size == 0:
        return math.nan, math.nan
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def summarize(metrics: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean ± sd over seeds of the pooled, per-fold and within-video AUCs."""
    out: dict[str, Any] = {}
    for k in ("all", "anomalous"):
        out[k] = mean_sd(m[k] for m in metrics)
    out["folds"] = [mean_sd(m["folds"][i]["all"] for m in metrics) for i in range(len(metrics[0]["folds"]))]
    out["within"] = {n: mean_sd(m["within"][n] for m in metrics) for n in metrics[0]["within"]}
    return out


def baseline_metrics(
    video_dir: str | Path, ds, folds, cache_dir=None, k: int | None = None, causal: bool = False
) -> dict[str, Any]:
    """The training-free local-motion baseline (:mod:`engines.motion_baseline`) on the same frames
    and folds. Its smoothing is centred (as the issue defines it: each frame sees ``k // 2`` future
    frames, which no streaming scorer has) or, with ``causal``, over the last ``k`` frames only —
    the like-for-like reference for the causal models."""
    from fusewatch.engines.evaluation import motion_baseline as MB

    gts = {v.name: v.frame_gt for v in ds.videos}
    s = MB.baseline_scores(video_dir, list(gts), k=k or MB.SMOOTH_FRAMES, causal=causal, cache_dir=cache_dir)
    s = {n: s[n][: len(gts[n])] for n in gts}
    return fold_metrics(s, gts, folds)


# --------------------------------------------------------------------------------------------------
# hybrid: learned score × training-free local motion
# --------------------------------------------------------------------------------------------------

MOTION_COMBINATIONS = ("product", "sqrt_product", "sum_half")
"""How :func:`combine_with_motion` merges a model's per-frame score ``s`` (in [0, 1]) with the
training-free local-motion score ``m`` (px per frame step): ``product`` ``s·m`` (parameter-free: the
model's probability gates the motion evidence), ``sqrt_product`` ``√s·m``, ``sum_half`` ``s + m/2``.
Only ``product`` was fixed before looking at results; the other two were tried on the same videos
(development figures)."""


def combine_with_motion(
    model_frame: Mapping[str, np.ndarray], motion_frame: Mapping[str, np.ndarray], mode: str = "product"
) -> dict[str, np.ndarray]:
    """Per-frame hybrid scores (see :data:`MOTION_COMBINATIONS`); nothing is fitted."""
    if mode not in MOTION_COMBINATIONS:
        raise ValueError(f"mode: one of {MOTION_COMBINATIONS} (got {mode!r})")
    out = {}
    for n, s in model_frame.items():
        m = np.asarray(motion_frame[n], np.float64)[: len(s)]
        s = np.asarray(s, np.float64)
        out[n] = s * m if mode == "product" else np.sqrt(s) * m if mode == "sqrt_product" else s + m / 2
    return out


def rescore_with_motion(
    result: Mapping[str, Any], ds, motion_frame: Mapping[str, np.ndarray], mode: str = "product"
) -> list[dict[str, Any]]:
    """Metrics of a :func:`run_recipe` result combined with the local-motion baseline (no retraining)."""
    d = restride(ds, result["recipe"]["stride"])
    by = d.by_name()
    gts = {v.name: v.frame_gt for v in d.videos}
    out = []
    for r in result["seeds"]:
        frame = {n: frame_scores(by[n], np.asarray(s), result["recipe"].get("smooth", 0)) for n, s in r["clip"].items()}
        out.append(fold_metrics(combine_with_motion(frame, motion_frame, mode), gts, result["folds"]))
    return out
