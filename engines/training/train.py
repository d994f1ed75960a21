"""Weakly-supervised training of the graph-fusion model (and its baselines) on clip features.

Data: any layout of :mod:`fusewatch.engines.data.datasets`. Supervision is video-level only (a video is abnormal
iff any of its frames is, Ped2-style, or as its list/annotation says).

Samples. Every training video is cut into windows of ``N = cfg.model.window`` consecutive clips,
each laid out like the streaming engine sees it: real clips at the END of the window, front
padding + ``mask`` when fewer than ``N`` clips exist. A video of ``T <= N`` clips is one window. A
longer one is tiled by windows at a random offset (every clip in at least one window); the first
window of the video is then a front-padded partial one (``N − offset`` real clips) as in streaming,
the others are full. When that needs more than ``max_windows`` windows, a random contiguous crop of
``max_windows·N`` clips is tiled instead. The windows of one video form its bag.

Loss (per batch of ``cfg.train.batch_size`` videos)::

    s_v   = mean of the k highest node scores over the REAL nodes of all windows of video v,
            k = min(cfg.train.topk, number of real nodes)
    L_mil = mean_v BCE(s_v, y_v)
    L     = L_mil + λ · L_reg      (λ = cfg.train.reg_lambda; L_reg only for LEGO and cfg.train.reg)

Degree-variance regulariser (LEGO; ``cfg.train.reg``, threshold ``α = cfg.train.reg_alpha``). For each
window with fused graph ``G`` (``B×N×N``, :meth:`LegoModel.forward_with_graph`) and real nodes ``V``
(``n = |V| >= 2``; off-diagonal pairs ``i≠j`` in ``V`` only)::

    Ĝ_ij = (G_ij − min G) / (max G − min G + 1e-8)            # min/max over the window's pairs
    S_ij = sigmoid((Ĝ_ij − α) / τ),  τ = REG_TEMPERATURE = 0.05   # soft "edge iff Ĝ_ij > α"
    d_i  = Σ_{j∈V, j≠i} S_ij / (n − 1)                          # normalised degree in [0, 1]
    R    = (1/n) Σ_{i∈V} (d_i − mean_V d)²                      # degree variance of the window
    L_reg = mean over windows with n >= 2 of R

The min-max rescaling makes ``α`` a relative level whatever the scale of ``G`` (matrix-mode powers are
``O(1/N^p)``); the sigmoid is a differentiable stand-in for the hard threshold. Penalising the
variance of the thresholded degrees asks every clip node to keep a similar number of strong
relations, i.e. a smooth, consistent fused graph with no hub or isolated nodes driven by one
representation — in the spirit of LEGO's degree-variance regularisation. ``cfg.train.reg = False``
(or ``λ = 0``) switches it off.

``cfg.train.random_pair`` sets ``LegoModel.random_pair`` (with more than two representations, one
random pair is fused per training forward). Optimiser: Adam (``cfg.train.lr``, ``weight_decay``).

Per-clip scores (validation, evaluation, streaming) use one causal protocol, :func:`score_video`:
clip ``t`` is the LAST node of the window of clips ``[t−N+1 .. t]`` (front padding + mask at the start
of the video), exactly what the streaming engine computes; the other nodes' scores are discarded.

Reproducibility: ``cfg.train.seed`` seeds ``random``, ``numpy`` and ``torch`` (and the split, window
offsets and batch order through one ``numpy.random.Generator``); same data + config + seed → same
weights on the same machine/torch build.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
import random
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from fusewatch.errors import ConfigError, DatasetError
from fusewatch.engines.data.datasets import FeatureDataset, VideoFeatures, as_dataset
from fusewatch.engines.evaluation import metrics as M
from fusewatch.stream.config import Config, ModelConfig
from torch import Tensor, nn

log = logging.getLogger("fusewatch.train")

REG_TEMPERATURE = 0.05
DEFAULT_MAX_WINDOWS = 4
FUSIONS = ("lego", "concat", "add", "mtn")


# --------------------------------------------------------------------------------------------------
# utilities
# --------------------------------------------------------------------------------------------------

def set_seed(seed: int) -> np.random.Generator:
    """Seed ``random``, ``numpy`` and ``torch``; return a fresh numpy Generator for the run."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def stratified_split(videos: Sequence[VideoFeatures], val_fraction: float, rng: np.random.Generator
                     ) -> tuple[list[VideoFeatures], list[VideoFeatures]]:
    """Split by video label: ``round(val_fraction · n_c)`` videos of each class ``c`` go to validation
    (at least one when ``val_fraction > 0`` and the class has >= 2 videos; never the last one)."""
    if val_fraction <= 0:
        return list(videos), []
    train, val = [], []
    for lab in sorted({v.video_label for v in videos}):
        group = [v for v in videos if v.video_label == lab]
        idx = rng.permutation(len(group))
        k = int(round(val_fraction * len(group)))
        if len(group) >= 2:
            k = min(max(k, 1), len(group) - 1)
        else:
            k = 0
        val += [group[i] for i in sorted(idx[:k])]
        train += [group[i] for i in sorted(idx[k:])]
    order = {v.name: i for i, v in enumerate(videos)}
    return sorted(train, key=lambda v: order[v.name]), sorted(val, key=lambda v: order[v.name])


def training_windows(T: int, N: int, rng: np.random.Generator, max_windows: int = DEFAULT_MAX_WINDOWS
                     ) -> list[tuple[int, int]]:
    """Clip spans ``[start, end)`` of one video's bag (module docstring); at most ``N`` clips each."""
    if T <= N:
        return [(0, T)]
    lo, hi = 0, T
    if math.ceil(T / N) > max_windows:
        span = max_windows * N
        lo = int(rng.integers(0, T - span + 1))
        hi = lo + span
    off = int(rng.integers(0, N))
    spans = set()
    s = lo - off
    while s < hi:
        if s < 0:                       # start of the video: a front-padded partial window, as streamed
            spans.add((0, s + N))
        else:
            st = min(max(s, lo), hi - N)
            spans.add((st, st + N))
        s += N
    return sorted(spans)


def window_batch(items: Sequence[tuple[VideoFeatures, int, int]], names: Sequence[str],
                 dims: Mapping[str, int], N: int) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """Windows ``(video, start, end)`` → ``(feats {name: B×N×d}, mask B×N, present B×M)``;
    real clips right-aligned (front padding)."""
    B = len(items)
    feats = {n: np.zeros((B, N, dims[n]), dtype=np.float32) for n in names}
    mask = np.zeros((B, N), dtype=np.float32)
    present = np.zeros((B, len(names)), dtype=np.float32)
    for b, (v, s, e) in enumerate(items):
        L = e - s
        mask[b, N - L:] = 1.0
        for m, n in enumerate(names):
            a = v.feats.get(n)
            if a is not None:
                feats[n][b, N - L:] = a[s:e]
                present[b, m] = 1.0
    return ({n: torch.from_numpy(a) for n, a in feats.items()}, torch.from_numpy(mask),
            torch.from_numpy(present))


def topk_bag_scores(scores: Tensor, mask: Tensor, owner: Sequence[int], n_bags: int, k: int) -> Tensor:
    """Mean of the ``k`` highest real-node scores per bag: ``scores``/``mask`` ``W×N`` of ``W`` windows,
    ``owner[w]`` = bag index of window ``w`` → ``n_bags``."""
    owner_t = torch.as_tensor(list(owner), dtype=torch.long, device=scores.device)
    out = []
    for b in range(n_bags):
        sel = owner_t == b
        s = scores[sel][mask[sel] > 0.5]
        kk = max(1, min(int(k), int(s.numel())))
        out.append(torch.topk(s, kk).values.mean())
    return torch.stack(out)


def degree_variance_reg(g: Tensor, mask: Tensor, alpha: float, tau: float = REG_TEMPERATURE) -> Tensor:
    """Degree-variance regulariser of fused graphs ``g`` ``B×N×N`` (formula: module docstring)."""
    m = (mask > 0.5).to(g.dtype)
    n = m.sum(dim=-1)                                                      # B
    eye = torch.eye(g.shape[-1], dtype=g.dtype, device=g.device)
    pair = m.unsqueeze(-1) * m.unsqueeze(-2) * (1.0 - eye)                 # B×N×N real off-diagonal
    big = torch.finfo(g.dtype).max
    gmin = torch.where(pair > 0, g, torch.full_like(g, big)).amin(dim=(-1, -2), keepdim=True)
    gmax = torch.where(pair > 0, g, torch.full_like(g, -big)).amax(dim=(-1, -2), keepdim=True)
    valid = n >= 2
    gmin = torch.where(valid.view(-1, 1, 1), gmin, torch.zeros_like(gmin))
    gmax = torch.where(valid.view(-1, 1, 1), gmax, torch.ones_like(gmax))
    gh = (g - gmin) / (gmax - gmin + 1e-8)
    s = torch.sigmoid((gh - alpha) / tau) * pair
    deg = s.sum(dim=-1) / torch.clamp(n - 1.0, min=1.0).unsqueeze(-1)     # B×N
    cnt = torch.clamp(n, min=1.0)
    mean = (deg * m).sum(dim=-1) / cnt
    var = (((deg - mean.unsqueeze(-1)) ** 2) * m).sum(dim=-1) / cnt        # B
    if not bool(valid.any()):
        return g.sum() * 0.0
    return var[valid].mean()


# --------------------------------------------------------------------------------------------------
# causal per-clip scoring
# --------------------------------------------------------------------------------------------------

@torch.no_grad()
def score_video(model: nn.Module, feats_by_rep: Mapping[str, np.ndarray | Tensor], window: int | None = None,
                present: Sequence[float] | None = None, batch_size: int = 256,
                device: str | torch.device | None = None) -> np.ndarray:
    """Causal per-clip scores of one video, ``(T,)`` float32.

    Clip ``t`` is scored as the LAST node of the window of clips ``[t−N+1 .. t]`` (``N = window``,
    default ``model.window``); the first ``N−1`` clips get front padding + mask. All ``T`` windows
    are built as strided views and run in batches of ``batch_size``. ``feats_by_rep``: ``{name: T×d}``
    (representations the model does not know are ignored; a missing one is absent, ``present = 0``).
    ``present``: optional per-representation flags in ``model.names`` order.
    """
    names = list(getattr(model, "names", feats_by_rep.keys()))
    N = int(window or getattr(model, "window"))
    if hasattr(model, "window") and N != int(model.window):
        raise ValueError(f"score_video: window {N} differs from the model's window {model.window}")
    if device is None:
        try:
            device = next(model.parameters()).device
        except StopIteration:
            device = torch.device("cpu")
    arrs = {}
    T = None
    for n in names:
        a = feats_by_rep.get(n)
        if a is None:
            continue
        t = torch.as_tensor(np.asarray(a, dtype=np.float32) if not isinstance(a, Tensor) else a,
                            dtype=torch.float32)
        if t.ndim != 2:
            raise ValueError(f"score_video: features {n!r} must be T×d (got shape {tuple(t.shape)})")
        if T is None:
            T = t.shape[0]
        elif t.shape[0] != T:
            raise ValueError(f"score_video: representation {n!r} has {t.shape[0]} clips, expected {T}")
        arrs[n] = torch.cat([t.new_zeros(N - 1, t.shape[1]), t], dim=0)  # (T+N−1)×d
    if T is None:
        raise ValueError(f"score_video: none of the model's representations {names} given")
    if T == 0:
        return np.zeros(0, dtype=np.float32)
    pres = torch.ones(len(names)) if present is None else torch.as_tensor(list(present), dtype=torch.float32)
    for i, n in enumerate(names):
        if n not in arrs:
            pres[i] = 0.0
    m = torch.cat([torch.zeros(N - 1), torch.ones(T)])
    win_mask = m.unfold(0, N, 1)                                              # T×N
    views = {n: a.unfold(0, N, 1).transpose(1, 2) for n, a in arrs.items()}  # T×N×d (strided)
    dims = getattr(model, "dims", {n: a.shape[1] for n, a in arrs.items()})
    was_training = model.training
    model.eval()
    out = np.empty(T, dtype=np.float32)
    try:
        for s in range(0, T, batch_size):
            e = min(T, s + batch_size)
            b = e - s
            feats = {}
            for n in names:
                if n in views:
                    feats[n] = views[n][s:e].contiguous().to(device)
                else:
                    feats[n] = torch.zeros(b, N, int(dims[n]), device=device)
            pr = pres.unsqueeze(0).expand(b, -1).contiguous().to(device)
            y = model(feats, win_mask[s:e].contiguous().to(device), pr)
            out[s:e] = y[:, -1].float().cpu().numpy()
    finally:
        model.train(was_training)
    return out


def score_dataset(model: nn.Module, videos: Sequence[VideoFeatures], batch_size: int = 256
                  ) -> dict[str, np.ndarray]:
    """:func:`score_video` for every video → ``{name: (T,) scores}``."""
    return {v.name: score_video(model, v.feats, batch_size=batch_size) for v in videos}


def validation_auc(scores: Mapping[str, np.ndarray], videos: Sequence[VideoFeatures]) -> tuple[float, str]:
    """(AUC, kind): pooled frame-level AUC when every video has frame GT, else video-level AUC of the
    max clip score. NaN when undefined (one class only)."""
    if not videos:
        return math.nan, "none"
    if all(v.frame_gt is not None for v in videos):
        r = M.pooled_frame_metrics((scores[v.name], v.clip_ranges(), v.frame_gt) for v in videos)
        return r["auc"], "frame"
    r = M.video_level_metrics([float(np.max(scores[v.name])) for v in videos],
                              [v.video_label for v in videos])
    return r["auc"], "video"


# --------------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------------

def _resolve_representations(ds: FeatureDataset, cfg: Config, representations: Sequence[str] | None
                             ) -> list[str]:
    if isinstance(representations, str):
        representations = [r for r in representations.split(",") if r.strip()]
    if representations:
        reps = [r.strip() for r in representations]
    else:
        reps = list(cfg.model.representations)
        if reps == ModelConfig().representations and not all(r in ds.dims for r in reps):
            # the config default does not fit this dataset: use what the dataset has
            log.info("model.representations left at the default %s; using the dataset's %s",
                     reps, ds.representations)
            reps = ds.representations
    unknown = [r for r in reps if r not in ds.dims]
    if unknown:
        raise DatasetError(f"unknown representation {', '.join(unknown)} "
                         f"(the data has: {', '.join(ds.representations) or 'none'})")
    return reps


def _checkpoint_api():
    try:
        from fusewatch.engines.training import checkpoint
    except ImportError as e:  # pragma: no cover - depends on the tree state
        raise RuntimeError(f"fusewatch.engines.training.checkpoint unavailable: {e}") from None
    return checkpoint


def extractor_versions(ds, names) -> dict[str, str]:
    """``{representation: extractor version}`` of the training features (fusewatch layout only;
    other layouts carry no versions → ``{}``). Stored in the checkpoint so that the engine can
    refuse features from a differently configured extractor instead of silently mis-scoring them."""
    vers = (ds.info or {}).get("versions") or {}
    return {r: str(vers[r]) for r in names if vers.get(r)}


def train(data: str | Path | FeatureDataset | Sequence[VideoFeatures], cfg: Config | None,
          out_path: str | Path, fusion: str | None = None, representations: Sequence[str] | str | None = None,
          progress: bool = True, val_data: str | Path | FeatureDataset | Sequence[VideoFeatures] | None = None,
          max_windows: int = DEFAULT_MAX_WINDOWS, device: str | torch.device | None = None) -> dict[str, Any]:
    """Train a model on ``data`` and save the best checkpoint (by validation AUC) to ``out_path``.

    ``cfg``: :class:`fusewatch.stream.config.Config` (``model`` and ``train`` sections are used; not modified).
    ``fusion``: ``lego|concat|add|mtn`` (default ``cfg.model.fusion``); ``representations``: names
    (default ``cfg.model.representations``, or all of the data's when that is the untouched default).
    ``val_data``: explicit validation set; default: a stratified ``cfg.train.val_fraction`` split
    of ``data``. Validation AUC is frame-level when all validation videos have frame ground truth,
    else video-level. Without a usable validation AUC (no validation videos or a single class), the
    last epoch is kept. ``max_windows``: windows per video and step (longer videos: a random crop).
    ``device``: torch device for training (default CPU); the checkpoint is always saved from CPU tensors.

    Returns a summary dict: ``out``, ``fusion``, ``representations``, ``dims``, ``epochs``,
    ``best_epoch``, ``best_val_auc``, ``val_kind``, ``train_videos``, ``val_videos``, ``history``
    (per epoch: ``loss``, ``bce``, ``reg``, ``val_auc``, ``seconds``), ``seconds``.
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
        raise DatasetError(f"{len(unknown)} video(s) without a label (e.g. {unknown[0]}): provide labels.json, "
                         "a label column in the list file or annotation files")
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
        raise DatasetError(f"training videos are all {only} ({len(train_v)}): weak supervision needs both "
                         "normal and abnormal videos")

    from fusewatch.engines.fusion.model import build_model
    dev = torch.device(device or "cpu")
    model = build_model(mc, ds.dims).to(dev)
    if hasattr(model, "random_pair"):
        model.random_pair = bool(tc.random_pair)
    use_reg = bool(tc.reg) and tc.reg_lambda > 0 and hasattr(model, "forward_with_graph")
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    names = list(model.names)
    dims = dict(model.dims)
    ckpt = _checkpoint_api()
    out_path = Path(out_path)
    if out_path.parent and not out_path.parent.exists():
        out_path.parent.mkdir(parents=True, exist_ok=True)

    best_auc, best_epoch, val_kind = -math.inf, 0, "none"
    history: list[dict[str, Any]] = []
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
                batch = [train_v[i] for i in order[bs:bs + tc.batch_size]]
                items, owner = [], []
                for j, v in enumerate(batch):
                    for s, e in training_windows(v.num_clips, N, rng, max_windows):
                        items.append((v, s, e))
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
            rec = {k: v / max(nb, 1) for k, v in tot.items()}
            rec["epoch"] = epoch
            auc = math.nan
            if val_v:
                auc, val_kind = validation_auc(score_dataset(model, val_v), val_v)
            rec["val_auc"] = M.nan_to_none(auc)
            rec["seconds"] = round(time.monotonic() - t0, 3)
            history.append(rec)
            # best by validation AUC; while no AUC is defined (no/one-class validation) keep the latest
            improved = (math.isfinite(auc) and auc > best_auc) or (best_auc == -math.inf and not math.isfinite(auc))
            if improved:
                if math.isfinite(auc):
                    best_auc = auc
                best_epoch = epoch
                meta = {"epoch": epoch, "val_auc": M.nan_to_none(auc), "val_kind": val_kind,
                        "train_loss": rec["loss"], "seed": int(tc.seed), "data": str(ds.root), "layout": ds.layout,
                        "train_videos": len(train_v), "val_videos": len(val_v),
                        "clip_len": ds.info.get("clip_len"), "clip_stride": ds.info.get("clip_stride"),
                        "extractor_versions": extractor_versions(ds, names),
                        "train": dataclasses.asdict(tc)}
                ckpt.save_checkpoint(model, out_path, meta)
            log.log(logging.DEBUG if bar is not None else logging.INFO,
                    "epoch %d/%d loss %.4f (bce %.4f reg %.4f) val %s AUC %s%s", epoch, tc.epochs, rec["loss"],
                    rec["bce"], rec["reg"], val_kind, "n/a" if not math.isfinite(auc) else f"{auc:.4f}",
                    " *" if improved else "")
            if bar is not None:
                bar.set_postfix(loss=f"{rec['loss']:.4f}",
                                val_auc="n/a" if not math.isfinite(auc) else f"{auc:.4f}")
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    thresholds = calibrate_thresholds(out_path, train_v + val_v)
    return {"out": str(out_path), "fusion": mc.fusion, "alert_thresholds": thresholds, "representations": names, "dims": dims,
            "window": N, "epochs": tc.epochs, "best_epoch": best_epoch,
            "best_val_auc": best_auc if math.isfinite(best_auc) else None, "val_kind": val_kind,
            "train_videos": len(train_v), "val_videos": len(val_v), "reg": use_reg,
            "history": history, "seconds": round(time.monotonic() - t_start, 3)}


def calibrate_thresholds(model_path: str | Path, videos: Sequence[VideoFeatures]) -> dict[str, float] | None:
    """Alert thresholds from the saved model's causal clip scores on the *normal* training videos:
    ``on`` = 99th percentile, ``off`` = 95th percentile of their clip scores (a camera alerts when it
    scores above nearly every normal clip seen in training). Stored in the checkpoint metadata as
    ``alert_thresholds``; the engine uses them when ``alerts.thresholds = "model"``."""
    ckpt = _checkpoint_api()
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


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------
