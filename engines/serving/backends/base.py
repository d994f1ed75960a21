"""Backend-independent part: the :class:`Scorer` interface, :class:`BackendError` and the backend
names. Input/output shapes: see :mod:`fusewatch.engines.serving.backends`."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from fusewatch.engines.fusion.meta import ModelMeta
from fusewatch.errors import BackendError  # the common error root; re-exported here

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")


class BackendUnavailable(BackendError):
    """The backend's prerequisites are missing here (no GPU, library not installed or too old) — as
    opposed to a failure while building/loading it."""


def read_export_metas(
    paths: Mapping[str, str | os.PathLike] | str | os.PathLike,
) -> tuple[dict[str, Path], dict[str, dict[str, Any]]]:
    """``{form: onnx path}`` (or one path, form from its metadata) → ``(paths, {form: metadata})``.
    Raises :class:`BackendError` when a file's form differs from its key or the files come from
    different models."""
    from fusewatch.engines.export.onnx_meta import read_onnx_meta

    if not isinstance(paths, Mapping):
        paths = {read_onnx_meta(paths)["form"]: paths}
    paths = {f: Path(p) for f, p in paths.items()}
    metas = {f: read_onnx_meta(p) for f, p in paths.items()}
    for f, m in metas.items():
        if m.get("form") != f:
            raise BackendError(f"{paths[f]}: is a {m.get('form')!r} export, given as {f!r}")
    versions = {m.get("model_version") for m in metas.values()}
    if len(versions) > 1:
        raise BackendError(f"ONNX files come from different models: {sorted(map(str, versions))}")
    return paths, metas


class Scorer(ABC):
    """Common interface. Attributes: ``backend`` (name), ``meta`` (model metadata: ``model_version``,
    ``representations``, ``dims``, ``window``, ``fusion`` …), ``names``, ``dims``, ``window`` (N),
    ``node_dim`` (``k``; 0 = no node branch, the graphs-in form then takes no ``U``), ``forms`` (subset of ``{"graphs", "features"}`` this scorer can run), ``max_batch`` (None = any;
    larger batches are split transparently). :func:`fusewatch.engines.serving.backends.select_backend` also sets
    ``requested_backend`` (the name asked for, e.g. ``auto``) and ``fallback_reason`` (why ``auto``
    did not get TensorRT; empty when nothing fell back)."""

    backend = ""
    requested_backend = ""
    fallback_reason = ""

    def __init__(self, meta: ModelMeta | Mapping[str, Any], forms: Sequence[str], max_batch: int | None = None):
        self.meta: ModelMeta = ModelMeta.from_dict(meta)
        self.names: list[str] = list(self.meta.representations)
        self.dims: dict[str, int] = {k: int(v) for k, v in self.meta.dims.items()}
        self.window = self.meta.window
        self.node_dim = self.meta.node_dim
        self.forms = tuple(forms)
        self.max_batch = max_batch

    # -- public API -------------------------------------------------------------------------------
    def score_graphs(
        self, r: np.ndarray, mask: np.ndarray, present: np.ndarray | None = None, u: np.ndarray | None = None
    ) -> np.ndarray:
        """Scores ``B×N`` float32 from base graphs ``r`` ``B×M×N×N`` and, for models with a node
        branch, node signals ``u`` ``B×M×N×k`` (graphs-in form, LEGO only)."""
        if "graphs" not in self.forms:
            raise BackendError(
                f"{self.backend}: this model/export has no graphs-in form "
                f"(fusion={self.meta.fusion!r}, forms={list(self.forms)})"
            )
        arrays = self._graph_inputs(r, mask, present, u)
        return self._chunked(self._run_graphs, arrays)

    def score_features(
        self,
        feats: Mapping[str, np.ndarray | None] | Sequence[np.ndarray],
        mask: np.ndarray,
        present: np.ndarray | None = None,
    ) -> np.ndarray:
        """Scores ``B×N`` float32 from raw features (see module doc)."""
        if "features" not in self.forms:
            raise BackendError(f"{self.backend}: this model/export has no features-in form (forms={list(self.forms)})")
        arrs, mask, present = self._feature_inputs(feats, mask, present)
        return self._chunked(self._run_features, arrs + [mask, present])

    def close(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Release resources (idempotent)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model_version={self.meta.model_version!r}, "
            f"forms={list(self.forms)}, N={self.window}, reps={self.names})"
        )

    # -- to implement -----------------------------------------------------------------------------
    @abstractmethod
    def _run_graphs(
        self, r: np.ndarray, mask: np.ndarray, present: np.ndarray, u: np.ndarray | None = None
    ) -> np.ndarray:
        """``u`` is given iff ``self.node_dim > 0``."""

    @abstractmethod
    def _run_features(self, *arrays: np.ndarray) -> np.ndarray: ...

    # -- helpers ----------------------------------------------------------------------------------
    def _chunked(self, fn, arrays: list[np.ndarray]) -> np.ndarray:
        b = arrays[0].shape[0]
        if b == 0:
            return np.zeros((0, self.window), np.float32)
        if self.max_batch is None or b <= self.max_batch:
            return np.asarray(fn(*arrays), dtype=np.float32)
        outs = [fn(*[a[i : i + self.max_batch] for a in arrays]) for i in range(0, b, self.max_batch)]
        return np.concatenate(outs).astype(np.float32, copy=False)

    def _mask_present(self, b: int, mask, present) -> tuple[np.ndarray, np.ndarray]:
        m, n = len(self.names), self.window
        mask = np.ascontiguousarray(mask, dtype=np.float32)
        if mask.shape != (b, n):
            raise BackendError(f"mask: expected shape ({b}, {n}), got {mask.shape}")
        if present is None:
            present = np.ones((b, m), np.float32)
        present = np.ascontiguousarray(present, dtype=np.float32)
        if present.shape != (b, m):
            raise BackendError(f"present: expected shape ({b}, {m}), got {present.shape}")
        return mask, present

    def _graph_inputs(self, r, mask, present, u=None) -> list[np.ndarray]:
        r = np.ascontiguousarray(r, dtype=np.float32)
        m, n, k = len(self.names), self.window, self.node_dim
        if r.ndim != 4 or r.shape[1:] != (m, n, n):
            raise BackendError(f"R: expected shape (B, {m}, {n}, {n}), got {r.shape}")
        mask, present = self._mask_present(r.shape[0], mask, present)
        if not k:
            if u is not None:
                raise BackendError("U given but this model has no node branch (node_dim = 0)")
            return [r, mask, present]
        if u is None:
            raise BackendError(
                f"U (node signals, shape (B, {m}, {n}, {k})) is required: this model has a "
                f"node branch (node_dim = {k}); CameraGraphState.window() returns it"
            )
        u = np.ascontiguousarray(u, dtype=np.float32)
        if u.shape != (r.shape[0], m, n, k):
            raise BackendError(f"U: expected shape ({r.shape[0]}, {m}, {n}, {k}), got {u.shape}")
        return [r, mask, present, u]

    def _feature_inputs(self, feats, mask, present):
        mask = np.asarray(mask)
        b, n = mask.shape[0], self.window
        absent = []
        if isinstance(feats, Mapping):
            arrs = []
            for i, nm in enumerate(self.names):
                v = feats.get(nm)
                if v is None:
                    v = np.zeros((b, n, self.dims[nm]), np.float32)
                    absent.append(i)
                arrs.append(v)
        else:
            arrs = list(feats)
            if len(arrs) != len(self.names):
                raise BackendError(f"feats: expected {len(self.names)} arrays ({self.names}), got {len(arrs)}")
        out = []
        for nm, v in zip(self.names, arrs):
            v = np.ascontiguousarray(v, dtype=np.float32)
            if v.shape != (b, n, self.dims[nm]):
                raise BackendError(f"feats[{nm!r}]: expected shape ({b}, {n}, {self.dims[nm]}), got {v.shape}")
            out.append(v)
        mask, present = self._mask_present(b, mask, present)
        if absent:
            present = present.copy()
            present[:, absent] = 0
        return out, mask, present
