"""Model artifacts for the backends: resolve a model argument (checkpoint, ONNX files, module) and
export/cache the ONNX forms a backend runs (``<cache>/onnx``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from fusewatch.engines.fusion.meta import ModelMeta
from fusewatch.engines.serving.backends.base import (
    BackendError,
)


def _resolve_model(model, meta):
    """→ (torch model | None, meta, onnx paths {form: path} | None). ONNX inputs never import torch."""
    if model is None:
        raise BackendError("select_backend: no model given (checkpoint .pt, exported .onnx or nn.Module)")
    if isinstance(model, Mapping):  # {form: onnx path}
        return None, None, {k: Path(v) for k, v in model.items()}
    if isinstance(model, (str, os.PathLike)) and Path(model).suffix == ".onnx":
        from fusewatch.engines.export.onnx_meta import read_onnx_meta

        return None, None, {read_onnx_meta(model)["form"]: Path(model)}
    from fusewatch.engines.fusion.base import FusionModel
    from fusewatch.engines.training.checkpoint import load_model, model_meta

    if isinstance(model, FusionModel):
        return model, (ModelMeta.from_dict(meta) if meta and meta.get("model_version") else model_meta(model)), None
    m, mt = load_model(Path(model))
    return m, mt, None


def _export_paths(model, meta, cache_dir, forms) -> dict[str, Path]:
    from fusewatch.engines.export.onnx import export_cached
    from fusewatch.engines.fusion.lego import LegoModel

    if forms is None:
        forms = ("graphs", "features") if isinstance(model, LegoModel) else ("features",)
    cache = Path(cache_dir) if cache_dir else _default_cache() / "onnx"
    return {f: export_cached(model, meta, cache, form=f) for f in forms}


def _default_cache() -> Path:
    try:
        from fusewatch.stream.config import CACHE_DIR

        return Path(CACHE_DIR)
    except Exception:  # noqa: BLE001
        return Path(os.environ.get("FUSEWATCH_CACHE", Path.home() / ".cache" / "fusewatch"))
