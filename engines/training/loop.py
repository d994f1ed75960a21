"""Weakly-supervised training of the graph-fusion model (and its baselines) on clip features.

Data: any layout of :mod:`fusewatch.engines.data`. Supervision is video-level only (a video is abnormal
iff any of its frames is, Ped2-style, or as its list/annotation says).

Samples: :mod:`fusewatch.engines.training.windows` (each video a bag of windows laid out as streamed).
Features: z-scored with per-representation statistics of the training clips when
``cfg.train.normalize = "zscore"`` (the default); the statistics become part of the model
(:mod:`fusewatch.engines.fusion.normalize`). Loss: top-k MIL BCE plus, for LEGO, the degree-variance regulariser
(:mod:`fusewatch.engines.training.losses`). Validation and the alert-threshold calibration use the
causal per-clip protocol of :mod:`fusewatch.engines.evaluation.scoring`. Seeding and the split:
:mod:`fusewatch.engines.training.split`.

``cfg.train.random_pair`` sets ``LegoModel.random_pair`` (with more than two representations, one
random pair is fused per training forward). Optimiser: Adam (``cfg.train.lr``, ``weight_decay``).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from fusewatch.engines.data import FeatureDataset, VideoFeatures, as_dataset
from fusewatch.engines.evaluation import metrics as M
from fusewatch.engines.evaluation.scoring import score_dataset
from fusewatch.engines.fusion.factory import build_model
from fusewatch.engines.fusion.motion_prior import fit_motion_prior
from fusewatch.engines.fusion.names import FUSIONS
from fusewatch.engines.fusion.normalize import fit_feature_norm, normalize_feats
from fusewatch.engines.training import checkpoint as ckpt
from fusewatch.engines.training.calibration import fit_alert_thresholds
from fusewatch.engines.training.losses import degree_variance_reg, topk_bag_scores
from fusewatch.engines.training.split import set_seed, stratified_split
from fusewatch.engines.training.windows import DEFAULT_MAX_WINDOWS, Window, video_windows, window_batch
from fusewatch.errors import ConfigError, DatasetError
from fusewatch.stream.config import Config, ModelConfig

log = logging.getLogger("fusewatch.train")


@dataclass(frozen=True)
class EpochStats:
    """One training epoch: mean batch ``loss`` = ``bce + λ·reg``, validation AUC (None when undefined),
    wall seconds."""

    epoch: int
    loss: float
    bce: float
    reg: float
    val_auc: float | None
    seconds: float


@dataclass(frozen=True)
class TrainSummary:
    """What :func:`train` did: the checkpoint written (``out``), the model (``fusion``, ``representations``,
    ``dims`` ``{name: d}``, ``window`` ``N``), the kept epoch and its validation AUC (``val_kind``
    ``frame`` | ``video`` | ``none``), the calibrated ``alert_thresholds`` (``{on, off, normal_clips, source, videos}`` or
    None), video counts, whether the regulariser was on, per-epoch ``history`` and wall ``seconds``."""

    out: str
    fusion: str
    alert_thresholds: dict[str, Any] | None
    representations: list[str]
    dims: dict[str, int]
    window: int
    epochs: int
    best_epoch: int
    best_val_auc: float | None
    val_kind: str
    train_videos: int
    val_videos: int
    reg: bool
    history: list[EpochStats]
    seconds: float

    def describe(self) -> str:
        """One line: model, kept epoch and how it was chosen, alert thresholds, time."""
        if self.best_val_auc is None:
            kept = f"last epoch {self.best_epoch} kept (no validation AUC)"
        else:
            kept = f"best epoch {self.best_epoch}, val {self.val_kind} AUC {self.best_val_auc:.4f}"
        th = self.alert_thresholds
        alerts = "none" if not th else f"on {th['on']:.3f} / off {th['off']:.3f} ({th.get('source', '?')})"
        return (
            f"{self.fusion}, representations {','.join(self.representations)}, {kept}, "
            f"alert thresholds {alerts}, {self.seconds:.1f} s"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON reports)."""
        return dataclasses.asdict(self)


def validation_auc(scores: Mapping[str, np.ndarray], videos: Sequence[VideoFeatures]) -> tuple[float, str]:
    """(AUC, kind): pooled frame-level AUC when every video has frame GT, else video-level AUC of the
    max clip score. NaN when undefined (one class only)."""
    if not videos:
        return math.nan, "none"
    if all(v.frame_gt is not None for v in videos):
        r = M.pooled_frame_metrics((scores[v.name], v.clip_ranges(), v.frame_gt) for v in videos)
        return r["auc"], "frame"
    r = M.video_level_metrics([float(np.max(scores[v.name])) for v in videos], [v.video_label for v in videos])
    return r["auc"], "video"


def _resolve_representations(ds: FeatureDataset, cfg: Config, representations: Sequence[str] | None) -> list[str]:
    if isinstance(representations, str):
        representations = [r for r in representations.split(",") if r.strip()]
    if representations:
        reps = [r.strip() for r in representations]
    else:
        reps = list(cfg.model.representations)
        if reps == ModelConfig().representations and not all(r in ds.dims for r in reps):
            # the config default does not fit this dataset: use what the dataset has
            log.info("model.representations left at the default %s; using the dataset's %s", reps, ds.representations)
            reps = ds.representations
    unknown = [r for r in reps if r not in ds.dims]
    if unknown:
        raise DatasetError(
            f"unknown representation {', '.join(unknown)} (the data has: {', '.join(ds.representations) or 'none'})"
        )
    return reps


def extractor_versions(ds, names) -> dict[str, str]:
    """``{representation: extractor version}`` of the training features (fusewatch layout only;
    other layouts carry no versions → ``{}``). Stored in the checkpoint so that the engine can
    refuse features from a differently configured extractor instead of silently mis-scoring them."""
    vers = (ds.info or {}).get("versions") or {}
    return {r: str(vers[r]) for r in names if vers.get(r)}


def train(
    data: str | Path | FeatureDataset | Sequence[VideoFeatures],
    cfg: Config | None,
    out_path: str | Path,
    fusion: str | None = None,
    representations: Sequence[str] | str | None = None,
    progress: bool = True,
    val_data: str | Path | FeatureDataset | Sequence[VideoFeatures] | None = None,
    max_windows: int = DEFAULT_MAX_WINDOWS,
    device: str | torch.device | None = None,
) -> TrainSummary:
    """Train a model on ``data`` and save the best checkpoint (by validation AUC) to ``out_path``.

    ``cfg``: :class:`fusewatch.stream.config.Config` (``model`` and ``train`` sections are used; not modified).
    ``fusion``: ``lego|concat|add|mtn`` (default ``cfg.model.fusion``); ``representations``: names
    (default ``cfg.model.representations``, or all of the data's when that is the untouched default).
    ``val_data``: explicit validation set; default: a stratified ``cfg.train.val_fraction`` split
    of ``data``. Validation AUC is frame-level when all validation videos have frame ground truth,
    else video-level. Without a usable validation AUC (no validation videos or a single class), the
    last epoch is kept. ``max_windows``: windows per video and step (longer videos: a random crop).
    ``device``: torch device for training (default CPU); the checkpoint is always saved from CPU tensors.

    Returns a :class:`TrainSummary` (its ``history``: one :class:`EpochStats` per epoch).
    """
    t_start = time.monotonic()
    cfg = copy.deepcopy(cfg) if cfg is not None else Config()
    if fusion is not None:
        if fusion not in FUSIONS:
            raise ConfigError(f"unknown fusion {fusion!r} (choose from {', '.join(FUSIONS)})")
        cfg.model.fusion = fusion
    ds = as_dataset(data)
    reps = _resolve_representations(ds, cfg, representations)
    cfg.model.representations = reps
    cfg.model.validate()
    cfg.train.validate()
    ds = ds.select(reps)
    tc, mc = cfg.train, cfg.model
    N = mc.window
    rng = set_seed(int(tc.seed))

    unknown = [v.name for v in ds.videos if v.video_label not in (0, 1)]
    if unknown:
        raise DatasetError(
            f"{len(unknown)} video(s) without a label (e.g. {unknown[0]}): provide labels.json, "
            "a label column in the list file or annotation files"
        )
    if val_data is not None:
        train_v = list(ds.videos)
        vds = as_dataset(val_data).select(reps)
        for r in reps:
            if vds.dims.get(r) != ds.dims[r]:
                raise DatasetError(f"representation {r}: validation dim {vds.dims.get(r)} != training dim {ds.dims[r]}")
        val_v = list(vds.videos)
    else:
        train_v, val_v = stratified_split(ds.videos, tc.val_fraction, rng)
    labels = {v.video_label for v in train_v}
    if labels != {0, 1}:
        only = "normal" if labels == {0} else "abnormal"
        raise DatasetError(
            f"training videos are all {only} ({len(train_v)}): weak supervision needs both normal and abnormal videos"
        )

    dev = torch.device(device or "cpu")
    model = build_model(mc, ds.dims).to(dev)
    # feature normalisation is part of the model: fitted on the training clips only, applied to the
    # training windows here and by every scorer (score_video, the engine state) to raw features
    model.feature_norm = fit_feature_norm([v.feats for v in train_v], list(model.names), tc.normalize)
    model.motion_prior = fit_motion_prior([v.feats for v in train_v], list(model.names), tc.motion_prior)
    fit_v = (
        [dataclasses.replace(v, feats=normalize_feats(v.feats, model.feature_norm)) for v in train_v]
        if model.feature_norm
        else train_v
    )
    if hasattr(model, "random_pair"):
        model.random_pair = bool(tc.random_pair)
    use_reg = bool(tc.reg) and tc.reg_lambda > 0 and hasattr(model, "forward_with_graph")
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    names = list(model.names)
    dims = dict(model.dims)
    out_path = Path(out_path)
    if out_path.parent and not out_path.parent.exists():
        out_path.parent.mkdir(parents=True, exist_ok=True)

    best_auc, best_epoch, val_kind = -math.inf, 0, "none"
    history: list[EpochStats] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=tc.epochs, desc=f"train {mc.fusion}", unit="epoch", leave=True)
    try:
        for epoch in range(1, tc.epochs + 1):
            t0 = time.monotonic()
            model.train()
            order = rng.permutation(len(train_v))
            tot = {"loss": 0.0, "bce": 0.0, "reg": 0.0}
            nb = 0
            for bs in range(0, len(order), tc.batch_size):
                batch = [fit_v[i] for i in order[bs : bs + tc.batch_size]]
                items: list[Window] = []
                owner: list[int] = []
                for j, v in enumerate(batch):
                    for w in video_windows(v, N, rng, max_windows):
                        items.append(w)
                        owner.append(j)
                feats, mask, present = window_batch(items, names, dims, N)
                if dev.type != "cpu":
                    feats = {k: t.to(dev) for k, t in feats.items()}
                    mask, present = mask.to(dev), present.to(dev)
                if use_reg:
                    scores, g = model.forward_with_graph(feats, mask, present)
                else:
                    scores, g = model(feats, mask, present), None
                bag = topk_bag_scores(scores, mask, owner, len(batch), tc.topk)
                y = torch.tensor([float(v.video_label) for v in batch], device=dev)
                bce = nn.functional.binary_cross_entropy(bag.clamp(1e-6, 1 - 1e-6), y)
                reg = degree_variance_reg(g, mask, tc.reg_alpha) if g is not None else torch.zeros((), device=dev)
                loss = bce + tc.reg_lambda * reg if g is not None else bce
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                tot["loss"] += float(loss.detach())
                tot["bce"] += float(bce.detach())
                tot["reg"] += float(reg.detach())
                nb += 1
            mean = {k: v / max(nb, 1) for k, v in tot.items()}
            auc = math.nan
            if val_v:
                auc, val_kind = validation_auc(score_dataset(model, val_v), val_v)
            rec = EpochStats(
                epoch=epoch,
                loss=mean["loss"],
                bce=mean["bce"],
                reg=mean["reg"],
                val_auc=M.nan_to_none(auc),
                seconds=round(time.monotonic() - t0, 3),
            )
            history.append(rec)
            # best by validation AUC; while no AUC is defined (no/one-class validation) keep the latest
            improved = (math.isfinite(auc) and auc > best_auc) or (best_auc == -math.inf and not math.isfinite(auc))
            if improved:
                if math.isfinite(auc):
                    best_auc = auc
                best_epoch = epoch
                meta = {
                    "epoch": epoch,
                    "val_auc": M.nan_to_none(auc),
                    "val_kind": val_kind,
                    "train_loss": rec.loss,
                    "seed": int(tc.seed),
                    "data": str(ds.root),
                    "layout": ds.layout,
                    "train_videos": len(train_v),
                    "val_videos": len(val_v),
                    "clip_len": ds.info.get("clip_len"),
                    "clip_stride": ds.info.get("clip_stride"),
                    "extractor_versions": extractor_versions(ds, names),
                    "train": dataclasses.asdict(tc),
                }
                ckpt.save_checkpoint(model, out_path, meta)
            log.log(
                logging.DEBUG if bar is not None else logging.INFO,
                "epoch %d/%d loss %.4f (bce %.4f reg %.4f) val %s AUC %s%s",
                epoch,
                tc.epochs,
                rec.loss,
                rec.bce,
                rec.reg,
                val_kind,
                "n/a" if not math.isfinite(auc) else f"{auc:.4f}",
                " *" if improved else "",
            )
            if bar is not None:
                bar.set_postfix(loss=f"{rec.loss:.4f}", val_auc="n/a" if not math.isfinite(auc) else f"{auc:.4f}")
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    thresholds = fit_alert_thresholds(out_path, ds, train_v, val_v, cfg, train)
    return TrainSummary(
        out=str(out_path),
        fusion=mc.fusion,
        alert_thresholds=thresholds,
        representations=names,
        dims=dims,
        window=N,
        epochs=tc.epochs,
        best_epoch=best_epoch,
        best_val_auc=best_auc if math.isfinite(best_auc) else None,
        val_kind=val_kind,
        train_videos=len(train_v),
        val_videos=len(val_v),
        reg=use_reg,
        history=history,
        seconds=round(time.monotonic() - t_start, 3),
    )
