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
5. **Offline scores** (:func:`fusewatch.engines.training.train.score_video`, the causal protocol) and **streamed
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
import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from fusewatch.errors import DataNotFoundError, DatasetError
from fusewatch.stream.config import CACHE_DIR, Config

AGREEMENT_TOL = 1e-4
DEFAULT_FUSIONS = ("lego", "concat", "add")
DEFAULT_EXPANSIONS = ("matrix", "hadamard")
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


def apply_bench_defaults(cfg: Config | None, defaults: Mapping[str, Any] | None = None
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
    from fusewatch.engines.data.datasets import read_labels_json
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


def weak_videos(videos) -> list:
    """Copies without frame ground truth (video labels only)."""
    return [dataclasses.replace(v, frame_gt=None) for v in videos]


def _dataset(videos, like):
    from fusewatch.engines.data.datasets import FeatureDataset
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


# --------------------------------------------------------------------------------------------------
# training, selection, scoring
# --------------------------------------------------------------------------------------------------

def _model_cfg(cfg: Config, fusion: str, expansion: str | None = None, pq: tuple[int, int] | None = None
               ) -> Config:
    c = copy.deepcopy(cfg)
    c.model.fusion = fusion
    if expansion:
        c.model.expansion = expansion
    if pq:
        c.model.order_p, c.model.order_q = int(pq[0]), int(pq[1])
    c.train.val_fraction = 0.0   # all given videos train; the last epoch is kept
    return c


def train_one(ds, videos, cfg: Config, out: Path, progress: bool = False) -> dict:
    """Train on ``videos`` (weak copies) with ``cfg`` → summary of :func:`fusewatch.engines.training.train.train`."""
    from fusewatch.engines.training.train import train
    return train(_dataset(weak_videos(videos), ds), cfg, out, fusion=cfg.model.fusion,
                 representations=list(cfg.model.representations), progress=progress)


def offline_scores(model_path: str | Path, videos) -> dict[str, np.ndarray]:
    """Causal per-clip scores (:func:`fusewatch.engines.training.train.score_video`) of ``videos``."""
    from fusewatch.engines.training.checkpoint import load_model
    from fusewatch.engines.training.train import score_video
    model, _ = load_model(model_path)
    return {v.name: score_video(model, v.feats) for v in videos}


def _bag_bce(scores: np.ndarray, label: int, k: int) -> float:
    s = np.sort(np.asarray(scores, np.float64))[::-1]
    bag = float(np.clip(s[:max(1, min(k, s.size))].mean(), 1e-6, 1 - 1e-6))
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
    bce = float(np.mean([_bag_bce(oof[n], by[n].video_label, cfg.train.topk) for n in names]))
    return {"video_auc": M.nan_to_none(vauc), "bag_bce": bce, "videos": len(names)}


def _rank_key(m: Mapping[str, Any]) -> tuple[float, float]:
    auc = m.get("video_auc")
    return (-(auc if auc is not None else -1.0), m.get("bag_bce", math.inf))


# --------------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------------

def scored_videos(scores: Mapping[str, np.ndarray], ranges: Mapping[str, Sequence[tuple[int, int]]],
                  gt: Mapping[str, np.ndarray]) -> list:
    from fusewatch.engines.evaluation.evaluate import ScoredVideo
    return [ScoredVideo(n, np.asarray(scores[n]), [tuple(r) for r in ranges[n]], gt[n])
            for n in scores if n in gt and len(scores[n])]


def frame_aucs(videos: list) -> dict[str, float | None]:
    """Pooled frame-level AUC over ``all`` labelled videos and over the ``anomalous`` ones."""
    from fusewatch.engines.evaluation.evaluate import evaluate_scores
    out: dict[str, float | None] = {"all": None, "anomalous": None}
    if videos:
        out["all"] = evaluate_scores(videos, print_table=False)["auc"]
        anom = [v for v in videos if v.frame_gt is not None and v.frame_gt.any()]
        if anom and any(not v.frame_gt.all() for v in anom):
            out["anomalous"] = evaluate_scores(anom, print_table=False)["auc"]
    return out


# --------------------------------------------------------------------------------------------------
# streaming: one replay, one engine per model
# --------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class StreamedClip:
    clip: int
    score: float
    frame_start: int
    frame_end: int


def stream_models(videos: Sequence[str | Path], cfg: Config, models: Mapping[str, Any], *,
                  camera_ids: Sequence[str] | None = None, fresh_topics: bool = True,
                  drain_timeout: float = 120.0, on_alert: Callable | None = None) -> dict[str, Any]:
    """Replay ``videos`` once through worker → transport → one :class:`EngineService` per serving
    model (``{name: ServingModel}``; :func:`fusewatch.engines.serving.pipeline.stream_videos_multi`), fresh Kafka
    topics deleted afterwards. Returns ``{"clips": {model: {camera: [StreamedClip]}}, "alerts":
    {model: [AlertMessage]}, "replay": replay stats, "engines": {model: stats}, "wall_s", "topics"}``.
    """
    from fusewatch.engines.serving.pipeline import stream_videos_multi

    res = stream_videos_multi(videos, cfg, models, camera_ids=camera_ids, on_alert=on_alert,
                              fresh_topics=fresh_topics, delete_fresh_topics=fresh_topics,
                              drain_timeout=drain_timeout)
    any_res = next(iter(res.values()))
    return {"clips": {m: {cam: [StreamedClip(c.clip, c.score, c.frame_start, c.frame_end) for c in cl]
                          for cam, cl in r.clips.items()} for m, r in res.items()},
            "alerts": {m: list(r.alerts) for m, r in res.items()},
            "replay": any_res.replay, "wall_s": any_res.wall_s,
            "engines": {m: r.engine for m, r in res.items()},
            "topics": [any_res.topics["features"], any_res.topics["alerts"], any_res.topics["dead_letter"]]}


def compare_scores(streamed: Mapping[str, Sequence], offline: Mapping[str, np.ndarray],
                   ranges: Mapping[str, Sequence[tuple[int, int]]] | None = None) -> dict[str, Any]:
    """Clip-by-clip agreement of streamed records (``{camera: [clip records]}``, each with ``clip``,
    ``score``, ``frame_start``, ``frame_end``) and offline scores ``{camera: (T,)}``.

    Returns ``{"max_abs_diff", "clips", "count_mismatch": [camera...], "range_mismatch": [camera...],
    "missing": [camera...]}``."""
    worst, n = 0.0, 0
    count_bad, range_bad, missing = [], [], []
    for cam, off in offline.items():
        recs = sorted(streamed.get(cam, []), key=lambda c: c.clip)
        if not recs:
            missing.append(cam)
            continue
        if len(recs) != len(off) or [c.clip for c in recs] != list(range(len(off))):
            count_bad.append(cam)
            continue
        s = np.array([c.score for c in recs], np.float64)
        worst = max(worst, float(np.max(np.abs(s - np.asarray(off, np.float64)))) if len(off) else 0.0)
        n += len(off)
        if ranges is not None and [(c.frame_start, c.frame_end) for c in recs] != \
                [tuple(map(int, r)) for r in ranges[cam]]:
            range_bad.append(cam)
    return {"max_abs_diff": worst, "clips": n, "count_mismatch": count_bad, "range_mismatch": range_bad,
            "missing": missing}


# --------------------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------------------

def _label(fusion: str, expansion: str | None) -> str:
    return f"lego-{expansion}" if fusion == "lego" else fusion


def run_ped2(video_dir: str | Path, out_model: str | Path, cfg: Config | None = None,
             work_dir: str | Path | None = None, fusions: Sequence[str] = DEFAULT_FUSIONS,
             expansions: Sequence[str] = DEFAULT_EXPANSIONS,
             pq_grid: Sequence[tuple[int, int]] = DEFAULT_PQ_GRID, stream: bool = True,
             transport: str = "bus", progress: bool = True, folds: int = DEFAULT_FOLDS,
             stream_set: str = "all", log: Callable[[str], None] | None = None) -> dict[str, Any]:
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
        if f not in ("lego", "concat", "add", "mtn"):
            raise DatasetError(f"unknown fusion {f!r}")
    for e in expansions:
        if e not in ("matrix", "hadamard"):
            raise DatasetError(f"unknown expansion {e!r}")
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
    from fusewatch.engines.data.datasets import load_dataset
    reps = list(cfg.model.representations)
    ds = load_dataset(feat_dir, reps)
    unlabelled = [v.name for v in ds.videos if v.video_label not in (0, 1)]
    if unlabelled:
        raise DatasetError(f"{len(unlabelled)} video(s) without labels in {video_dir}/labels.json "
                         f"(e.g. {unlabelled[0]})")
    if {v.video_label for v in ds.videos} != {0, 1}:
        raise DatasetError(f"{video_dir}: needs both normal and abnormal videos (weak supervision)")
    say(f"data: {len(ds.videos)} videos ({sum(v.video_label for v in ds.videos)} abnormal), "
        f"{sum(v.num_clips for v in ds.videos)} clips, representations {','.join(reps)}")

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
        m = cross_validate(ds, _model_cfg(cfg, f, e, pq), fold_names, tmp)
        rec = {"fusion": f, "expansion": e, "pq": list(pq) if pq else None, **m}
        candidates.append(rec)
        say(f"  cv {i:2d}/{len(plan)} {_label(f, e):14s} {'' if pq is None else f'P={pq[0]} Q={pq[1]}':8s} "
            f"video AUC {m['video_auc'] if m['video_auc'] is None else round(m['video_auc'], 4)} "
            f"bag BCE {m['bag_bce']:.4f}")
    tmp.unlink(missing_ok=True)
    timings["selection_s"] = round(time.monotonic() - t0, 2)
    chosen: dict[str, dict[str, Any]] = {}
    for f in fusions:
        if f == "lego":
            for e in expansions:
                best = sorted((c for c in candidates if c["fusion"] == "lego" and c["expansion"] == e),
                              key=_rank_key)[0]
                chosen[_label(f, e)] = best
        else:
            chosen[f] = next(c for c in candidates if c["fusion"] == f)
    lego_keys = [k for k in chosen if k.startswith("lego-")]
    primary = sorted(lego_keys, key=lambda k: _rank_key(chosen[k]))[0] if lego_keys else next(iter(chosen))

    # 3. final models on all videos
    t0 = time.monotonic()
    model_paths: dict[str, Path] = {}
    summaries: dict[str, dict] = {}
    (work / "models").mkdir(exist_ok=True)
    for key, c in chosen.items():
        path = out_model if key == primary else work / "models" / f"{key}.pt"
        mcfg = _model_cfg(cfg, c["fusion"], c["expansion"], tuple(c["pq"]) if c["pq"] else None)
        s = train_one(ds, ds.videos, mcfg, path, progress=False)
        model_paths[key] = path
        summaries[key] = {"seconds": s["seconds"], "epochs": s["epochs"], "final_loss": s["history"][-1]["loss"]}
        say(f"  trained {key} → {path} ({s['seconds']:.1f} s, final loss {s['history'][-1]['loss']:.4f})")
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
        stream_info = {"videos": len(names), "transport": cfg.transport, "wall_s": round(res["wall_s"], 2),
                       "clips_published": res["replay"].get("clips_published"),
                       "topics": res["topics"] if cfg.transport == "kafka" else [],
                       "backend": {k: s.scorer.backend for k, s in serving.items()}}
        for k, per_cam in res["clips"].items():
            off = {n: offline[k][n] for n in names}
            agreement[k] = compare_scores(per_cam, off, {n: ranges[n] for n in names})
            agreement[k]["ok"] = (agreement[k]["max_abs_diff"] <= AGREEMENT_TOL and not agreement[k]["count_mismatch"]
                                  and not agreement[k]["range_mismatch"] and not agreement[k]["missing"])
            st = {n: np.array([c.score for c in per_cam.get(n, [])], np.float32) for n in names}
            rg = {n: [(c.frame_start, c.frame_end) for c in per_cam.get(n, [])] for n in names}
            results[k]["streamed"] = frame_aucs(scored_videos(st, rg, gt))
            if stream_set != "all":   # offline AUC over the same streamed subset, for comparison
                results[k]["offline_streamed_set"] = frame_aucs(
                    scored_videos({n: offline[k][n] for n in names}, ranges, gt))
        timings["streaming_s"] = round(time.monotonic() - t0, 2)
    timings["total_s"] = round(time.monotonic() - t_all, 2)

    report = {
        "videos_dir": str(video_dir), "features": str(feat_dir), "out_model": str(out_model),
        "primary": primary, "models": {k: str(p) for k, p in model_paths.items()},
        "config": {"representations": reps, "window": cfg.model.window, "epochs": cfg.train.epochs,
                   "lr": cfg.train.lr, "weight_decay": cfg.train.weight_decay, "topk": cfg.train.topk,
                   "reg": cfg.train.reg, "reg_lambda": cfg.train.reg_lambda, "seed": cfg.train.seed,
                   "batch_size": cfg.train.batch_size, "proj_dim": cfg.model.proj_dim,
                   "node_dim": cfg.model.node_dim,
                   "clip_len": cfg.clips.clip_len, "clip_stride": cfg.clips.clip_stride,
                   "sample_fps": cfg.source.sample_fps, "extractors": list(cfg.features.extractors),
                   "bench_defaults_applied": applied},
        "data": {"videos": len(ds.videos), "abnormal_videos": int(sum(v.video_label for v in ds.videos)),
                 "clips": int(sum(v.num_clips for v in ds.videos)),
                 "frames": int(sum(len(gt[v.name]) for v in ds.videos if v.name in gt))},
        "selection": {"method": f"{len(fold_names)}-fold CV stratified by video label; rank by out-of-fold "
                                "video-level AUC (max clip score), ties by top-k bag BCE; weak labels only",
                      "folds": fold_names, "pq_grid": [list(x) for x in pq_grid], "candidates": candidates,
                      "chosen": {k: {"pq": c["pq"], "video_auc": c["video_auc"], "bag_bce": c["bag_bce"]}
                                 for k, c in chosen.items()}},
        "training": summaries, "results": results, "agreement": agreement,
        "agreement_ok": all(a["ok"] for a in agreement.values()) if agreement else None,
        "agreement_tol": AGREEMENT_TOL, "stream": stream_info, "timings": timings,
    }
    return report


# --------------------------------------------------------------------------------------------------
# presentation
# --------------------------------------------------------------------------------------------------

def _f(x: float | None) -> str:
    return "—" if x is None else f"{x:.4f}"


def format_table(report: Mapping[str, Any]) -> str:
    """Plain-text (Markdown) table of the report's AUCs."""
    rows = ["| model | P,Q | CV video AUC | offline AUC (all) | streamed AUC (all) | offline AUC (anomalous videos) "
            "| streamed AUC (anomalous videos) | max \\|stream−offline\\| |",
            "|---|---|---|---|---|---|---|---|"]
    for k, r in report["results"].items():
        ch = report["selection"]["chosen"].get(k, {})
        pq = ",".join(map(str, ch["pq"])) if ch.get("pq") else "—"
        st = r.get("streamed", {})
        ag = report["agreement"].get(k)
        star = " *" if k == report["primary"] else ""
        rows.append(f"| {k}{star} | {pq} | {_f(ch.get('video_auc'))} | {_f(r['offline']['all'])} | "
                    f"{_f(st.get('all'))} | {_f(r['offline']['anomalous'])} | {_f(st.get('anomalous'))} | "
                    f"{'—' if ag is None else format(ag['max_abs_diff'], '.2e')} |")
    return "\n".join(rows)


def print_report(report: Mapping[str, Any], console=None) -> None:
    from rich.console import Console
    from rich.table import Table
    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=max(console.width, 120))
    t = Table(title="UCSD Ped2 — frame-level ROC-AUC (causal clip scores)")
    for c in ("model", "P,Q", "CV video AUC", "offline all", "streamed all", "offline anom.", "streamed anom.",
              "max |Δ|"):
        t.add_column(c, justify="right" if c != "model" else "left", no_wrap=True,
                     min_width=15 if c == "model" else None)
    for k, r in report["results"].items():
        ch = report["selection"]["chosen"].get(k, {})
        st = r.get("streamed", {})
        ag = report["agreement"].get(k)
        t.add_row(k + (" *" if k == report["primary"] else ""),
                  ",".join(map(str, ch["pq"])) if ch.get("pq") else "—", _f(ch.get("video_auc")),
                  _f(r["offline"]["all"]), _f(st.get("all")), _f(r["offline"]["anomalous"]),
                  _f(st.get("anomalous")), "—" if ag is None else f"{ag['max_abs_diff']:.1e}")
    console.print(t)
    tm = report["timings"]
    console.print("* = written to " + report["out_model"] + "  |  anom. = videos containing anomalies "
                  "(Ped2: test_*)  |  " + ", ".join(f"{k} {v:.1f}" for k, v in tm.items()))
    if report.get("agreement_ok") is not None:
        ok = report["agreement_ok"]
        console.print(f"streamed vs offline: {'[green]agree' if ok else '[red]DISAGREE'}[/] "
                      f"(tolerance {report['agreement_tol']:g}, {report['stream'].get('videos')} videos, "
                      f"{report['stream'].get('transport')})")


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------
