"""Load a trained model for serving: a :class:`~fusewatch.engines.serving.backends.Scorer` plus a factory of
per-camera window state matching it.

LEGO models are served in the *graphs-in* form: each camera keeps incremental cosine graphs
(:class:`~fusewatch.engines.serving.state.CameraGraphState`). Baselines (concat/add/mtn) have no graph input,
so their cameras keep a ring of the last N feature vectors (:class:`FeatureWindow`) and are
scored with the features-in form.

Feature normalisation (:mod:`fusewatch.engines.fusion.normalize`, ``ModelMeta.feature_norm``): for a
model that carries statistics, every per-camera state made by :attr:`ServingModel.new_state` is a
:class:`NormalizedState`, which z-scores each raw clip feature before it enters the graphs / ring —
so torch, ONNX Runtime and TensorRT, graphs-in and features-in, all see the inputs the model was
trained on, identical to :func:`fusewatch.engines.evaluation.scoring.score_video`. The ONNX exports do
not contain the normalisation (the engine, the caller, applies it from the ``feature_norm`` metadata).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from fusewatch.engines.fusion.meta import ModelMeta
from fusewatch.engines.fusion.motion_prior import factor as motion_factor
from fusewatch.engines.fusion.motion_prior import window_score
from fusewatch.engines.fusion.normalize import normalize_feats
from fusewatch.engines.fusion.presence import present_flags
from fusewatch.engines.serving.anomaly_map import AnomalyMapper
from fusewatch.engines.serving.backends import Scorer, select_backend
from fusewatch.engines.serving.state import CameraGraphState
from fusewatch.errors import CheckpointError, FusewatchError, one_line
from fusewatch.stream.config import CACHE_DIR, Config

MAX_MODEL_INPUT = 1e12
"""Largest magnitude of a (normalised) feature value a features-in model accepts: z-scored features
are O(1)–O(10³); products and sums of squares of values this size stay far inside float32."""


class FeatureWindow:
    """Ring of the last N raw clip features per representation (for features-in scoring).

    :meth:`window` → ``(feats {name: N×d_m float32, front zero padding}, mask N, present M)``.
    """

    def __init__(self, names: list[str], window: int, dims: Mapping[str, int]):
        self.names, self.n, self.dims = list(names), int(window), dict(dims)
        self.buf: deque = deque(maxlen=self.n)
        self.count = 0

    def push(self, feats: Mapping[str, np.ndarray | None]) -> None:
        """Append one clip (``{name: (d_m,)}``, after the model's normalisation). Raises ValueError,
        leaving the window as it was, for a value that is not finite or beyond
        :data:`MAX_MODEL_INPUT` in magnitude: such a clip would overflow inside a model that mixes
        the window's clips (mtn) and turn the score of every later window holding it into NaN."""
        row = {k: (None if feats.get(k) is None else np.asarray(feats[k], np.float32).reshape(-1)) for k in self.names}
        for k, v in row.items():
            if v is not None and v.size and not float(np.abs(v).max()) <= MAX_MODEL_INPUT:  # NaN fails too
                raise ValueError(
                    f"{k}: model input beyond ±{MAX_MODEL_INPUT:g} after normalisation "
                    f"(max |x| {float(np.abs(v).max()):.3g}); the clip is not kept"
                )
        self.buf.append(row)
        self.count += 1

    def window(self):
        n, c = self.n, len(self.buf)
        out = {k: np.zeros((n, self.dims[k]), np.float32) for k in self.names}
        present = np.zeros(len(self.names), np.float32)
        for j, clip in enumerate(self.buf):
            flags = present_flags(clip, self.names)  # absent clip row: stays zero
            present = np.maximum(present, flags)
            for i, k in enumerate(self.names):
                if flags[i]:
                    out[k][n - c + j] = clip[k]
        mask = np.zeros(n, np.float32)
        mask[n - c :] = 1
        return out, mask, present


class NormalizedState:
    """A per-camera state (``CameraGraphState`` / :class:`FeatureWindow`) whose :meth:`push` first
    normalises each raw feature ``(d_m,)`` with the model's statistics (all-zero = missing stays
    missing); everything else is the wrapped state's."""

    def __init__(self, inner: Any, norm: Mapping[str, tuple[np.ndarray, np.ndarray]]):
        self.inner, self.norm = inner, dict(norm)

    def push(self, feats: Mapping[str, np.ndarray | None]) -> None:
        self.inner.push(
            normalize_feats(
                {k: (None if v is None else np.asarray(v).reshape(-1)) for k, v in feats.items()}, self.norm
            )
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __len__(self) -> int:
        return len(self.inner)


def _normalized(factory: Callable[[], Any], norm: Mapping[str, Any]) -> Callable[[], Any]:
    return (lambda: NormalizedState(factory(), norm)) if norm else factory


@dataclass
class ServingModel:
    """What the engine needs: scorer, metadata, per-camera state factory and the input form."""

    scorer: Scorer
    meta: ModelMeta
    new_state: Callable[[], Any]
    form: str  # "graphs" | "features"
    mapper: AnomalyMapper | None = None
    """Where in the frame (:mod:`.anomaly_map`): set when the model has a motion representation."""
    prior: Mapping[str, Any] | None = None
    """The model's local-motion prior (:mod:`fusewatch.engines.fusion.motion_prior`), or None."""

    def motion_factor(self, feats: Mapping[str, np.ndarray]) -> float:
        """The prior's multiplier in [0, 1] for one clip's raw features (1 without a prior)."""
        return float(motion_factor(self.prior, feats)) if self.prior else 1.0

    @property
    def names(self) -> list[str]:
        return list(self.meta.representations)

    @property
    def window(self) -> int:
        return self.meta.window

    def score(self, snaps: list[tuple]) -> np.ndarray:
        """Score window snapshots (as returned by ``state.window()``: ``(R, mask, present)`` or, for
        LEGO models with a node branch, ``(R, mask, present, U)``) → newest-node scores (B,), or
        with a ``context`` motion prior the largest node score of each window (the caller
        multiplies by the newest clip's motion factor)."""
        mask = np.stack([s[1] for s in snaps])
        present = np.stack([s[2] for s in snaps])
        if self.form == "graphs":
            r = np.stack([s[0] for s in snaps])
            u = np.stack([s[3] for s in snaps]) if len(snaps[0]) > 3 else None
            y = self.scorer.score_graphs(r, mask, present, u)
        else:
            feats = {k: np.stack([s[0][k] for s in snaps]) for k in self.names}
            y = self.scorer.score_features(feats, mask, present)
        return window_score(y, mask, self.prior)


def default_model_path() -> Path:
    """Where ``fusewatch demo`` keeps its default model (trained on the shared Ped2 data)."""
    return CACHE_DIR / "demo" / "model.pt"


CHECKPOINT_META = ("alert_thresholds", "extractor_versions", "feature_norm", "motion_prior")
"""Metadata the engine acts on that a checkpoint may hold beyond its cached ONNX export."""


def load_serving_model(cfg: Config, model: str | Path | None = None, backend: str | None = None) -> ServingModel:
    """Checkpoint (.pt) or exported ONNX → :class:`ServingModel` on the configured backend."""
    path = Path(model or cfg.engine.model or default_model_path()).expanduser()
    if path.is_dir():
        raise CheckpointError(f"model {path}: is a directory (expected a .pt checkpoint or an .onnx file)")
    if not path.is_file():
        hint = (
            " (run `fusewatch demo` once to train the default model, or `fusewatch train`)"
            if not (model or cfg.engine.model)
            else ""
        )
        raise CheckpointError(f"model {path}: not found{hint}")
    name = backend or cfg.engine.backend
    if path.suffix == ".onnx":
        from fusewatch.engines.export.onnx_meta import onnx_node_encoders, onnx_projectors, read_onnx_meta

        meta = read_onnx_meta(str(path)).replace(path=str(path))  # CheckpointError: one line
        projectors = onnx_projectors(meta)
        encoders = onnx_node_encoders(meta)
        scorer = select_backend(name, model=str(path), max_batch=cfg.engine.max_batch, threads=cfg.engine.threads)
        torch_model = None
    else:
        from fusewatch.extras import require

        require(
            "torch",
            f"model {path}: a torch checkpoint",
            f", or export it where torch is installed (`fusewatch export-models --model {path.name} "
            "--out DIR`) and serve the .onnx file",
        )
        from fusewatch.engines.training.checkpoint import load_model

        torch_model, ckpt_meta = load_model(path)
        scorer = select_backend(
            name,
            model=torch_model,
            meta=ckpt_meta,
            max_batch=cfg.engine.max_batch,
            threads=cfg.engine.threads,
        )
        projectors = torch_model.projectors() if hasattr(torch_model, "projectors") else {}
        encoders = torch_model.node_encoders() if hasattr(torch_model, "node_encoders") else {}
    flat = scorer.meta.to_dict()
    if torch_model is not None:
        # ONNX Runtime / TensorRT read their metadata from an export cached by model_version (the
        # weights): metadata added to the checkpoint later (thresholds calibrated after training)
        # or by a newer fusewatch would be missing there — the checkpoint is the source of truth
        ckpt = ckpt_meta.to_dict()
        flat.update({k: ckpt[k] for k in CHECKPOINT_META if k in ckpt})
        for k, v in ckpt.items():
            flat.setdefault(k, v)
    flat.setdefault("name", flat.get("fusion", "lego"))
    meta = ModelMeta.from_dict(flat)
    names, window, dims = list(meta.representations), meta.window, dict(meta.dims)
    try:
        norm = meta.norm_stats()
        prior = meta.prior()
    except ValueError as e:
        raise CheckpointError(f"model {path}: {e}") from None
    mapper = AnomalyMapper.for_model(names, norm)
    if "graphs" in scorer.forms:
        if meta.node_dim and not encoders:
            raise CheckpointError(f"model {path}: node_dim = {meta.node_dim} but no node encoders found")
        if meta.proj_dim and not projectors:
            raise CheckpointError(f"model {path}: proj_dim = {meta.proj_dim} but no projection found")
        served = ServingModel(
            scorer,
            meta,
            _normalized(lambda: CameraGraphState(names, window, dims, projectors, node_encoders=encoders), norm),
            "graphs",
            mapper,
            prior,
        )
    else:
        served = ServingModel(
            scorer, meta, _normalized(lambda: FeatureWindow(names, window, dims), norm), "features", mapper, prior
        )
    check_test_window(served, f"model {path}")
    return served


def check_test_window(model: ServingModel, where: str) -> None:
    """Score two test windows (one clip of ones; then a second, different clip) through the real
    backend and per-camera state: a model whose weights are not finite or overflow float32, or
    whose graph does not take the inputs its metadata declares, fails here with one line instead
    of dead-lettering every record later."""
    st = model.new_state()
    scores = []
    try:
        for clip in (1.0, 0.5):
            st.push({k: np.linspace(clip, 1.0, int(model.meta.dims[k]), dtype=np.float32) for k in model.names})
            scores.append(float(np.asarray(model.score([st.window()]), np.float64).reshape(-1)[0]))
    except FusewatchError as e:
        raise CheckpointError(f"{where}: cannot score a test window ({one_line(e)[:300]})") from None
    except Exception as e:  # ONNX Runtime / TensorRT / numpy errors from the file's graph and weights
        if not isinstance(e, (ValueError, RuntimeError, ArithmeticError, MemoryError)) and not _runtime_error(e):
            raise
        raise CheckpointError(
            f"{where}: cannot score a test window ({type(e).__name__}: {one_line(e)[:300]})"
        ) from None
    if not all(np.isfinite(s) and 0.0 <= s <= 1.0 for s in scores):
        raise CheckpointError(
            f"{where}: scores a test window as {scores} (expected finite scores in [0, 1]: weights or "
            "statistics that are not finite or overflow float32)"
        )


def _runtime_error(e: BaseException) -> bool:
    """An exception raised by ONNX Runtime or TensorRT (their own classes derive from Exception)."""
    return type(e).__module__.split(".")[0] in ("onnxruntime", "tensorrt", "tensorrt_rtx")
