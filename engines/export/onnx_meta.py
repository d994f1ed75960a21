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
from fusewatch.engines.serving.model_checks import check_dims, check_meta, short
from fusewatch.errors import CheckpointError, one_line


def read_onnx_meta(model: str | os.PathLike | onnx.ModelProto) -> ModelMeta:
    """Parse fusewatch ``metadata_props`` → :class:`ModelMeta` whose flat form has ints (``N``, ``P``, ``Q``, ``proj_dim``,
    ``node_dim`` — 0 for files exported before the node branch existed —, also ``window``), bool ``softplus``, decoded JSON (``representations``, ``dims``, ``inputs``,
    ``config``, ``build_kwargs``) and the other strings as-is. Raises :class:`CheckpointError` (one
    line naming the file) if the file is not a readable fusewatch export, its metadata is outside
    the bounds of :func:`~fusewatch.engines.serving.model_checks.check_meta`, or its graph's inputs
    and output do not have the shapes the metadata declares (:func:`check_graph_io`)."""
    where = (
        f"model {getattr(model, 'name', '') or 'ModelProto'}"
        if isinstance(model, onnx.ModelProto)
        else f"model {model}"
    )
    if isinstance(model, onnx.ModelProto):
        proto = model
    else:
        try:
            proto = onnx.load(str(model), load_external_data=False)
        except Exception as e:  # noqa: BLE001 - protobuf's DecodeError & co: not an ONNX model
            raise CheckpointError(f"{where}: not a readable ONNX file ({one_line(e)[:200]})") from None
    raw = {p.key: p.value for p in proto.metadata_props}
    if raw.get("producer") != "fusewatch":
        raise CheckpointError(f"{where}: not a fusewatch ONNX export (no producer=fusewatch metadata)")
    try:
        out = _parse_props(raw)
        check_dims(out.get("representations"), out.get("dims"), where)
        meta = ModelMeta.from_dict(out)
    except CheckpointError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise CheckpointError(f"{where}: unreadable fusewatch metadata ({one_line(e)[:200]})") from None
    check_meta(meta, where)
    check_graph_io(proto, meta, where)
    return meta


def _parse_props(raw: Mapping[str, str]) -> dict[str, Any]:
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
        "clips",
    ):
        if k in raw:
            out[k] = json.loads(raw[k])
    if isinstance(out.get("clips"), dict):  # as a checkpoint's meta carries them
        out.update({k: v for k, v in out.pop("clips").items() if k in ("clip_len", "clip_stride")})
    out["softplus"] = raw.get("softplus") == "true"
    out["window"] = out.get("N")
    out["order_p"], out["order_q"] = out.get("P"), out.get("Q")
    return out


def expected_io(meta: ModelMeta) -> tuple[list[tuple[str, tuple[int, ...]]], tuple[int, ...]]:
    """``([(input name, shape after the batch axis)], output shape after the batch axis)`` of a
    fusewatch export of ``meta`` (module doc of :mod:`fusewatch.engines.export.onnx`)."""
    n, m = meta.window, len(meta.representations)
    if meta.form == "graphs":
        ins = [("R", (m, n, n)), ("mask", (n,)), ("present", (m,))]
        if meta.node_dim:
            ins.append(("U", (m, n, meta.node_dim)))
    else:
        ins = [(f"feat_{i}", (n, int(meta.dims[r]))) for i, r in enumerate(meta.representations)]
        ins += [("mask", (n,)), ("present", (m,))]
    return ins, (n,)


def check_graph_io(proto: onnx.ModelProto, meta: ModelMeta, where: str) -> None:
    """The graph's inputs (names, float32, shapes) and its first output must be what the metadata
    declares: the engine sizes its per-camera state from the metadata and feeds inputs by position."""
    ins, out_shape = expected_io(meta)
    init = {t.name for t in proto.graph.initializer}
    graph_in = [i for i in proto.graph.input if i.name not in init]

    def dims_of(vi) -> list[int | None]:
        return [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]

    if [i.name for i in graph_in] != [name for name, _ in ins]:
        raise CheckpointError(
            f"{where}: graph inputs {short([i.name for i in graph_in])} are not the {meta.form}-in form's "
            f"{[name for name, _ in ins]} (metadata form={meta.form!r}, node_dim={meta.node_dim})"
        )
    for vi, (name, shape) in zip(graph_in, ins):
        if vi.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise CheckpointError(f"{where}: input {name!r} is not float32")
        got = dims_of(vi)
        if len(got) != len(shape) + 1 or got[1:] != list(shape):
            raise CheckpointError(
                f"{where}: input {name!r} has shape {short(['batch', *got[1:]])}, the metadata declares "
                f"{['batch', *shape]}"
            )
    outs = list(proto.graph.output)
    shape = dims_of(outs[0]) if outs else []
    if (
        not outs
        or outs[0].type.tensor_type.elem_type != onnx.TensorProto.FLOAT
        or (shape and shape[1:] != list(out_shape))
    ):
        raise CheckpointError(
            f"{where}: the first graph output is not float32 scores of shape ['batch', {out_shape[0]}]"
        )


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
    """Decode a ``projection`` / ``node_encoders`` blob: base64 ``.npz`` (no pickles) of one
    ``W_i`` (``k × d_i``, ``k`` = ``proj_dim`` / ``node_dim``) and ``b_i`` (``k``) per representation,
    real and finite. Raises :class:`CheckpointError` naming ``meta["path"]`` (or the blob) otherwise."""
    blob = meta.get(key)
    if not blob:
        return {}
    where = f"model {meta.get('path') or '(ONNX metadata)'}: {key}"
    k = int(meta.get("proj_dim" if key == "projection" else "node_dim") or 0)
    out = {}
    try:
        with np.load(io.BytesIO(base64.b64decode(blob, validate=True)), allow_pickle=False) as arrs:
            for i, name in enumerate(meta["representations"]):
                d = int(meta["dims"][name])
                w, b = arrs[f"W_{i}"], arrs[f"b_{i}"]
                for a, want in ((w, (k, d)), (b, (k,))):
                    if a.dtype.kind != "f" or a.shape != want:
                        raise CheckpointError(
                            f"{where}: {name!r}: {a.dtype} array of shape {a.shape}, expected float {want}"
                        )
                    if not np.all(np.isfinite(a)):
                        raise CheckpointError(f"{where}: {name!r}: NaN or infinite values")
                out[name] = numpy_affine(w.astype(np.float64), b.astype(np.float64))
    except CheckpointError:
        raise
    except (ValueError, TypeError, KeyError, OSError, EOFError, AttributeError) as e:  # binascii.Error is a ValueError
        why = "it holds pickled objects, which are never loaded" if "pickle" in str(e) else one_line(e)[:200]
        raise CheckpointError(f"{where}: not a readable .npz of W_i/b_i arrays ({why})") from None
    return out
