"""``ModelMeta``: what a trained fusion model says about itself, as one typed, frozen object.

Built by the checkpoint loader (:func:`fusewatch.engines.training.checkpoint.load_model` /
:func:`~fusewatch.engines.training.checkpoint.model_meta`) and the ONNX metadata reader
(:func:`fusewatch.engines.export.onnx.read_onnx_meta`); used by serving, evaluation, export and the
CLI. The on-disk forms do not change: :meth:`ModelMeta.to_dict` gives the flat dict those readers
returned before (every key they carried, unknown ones kept in :attr:`ModelMeta.extra`) and
:meth:`ModelMeta.from_dict` reads it back, from a checkpoint's metadata or from parsed ONNX
``metadata_props`` alike.

No torch import here: the serving side can use it with ONNX Runtime alone.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Iterator

_OPTIONAL = ("alert_thresholds", "extractor_versions", "feature_norm", "motion_prior", "form", "inputs", "path")
"""Fields written by :meth:`ModelMeta.to_dict` only when set (the on-disk forms omit them otherwise)."""


@dataclass(frozen=True, eq=False)
class ModelMeta(Mapping[str, Any]):
    """Metadata of a trained fusion model.

    Attributes:
        model_version: 16 hex digits of sha256 over config + weights ("" when unknown).
        fusion: ``lego | concat | add | mtn`` (:data:`fusewatch.engines.fusion.names.FUSIONS`).
        representations: representation names, in the model's input order (``M`` of them).
        dims: ``{name: d_m}`` feature dim per representation.
        window: ``N``, clip nodes per graph.
        order_p, order_q: LEGO expansion orders ``P``, ``Q`` (None when not recorded).
        expansion: ``matrix | hadamard`` (:data:`fusewatch.engines.fusion.names.EXPANSIONS`) or None.
        softplus, proj_dim, node_dim: the remaining LEGO hyper-parameters (``node_dim = k``, 0: no node branch).
        config: the ``ModelConfig`` as a plain dict. build_kwargs: extra constructor kwargs.
        alert_thresholds: calibrated ``{"on", "off", "normal_clips", "source", "videos"}`` or None.
        extractor_versions: ``{representation: extractor version}`` of the training features, or None.
        feature_norm: per-representation z-score statistics applied to raw features before the
            model, on-disk form ``{rep: {"mean": base64 float32, "std": base64 float32}}``
            (:mod:`fusewatch.engines.fusion.normalize`; decoded by :meth:`norm_stats`), or None
            (no normalisation: models trained with ``train.normalize = "none"`` or before it existed).
        motion_prior: ``{"mode": "product", "source", "ref"}`` (:mod:`fusewatch.engines.fusion.motion_prior`)
            or None (scores are the model's alone).
        form: ONNX export form (``graphs | features``), None for checkpoints.
        inputs: ONNX input names, None for checkpoints.
        path: the checkpoint file it was loaded from, or None.
        extra: every other key of the on-disk form (``created``, ``epoch``, ``val_auc``, ONNX ``N`` …).

    Read-only :class:`~collections.abc.Mapping` view of :meth:`to_dict` (``meta["window"]``,
    ``meta.get(...)``, ``dict(meta)``) for callers that still take the dict.
    """

    # The Mapping view is read-only compatibility for code that handles on-disk metadata dicts and
    # ModelMeta alike (``meta.get("model_version")``); typed code uses the attributes.

    model_version: str
    fusion: str
    representations: tuple[str, ...]
    dims: Mapping[str, int]
    window: int
    order_p: int | None = None
    order_q: int | None = None
    expansion: str | None = None
    softplus: bool = False
    proj_dim: int = 0
    node_dim: int = 0
    config: Mapping[str, Any] = field(default_factory=dict)
    build_kwargs: Mapping[str, Any] = field(default_factory=dict)
    alert_thresholds: Mapping[str, Any] | None = None
    extractor_versions: Mapping[str, str] | None = None
    feature_norm: Mapping[str, Mapping[str, str]] | None = None
    motion_prior: Mapping[str, Any] | None = None
    form: str | None = None
    inputs: tuple[str, ...] | None = None
    path: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [n for n in self.representations if n not in self.dims]
        if missing:
            raise ValueError(f"model metadata: no dim for representation(s) {missing}")
        object.__setattr__(self, "_flat", self._build_dict())

    # -- on-disk forms ------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelMeta:
        """From the flat dict of a checkpoint (``model_meta`` + stored metadata) or of parsed ONNX
        ``metadata_props`` (``window`` or ``N``); unknown keys go to :attr:`extra`."""
        if isinstance(d, ModelMeta):
            return d
        cfg = dict(d.get("config") or {})
        reps = d.get("representations", cfg.get("representations"))
        window = d.get("window", d.get("N", cfg.get("window")))
        if reps is None or d.get("dims") is None or window is None:
            raise ValueError("model metadata: representations, dims and window are required")
        known = {f.name for f in fields(cls)}
        inputs = d.get("inputs")
        return cls(
            model_version=str(d.get("model_version") or ""),
            fusion=str(d.get("fusion") or cfg.get("fusion") or ""),
            representations=tuple(reps),
            dims={str(k): int(v) for k, v in dict(d["dims"]).items()},
            window=int(window),
            order_p=_opt_int(d.get("order_p", d.get("P"))),
            order_q=_opt_int(d.get("order_q", d.get("Q"))),
            expansion=d.get("expansion"),
            softplus=bool(d.get("softplus", False)),
            proj_dim=int(d.get("proj_dim") or 0),
            node_dim=int(d.get("node_dim") or 0),
            config=cfg,
            build_kwargs=dict(d.get("build_kwargs") or {}),
            alert_thresholds=d.get("alert_thresholds"),
            extractor_versions=d.get("extractor_versions"),
            feature_norm=d.get("feature_norm") or None,
            motion_prior=d.get("motion_prior") or None,
            form=d.get("form"),
            inputs=tuple(inputs) if inputs is not None else None,
            path=d.get("path"),
            extra={k: v for k, v in d.items() if k not in known},
        )

    def to_dict(self) -> dict[str, Any]:
        """The flat on-disk dict (a deep copy; optional fields only when set)."""
        return copy.deepcopy(self._flat)  # type: ignore[attr-defined]

    def _build_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "model_version": self.model_version,
            "config": dict(self.config),
            "build_kwargs": dict(self.build_kwargs),
            "dims": dict(self.dims),
            "representations": list(self.representations),
            "fusion": self.fusion,
            "window": self.window,
            "order_p": self.order_p,
            "order_q": self.order_q,
            "expansion": self.expansion,
            "softplus": self.softplus,
            "proj_dim": self.proj_dim,
            "node_dim": self.node_dim,
        }
        for k in _OPTIONAL:
            v = getattr(self, k)
            if v is not None:
                d[k] = list(v) if k == "inputs" else (dict(v) if isinstance(v, Mapping) else v)
        d.update({k: v for k, v in self.extra.items() if k not in d})
        return d

    def norm_stats(self) -> dict[str, Any]:
        """Decoded :attr:`feature_norm` → ``{rep: (mean (d,), std (d,))}`` float32 (``{}`` when none)."""
        from fusewatch.engines.fusion.normalize import decode_feature_norm

        return decode_feature_norm(self.feature_norm, self.dims)

    def prior(self) -> dict[str, Any] | None:
        """Validated :attr:`motion_prior` (raises ValueError on a malformed entry)."""
        from fusewatch.engines.fusion.motion_prior import check_prior

        return check_prior(self.motion_prior, self.dims)

    def replace(self, **changes: Any) -> ModelMeta:
        """Copy with on-disk keys changed or added (``meta.replace(path="m.pt", name="lego")``)."""
        return ModelMeta.from_dict({**self._flat, **changes})  # type: ignore[attr-defined]

    # -- Mapping view (read-only) -------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        return self._flat[key]  # type: ignore[attr-defined]

    def __iter__(self) -> Iterator[str]:
        return iter(self._flat)  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(self._flat)  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return (
            f"ModelMeta(model_version={self.model_version!r}, fusion={self.fusion!r}, "
            f"representations={self.representations!r}, window={self.window}, node_dim={self.node_dim})"
        )


def _opt_int(x: Any) -> int | None:
    return None if x is None else int(x)
