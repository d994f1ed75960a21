"""``fusewatch bench ped2`` headline: the inductive protocol (:mod:`fusewatch.engines.evaluation.inductive`).

Leave-one-anomalous-video-out folds, weak labels, no selection inside a fold with the default
``train.val_fraction = 0`` (last epoch kept; a configured share > 0 selects the epoch on that share of
each fold's *training* videos, video-level AUC, for every row alike; feature normalisation fitted by ``train`` on the fold's training clips and
stored in the model, as ``fusewatch train`` does), held-out clips scored by the causal offline scorer,
per-frame score = mean of the covering clips. Rows:

* ``default``: the configured recipe (``model.fusion``, normally LEGO, on ``model.representations``
  with ``train.normalize``) — what ``fusewatch extract`` + ``fusewatch train`` ship;
* ``concat`` (and ``add``, ``mtn``: every other fusion in ``fusions``, by default all of
  :data:`~fusewatch.engines.fusion.names.FUSIONS`): the same features, schedule and selection
  budget with that ``model.fusion``;
* ``single:<rep>``: the default fusion on each representation alone; ``best_single`` is the one with
  the highest pooled mean — picked ON these held-out figures, so it is an optimistic reference
  (selection favours the baseline, not the default);
* ``motion_baseline``: the training-free local-motion score
  (:mod:`fusewatch.engines.evaluation.motion_baseline`), same frames and folds.

Each learned row: ``len(seeds)`` training seeds, mean ± sd over seeds of the frame ROC-AUC pooled
over all held-out frames (``all``) and over the anomalous videos (``anomalous``), per fold, and the
within-video AUC of each anomalous video. ``jobs > 1`` runs (row, seed, fold) trainings in worker
processes (same results: every training is seeded).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from fusewatch.engines.evaluation import inductive as I
from fusewatch.stream.config import Config

DEFAULT_SEEDS = (0, 1, 2)
TARGET_AUC = 0.97
_FIXED = ("representations", "fusion", "seed", "normalize")


def recipes(
    cfg: Config, singles: bool = True, epochs: int | None = None, fusions: Sequence[str] | None = None
) -> list[I.Recipe]:
    """The rows (module doc) for ``cfg``; ``epochs`` overrides ``train.epochs``; ``fusions``: the
    fusions compared with the default (None: every fusion; the default's own is skipped)."""
    from fusewatch.engines.fusion.names import FUSIONS

    over: dict[str, Any] = {}
    for sec in ("model", "train"):
        for k, v in dataclasses.asdict(getattr(cfg, sec)).items():
            if k not in _FIXED:
                over[f"{sec}.{k}"] = v
    if epochs:
        over["train.epochs"] = int(epochs)
    reps = list(cfg.model.representations)
    fu, norm = cfg.model.fusion, cfg.train.normalize
    out = [I.Recipe("default", reps, fu, normalize=norm, set=dict(over))]
    for other in FUSIONS if fusions is None else fusions:
        if other not in FUSIONS:
            raise ValueError(f"fusions: unknown fusion {other!r} (known: {', '.join(FUSIONS)})")
        if other != fu:
            out.append(I.Recipe(other, reps, other, normalize=norm, set=dict(over)))
    if singles and len(reps) > 1:
        out += [I.Recipe(f"single:{r}", [r], fu, normalize=norm, set=dict(over)) for r in reps]
    return out


def _task(args):
    ds, fold, recipe, seed = args
    import torch

    torch.set_num_threads(1)
    return I.run_fold(ds, fold, recipe, seed)


def _run_all(ds, rows: Sequence[I.Recipe], seeds: Sequence[int], folds, jobs: int, log) -> dict:
    tasks = [(ri, s, fi) for ri in range(len(rows)) for s in seeds for fi in range(len(folds))]
    args = [(ds, folds[fi], rows[ri], s) for ri, s, fi in tasks]
    results: list[dict] = []
    t0 = time.monotonic()
    if jobs > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as ex:
            for i, r in enumerate(ex.map(_task, args), 1):
                results.append(r)
                if i % len(folds) == 0:
                    log(f"  inductive {i}/{len(tasks)} trainings ({time.monotonic() - t0:.0f} s)")
    else:
        for i, a in enumerate(args, 1):
            results.append(_task(a))
            if i % len(folds) == 0:
                log(f"  inductive {i}/{len(tasks)} trainings ({time.monotonic() - t0:.0f} s)")
    clip: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    for (ri, s, _), r in zip(tasks, results):
        clip.setdefault((ri, s), {}).update(r)
    return clip


def run_inductive(
    ds,
    video_dir: str | Path,
    cfg: Config,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    epochs: int | None = None,
    singles: bool = True,
    baseline: bool = True,
    jobs: int = 1,
    baseline_cache: str | Path | None = None,
    log: Callable[[str], None] | None = None,
    fusions: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run every row of :func:`recipes` over the LOAO folds of ``ds`` (its clip stride as given) →
    report dict (module doc; :func:`format_markdown` renders it)."""
    say = log or (lambda m: None)
    t_all = time.monotonic()
    folds = I.loao_folds(ds.videos)
    gts = {v.name: v.frame_gt for v in ds.videos}
    missing = [n for n, g in gts.items() if g is None]
    if missing:
        from fusewatch.errors import DatasetError

        raise DatasetError(f"inductive protocol: no frame labels for {missing[0]} (labels.json)")
    by = ds.by_name()
    rows = recipes(cfg, singles, epochs, fusions)
    say(
        f"inductive: {len(folds)} folds × {len(seeds)} seeds × {len(rows)} rows, "
        f"{rows[0].set.get('train.epochs')} epochs, jobs {jobs}"
    )
    clip = _run_all(ds, rows, seeds, folds, max(1, int(jobs)), say)
    out_rows: dict[str, Any] = {}
    for ri, rc in enumerate(rows):
        per_seed = []
        for s in seeds:
            frame = {n: I.frame_scores(by[n], sc, rc.smooth) for n, sc in clip[(ri, s)].items()}
            per_seed.append(I.fold_metrics(frame, gts, folds))
        out_rows[rc.name] = {
            "recipe": rc.as_dict(),
            "summary": I.summarize(per_seed),
            "seeds": [{"seed": int(s), "metrics": m} for s, m in zip(seeds, per_seed)],
        }
        sm = out_rows[rc.name]["summary"]
        say(f"  {rc.name:22s} all {sm['all'][0]:.4f} ± {sm['all'][1]:.4f}  anomalous {sm['anomalous'][0]:.4f}")
    t_models = time.monotonic() - t_all
    base = base_causal = None
    if baseline:
        base = I.baseline_metrics(video_dir, ds, folds, cache_dir=baseline_cache)
        say(f"  {'motion_baseline':22s} all {base['all']:.4f}  anomalous {base['anomalous']:.4f}")
        base_causal = I.baseline_metrics(video_dir, ds, folds, cache_dir=baseline_cache, causal=True)
        say(f"  {'motion_baseline_causal':22s} all {base_causal['all']:.4f}  anomalous {base_causal['anomalous']:.4f}")
    singles_ = {k: v["summary"]["all"][0] for k, v in out_rows.items() if k.startswith("single:")}
    best_single = max(singles_, key=singles_.get) if singles_ else None
    d = out_rows["default"]["summary"]["all"][0]

    def _gap(x):
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(d - x, 4)

    checks = {
        "default_all": d,
        "target": TARGET_AUC,
        "meets_target": bool(d >= TARGET_AUC),
        "minus_concat": _gap(out_rows["concat"]["summary"]["all"][0]) if "concat" in out_rows else None,
        "minus_fusions": {
            r.name: _gap(out_rows[r.name]["summary"]["all"][0]) for r in rows[1:] if not r.name.startswith("single:")
        },
        "minus_best_single": _gap(singles_[best_single]) if best_single else None,
        "minus_motion_baseline": _gap(base["all"]) if base else None,
        "minus_motion_baseline_causal": _gap(base_causal["all"]) if base_causal else None,
    }
    return {
        "protocol": "inductive: leave-one-anomalous-video-out, weak labels, "
        + (
            f"epoch selection on {rows[0].set['train.val_fraction']:g} of each fold's training videos "
            "(video-level validation AUC; held-out videos never seen), "
            if rows[0].set.get("train.val_fraction")
            else "no selection inside folds (last epoch, train.val_fraction = 0), "
        )
        + "z-score statistics per fold from training clips "
        "(train.normalize), causal clip scores, per-frame = mean of covering clips",
        "clip_stride": int(ds.info.get("clip_stride") or 0),
        "clip_len": int(ds.info.get("clip_len") or 0),
        "seeds": [int(s) for s in seeds],
        "epochs": rows[0].set.get("train.epochs"),
        "folds": folds,
        "videos": len(ds.videos),
        "frames": int(sum(len(g) for g in gts.values())),
        "rows": out_rows,
        "best_single": best_single,
        "best_single_note": "picked on these held-out figures (optimistic for the single-representation row)",
        "motion_baseline": base,
        "motion_baseline_causal": base_causal,
        "checks": checks,
        "timings": {
            "models_s": round(t_models, 1),
            "total_s": round(time.monotonic() - t_all, 1),
            "jobs": int(jobs),
            "cpus": os.cpu_count(),
        },
    }


def _ms(x: Sequence[float]) -> str:
    m, s = x
    return "—" if m is None or math.isnan(m) else f"{m:.4f} ± {s:.4f}"


def format_markdown(rep: Mapping[str, Any]) -> str:
    """Markdown tables: pooled (all / anomalous videos), per fold, within-video AUCs, checks."""
    folds = rep["folds"]
    lines = [
        f"Inductive Ped2 ({rep['videos']} videos, {rep['frames']} frames; clip {rep['clip_len']}/"
        f"{rep['clip_stride']}; {rep['epochs']} epochs; seeds {rep['seeds']}): {rep['protocol']}.",
        "",
        "| row | fusion | representations | frame AUC, all held-out frames | anomalous videos | "
        + " | ".join(f"fold {i} ({f['held'][0]})" for i, f in enumerate(folds))
        + " |",
        "|---|---|---|---|---|" + "---|" * len(folds),
    ]
    for k, r in rep["rows"].items():
        rc, sm = r["recipe"], r["summary"]
        star = " (best single†)" if k == rep.get("best_single") else ""
        lines.append(
            f"| {k}{star} | {rc['fusion']} | {'+'.join(rc['representations'])} | {_ms(sm['all'])} | "
            f"{_ms(sm['anomalous'])} | " + " | ".join(f"{m:.3f}" for m, _ in sm["folds"]) + " |"
        )
    bases = [(k, rep.get(k)) for k in ("motion_baseline", "motion_baseline_causal") if rep.get(k)]
    for name, bb in bases:
        what = (
            "(training-free, centred smoothing)" if name == "motion_baseline" else "(training-free, causal smoothing)"
        )
        lines.append(
            f"| {name} | — | {what} | {bb['all']:.4f} | {bb['anomalous']:.4f} | "
            + " | ".join(f"{f['all']:.3f}" for f in bb["folds"])
            + " |"
        )
    lines += [
        "",
        "† " + rep["best_single_note"] + ".",
        "",
        "Within-video AUC (anomalous videos, mean over seeds):",
        "",
        "| row | " + " | ".join(rep["rows"]["default"]["summary"]["within"]) + " |",
        "|---|" + "---|" * len(rep["rows"]["default"]["summary"]["within"]),
    ]
    for k, r in rep["rows"].items():
        lines.append(f"| {k} | " + " | ".join(f"{m:.3f}" for m, _ in r["summary"]["within"].values()) + " |")
    for name, bb in bases:
        lines.append(f"| {name} | " + " | ".join(f"{x:.3f}" for x in bb["within"].values()) + " |")
    c = rep["checks"]
    lines += [
        "",
        f"Default (pooled, all frames) {c['default_all']:.4f}: target {c['target']} "
        f"{'met' if c['meets_target'] else 'NOT met'}; "
        + "".join(f"− {k} {v}; " for k, v in (c.get("minus_fusions") or {"concat": c["minus_concat"]}).items())
        + f"− best single {c['minus_best_single']}; − motion baseline {c['minus_motion_baseline']} "
        f"(causal smoothing: {c.get('minus_motion_baseline_causal')}) "
        "(targets: ≥ +0.02 over concat, the best single representation and the motion baseline).",
        "",
        f"Time: {rep['timings']['total_s']} s ({rep['timings']['jobs']} jobs).",
    ]
    return "\n".join(lines)


def load_bench_dataset(
    cfg: Config,
    video_dir: str | Path,
    work_dir: str | Path | None = None,
    features: str | Path | None = None,
    log: Callable[[str], None] | None = None,
):
    """Features of ``video_dir`` for the bench: ``features`` (an extracted folder, e.g. cached at a
    finer stride — restrided to ``clips.clip_stride`` when it divides it) or the bench's own cached
    extraction (:func:`fusewatch.engines.bench.ped2.ensure_bench_features`). Frame labels from
    ``video_dir/labels.json``."""
    from fusewatch.engines.bench.ped2 import ensure_bench_features
    from fusewatch.engines.data import load_dataset
    from fusewatch.errors import DatasetError

    reps = list(cfg.model.representations)
    if features is None:
        work = Path(work_dir) if work_dir else None
        features = ensure_bench_features(cfg, Path(video_dir), work, log=log or (lambda m: None))
    ds = load_dataset(features, reps)
    have, want = int(ds.info.get("clip_stride") or 0), int(cfg.clips.clip_stride)
    if int(ds.info.get("clip_len") or cfg.clips.clip_len) != int(cfg.clips.clip_len):
        raise DatasetError(
            f"--features {features}: clip_len {ds.info.get('clip_len')} != clips.clip_len {cfg.clips.clip_len}"
        )
    if have != want:
        if not have or want % have:
            raise DatasetError(f"--features {features}: clip stride {have} does not divide clips.clip_stride {want}")
        ds = I.restride(ds, want)
    return ds


def run_bench_inductive(
    video_dir: str | Path,
    cfg: Config,
    work_dir: str | Path | None = None,
    features: str | Path | None = None,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    epochs: int | None = None,
    singles: bool = True,
    jobs: int = 1,
    log: Callable[[str], None] | None = None,
    fusions: Sequence[str] | None = None,
) -> dict[str, Any]:
    """``bench ped2`` headline: bench defaults applied to ``cfg``, features, :func:`run_inductive`."""
    from fusewatch.engines.bench.ped2 import apply_bench_defaults
    from fusewatch.stream.config import CACHE_DIR

    cfg, applied = apply_bench_defaults(cfg)
    ds = load_bench_dataset(cfg, video_dir, work_dir, features, log)
    work = Path(work_dir) if work_dir else CACHE_DIR / "bench" / f"ped2-{Path(video_dir).resolve().name}"
    rep = run_inductive(
        ds,
        video_dir,
        cfg,
        seeds,
        epochs,
        singles,
        True,
        jobs,
        baseline_cache=work / "motion_baseline",
        log=log,
        fusions=fusions,
    )
    rep["config"] = {
        "representations": list(cfg.model.representations),
        "fusion": cfg.model.fusion,
        "window": cfg.model.window,
        "normalize": cfg.train.normalize,
        "epochs_config": cfg.train.epochs,
        "features": str(ds.root),
        "versions": dict((ds.info or {}).get("versions") or {}),
        "bench_defaults_applied": applied,
    }
    return rep
