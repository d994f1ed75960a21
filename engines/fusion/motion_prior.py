"""Local-motion prior: *which* footage from the fused model, *when* from the clip's local motion.

A model trained on weak (video-level) labels learns *which* footage is abnormal well but is poor at
*when*: inside an anomalous video its scores stay high (or even peak) before and after the event,
because the window's graph carries context. The training-free local-motion baseline of issue 12 is
the opposite (good at when, blind to what). ``train.motion_prior`` fuses the two at the score level,
with nothing learnt and nothing tuned:

* ``context`` (default): ``score_t = max_{valid nodes i of clip t's window} y_i · min(1, m_t / m_ref)``
  — the fused model's verdict on the window of clips it scores together (its largest node score:
  "is this stretch of footage abnormal?") times the newest clip's local motion ("is something moving
  unusually fast right now?");
* ``product``: ``score_t = y_t · min(1, m_t / m_ref)`` (the clip's own node score);
* ``none``: ``score_t = y_t``.

``y``: the model's per-node scores of clip ``t``'s window (``N`` = ``model.window`` nodes; padded
nodes of a short history excluded); the window is what the engine holds per camera, so the context
is exact after a restart or a rebuild, like the graphs. ``m_t``: the clip's local motion, ``expm1``
of the largest cell of the motion grid the model's own features carry (px per sampled-frame step):
``flow_grid`` slice ``74:128`` (6 × 9 cells of clip-mean magnitude, ~20×20 px at 180 px wide) when
the model has it, else ``flow`` slice ``28:44`` (4 × 4 cells of clip-mean magnitude at ``features.flow_width``,
the default model). ``m_ref``: the largest ``m`` over the model's training clips (stored in the
model), so scores stay in [0, 1] and alert thresholds keep their meaning. A clip whose motion
representation is absent (all-zero row) keeps factor 1.

Applied on every scoring path from raw (un-normalised) features: offline
(:func:`fusewatch.engines.evaluation.scoring.score_video`) and streaming (the engine, per clip), so
streamed == offline still holds. Stored as ``meta["motion_prior"] = {"mode", "source", "ref"}`` in
checkpoints and ONNX metadata; part of ``model_version``.

It favours motion anomalies: a still anomaly (an object left behind) scores low under it
(``train.motion_prior = "none"`` for such sites). Measured: ``bench/results/inductive.md``.
numpy only.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np

MOTION_PRIORS = ("context", "product", "none")
APPLIED = ("context", "product")
SOURCES: dict[str, tuple[int, slice]] = {
    # representation → (feature dim, slice of per-cell log1p clip-mean magnitudes); preference order
    "flow_grid": (128, slice(74, 128)),
    "flow": (80, slice(28, 44)),
}


def source_for(names: Sequence[str]) -> str | None:
    """The representation the prior reads (``flow_grid`` preferred), or None."""
    return next((n for n in SOURCES if n in names), None)


def local_motion(x: np.ndarray, source: str) -> np.ndarray:
    """Local motion (px) of raw ``source`` features ``(T, d)`` or ``(d,)`` → ``(T,)`` / scalar array;
    NaN for an absent (all-zero) row."""
    dim, sl = SOURCES[source]
    a = np.asarray(x, np.float32)
    one = a.ndim == 1
    a = a.reshape(-1, a.shape[-1])
    if a.shape[1] != dim:
        raise ValueError(f"motion prior: {source} features have {a.shape[1]} values, expected {dim}")
    m = np.expm1(np.max(a[:, sl], axis=1)).astype(np.float64)
    m[~np.any(a != 0, axis=1)] = np.nan
    return m[0] if one else m


def fit_motion_prior(
    feats: Iterable[Mapping[str, np.ndarray]], names: Sequence[str], mode: str = "context"
) -> dict[str, Any] | None:
    """The prior for a model over ``names`` from its training clips (one ``{name: T×d}`` per
    video); None for ``mode = "none"`` or a model without a motion representation."""
    if mode not in MOTION_PRIORS:
        raise ValueError(f"motion_prior: one of {MOTION_PRIORS} (got {mode!r})")
    src = source_for(names)
    if mode == "none" or src is None:
        return None
    ms = [local_motion(f[src], src) for f in feats if f.get(src) is not None and len(f[src])]
    m = np.concatenate(ms) if ms else np.zeros(0)
    m = m[np.isfinite(m)]
    if m.size == 0 or float(m.max()) <= 0:
        raise ValueError(f"motion prior: no moving training clip in {src!r}")
    return {"mode": mode, "source": src, "ref": float(m.max())}


def check_prior(prior: Any, dims: Mapping[str, int]) -> dict[str, Any] | None:
    """Validate stored metadata (untrusted: checkpoints and ONNX files) → the prior or None.
    Raises ValueError on a malformed entry."""
    if not prior:
        return None
    if not isinstance(prior, Mapping):
        raise ValueError("motion_prior: expected a mapping")
    src, ref = prior.get("source"), prior.get("ref")
    if prior.get("mode") not in APPLIED or src not in SOURCES or src not in dims:
        raise ValueError(f"motion_prior: unsupported {dict(prior)!r}")
    if int(dims[src]) != SOURCES[src][0]:
        raise ValueError(f"motion_prior: {src} has {dims[src]} values, expected {SOURCES[src][0]}")
    if not isinstance(ref, (int, float)) or not np.isfinite(ref) or ref <= 0:
        raise ValueError(f"motion_prior: ref must be a positive number (got {ref!r})")
    return {"mode": str(prior["mode"]), "source": str(src), "ref": float(ref)}


def factor(prior: Mapping[str, Any] | None, feats: Mapping[str, Any]) -> np.ndarray | float:
    """Multiplier(s) in [0, 1] for one clip (``{name: (d,)}`` → float) or a video (``{name: T×d}``
    → ``(T,)``); 1 without a prior or where the motion representation is absent."""
    if not prior:
        return 1.0
    x = feats.get(prior["source"])
    if x is None:
        return 1.0
    m = local_motion(x, prior["source"])
    f = np.clip(np.asarray(m, np.float64) / float(prior["ref"]), 0.0, 1.0)
    f = np.where(np.isfinite(f), f, 1.0)
    return float(f) if f.ndim == 0 else f


def window_score(y: np.ndarray, mask: np.ndarray, prior: Mapping[str, Any] | None) -> np.ndarray:
    """Per-window score before the motion factor: ``y`` ``(B, N)`` node scores, ``mask`` ``(B, N)``
    (1 = a real clip) → ``(B,)``: the newest node's score, or for a ``context`` prior the largest
    score over the window's real nodes."""
    y = np.asarray(y, np.float32)
    if not prior or prior.get("mode") != "context":
        return y[:, -1]
    valid = np.asarray(mask) > 0
    valid[:, -1] = True  # the newest node is always a real clip
    return np.where(valid, y, -np.inf).max(axis=1).astype(np.float32)
