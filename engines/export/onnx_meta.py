"""Read the fusewatch metadata of an exported ONNX model, torch-free (the runtime install serves
exported models without torch). Keys: see :mod:`fusewatch.engines.export.onnx`, which writes them
and re-exports these readers."""

from __future__ import annotations

import base64
import io
import json
import os
from typing import Any, Callable, Mapping

import numpy as np
import onnx

from fusewatch.engines.fusion.meta import ModelMeta
from fusewatch.engines.fusion.numpy_ops import numpy_affine
from fusewatch.errors import CheckpointError


def read_onnx_meta(model: str | os.PathLike | onnx.ModelProto) -> ModelMeta:
    """Parse fusewatch ``metadata_props`` → :class:`ModelMeta` whose flat form has ints (``N``, ``P``, ``Q``, ``proj_dim``,
    ``node_dim`` — 0 for files exported before the node branch existed —, also ``window``), bool ``softplus``, decoded JSON (``representations``, ``dims``, ``inputs``,
    ``config``, ``build_kwargs``) and the other strings as-is. Raises ``ValueError`` if the file was
    not exported by fusewatch."""
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False)
    raw = {p.key: p.value for p in proto.metadata_props}
    if raw.get("producer") != "fusewatch":
        raise CheckpointError(
            f"{getattr(model, 'name', model) if isinstance(model, onnx.ModelProto) else model}: "
            "not a fusewatch ONNX export (no producer=fusewatch metadata)"
        )
    out: dict[str, Any] = dict(raw)
    for k in ("N", "P", "Q", "proj_dim"):
        if k in raw:
            out[k] = int(raw[k])
    out["node_dim"] = int(raw.get("node_dim", 0) or 0)
    for k in (
        "representations",
        "dims",
        "inputs",
        "config",
        "build_kwargs",
        "extractor_versions",
        "alert_thresholds",
        "feature_norm",
        "motion_prior",
    ):
        if k in raw:
            out[k] = json.loads(raw[k])
    out["softplus"] = raw.get("softplus") == "true"
    out["window"] = out.get("N")
    out["order_p"], out["order_q"] = out.get("P"), out.get("Q")
    return ModelMeta.from_dict(out)


def onnx_projectors(meta: Mapping[str, Any]) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """numpy projectors (as :meth:`fusewatch.engines.fusion.lego.LegoModel.projectors`) from :func:`read_onnx_meta`
    output; empty dict when the model does not project."""
    return _affine_from_blob(meta, "projection")


def onnx_node_encoders(meta: Mapping[str, Any]) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """numpy node encoders ``u_m`` (as :meth:`fusewatch.engines.fusion.lego.LegoModel.node_encoders`) from
    :func:`read_onnx_meta` output — what :class:`fusewatch.engines.serving.state.CameraGraphState` needs to
    produce the ``U`` input of a graphs-in export; empty dict when the model has no node branch."""
    return _affine_from_blob(meta, "node_encoders")


def _affine_from_blob(meta: Mapping[str, Any], key: str) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    blob = meta.get(key)
    if not blob:
        return {}
    arrs = np.load(io.BytesIO(base64.b64decode(blob)))
    out = {}
    for i, name in enumerate(meta["representations"]):
        w = arrs[f"W_{i}"].astype(np.float64)
        b = arrs[f"b_{i}"].astype(np.float64)
        out[name] = numpy_affine(w, b)
    return out
