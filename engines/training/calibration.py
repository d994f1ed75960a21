"""Alert thresholds calibrated on normal videos the scoring model never trained on, stored in the
checkpoint.

A weakly supervised model trained to its last epoch scores its own normal training clips close to
0 (on UCSD Ped2, 99th percentile ~0.001), while normal footage it has not seen scores higher (~0.01,
up to 0.25): thresholds taken in sample then fire on most unseen normal clips (59 % of held-out
normal clips above ``on`` in the inductive Ped2 folds, against 2 % when calibrated out of sample).
So :func:`fit_alert_thresholds` calibrates on out-of-sample normal videos (``train.calibration``):

* ``heldout`` (default): the validation split's normal videos when there are any (they never
  trained the model); otherwise cross-fitting: the normal training videos are dealt into
  ``train.calibration_folds`` groups, a *calibration model* is trained per group with the same
  recipe and seed on every other training video, and the group's scores under it are pooled, so
  every normal video is scored by a model that never saw it (``calibration_folds`` extra training
  runs; the shipped model still trains on every video). With too few normal clips a 99th
  percentile is unstable: holding out one quarter of Ped2's normal videos once gave ``on`` from
  0.0001 to 0.023 across folds and still 51 % of unseen normal clips above it;
* ``insample``: the normal training + validation videos' scores under the shipped model;
* ``none``: no thresholds (the engine uses ``alerts.on`` / ``alerts.off``).

``on`` = 99th, ``off`` = 95th percentile of the calibration clips' causal scores.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fusewatch.engines.data.records import VideoFeatures
from fusewatch.engines.evaluation.scoring import score_dataset
from fusewatch.engines.training import checkpoint as ckpt

log = logging.getLogger(__name__)


def thresholds_from_scores(scores: np.ndarray, source: str, videos: int) -> dict[str, Any]:
    """``{on, off, normal_clips, source, videos}`` from normal clip scores ``(n,)``."""
    on, off = float(np.quantile(scores, 0.99)), float(np.quantile(scores, 0.95))
    off = min(off, on - 1e-4)
    return {
        "on": round(on, 6),
        "off": round(max(off, 0.0), 6),
        "normal_clips": int(scores.size),
        "source": source,
        "videos": int(videos),
    }


def _scores(model_path: str | Path, videos: Sequence[VideoFeatures]) -> np.ndarray:
    model, _ = ckpt.load_model(model_path)
    by = score_dataset(model, list(videos))
    return np.concatenate([by[v.name] for v in videos])


def calibrate_thresholds(
    model_path: str | Path, videos: Sequence[VideoFeatures], source: str = "insample"
) -> dict[str, Any] | None:
    """Thresholds from the clip scores of the *normal* ``videos`` under the model at ``model_path``,
    stored in its metadata as ``alert_thresholds`` (``source`` names where the videos came from);
    the engine uses them when ``alerts.thresholds = "model"``."""
    normal = [v for v in videos if v.video_label == 0]
    if not normal or not Path(model_path).is_file():
        return None
    return _store(model_path, thresholds_from_scores(_scores(model_path, normal), source, len(normal)))


def _store(model_path: str | Path, th: dict[str, Any]) -> dict[str, Any]:
    """Write ``th`` into the checkpoint's ``alert_thresholds`` → ``th``."""
    model, _ = ckpt.load_model(model_path)
    stored = dict(ckpt.read_checkpoint(model_path)["meta"])
    stored["alert_thresholds"] = th
    ckpt.save_checkpoint(model, model_path, stored)
    return th


def fit_alert_thresholds(
    out_path: str | Path, ds, train_v: list[VideoFeatures], val_v: list[VideoFeatures], cfg, train_fn
) -> dict[str, Any] | None:
    """Calibrate the model at ``out_path`` as ``cfg.train.calibration`` says (module doc).
    ``ds``: the training :class:`~fusewatch.engines.data.records.FeatureDataset`; ``train_fn``:
    :func:`fusewatch.engines.training.loop.train` (passed in: this module is imported by it)."""
    mode, tc = cfg.train.calibration, cfg.train
    if mode == "none":
        return None
    if mode == "insample":
        return calibrate_thresholds(out_path, train_v + val_v, "insample")
    val_normal = [v for v in val_v if v.video_label == 0]
    if val_normal:
        return calibrate_thresholds(out_path, val_normal, "validation")
    normal = [v for v in train_v if v.video_label == 0]
    k = min(int(tc.calibration_folds), len(normal))
    if k < 2:
        log.warning("alert thresholds: a single normal training video, calibrated in sample (set alerts.on/off)")
        return calibrate_thresholds(out_path, train_v, "insample")
    order = np.random.default_rng([int(tc.seed), 7]).permutation(len(normal))
    inner = copy.deepcopy(cfg)
    inner.train.calibration = "none"
    inner.train.val_fraction = 0.0
    scores = []
    with tempfile.TemporaryDirectory() as td:
        for f in range(k):
            held = {normal[i].name for i in order[f::k]}
            fit = [v for v in train_v if v.name not in held]
            log.info(
                "alert thresholds: calibration model %d/%d on %d videos, %d normal held out",
                f + 1,
                k,
                len(fit),
                len(held),
            )
            cal = Path(td) / f"calibration{f}.pt"
            train_fn(dataclasses.replace(ds, videos=fit), inner, cal, progress=False)
            scores.append(_scores(cal, [v for v in train_v if v.name in held]))
    return _store(out_path, thresholds_from_scores(np.concatenate(scores), "heldout", len(normal)))
