"""``fusewatch bench ped2`` / ``bench/ped2.py``: the UCSD Ped2 benchmark, end to end.

1. **Features** of every video of ``VIDEO_DIR`` (a folder laid out like ``../shared/data/ped2``:
   video files + ``labels.json``) with the configured (default) extractors, through the worker's
   own pipeline (:func:`fusewatch.stream.extract.extract_videos`); cached and reused while the feature
   settings are unchanged.
2. **Weak labels only** for everything that is learnt or selected: a video is abnormal iff any of
   its frames is. The training/selection copies of the videos carry no frame ground truth at all
   (``frame_gt=None``), so nothing in training or model selection can read frame labels.
3. **Model selection on held-out videos** (``P``, ``Q`` of LEGO, and which expansion is written to
   ``--out-model``): ``k``-fold cross-validation, stratified by video label. For every candidate the
   out-of-fold causal clip scores of each held-out video give (a) the video-level AUC of the max
   clip score and (b) the MIL bag loss (BCE of the top-k mean vs the video label); candidates are
   ranked by (a), ties broken by (b). Frame labels are never looked at.
4. **Final models** (LEGO per expansion with its selected ``P, Q``; the ``concat``/``add`` baselines)
   are trained on ALL videos (train_* and test_*) with the fixed seed, keeping the last epoch
   (``train.val_fraction = 0``: no frame-label early stopping).
5. **Offline scores** (:func:`fusewatch.engines.evaluation.scoring.score_video`, the causal protocol) and **streamed
   scores**: the videos are replayed once through worker → transport (in-process bus or Kafka) →
   one :class:`~fusewatch.engines.serving.service.EngineService` per model (each in its own consumer group, like
   several engine deployments reading one features topic). The two must agree clip by clip
   (same clips, same frame ranges, ``max |diff| <= 1e-4``).
6. **Frame-level ROC-AUC** (:func:`fusewatch.engines.evaluation.evaluate.evaluate_scores`) of streamed and offline scores,
   pooled over all labelled videos (``all``) and over the videos that contain anomalies
   (``anomalous``; for Ped2 these are the test_* videos, the usual Ped2 protocol).

Bench defaults (:data:`BENCH_DEFAULTS`) are applied to fields the caller's config leaves at the
:class:`fusewatch.stream.config.Config` defaults, so ``--set section.field=value`` still wins.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from fusewatch.engines.bench.ped2_selection import (
    cross_validate,
    model_cfg,
    offline_scores,
    rank_key,
    stratified_folds,
    train_one,
)
from fusewatch.engines.bench.ped2_stream import compare_scores, frame_aucs, scored_videos, stream_models
from fusewatch.engines.fusion.names import EXPANSIONS, FUSIONS
from fusewatch.errors import ConfigError, DataNotFoundError, DatasetError
from fusewatch.stream.config import CACHE_DIR, Config

AGREEMENT_TOL = 1e-4
DEFAULT_FUSIONS = ("lego", "concat", "add")
DEFAULT_EXPANSIONS = EXPANSIONS
DEFAULT_PQ_GRID: tuple[tuple[int, int], ...] = ((1, 1), (1, 2), (2, 1), (2, 2), (3, 3))
DEFAULT_FOLDS = 3

BENCH_DEFAULTS: dict[str, Any] = {
    # chosen by the exploration logged in bench/results/ped2.md
    "model.representations": ["mobilenetv2", "flow"],
    "model.window": 32,
    "train.epochs": 100,
    "train.lr": 1e-3,
    "train.topk": 3,
    "train.reg": True,
    "train.seed": 0,
}
"""Applied where the config still holds the :class:`Config` default (``--set`` overrides win)."""


# --------------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------------


def _get(cfg: Config, dotted: str) -> Any:
    sec, name = dotted.split(".")
    return getattr(getattr(cfg, sec), name)


def _set(cfg: Config, dotted: str, value: Any) -> None:
    sec, name = dotted.split(".")
    setattr(getattr(cfg, sec), name, copy.deepcopy(value))


def apply_bench_defaults(
    cfg: Config | None, defaults: Mapping[str, Any] | None = None
) -> tuple[Config, dict[str, Any]]:
    """Copy of ``cfg`` with :data:`BENCH_DEFAULTS` applied where ``cfg`` holds the stock default.
    Returns ``(cfg, applied)``."""
    cfg = copy.deepcopy(cfg) if cfg is not None else Config()
    stock = Config()
    applied = {}
    for k, v in (BENCH_DEFAULTS if defaults is None else defaults).items():
        if _get(cfg, k) == _get(stock, k) and _get(cfg, k) != v:
            _set(cfg, k, v)
            applied[k] = v
    cfg.validate()
    return cfg, applied


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------


def list_videos(video_dir: str | Path) -> list[Path]:
    from fusewatch.stream.extract import find_videos

    vids, _ = find_videos([video_dir])
    return vids


def read_labels(video_dir: str | Path) -> dict[str, np.ndarray]:
    """``labels.json`` of ``video_dir`` → ``{stem: frame 0/1 uint8}`` (videos with frame labels)."""
    from fusewatch.engines.data.ground_truth import read_labels_json

    p = Path(video_dir) / "labels.json"
    if not p.is_file():
        raise DataNotFoundError(f"{p}: not found (the bench needs a labels.json beside the videos)")
    return {k: v["frame_gt"] for k, v in read_labels_json(p).items() if v.get("frame_gt") is not None}


def ensure_bench_features(cfg: Config, video_dir: Path, work_dir: Path | None, log=print) -> Path:
    """Feature folder of ``video_dir`` for ``cfg``'s extractor/clip settings, extracted once.

    ``work_dir`` given: ``work_dir/features-<key>``; else the shared cache of ``fusewatch demo``
    (:func:`fusewatch.engines.demo.ensure_features`, keyed by the resolved folder path and the config)."""
    from fusewatch.engines.demo import ensure_features, features_key

    out = Path(work_dir) / f"features-{features_key(cfg, video_dir)}" if work_dir is not None else None
    return ensure_features(cfg, video_dir, out_dir=out, log=log)


# --------------------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------------------


def _label(fusion: str, expansion: str | None) -> str:
    return f"lego-{expansion}" if fusion == "lego" else fusion


def run_ped2(
    video_dir: str | Path,
    out_model: str | Path,
    cfg: Config | None = None,
    work_dir: str | Path | None = None,
    fusions: Sequence[str] = DEFAULT_FUSIONS,
    expansions: Sequence[str] = DEFAULT_EXPANSIONS,
    pq_grid: Sequence[tuple[int, int]] = DEFAULT_PQ_GRID,
    stream: bool = True,
    transport: str = "bus",
    progress: bool = True,
    folds: int = DEFAULT_FOLDS,
    stream_set: str = "all",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark (module doc) and return the report dict.

    ``out_model``: where the selected LEGO model (best expansion by the weak-label cross-validation)
    is written (the first fusion's model when ``lego`` is not benchmarked). ``work_dir``: features,
    the other models and scratch files (default ``$FUSEWATCH_CACHE/bench/ped2-<dir>``).
    ``stream``: also score through the streaming path and check agreement; ``transport``: ``bus`` or
    ``kafka`` (fresh topics). ``stream_set``: ``all`` videos or only the ``anomalous`` ones.
    """
    t_all = time.monotonic()
    say = log or (print if progress else (lambda m: None))
    video_dir = Path(video_dir)
    if not video_dir.is_dir():
        raise DataNotFoundError(f"--videos {video_dir}: not a directory")
    out_model = Path(out_model)
    cfg, applied = apply_bench_defaults(cfg)
    cfg.transport = transport
    cfg.validate()
    for f in fusions:
        if f not in FUSIONS:
            raise ConfigError(f"unknown fusion {f!r}")
    for e in expansions:
        if e not in EXPANSIONS:
            raise ConfigError(f"unknown expansion {e!r}")
    if "lego" in fusions and not pq_grid:
        raise DatasetError("pq_grid: at least one (P, Q) is required")
    work = Path(work_dir) if work_dir else CACHE_DIR / "bench" / f"ped2-{video_dir.resolve().name}"
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    gt = read_labels(video_dir)
    videos = list_videos(video_dir)

    # 1. features
    t0 = time.monotonic()
    feat_dir = ensure_bench_features(cfg, video_dir, work_dir and work, log=say)
    timings["features_s"] = round(time.monotonic() - t0, 2)
    from fusewatch.engines.data import load_dataset

    reps = list(cfg.model.representations)
    ds = load_dataset(feat_dir, reps)
    unlabelled = [v.name for v in ds.videos if v.video_label not in (0, 1)]
    if unlabelled:
        raise DatasetError(
            f"{len(unlabelled)} video(s) without labels in {video_dir}/labels.json (e.g. {unlabelled[0]})"
        )
    if {v.video_label for v in ds.videos} != {0, 1}:
        raise DatasetError(f"{video_dir}: needs both normal and abnormal videos (weak supervision)")
    say(
        f"data: {len(ds.videos)} videos ({sum(v.video_label for v in ds.videos)} abnormal), "
        f"{sum(v.num_clips for v in ds.videos)} clips, representations {','.join(reps)}"
    )

    # 2. selection of P, Q (LEGO) on held-out videos, weak labels only
    t0 = time.monotonic()
    fold_names = stratified_folds(ds.videos, folds, int(cfg.train.seed))
    tmp = work / "cv-tmp.pt"
    candidates: list[dict[str, Any]] = []
    plan = []
    if "lego" in fusions:
        plan += [("lego", e, tuple(pq)) for e in expansions for pq in pq_grid]
    plan += [(f, None, None) for f in fusions if f != "lego"]
    for i, (f, e, pq) in enumerate(plan, 1):
        m = cross_validate(ds, model_cfg(cfg, f, e, pq), fold_names, tmp)
        rec = {"fusion": f, "expansion": e, "pq": list(pq) if pq else None, **m}
        candidates.append(rec)
        say(
            f"  cv {i:2d}/{len(plan)} {_label(f, e):14s} {'' if pq is None else f'P={pq[0]} Q={pq[1]}':8s} "
            f"video AUC {m['video_auc'] if m['video_auc'] is None else round(m['video_auc'], 4)} "
            f"bag BCE {m['bag_bce']:.4f}"
        )
    tmp.unlink(missing_ok=True)
    timings["selection_s"] = round(time.monotonic() - t0, 2)
    chosen: dict[str, dict[str, Any]] = {}
    for f in fusions:
        if f == "lego":
            for e in expansions:
                best = sorted((c for c in candidates if c["fusion"] == "lego" and c["expansion"] == e), key=rank_key)[0]
                chosen[_label(f, e)] = best
        else:
            chosen[f] = next(c for c in candidates if c["fusion"] == f)
    lego_keys = [k for k in chosen if k.startswith("lego-")]
    primary = sorted(lego_keys, key=lambda k: rank_key(chosen[k]))[0] if lego_keys else next(iter(chosen))

    # 3. final models on all videos
    t0 = time.monotonic()
    model_paths: dict[str, Path] = {}
    summaries: dict[str, dict[str, Any]] = {}
    (work / "models").mkdir(exist_ok=True)
    for key, c in chosen.items():
        path = out_model if key == primary else work / "models" / f"{key}.pt"
        mcfg = model_cfg(cfg, c["fusion"], c["expansion"], tuple(c["pq"]) if c["pq"] else None)
        s = train_one(ds, ds.videos, mcfg, path, progress=False)
        model_paths[key] = path
        summaries[key] = {"seconds": s.seconds, "epochs": s.epochs, "final_loss": s.history[-1].loss}
        say(f"  trained {key} → {path} ({s.seconds:.1f} s, final loss {s.history[-1].loss:.4f})")
    timings["training_s"] = round(time.monotonic() - t0, 2)

    # 4. offline scoring
    t0 = time.monotonic()
    ranges = {v.name: v.clip_ranges() for v in ds.videos}
    offline = {k: offline_scores(p, ds.videos) for k, p in model_paths.items()}
    results: dict[str, dict[str, Any]] = {}
    for k, sc in offline.items():
        results[k] = {"offline": frame_aucs(scored_videos(sc, ranges, gt))}
    timings["offline_scoring_s"] = round(time.monotonic() - t0, 2)

    # 5. streaming
    agreement: dict[str, Any] = {}
    stream_info: dict[str, Any] = {}
    if stream:
        from fusewatch.engines.serving.runtime import load_serving_model

        t0 = time.monotonic()
        by_stem = {p.stem: p for p in videos}
        names = [v.name for v in ds.videos if v.name in by_stem]
        if stream_set == "anomalous":
            names = [n for n in names if n in gt and gt[n].any()]
        elif stream_set != "all":
            raise DatasetError(f"stream_set must be all|anomalous (got {stream_set!r})")
        serving = {k: load_serving_model(cfg, p) for k, p in model_paths.items()}
        say(f"streaming {len(names)} videos through worker → {cfg.transport} → {len(serving)} engines ...")
        res = stream_models([by_stem[n] for n in names], cfg, serving, camera_ids=names)
        stream_info = {
            "videos": len(names),
            "transport": cfg.transport,
            "wall_s": round(res["wall_s"], 2),
            "clips_published": res["replay"].clips_published,
            "topics": res["topics"] if cfg.transport == "kafka" else [],
            "backend": {k: s.scorer.backend for k, s in serving.items()},
        }
        for k, per_cam in res["clips"].items():
            off = {n: offline[k][n] for n in names}
            agreement[k] = compare_scores(per_cam, off, {n: ranges[n] for n in names})
            agreement[k]["ok"] = (
                agreement[k]["max_abs_diff"] <= AGREEMENT_TOL
                and not agreement[k]["count_mismatch"]
                and not agreement[k]["range_mismatch"]
                and not agreement[k]["missing"]
            )
            st = {n: np.array([c.score for c in per_cam.get(n, [])], np.float32) for n in names}
            rg = {n: [(c.frame_start, c.frame_end) for c in per_cam.get(n, [])] for n in names}
            results[k]["streamed"] = frame_aucs(scored_videos(st, rg, gt))
            if stream_set != "all":  # offline AUC over the same streamed subset, for comparison
                results[k]["offline_streamed_set"] = frame_aucs(
                    scored_videos({n: offline[k][n] for n in names}, ranges, gt)
                )
        timings["streaming_s"] = round(time.monotonic() - t0, 2)
    timings["total_s"] = round(time.monotonic() - t_all, 2)

    report = {
        "videos_dir": str(video_dir),
        "features": str(feat_dir),
        "out_model": str(out_model),
        "primary": primary,
        "models": {k: str(p) for k, p in model_paths.items()},
        "config": {
            "representations": reps,
            "window": cfg.model.window,
            "epochs": cfg.train.epochs,
            "lr": cfg.train.lr,
            "weight_decay": cfg.train.weight_decay,
            "topk": cfg.train.topk,
            "reg": cfg.train.reg,
            "reg_lambda": cfg.train.reg_lambda,
            "seed": cfg.train.seed,
            "batch_size": cfg.train.batch_size,
            "proj_dim": cfg.model.proj_dim,
            "node_dim": cfg.model.node_dim,
            "clip_len": cfg.clips.clip_len,
            "clip_stride": cfg.clips.clip_stride,
            "sample_fps": cfg.source.sample_fps,
            "extractors": list(cfg.features.extractors),
            "bench_defaults_applied": applied,
        },
        "data": {
            "videos": len(ds.videos),
            "abnormal_videos": int(sum(v.video_label for v in ds.videos)),
            "clips": int(sum(v.num_clips for v in ds.videos)),
            "frames": int(sum(len(gt[v.name]) for v in ds.videos if v.name in gt)),
        },
        "selection": {
            "method": f"{len(fold_names)}-fold CV stratified by video label; rank by out-of-fold "
            "video-level AUC (max clip score), ties by top-k bag BCE; weak labels only",
            "folds": fold_names,
            "pq_grid": [list(x) for x in pq_grid],
            "candidates": candidates,
            "chosen": {
                k: {"pq": c["pq"], "video_auc": c["video_auc"], "bag_bce": c["bag_bce"]} for k, c in chosen.items()
            },
        },
        "training": summaries,
        "results": results,
        "agreement": agreement,
        "agreement_ok": all(a["ok"] for a in agreement.values()) if agreement else None,
        "agreement_tol": AGREEMENT_TOL,
        "stream": stream_info,
        "timings": timings,
    }
    return report


__all__ = [
    "AGREEMENT_TOL",
    "BENCH_DEFAULTS",
    "DEFAULT_EXPANSIONS",
    "DEFAULT_FOLDS",
    "DEFAULT_FUSIONS",
    "DEFAULT_PQ_GRID",
    "apply_bench_defaults",
    "ensure_bench_features",
    "list_videos",
    "read_labels",
    "run_ped2",
]
