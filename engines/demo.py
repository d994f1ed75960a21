"""``fusewatch demo``: the whole product on one machine.

1. Trains (or loads the cached) default model from the shared UCSD Ped2 data
   (``../shared/data/ped2``: features extracted with the default extractors, weak video labels).
2. Replays several recorded videos as cameras through worker → transport → engine → alerts, on
   the embedded in-process bus (default) or the local Kafka broker (``--kafka``).
3. Prints alerts as they open / update / close, and writes an HTML report (score timelines with
   alerts and ground truth marked, thumbnails of the frames at alert start).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from fusewatch.stream.config import CACHE_DIR, Config

DEFAULT_CAMERAS = ("test_02", "test_04", "test_12", "train_01")


def features_key(cfg: Config, video_dir: Path | None = None) -> str:
    """Hash of everything that changes extracted features (video folder, extractors, clips, sampling)."""
    f = cfg.features
    blob = json.dumps(
        {
            "dir": str(video_dir.resolve()) if video_dir else "",
            "f": f.extractors,
            "pool": f.pool,
            "cnn": [f.cnn_frames, f.cnn_resize]
            + ([f.cnn_spatial] if f.cnn_spatial != "avg" else [])
            + ([f.cnn_input_size] if f.cnn_input_size != 224 else []),
            "flow": [f.flow_width, f.flow_method],
            "clips": [cfg.clips.clip_len, cfg.clips.clip_stride],
            "fps": cfg.source.sample_fps,
            "max_width": cfg.source.max_width,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def ensure_features(cfg: Config, video_dir: Path, out_dir: Path | None = None, log=print) -> Path:
    """Extract features of ``video_dir`` once into the cache (reused while the config is unchanged)."""
    from fusewatch.stream.extract import extract_videos

    out = out_dir or CACHE_DIR / "features" / f"{video_dir.resolve().name}-{features_key(cfg, video_dir)}"
    if (out / "meta.json").is_file() and (out / ".complete").is_file():
        log(f"features: reusing {out}")
        return out
    log(f"features: extracting {video_dir} → {out} (first run only)")
    extract_videos([video_dir], out, cfg)
    (out / ".complete").touch()
    return out


def model_key(cfg: Config, video_dir: Path) -> str:
    """Hash of everything the default model's training depends on (features, model, training)."""
    blob = json.dumps(
        {
            "features": features_key(cfg, video_dir),
            "model": dataclasses.asdict(cfg.model),
            "train": dataclasses.asdict(cfg.train),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def ensure_model(cfg: Config, video_dir: Path, path: Path, retrain: bool = False, log=print) -> Path:
    """Train the default model on ``video_dir`` (Ped2 layout) unless ``path`` exists and was trained
    with the same features/model/training settings (``<path>.key`` holds :func:`model_key`)."""
    key, key_file = model_key(cfg, video_dir), path.with_name(path.name + ".key")
    if path.is_file() and not retrain:
        if key_file.is_file() and key_file.read_text().strip() == key:
            log(f"model: reusing {path}")
            return path
        log(f"model: {path} was trained with other settings (features, model or training): retraining")
    from fusewatch.extras import require

    require(
        "torch",
        "fusewatch demo: training its default model",
        " (or pass --model M.onnx, exported with `fusewatch export-models`)",
    )
    from fusewatch.engines.training.loop import train

    feats = ensure_features(cfg, video_dir, log=log)
    log(f"model: training {cfg.model.fusion} on {feats} (representations {','.join(cfg.model.representations)})")
    path.parent.mkdir(parents=True, exist_ok=True)
    s = train(feats, cfg, path, fusion=cfg.model.fusion, representations=cfg.model.representations)
    key_file.write_text(key + "\n")
    log(f"model: saved {path} ({s.describe()})")
    return path


def streamed_eval(res, labels: dict, cfg: Config, out_json=None, plots_dir=None, print_table=False):
    """Frame-level AUC of streamed clip scores against ``labels.json`` entries (None if undefined)."""
    import numpy as np

    from fusewatch.engines.evaluation.evaluate import ScoredVideo, evaluate_scores

    vids = []
    for cam, clips in res.clips.items():
        if cam not in labels:
            continue
        gt = np.frombuffer(labels[cam]["labels"].encode(), np.uint8) - ord("0")
        vids.append(
            ScoredVideo(
                name=cam,
                scores=np.array([c.score for c in clips], np.float32),
                clip_ranges=[(c.frame_start, c.frame_end) for c in clips],
                frame_gt=gt,
            )
        )
    if not vids:
        return None
    rep = evaluate_scores(vids, out_json=out_json, plots_dir=plots_dir, print_table=print_table)
    return rep if out_json or plots_dir or print_table else rep.get("auc")
