"""ONNX export of the fusion models (fixed ``N`` and dims, dynamic batch axis only).

Two forms:

* ``features`` — raw features in: inputs ``feat_0 … feat_{M-1}`` (``B×N×d_m`` float32, in
  ``representations`` order), ``mask`` ``B×N``, ``present`` ``B×M``; all fusion types.
* ``graphs`` — LEGO only, fed by :class:`fusewatch.engines.serving.state.CameraGraphState`: inputs ``R``
  ``B×M×N×N`` (base cosine graphs), ``mask`` ``B×N``, ``present`` ``B×M`` and, for models with a
  node branch (``node_dim = k > 0``), ``U`` ``B×M×N×k`` (per-representation node signals
  ``u_m(x)``, ``present`` not applied). This is what the service runs.

Output: ``scores`` ``B×N`` float32. Only the batch axis is symbolic (``"batch"``); the graphs
contain no ``Shape``/``Size`` ops (reshapes use constant shapes with ``-1`` for the batch).

ONNX ``metadata_props`` (all strings; :func:`read_onnx_meta` parses them back into a
:class:`fusewatch.engines.fusion.meta.ModelMeta`): ``producer``
(``fusewatch``), ``format_version``, ``form``, ``fusion``, ``N``, ``P``, ``Q``, ``expansion``,
``softplus``, ``proj_dim``, ``node_dim``, ``representations`` (JSON list), ``dims`` (JSON object),
``model_version``, ``inputs`` (JSON list), ``config`` (JSON), ``build_kwargs`` (JSON),
``extractor_versions`` (JSON object, representation → extractor version of the training features;
empty when the training data carried none), ``alert_thresholds`` (JSON, when calibrated),
``feature_norm`` (JSON ``{rep: {"mean", "std"}}`` base64 float32, when the model normalises its
features: the graphs take NORMALISED features — the caller applies the statistics, as the engine's
per-camera state does, :mod:`fusewatch.engines.fusion.normalize`) and, when
the model projects features (``proj_dim > 0``), ``projection`` (base64 ``.npz`` of ``W_i``/``b_i``)
and, with a node branch (``node_dim > 0``), ``node_encoders`` (same format) — needed to build the
incremental state from an ONNX file alone, see :func:`onnx_projectors` / :func:`onnx_node_encoders`.
Files exported before the node branch existed have no ``node_dim`` (read as 0).
"""

from __future__ import annotations

import base64
import copy
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from fusewatch.engines.export.onnx_meta import onnx_node_encoders, onnx_projectors, read_onnx_meta  # noqa: F401  (torch-free readers, re-exported)
from fusewatch.engines.fusion.base import FusionModel
from fusewatch.engines.fusion.lego import LegoModel
from fusewatch.engines.fusion.meta import ModelMeta
from fusewatch.engines.fusion.normalize import encode_feature_norm
from fusewatch.errors import ExportError

FORMS = ("graphs", "features")
OUTPUT_NAME = "scores"
META_FORMAT_VERSION = "1"


class GraphsWrapper(nn.Module):
    """``(R B×M×N×N, mask B×N, present B×M[, U B×M×N×k]) → scores B×N`` with the fusion mixing
    folded into constants."""

    def __init__(self, model: LegoModel):
        super().__init__()
        self.model = model
        with torch.no_grad():
            w, idx = model._mixing(None)
        self.register_buffer("w", w.detach().clone())
        self.register_buffer("idx", idx.detach().clone())

    def forward(self, r: Tensor, mask: Tensor, present: Tensor, u: Tensor | None = None) -> Tensor:
        m = self.model
        e = m.expansions(r, mask, present)
        um = None
        if m.node_enc is not None:
            um = m._node_matrix(torch.where(mask.reshape(-1, 1, m.window, 1) > 0.5, u, 0.0), mask, present)
        return m.head(m.fuse_with(e, self.w, self.idx), mask, um)


class FeaturesWrapper(nn.Module):
    """``(feat_0 … feat_{M-1}, mask, present) → scores B×N``."""

    def __init__(self, model: FusionModel):
        super().__init__()
        self.model = model
        self.lego = isinstance(model, LegoModel)
        if self.lego:
            with torch.no_grad():
                w, idx = model._mixing(None)
            self.register_buffer("w", w.detach().clone())
            self.register_buffer("idx", idx.detach().clone())

    def forward(self, *args: Tensor) -> Tensor:
        feats, mask, present = list(args[:-2]), args[-2], args[-1]
        m = self.model
        if not self.lego:
            return m(feats, mask, present)
        lst, mask, present = m._inputs(feats, mask, present)
        e = m.expansions(m._base_graphs(lst, mask), mask, present)
        um = m._node_matrix(m._node_signals(lst, mask), mask, present) if m.node_enc is not None else None
        return m.head(m.fuse_with(e, self.w, self.idx), mask, um)


def input_names(model: FusionModel, form: str) -> list[str]:
    if form == "graphs":
        return ["R", "mask", "present"] + (["U"] if getattr(model, "node_dim", 0) else [])
    return [f"feat_{i}" for i in range(model.num_reps)] + ["mask", "present"]


def example_inputs(
    model: FusionModel, form: str, batch: int = 2, seed: int = 0, dtype=np.float32
) -> dict[str, np.ndarray]:
    """Random valid inputs ``{input name: array}`` for ``form`` (front padding on odd rows,
    one missing representation on row 1 when ``M > 1``)."""
    rng = np.random.default_rng(seed)
    n, m = model.window, model.num_reps
    mask = np.ones((batch, n), dtype)
    for b in range(0, batch, 2):
        mask[b, : (b * 7) % n] = 0
    present = np.ones((batch, m), dtype)
    if m > 1 and batch > 1:
        present[1, m - 1] = 0
    out: dict[str, np.ndarray] = {}
    if form == "graphs":
        z = rng.standard_normal((batch, m, n, 16)).astype(dtype)
        z /= np.linalg.norm(z, axis=-1, keepdims=True)
        z *= mask[:, None, :, None]
        out["R"] = (z @ np.swapaxes(z, -1, -2)).astype(dtype)
        k = getattr(model, "node_dim", 0)
        if k:
            out["U"] = (rng.standard_normal((batch, m, n, k)) * mask[:, None, :, None]).astype(dtype)
    else:
        for i, name in enumerate(model.names):
            out[f"feat_{i}"] = rng.standard_normal((batch, n, model.dims[name])).astype(dtype)
    out["mask"] = mask
    out["present"] = present
    return out


def _projection_blob(model: FusionModel) -> str | None:
    if not isinstance(model, LegoModel) or model.proj is None:
        return None
    return _linear_blob(model.proj)


def _node_encoder_blob(model: FusionModel) -> str | None:
    if not isinstance(model, LegoModel) or model.node_enc is None:
        return None
    return _linear_blob(model.node_enc)


def _linear_blob(linears) -> str:
    """base64 ``.npz`` of ``W_i`` / ``b_i`` (float32) for a list of ``nn.Linear``."""
    arrs = {}
    for i, lin in enumerate(linears):
        arrs[f"W_{i}"] = lin.weight.detach().cpu().float().numpy()
        arrs[f"b_{i}"] = lin.bias.detach().cpu().float().numpy()
    buf = io.BytesIO()
    np.savez(buf, **arrs)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def export_onnx(
    model: FusionModel,
    meta: Mapping[str, Any] | None,
    path: str | os.PathLike,
    form: str = "graphs",
    opset: int = 17,
    *,
    exporter: str = "auto",
) -> Path:
    """Export ``model`` to ``path`` (see the module doc for the two forms and the metadata).

    Args:
        model: a built model (any fusion for ``features``; LEGO only for ``graphs``).
        meta: metadata from :func:`fusewatch.engines.training.checkpoint.load_model` / :func:`model_meta` (None: computed).
        form: ``graphs`` | ``features``. opset: ONNX opset (default 17).
        exporter: ``auto`` (legacy TorchScript exporter, falling back to dynamo), ``legacy``, ``dynamo``.
    Returns the written path. The export runs on a CPU float32 copy in eval mode.
    """
    from fusewatch.engines.training.checkpoint import model_meta  # local: checkpoint imports model only

    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS} (got {form!r})")
    if form == "graphs" and not isinstance(model, LegoModel):
        raise ValueError(f"form='graphs' needs a LEGO model (fusion={model.fusion!r}); use form='features'")
    meta = ModelMeta.from_dict(meta) if meta else model_meta(model)
    if not meta.model_version:
        meta = ModelMeta.from_dict({**meta.to_dict(), **model_meta(model).to_dict()})
    m = copy.deepcopy(model).cpu().float().eval()
    wrapper = (GraphsWrapper(m) if form == "graphs" else FeaturesWrapper(m)).eval()
    names = input_names(m, form)
    ex = example_inputs(m, form, batch=2)
    args = tuple(torch.from_numpy(ex[k]) for k in names)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    errors = []
    order = {"auto": ("legacy", "dynamo"), "legacy": ("legacy",), "dynamo": ("dynamo",)}[exporter]
    for kind in order:
        try:
            _torch_export(wrapper, args, names, tmp, opset, kind)
            break
        except Exception as e:  # noqa: BLE001 - try the next exporter, report all at the end
            errors.append(f"{kind}: {type(e).__name__}: {e}")
    else:
        raise ExportError("ONNX export failed: " + " | ".join(errors))
    proto = onnx.load(str(tmp))
    tmp.unlink(missing_ok=True)
    _finalize(proto, m, meta, form, names)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)
    return path


def _torch_export(wrapper: nn.Module, args: tuple, names: list[str], path: Path, opset: int, kind: str) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if kind == "legacy":
            dyn = {n: {0: "batch"} for n in names + [OUTPUT_NAME]}
            torch.onnx.export(
                wrapper,
                args,
                str(path),
                dynamo=False,
                input_names=names,
                output_names=[OUTPUT_NAME],
                dynamic_axes=dyn,
                opset_version=opset,
                do_constant_folding=True,
            )
        else:
            batch = torch.export.Dim("batch", min=1, max=65536)
            shapes = tuple({0: batch} for _ in names)
            if isinstance(wrapper, FeaturesWrapper):  # forward(*args): one varargs entry
                shapes = (shapes,)
            torch.onnx.export(
                wrapper,
                args,
                str(path),
                dynamo=True,
                input_names=names,
                output_names=[OUTPUT_NAME],
                dynamic_shapes=shapes,
                opset_version=opset,
                external_data=False,
                optimize=True,
            )


def _finalize(proto: onnx.ModelProto, model: FusionModel, meta: ModelMeta, form: str, names: list[str]) -> None:
    """Fixed batch-axis name, no doc strings, metadata_props."""
    g = proto.graph
    for vi in list(g.input) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"
    out_dims = g.output[0].type.tensor_type.shape.dim
    if len(out_dims) == 2:  # scores: batch × N (the exporter may leave N symbolic)
        out_dims[1].Clear()
        out_dims[1].dim_value = model.window
    for node in g.node:
        node.doc_string = ""
    proto.producer_name = "fusewatch"
    c = dict(meta.config or model.config)
    props = {
        "producer": "fusewatch",
        "format_version": META_FORMAT_VERSION,
        "form": form,
        "fusion": model.fusion,
        "N": str(model.window),
        "P": str(c.get("order_p", getattr(model, "order_p", 0))),
        "Q": str(c.get("order_q", getattr(model, "order_q", 0))),
        "expansion": str(c.get("expansion", getattr(model, "expansion", ""))),
        "softplus": str(bool(c.get("softplus", False))).lower(),
        "proj_dim": str(int(c.get("proj_dim", 0) or 0)),
        "node_dim": str(int(getattr(model, "node_dim", 0) or 0)),
        "representations": json.dumps(list(model.names)),
        "dims": json.dumps({k: int(v) for k, v in model.dims.items()}),
        "model_version": meta.model_version,
        "inputs": json.dumps(names),
        "config": json.dumps(c, sort_keys=True),
        "build_kwargs": json.dumps(dict(meta.build_kwargs or model.build_kwargs), sort_keys=True),
        "extractor_versions": json.dumps(dict(meta.extractor_versions or {}), sort_keys=True),
    }
    clips = {k: meta.extra.get(k) for k in ("clip_len", "clip_stride") if type(meta.extra.get(k)) is int}
    if clips:  # the training features' clip settings: `worker/replay --model` checks the stream's
        props["clips"] = json.dumps(clips, sort_keys=True)
    norm = meta.feature_norm or encode_feature_norm(getattr(model, "feature_norm", None))
    if norm:  # applied by the caller (the engine state), not inside the graph
        props["feature_norm"] = json.dumps(dict(norm), sort_keys=True)
    prior = meta.motion_prior or getattr(model, "motion_prior", None)
    if prior:  # applied by the caller (the engine), not inside the graph
        props["motion_prior"] = json.dumps(dict(prior), sort_keys=True)
    if isinstance(meta.alert_thresholds, Mapping):
        props["alert_thresholds"] = json.dumps(dict(meta.alert_thresholds), sort_keys=True)
    blob = _projection_blob(model)
    if blob is not None:
        props["projection"] = blob
    blob = _node_encoder_blob(model)
    if blob is not None:
        props["node_encoders"] = blob
    del proto.metadata_props[:]
    for k, v in props.items():
        e = proto.metadata_props.add()
        e.key, e.value = k, v


def export_cached(
    model: FusionModel,
    meta: Mapping[str, Any] | None,
    cache_dir: str | os.PathLike,
    form: str = "graphs",
    opset: int = 17,
) -> Path:
    """Export once per ``(model_version, form, N, opset)`` into ``cache_dir``; returns the path."""
    from fusewatch.engines.training.checkpoint import model_meta

    meta = ModelMeta.from_dict(meta) if meta and meta.get("model_version") else model_meta(model)
    p = Path(cache_dir) / f"fusewatch-{meta.model_version}-{form}-N{model.window}-op{opset}.onnx"
    if not p.is_file():
        export_onnx(model, meta, p, form=form, opset=opset)
    return p
