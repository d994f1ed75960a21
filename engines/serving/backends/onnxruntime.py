"""ONNX Runtime backend (CPU execution provider)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from fusewatch.engines.serving.backends.base import Scorer, read_export_metas
from fusewatch.errors import CheckpointError


class OrtScorer(Scorer):
    """ONNX Runtime scorer over fusewatch exports.

    Args:
        paths: ``{form: onnx path}`` (forms ``graphs`` / ``features``) or one path (its form is
            read from the metadata). All files must come from the same model (``model_version``).
        threads: intra-op threads (0 = runtime default). providers: ORT providers
            (default ``["CPUExecutionProvider"]``).
    """

    backend = "onnxruntime"

    def __init__(
        self,
        paths: Mapping[str, str | os.PathLike] | str | os.PathLike,
        threads: int = 0,
        providers: Sequence[str] | None = None,
    ):
        import onnxruntime as ort

        paths, metas = read_export_metas(paths)
        meta = next(iter(metas.values()))
        super().__init__(meta, tuple(paths), max_batch=None)
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.threads = threads
        self.paths = {f: Path(p) for f, p in paths.items()}
        self.sessions = {f: _session(ort, p, so, providers) for f, p in self.paths.items()}
        self._inputs = {f: [i.name for i in s.get_inputs()] for f, s in self.sessions.items()}

    @classmethod
    def from_model(
        cls,
        model,
        meta: Mapping[str, Any] | None = None,
        cache_dir: str | os.PathLike | None = None,
        threads: int = 0,
        forms: Sequence[str] | None = None,
    ) -> OrtScorer:
        """Export ``model`` (cached by model version under ``cache_dir``) and open it."""
        from fusewatch.engines.serving.backends.artifacts import (
            _default_cache,
            _export_paths,
        )

        return cls(
            _export_paths(model, meta, Path(cache_dir) if cache_dir else _default_cache() / "onnx", forms),
            threads=threads,
        )

    def _run(self, form: str, arrays) -> np.ndarray:
        sess = self.sessions[form]
        return sess.run(None, dict(zip(self._inputs[form], arrays)))[0]

    def _run_graphs(self, r, mask, present, u=None):
        return self._run("graphs", (r, mask, present) if u is None else (r, mask, present, u))

    def _run_features(self, *arrays):
        return self._run("features", arrays)

    def close(self) -> None:
        self.sessions = {}


def _session(ort, path: Path, so, providers: Sequence[str] | None):
    """An ``InferenceSession`` on ``path``; ONNX Runtime refusing the file (invalid graph, unknown
    operator, external data outside its folder …) is a one-line :class:`CheckpointError` naming it."""
    try:
        return ort.InferenceSession(str(path), so, providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as e:
        if type(e).__module__.split(".")[0] != "onnxruntime":
            raise
        msg = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise CheckpointError(f"model {path}: ONNX Runtime cannot load it ({msg[:300]})") from None
