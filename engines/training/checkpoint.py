"""Checkpoints: plain data only (config dict, state dict, dims, names, metadata).

A checkpoint is a ``torch.save`` of a dict containing only str/int/float/bool/None/list/dict and
tensors, so it loads with ``torch.load(weights_only=True)`` — no pickled classes, no code::

    {"format": "fusewatch-checkpoint", "format_version": 1,
     "config": {ModelConfig fields}, "build_kwargs": {...}, "dims": {name: d},
     "representations": [names], "state_dict": {param: tensor},
     "meta": {"model_version": "<16 hex of sha256 over config+weights>", "created": ISO time,
              "torch_version": ..., "feature_norm": {rep: {"mean": b64, "std": b64}} (optional),
              **user metadata}}

Feature normalisation (:mod:`fusewatch.engines.fusion.normalize`) is part of the model: it is held
in memory as ``model.feature_norm`` (``{rep: (mean, std)}``; absent/empty: none), stored under
``meta["feature_norm"]`` (base64 float32, still weights_only-loadable plain data; older fusewatch
versions load such a checkpoint and keep the key as unknown metadata) and covered by
``model_version`` (only when present, so checkpoints without it keep their hash).

:func:`load_model` returns ``(model, meta)`` where ``meta`` is a
:class:`fusewatch.engines.fusion.meta.ModelMeta` (its :meth:`~fusewatch.engines.fusion.meta.ModelMeta.to_dict`
is the flat dict described at :func:`model_meta`; what :func:`fusewatch.engines.export.onnx.export_onnx`
and the backends take).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any, Mapping

import torch

from fusewatch.engines.fusion.base import FusionModel
from fusewatch.engines.fusion.factory import build_model
from fusewatch.engines.fusion.meta import ModelMeta
from fusewatch.engines.fusion.motion_prior import check_prior
from fusewatch.engines.fusion.normalize import decode_feature_norm, encode_feature_norm
from fusewatch.engines.serving.model_checks import check_dims, check_meta, short

FORMAT = "fusewatch-checkpoint"
FORMAT_VERSION = 1


from fusewatch.errors import CheckpointError, one_line  # noqa: E402,F401 - CheckpointError re-exported


def weights_hash(model: FusionModel) -> str:
    """``model_version``: first 16 hex digits of sha256 over the config JSON, the feature
    normalisation (when the model has one) and every weight (names, dtypes, shapes, bytes, sorted by name)."""
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {"config": model.config, "dims": model.dims, "build_kwargs": model.build_kwargs}, sort_keys=True
        ).encode()
    )
    norm = encode_feature_norm(getattr(model, "feature_norm", None))
    if norm:
        h.update(json.dumps({"feature_norm": norm}, sort_keys=True).encode())
    prior = getattr(model, "motion_prior", None)
    if prior:
        h.update(json.dumps({"motion_prior": prior}, sort_keys=True).encode())
    for k, v in sorted(model.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:16]


def model_meta(model: FusionModel, extra: Mapping[str, Any] | None = None) -> ModelMeta:
    """Metadata of a built model; its flat dict form (:meth:`ModelMeta.to_dict`)::

        {"model_version", "config", "build_kwargs", "dims", "representations", "fusion", "window",
         "order_p", "order_q", "expansion", "softplus", "proj_dim", "node_dim", ...extra}

    ``node_dim`` is the model's node-branch width (0: none, always 0 for baselines).
    """
    c = dict(model.config)
    meta: dict[str, Any] = {
        "model_version": weights_hash(model),
        "config": c,
        "build_kwargs": dict(model.build_kwargs),
        "dims": dict(model.dims),
        "representations": list(model.names),
        "fusion": c.get("fusion", model.fusion),
        "window": model.window,
        "order_p": c.get("order_p"),
        "order_q": c.get("order_q"),
        "expansion": c.get("expansion"),
        "softplus": c.get("softplus"),
        "proj_dim": c.get("proj_dim"),
        "node_dim": int(getattr(model, "node_dim", 0) or 0),
    }
    norm = encode_feature_norm(getattr(model, "feature_norm", None))
    if norm:
        meta["feature_norm"] = norm
    if getattr(model, "motion_prior", None):
        meta["motion_prior"] = dict(model.motion_prior)
    if extra:
        meta.update({k: v for k, v in extra.items() if k not in meta})
    return ModelMeta.from_dict(meta)


def _plain(x: Any, where: str) -> Any:
    """Check that ``x`` is weights_only-loadable plain data."""
    if x is None:
        return x
    for t in (bool, str, int, float):  # coerce subclasses (np.float64, TorchVersion …) to builtins
        if isinstance(x, t):
            return t(x)
    if type(x).__module__ == "numpy" and hasattr(x, "item") and getattr(x, "ndim", 1) == 0:
        return _plain(x.item(), where)
    if isinstance(x, (list, tuple)):
        return [_plain(v, where) for v in x]
    if isinstance(x, Mapping):
        out = {}
        for k, v in x.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: metadata keys must be str (got {k!r})")
            out[k] = _plain(v, f"{where}.{k}")
        return out
    raise TypeError(
        f"{where}: unsupported metadata value of type {type(x).__name__} (use str/int/float/bool/None/list/dict)"
    )


def save_checkpoint(
    model: FusionModel, path: str | os.PathLike, metadata: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Save ``model`` (built by :func:`fusewatch.engines.fusion.factory.build_model`) to ``path`` atomically.

    ``metadata``: optional plain-data dict stored under ``meta`` (e.g. epoch, AUC, dataset).
    Returns the metadata written (with ``model_version``)."""
    if not model.config:
        raise ValueError("model has no .config: build it with fusewatch.engines.fusion.factory.build_model")
    meta = {
        "model_version": weights_hash(model),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "torch_version": str(torch.__version__),
    }
    meta.update(_plain(dict(metadata or {}), "metadata"))
    meta.pop("feature_norm", None)
    norm = encode_feature_norm(getattr(model, "feature_norm", None))
    if norm:
        meta["feature_norm"] = norm  # the model's own statistics, never stale metadata
    meta.pop("motion_prior", None)
    if getattr(model, "motion_prior", None):
        meta["motion_prior"] = _plain(dict(model.motion_prior), "motion_prior")
    meta["model_version"] = weights_hash(model)
    ckpt = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": _plain(dict(model.config), "config"),
        "build_kwargs": _plain(dict(model.build_kwargs), "build_kwargs"),
        "dims": {k: int(v) for k, v in model.dims.items()},
        "representations": list(model.names),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "meta": meta,
    }
    path = Path(path)
    check_writable_file(path, "checkpoint")
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        torch.save(ckpt, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # never leave a half-written temp file behind
        raise
    return meta


def check_writable_file(path: str | os.PathLike, what: str = "output") -> Path:
    """Create ``path``'s parent folders; raise :class:`CheckpointError` (one line) when ``path`` is a
    directory, lies under a file, or cannot be created — before any work is spent on it."""
    p = Path(path)
    if p.is_dir():
        raise CheckpointError(f"{what} {p}: is a directory (give a file path, e.g. {p / 'model.pt'})")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise CheckpointError(f"{what} {p}: a parent of it is a file, not a directory") from None
    except OSError as e:
        raise CheckpointError(f"{what} {p}: cannot create its folder ({e.strerror or e})") from None
    return p


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` + structure validation → the raw checkpoint dict.
    Raises :class:`CheckpointError` for missing files, pickles with code/classes, or wrong layout:
    field types, representation names, dims within the wire contract's bounds and weights that are
    finite floating-point tensors (:func:`check_structure`)."""
    p = Path(path)
    if p.is_dir():
        raise CheckpointError(f"checkpoint {p}: is a directory (expected a .pt file)")
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p}: not found")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        AttributeError,
        EOFError,
        ValueError,
        TypeError,
        ImportError,
        KeyError,
        OSError,
    ) as e:
        if p.suffix == ".onnx":
            raise CheckpointError(f"checkpoint {p}: is an ONNX file; this needs a .pt checkpoint") from None
        raise CheckpointError(
            f"checkpoint {p}: not a fusewatch checkpoint: torch.load(weights_only=True) refused it ({_load_error(e)})"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {p}: not a fusewatch checkpoint (missing format={FORMAT!r})")
    if ckpt.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {p}: unsupported format_version {short(ckpt.get('format_version'))}")
    ckpt.setdefault("build_kwargs", {})
    for key, typ in (
        ("config", dict),
        ("dims", dict),
        ("representations", list),
        ("state_dict", dict),
        ("meta", dict),
        ("build_kwargs", dict),
    ):
        if not isinstance(ckpt.get(key), typ):
            raise CheckpointError(f"checkpoint {p}: field {key!r} missing or not a {typ.__name__}")
    check_structure(ckpt, f"checkpoint {p}")
    return ckpt


def _load_error(e: BaseException) -> str:
    """What torch.load refused, in a few words: the blocked global or opcode of a pickle, else the
    first sentence of the error (never torch's advice to retry with ``weights_only=False``)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in lines:
        if "GLOBAL" in ln:
            return f"pickled code or classes: {ln[:200]}"
        if ln.startswith("Unsupported"):
            return f"not a torch.save file, or a pickle with content it does not accept: {ln[:100]}"
    first = next((ln for ln in lines if "weights_only" not in ln and "pytorch.org" not in ln), "")
    first = first.split(". ")[0][:200]
    if isinstance(e, EOFError):
        return "empty or truncated file"
    if isinstance(e, KeyError) or len(first) < 12:  # pickle's bare "invalid load key" codes
        return f"not a torch.save file ({type(e).__name__}: {first})" if first else type(e).__name__
    return first


def check_structure(ckpt: Mapping[str, Any], where: str) -> None:
    """Representation names and dims (:func:`~fusewatch.engines.serving.model_checks.check_dims`),
    string metadata keys, and a state dict of finite floating-point tensors with string keys."""
    check_dims(ckpt["representations"], ckpt["dims"], where)
    extra = [k for k in ckpt["dims"] if k not in ckpt["representations"]]
    if extra:
        raise CheckpointError(f"{where}: dims for unknown representation(s) {short(extra)}")
    for k, v in ckpt["state_dict"].items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{where}: weight {short(k)} is not a tensor (got {type(v).__name__})")
        if not v.is_floating_point():
            raise CheckpointError(f"{where}: weight {short(k)} has dtype {v.dtype} (expected floating point)")
        if v.layout != torch.strided:
            raise CheckpointError(f"{where}: weight {short(k)} is not a dense tensor ({v.layout})")
        if v.numel() and not bool(torch.isfinite(v).all()):
            raise CheckpointError(f"{where}: weight {short(k)} has NaN or infinite values")


def load_model(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", verify: bool = True
) -> tuple[FusionModel, ModelMeta]:
    """Load a checkpoint → ``(model in eval mode, meta)``.

    ``meta`` is :func:`model_meta` of the model plus the stored metadata (``created``, user keys)
    and ``"path"``. With ``verify``, the recomputed weights hash must equal the stored
    ``model_version`` (else :class:`CheckpointError`).

    Checkpoints saved before the LEGO node branch existed (config without ``node_dim``) load as
    they were trained: ``node_dim = 0`` and, for LEGO, the head on the raw rows of ``G``
    (``graph_norm = "none"``); their ``config`` / ``build_kwargs`` are kept as stored (same
    ``model_version``)."""
    ckpt = read_checkpoint(path)
    where = f"checkpoint {path}"
    cfg, kwargs = dict(ckpt["config"]), dict(ckpt["build_kwargs"])
    legacy = "node_dim" not in cfg
    if legacy:
        cfg["node_dim"] = 0
        if cfg.get("fusion", "lego") == "lego":
            kwargs.setdefault("graph_norm", "none")
    _check_weights(cfg, ckpt, kwargs, where)  # before anything is allocated from the config
    model = _build(cfg, ckpt["dims"], kwargs, where)
    if legacy:  # keep the stored dicts: same weights hash, and a re-save stays a legacy checkpoint
        model.config.pop("node_dim", None)
        model.build_kwargs = dict(ckpt["build_kwargs"])
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{where}: weights do not match the config ({one_line(e)[:300]})") from None
    model.to(map_location).eval()
    stored = dict(ckpt["meta"])
    version = stored.get("model_version")
    if version is not None and (not isinstance(version, str) or len(version) > 64):
        raise CheckpointError(f"{where}: meta.model_version must be a string of at most 64 characters")
    try:
        model.feature_norm = decode_feature_norm(stored.get("feature_norm"), model.dims)
        model.motion_prior = check_prior(stored.get("motion_prior"), model.dims)
        meta = model_meta(model, stored)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{where}: {one_line(e)[:300]}") from None
    check_meta(meta, where)
    if verify and version and version != meta.model_version:
        raise CheckpointError(f"{where}: model_version {version} does not match the weights ({meta.model_version})")
    _check_scores(model, where)
    return model, meta.replace(path=str(path))


def _build(cfg: Mapping[str, Any], dims: Mapping[str, int], kwargs: Mapping[str, Any], where: str) -> FusionModel:
    from pydantic import ValidationError

    from fusewatch.stream.config.errors import config_error

    try:
        return build_model(cfg, dims, **kwargs)
    except ValidationError as e:
        raise CheckpointError(f"{where}: invalid model config ({config_error(e, ('model',))})") from None
    except (ValueError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{where}: invalid model config ({one_line(e)[:300]})") from None


def _check_weights(cfg: Mapping[str, Any], ckpt: Mapping[str, Any], kwargs: Mapping[str, Any], where: str) -> None:
    """Build the model described by the file on torch's ``meta`` device (no memory) and compare its
    weight names and shapes with the file's: a config declaring huge dims or widths fails here
    instead of allocating them."""
    with torch.device("meta"):
        skeleton = _build(cfg, ckpt["dims"], kwargs, where)
    if list(ckpt["representations"]) != skeleton.names:
        raise CheckpointError(
            f"{where}: representations {short(ckpt['representations'])} do not match config {short(skeleton.names)}"
        )
    want = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items()}
    problems = []
    if missing := sorted(set(want) - set(got)):
        problems.append(f"missing {short(missing)}")
    if unexpected := sorted(set(got) - set(want)):
        problems.append(f"unexpected {short(unexpected)}")
    problems += [f"{short(k)} is {got[k]}, the config needs {want[k]}" for k in want if k in got and got[k] != want[k]]
    if problems:
        raise CheckpointError(f"{where}: weights do not match the config ({'; '.join(problems[:3])})")


def _check_scores(model: FusionModel, where: str) -> None:
    """Score one test window (two clips of ones): finite weights can still overflow float32."""
    import numpy as np

    from fusewatch.engines.evaluation.scoring import score_video

    feats = {n: np.ones((2, int(d)), np.float32) for n, d in model.dims.items()}
    try:
        s = score_video(model, feats)
    except (ValueError, RuntimeError) as e:
        raise CheckpointError(f"{where}: cannot score a test window ({one_line(e)[:200]})") from None
    if not (np.all(np.isfinite(s)) and float(s.min()) >= 0.0 and float(s.max()) <= 1.0):
        raise CheckpointError(
            f"{where}: scores a test window as {s.tolist()} (expected finite scores in [0, 1]: "
            "weights or statistics that overflow float32)"
        )
