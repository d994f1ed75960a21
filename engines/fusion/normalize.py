"""Feature normalisation that is part of a trained model (``train.normalize = "zscore"``).

``fusewatch train`` fits per-representation, per-dimension statistics on the training clips
(:func:`fit_feature_norm`) and stores them with the model; every scoring path applies them with
:func:`normalize_rows` before the model sees a feature:

* offline: :func:`fusewatch.engines.evaluation.scoring.score_video` (``model.feature_norm``, set by
  :func:`fusewatch.engines.training.checkpoint.load_model` and by training itself);
* engine: the per-camera state of :func:`fusewatch.engines.serving.runtime.load_serving_model`
  normalises each raw clip feature before it enters the incremental graphs / feature ring, so the
  graphs-in (torch, ONNX Runtime, TensorRT) and features-in backends all see normalised inputs.
  The ONNX exports do NOT contain the normalisation: the statistics travel in the ``feature_norm``
  metadata entry and the caller (the engine state) applies them.

Statistics: ``{representation: (mean (d,), std (d,))}`` float32, ``std = std_train + STD_EPS`` (a
constant training dimension gets ``STD_EPS``, so its deviations are magnified but finite).
On disk (checkpoint ``meta["feature_norm"]``, ONNX metadata ``feature_norm`` as JSON):
``{representation: {"mean": base64, "std": base64}}`` of little-endian float32 bytes
(:func:`encode_feature_norm` / :func:`decode_feature_norm`).

Missing data stays missing: an all-zero raw row (the pipeline's "absent representation") is left
all-zero instead of becoming ``−mean/std``. numpy only (the serving side has no torch).
"""

from __future__ import annotations

import base64
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

NORMALIZATIONS = ("zscore", "none")
STD_EPS = 1e-3
"""Added to every training standard deviation (feature units) — the value phase 1 measured with."""

FeatureNorm = Mapping[str, "tuple[np.ndarray, np.ndarray]"]


def fit_feature_norm(
    feats: Iterable[Mapping[str, np.ndarray]], names: Sequence[str], mode: str = "zscore"
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-representation ``(mean, std + STD_EPS)`` over every clip row of ``feats`` (one
    ``{name: T×d}`` mapping per training video); ``{}`` for ``mode = "none"``. All-zero rows
    (absent clips) are left out of the statistics."""
    if mode not in NORMALIZATIONS:
        raise ValueError(f"normalize: one of {NORMALIZATIONS} (got {mode!r})")
    if mode == "none":
        return {}
    feats = list(feats)
    out = {}
    for n in names:
        rows = [np.asarray(f[n], np.float64) for f in feats if f.get(n) is not None]
        x = np.concatenate(rows) if rows else np.zeros((0, 0))
        x = x[np.any(x != 0, axis=1)] if x.size else x
        if x.shape[0] == 0:
            raise ValueError(f"normalize: no training clips for representation {n!r}")
        out[n] = (x.mean(0).astype(np.float32), (x.std(0) + STD_EPS).astype(np.float32))
    return out


def normalize_rows(x: np.ndarray, stats: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """``(x − mean) / std`` for ``x`` of shape ``(d,)`` or ``(T, d)`` (float32 out); all-zero rows
    stay zero; ``stats`` None → ``x`` unchanged (as float32)."""
    x = np.asarray(x, np.float32)
    if stats is None:
        return x
    mean, std = stats
    if x.shape[-1] != mean.shape[0]:
        raise ValueError(f"feature dim {x.shape[-1]} differs from the model's normalisation dim {mean.shape[0]}")
    y = ((x - mean) / std).astype(np.float32)
    zero = ~np.any(x != 0, axis=-1)
    if np.any(zero):
        y[zero] = 0.0
    return y


def normalize_feats(feats: Mapping[str, Any], norm: FeatureNorm | None) -> dict[str, Any]:
    """:func:`normalize_rows` for every representation of ``{name: (d,) | T×d | None}`` that
    ``norm`` knows (others and ``None`` values pass through)."""
    if not norm:
        return dict(feats)
    return {k: (normalize_rows(v, norm[k]) if v is not None and k in norm else v) for k, v in feats.items()}


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f4").tobytes()).decode("ascii")


def encode_feature_norm(norm: FeatureNorm | None) -> dict[str, dict[str, str]] | None:
    """Statistics → plain-data on-disk form (None for no normalisation)."""
    if not norm:
        return None
    return {k: {"mean": _b64(m), "std": _b64(s)} for k, (m, s) in norm.items()}


def decode_feature_norm(
    d: Mapping[str, Any] | None, dims: Mapping[str, int] | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """On-disk form → statistics (``{}`` for None); checks lengths against ``dims`` when given and
    that every std is finite and > 0. Raises ``ValueError``."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for k, v in dict(d or {}).items():
        try:
            m = np.frombuffer(base64.b64decode(v["mean"]), dtype="<f4").astype(np.float32)
            s = np.frombuffer(base64.b64decode(v["std"]), dtype="<f4").astype(np.float32)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"feature_norm {k!r}: unreadable ({e})") from None
        if m.shape != s.shape or (dims is not None and k in dims and m.shape[0] != int(dims[k])):
            raise ValueError(
                f"feature_norm {k!r}: {m.shape[0]} means / {s.shape[0]} stds for dim {(dims or {}).get(k)}"
            )
        if not (np.all(np.isfinite(m)) and np.all(np.isfinite(s)) and np.all(s > 0)):
            raise ValueError(f"feature_norm {k!r}: non-finite mean or non-positive std")
        out[str(k)] = (m, s)
    return out
