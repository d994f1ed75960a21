"""``bench ped2`` model selection on weak labels only: weak copies of the videos, stratified folds,
out-of-fold causal scores, video-level AUC and MIL bag loss per candidate (steps 2–3 of
:mod:`fusewatch.engines.bench.ped2`)."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from fusewatch.stream.config import Config

if TYPE_CHECKING:
    from fusewatch.engines.training.loop import TrainSummary


def weak_videos(videos) -> list:
    """Copies without frame ground truth (video labels only)."""
    return [dataclasses.replace(v, frame_gt=None) for v in videos]


def dataset_of(videos, like):
    """A :class:`FeatureDataset` of ``videos`` with the dims, layout, root and info of dataset ``like``."""
    from fusewatch.engines.data.records import FeatureDataset

    return FeatureDataset(list(videos), dict(like.dims), like.layout, like.root, dict(like.info))


def stratified_folds(videos, k: int, seed: int) -> list[list[str]]:
    """``k`` folds of video names, stratified by video label (round-robin after a seeded shuffle)."""
    rng = np.random.default_rng(seed)
    folds: list[list[str]] = [[] for _ in range(k)]
    j = 0
    for lab in sorted({v.video_label for v in videos}):
        group = [v.name for v in videos if v.video_label == lab]
        for i in rng.permutation(len(group)):
            folds[j % k].append(group[i])
            j += 1
    return [sorted(f) for f in folds if f]


def model_cfg(cfg: Config, fusion: str, expansion: str | None = None, pq: tuple[int, int] | None = None) -> Config:
    """Copy of ``cfg`` for one candidate (fusion, expansion, ``(P, Q)``), training on all given videos."""
    c = copy.deepcopy(cfg)
    c.model.fusion = fusion
    if expansion:
        c.model.expansion = expansion
    if pq:
        c.model.order_p, c.model.order_q = int(pq[0]), int(pq[1])
    c.train.val_fraction = 0.0  # all given videos train; the last epoch is kept
    return c


def train_one(ds, videos, cfg: Config, out: Path, progress: bool = False) -> TrainSummary:
    """Train on ``videos`` (weak copies) with ``cfg`` → :class:`fusewatch.engines.training.loop.TrainSummary`."""
    from fusewatch.engines.training.loop import train

    return train(
        dataset_of(weak_videos(videos), ds),
        cfg,
        out,
        fusion=cfg.model.fusion,
        representations=list(cfg.model.representations),
        progress=progress,
    )


def offline_scores(model_path: str | Path, videos) -> dict[str, np.ndarray]:
    """Causal per-clip scores (:func:`fusewatch.engines.evaluation.scoring.score_video`) of ``videos``."""
    from fusewatch.engines.evaluation.scoring import score_video
    from fusewatch.engines.training.checkpoint import load_model

    model, _ = load_model(model_path)
    return {v.name: score_video(model, v.feats) for v in videos}


def bag_bce(scores: np.ndarray, label: int, k: int) -> float:
    """MIL bag loss of one video: BCE of the mean of its ``k`` highest clip scores vs ``label``."""
    s = np.sort(np.asarray(scores, np.float64))[::-1]
    bag = float(np.clip(s[: max(1, min(k, s.size))].mean(), 1e-6, 1 - 1e-6))
    return -math.log(bag) if label == 1 else -math.log(1 - bag)


def cross_validate(ds, cfg: Config, folds: Sequence[Sequence[str]], tmp_model: Path) -> dict:
    """Out-of-fold weak-label metrics of one configuration (module doc, step 3)."""
    from fusewatch.engines.evaluation import metrics as M

    by = ds.by_name()
    oof: dict[str, np.ndarray] = {}
    for held in folds:
        held_set = set(held)
        tr = [v for v in ds.videos if v.name not in held_set]
        if {v.video_label for v in tr} != {0, 1}:
            continue
        train_one(ds, tr, cfg, tmp_model)
        oof.update(offline_scores(tmp_model, [by[n] for n in held]))
    names = [n for n in (v.name for v in ds.videos) if n in oof]
    labels = [by[n].video_label for n in names]
    vauc = M.video_level_metrics([float(np.max(oof[n])) for n in names], labels)["auc"]
    bce = float(np.mean([bag_bce(oof[n], by[n].video_label, cfg.train.topk) for n in names]))
    return {"video_auc": M.nan_to_none(vauc), "bag_bce": bce, "videos": len(names)}


def rank_key(m: Mapping[str, Any]) -> tuple[float, float]:
    """Sort key of a candidate's :func:`cross_validate` metrics: video AUC (higher first), then bag BCE."""
    auc = m.get("video_auc")
    return (-(auc if auc is not None else -1.0), m.get("bag_bce", math.inf))
