"""Alert thresholds calibrated on the normal training videos, stored in the checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from fusewatch.engines.data.records import VideoFeatures
from fusewatch.engines.evaluation.scoring import score_dataset
from fusewatch.engines.training import checkpoint as ckpt


def calibrate_thresholds(model_path: str | Path, videos: Sequence[VideoFeatures]) -> dict[str, float] | None:
    """Alert thresholds from the saved model's causal clip scores on the *normal* training videos:
    ``on`` = 99th percentile, ``off`` = 95th percentile of their clip scores (a camera alerts when it
    scores above nearly every normal clip seen in training). Stored in the checkpoint metadata as
    ``alert_thresholds``; the engine uses them when ``alerts.thresholds = "model"``."""
    normal = [v for v in videos if v.video_label == 0]
    if not normal or not Path(model_path).is_file():
        return None
    model, meta = ckpt.load_model(model_path)
    scores = np.concatenate([score_dataset(model, normal)[v.name] for v in normal])
    on, off = float(np.quantile(scores, 0.99)), float(np.quantile(scores, 0.95))
    off = min(off, on - 1e-4)
    th = {"on": round(on, 6), "off": round(max(off, 0.0), 6), "normal_clips": int(scores.size)}
    stored = dict(ckpt.read_checkpoint(model_path)["meta"])
    stored["alert_thresholds"] = th
    ckpt.save_checkpoint(model, model_path, stored)
    return th
