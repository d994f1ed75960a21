"""Incremental relationship graphs per camera (numpy, no torch needed).

For each camera and representation a ring buffer holds the last ``N`` L2-normalised clip features
(after the model's projection, applied at insert time through a callable) together with the cached
``N×N`` cosine graph in ring order. A new clip overwrites one slot and recomputes one row + column:
``O(N·d)`` instead of ``O(N²·d)`` for a full recompute. Optionally the element-wise (Hadamard)
powers ``H^{∘p}``, ``H = ((R+1)/2) ⊙ (m mᵀ)``, are cached and updated row/column-wise too.

Node branch (models with ``node_dim = k > 0``, :meth:`fusewatch.engines.fusion.lego.LegoModel.node_encoders`): the
ring also holds each clip's node signal ``u_m(x)`` (``k`` values, computed once at insert time,
``O(d·k)``; 0 for a missing clip).

:meth:`CameraGraphState.window` returns ``(R M×N×N, mask N, present M)`` — plus ``U M×N×k`` when the
state has node encoders — in chronological order (oldest → newest, padding at the FRONT, newest
clip at row ``N-1``), float32, ready for :meth:`fusewatch.engines.fusion.lego.LegoModel.forward_graphs` / the
graphs-in ONNX (add a batch axis, or use :meth:`GraphStateStore.batch`).

Missing data: a representation absent for a clip (key missing / ``None`` / all-zero vector) gets a
zero row/col for that clip; ``present[m]`` is 1 iff at least one real clip of the window has it.
This matches the batch path of :class:`fusewatch.engines.fusion.lego.LegoModel` fed with zero feature rows.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from fusewatch.engines.fusion.numpy_ops import EPS_NORM

Projector = Callable[[np.ndarray], np.ndarray]


def encoder_dim(f: Projector, name: str = "") -> int:
    """Output size of a numpy affine callable (``out_dim`` attribute or ``weight`` rows, as made by
    :func:`fusewatch.engines.fusion.numpy_ops.numpy_linear` / :func:`fusewatch.engines.export.onnx.onnx_node_encoders`)."""
    k = getattr(f, "out_dim", None)
    if k is None and getattr(f, "weight", None) is not None:
        k = np.shape(f.weight)[0]  # type: ignore[attr-defined]
    if k is None:
        raise ValueError(f"node encoder {name!r}: unknown output size (give node_dim)")
    return int(k)


class IncrementalGraph:
    """One representation of one camera.

    Args:
        window: ``N``. dim: expected raw feature dim ``d`` (checked when given).
        project: optional callable ``x (d,) → (k,)`` applied before normalisation.
        dtype: storage/compute dtype (float32 default; float64 for exact checks).
        hadamard_order: cache ``H^{∘p}`` for ``p = 1..hadamard_order`` (0: none).
        node_encoder: optional callable ``x (d,) → (k,)`` (the model's ``u_m``) applied to the raw
            feature; its outputs are kept in the ring (:meth:`node_signals`). node_dim: ``k``
            (default: read from the callable).
    """

    def __init__(
        self,
        window: int,
        dim: int | None = None,
        project: Projector | None = None,
        dtype=np.float32,
        hadamard_order: int = 0,
        name: str = "",
        node_encoder: Projector | None = None,
        node_dim: int | None = None,
    ):
        if window < 1:
            raise ValueError("window must be >= 1")
        self.n = int(window)
        self.dim = dim
        self.project = project
        self.dtype = np.dtype(dtype)
        self.order = int(hadamard_order)
        self.name = name
        self.z: np.ndarray | None = None  # N×k normalised features, ring order
        self.r = np.zeros((self.n, self.n), self.dtype)  # cosine graph, ring order
        self.filled = np.zeros(self.n, bool)  # slot holds a clip
        self.has = np.zeros(self.n, bool)  # slot holds this representation
        self.h = np.zeros((self.order, self.n, self.n), self.dtype) if self.order else None
        self.encode = node_encoder
        self.node_dim = (
            (int(node_dim) if node_dim is not None else encoder_dim(node_encoder, name))
            if node_encoder is not None
            else 0
        )
        self.u = np.zeros((self.n, self.node_dim), self.dtype) if self.node_dim else None  # ring order
        self.count = 0

    def reset(self) -> None:
        self.z = None
        self.r[:] = 0
        if self.u is not None:
            self.u[:] = 0
        self.filled[:] = False
        self.has[:] = False
        if self.h is not None:
            self.h[:] = 0
        self.count = 0

    def _embed(self, x) -> np.ndarray | None:
        return self._prepare(x)[0]

    def _prepare(self, x) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Validate a raw clip feature → ``(normalised embedding, node signal)``; ``(None, None)``
        for a missing clip. Changes no state."""
        if x is None:
            return None, None
        x = np.asarray(x)
        if x.ndim != 1:
            raise ValueError(f"{self.name or 'feature'}: expected a 1-D vector, got shape {x.shape}")
        if self.dim is not None and x.shape[0] != self.dim:
            raise ValueError(f"{self.name or 'feature'}: expected dim {self.dim}, got {x.shape[0]}")
        with np.errstate(over="ignore", invalid="ignore"):
            x = x.astype(self.dtype, copy=False)  # float64 beyond float32's range → inf
            if not np.all(np.isfinite(x)):
                raise ValueError(f"{self.name or 'feature'}: non-finite values (after the cast to {self.dtype})")
            if not np.any(x):
                return None, None  # all-zero = missing (as in the model)
            z = np.asarray(self.project(x), dtype=self.dtype) if self.project is not None else x
            z64 = z.astype(np.float64)  # |z|² of float32 values cannot overflow
            ss = float(np.dot(z64, z64))
            u = None
            if self.encode is not None:
                u = np.asarray(self.encode(x), dtype=self.dtype).reshape(-1)
                if u.shape[0] != self.node_dim:
                    raise ValueError(
                        f"{self.name or 'feature'}: node encoder gave {u.shape[0]} values, expected {self.node_dim}"
                    )
            if not (np.isfinite(ss) and (u is None or np.all(np.isfinite(u)))):
                raise ValueError(
                    f"{self.name or 'feature'}: values too large (projection or node signal not finite in {self.dtype})"
                )
            return (z64 / np.sqrt(max(ss, EPS_NORM))).astype(self.dtype), u

    def push(self, x: np.ndarray | None) -> None:
        """Insert the next clip's raw feature ``x`` (``d``) or ``None`` (missing). ``O(N·d + d·k)``."""
        self.insert(*self._prepare(x))

    def insert(self, z: np.ndarray | None, u: np.ndarray | None = None) -> None:
        """Insert an already projected + normalised vector (or ``None``) and, with a node encoder,
        its node signal ``u`` (``k``; ``None`` = 0); see :meth:`push`."""
        s = self.count % self.n
        if self.u is not None:
            self.u[s] = 0 if u is None or z is None else u
        if z is not None and self.z is None:
            self.z = np.zeros((self.n, z.shape[0]), self.dtype)
        if self.z is not None:
            if z is not None and z.shape[0] != self.z.shape[1]:
                raise ValueError(f"{self.name or 'feature'}: embedded dim changed ({self.z.shape[1]} → {z.shape[0]})")
            self.z[s] = 0 if z is None else z
            row = self.z @ self.z[s] if z is not None else np.zeros(self.n, self.dtype)
        else:
            row = np.zeros(self.n, self.dtype)
        self.filled[s] = True
        self.has[s] = z is not None
        self.r[s, :] = row
        self.r[:, s] = row
        if self.h is not None:
            hr = (row + 1) * self.dtype.type(0.5) * self.filled
            cur = hr
            for p in range(self.order):
                if p:
                    cur = cur * hr
                self.h[p, s, :] = cur
                self.h[p, :, s] = cur
        self.count += 1

    def slots(self) -> np.ndarray:
        """Ring slots of the real clips in chronological order (oldest first), length ``min(count, N)``."""
        if self.count <= self.n:
            return np.arange(self.count)
        return (self.count + np.arange(self.n)) % self.n

    def _chrono(self, src: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Copy ring-ordered ``src`` (``...×N×N``) into chronological ``out`` with block copies
        (a rotation by the oldest slot) instead of fancy indexing."""
        n, c = self.n, min(self.count, self.n)
        if c < n:
            out[...] = 0
            if c:
                out[..., n - c :, n - c :] = src[..., :c, :c]
            return out
        s = self.count % n
        if s == 0:
            out[...] = src
            return out
        k = n - s
        out[..., :k, :k] = src[..., s:, s:]
        out[..., :k, k:] = src[..., s:, :s]
        out[..., k:, :k] = src[..., :s, s:]
        out[..., k:, k:] = src[..., :s, :s]
        return out

    def node_signals(self, out: np.ndarray | None = None) -> np.ndarray:
        """Chronological node signals ``N×k`` (front padding and missing clips are 0)."""
        if self.u is None:
            raise RuntimeError(f"{self.name or 'graph'}: no node encoder")
        n, c = self.n, min(self.count, self.n)
        out = np.empty((n, self.node_dim), self.dtype) if out is None else out
        if c < n:
            out[...] = 0
            if c:
                out[n - c :] = self.u[:c]
            return out
        s = self.count % n
        out[: n - s] = self.u[s:]
        out[n - s :] = self.u[:s]
        return out

    def graph(self, out: np.ndarray | None = None) -> np.ndarray:
        """Chronological ``N×N`` cosine graph (padding rows/cols at the front are 0)."""
        out = np.empty((self.n, self.n), self.dtype) if out is None else out
        return self._chrono(self.r, out)

    def hadamard_powers(self) -> np.ndarray:
        """Chronological ``H^{∘p}`` for ``p = 1..hadamard_order`` → ``P×N×N`` (``present`` NOT
        applied: equals ``expand_graphs(..., present=1, mode='hadamard')[p]``)."""
        if self.h is None:
            raise RuntimeError("hadamard_order=0: no Hadamard cache")
        return self._chrono(self.h, np.empty((self.order, self.n, self.n), self.dtype))

    def present(self) -> bool:
        """True iff at least one clip of the current window has this representation."""
        return bool(self.has.any() if self.count >= self.n else self.has[: self.count].any())


Window = tuple  # (R, mask, present) or (R, mask, present, U)


class CameraGraphState:
    """Incremental graphs of one camera for all ``M`` representations.

    Args:
        names: representation names (order of ``R``'s first axis / ``present``).
        window: ``N``. dims: optional ``{name: d_m}`` (raw dims, validated on push).
        projectors: optional ``{name: callable (d_m,) → (k,)}`` (the model's learned projection;
            see :meth:`fusewatch.engines.fusion.lego.LegoModel.projectors`).
        dtype: internal dtype (outputs of :meth:`window` are always float32).
        hadamard_order: also cache element-wise powers up to this order.
        node_encoders: ``{name: callable (d_m,) → (node_dim,)}`` for EVERY representation (the
            model's node branch, :meth:`fusewatch.engines.fusion.lego.LegoModel.node_encoders` /
            :func:`fusewatch.engines.export.onnx.onnx_node_encoders`); empty/None: no node branch.
        node_dim: ``k`` (default: read from the encoders).

    Attributes: ``node_dim`` (0 without node branch).
    """

    def __init__(
        self,
        names: Sequence[str],
        window: int,
        dims: Mapping[str, int] | None = None,
        projectors: Mapping[str, Projector] | None = None,
        dtype=np.float32,
        hadamard_order: int = 0,
        node_encoders: Mapping[str, Projector] | None = None,
        node_dim: int | None = None,
    ):
        self.names = list(names)
        self.n = int(window)
        projectors = projectors or {}
        node_encoders = dict(node_encoders or {})
        if node_encoders:
            missing = [nm for nm in self.names if nm not in node_encoders]
            if missing:
                raise ValueError(f"node_encoders: no encoder for representation(s) {missing}")
            dims_k = {encoder_dim(node_encoders[nm], nm) if node_dim is None else int(node_dim) for nm in self.names}
            if len(dims_k) != 1:
                raise ValueError(f"node_encoders: output sizes differ ({sorted(dims_k)})")
            node_dim = dims_k.pop()
        else:
            node_dim = None
        self.node_dim = int(node_dim or 0)
        self.graphs = [
            IncrementalGraph(
                self.n,
                (dims or {}).get(nm),
                projectors.get(nm),
                dtype,
                hadamard_order,
                nm,
                node_encoders.get(nm),
                node_dim,
            )
            for nm in self.names
        ]

    @classmethod
    def from_model(cls, model, dtype=np.float32, hadamard_order: int = 0) -> CameraGraphState:
        """State matching a :class:`fusewatch.engines.fusion.lego.LegoModel` (names, window, dims, projections,
        node encoders)."""
        enc = model.node_encoders() if hasattr(model, "node_encoders") else {}
        return cls(model.names, model.window, model.dims, model.projectors(), dtype, hadamard_order, node_encoders=enc)

    @property
    def count(self) -> int:
        """Clips pushed so far (including those that left the window)."""
        return self.graphs[0].count

    def __len__(self) -> int:
        return min(self.count, self.n)

    def reset(self) -> None:
        for g in self.graphs:
            g.reset()

    def push(self, feats: Mapping[str, np.ndarray | None]) -> None:
        """Add one clip: ``feats[name]`` raw feature vectors ``(d_m,)``; a missing key or ``None``
        marks that representation as missing for this clip. Unknown keys are ignored.
        Validates everything before changing any state."""
        prepared = [g._prepare(feats.get(nm)) for nm, g in zip(self.names, self.graphs)]
        for g, (z, u) in zip(self.graphs, prepared):
            g.insert(z, u)

    def empty_window(self) -> Window:
        """Zero arrays shaped like :meth:`window`'s output (e.g. to preallocate)."""
        m, n = len(self.names), self.n
        out = (np.zeros((m, n, n), np.float32), np.zeros(n, np.float32), np.zeros(m, np.float32))
        if self.node_dim:
            out += (np.zeros((m, n, self.node_dim), np.float32),)
        return out

    def window(self, out: Window | None = None) -> Window:
        """→ ``(R M×N×N, mask N, present M)`` float32, chronological with front padding, plus
        ``U M×N×k`` (node signals, ``present`` not applied) when the state has node encoders.
        ``out``: optional preallocated arrays of those shapes (e.g. rows of a batch) to fill."""
        n = self.n
        if out is None:
            out = self.empty_window()
        if len(out) != 3 + bool(self.node_dim):
            raise ValueError(f"window(out=...): expected {3 + bool(self.node_dim)} arrays, got {len(out)}")
        r, mask, present = out[:3]
        c = len(self)
        for i, g in enumerate(self.graphs):
            if g.dtype == np.float32:
                g.graph(out=r[i])
                if self.node_dim:
                    g.node_signals(out=out[3][i])
            else:
                r[i] = g.graph()
                if self.node_dim:
                    out[3][i] = g.node_signals()
            present[i] = 1.0 if g.present() else 0.0
        mask[:] = 0
        mask[n - c :] = 1
        return out

    def hadamard_window(self) -> np.ndarray:
        """Chronological cached Hadamard powers ``M×P×N×N`` (float32; ``present`` not applied)."""
        return np.stack([g.hadamard_powers() for g in self.graphs]).astype(np.float32, copy=False)


class GraphStateStore:
    """``camera → CameraGraphState`` with optional LRU eviction and batch assembly.

    Args: as :class:`CameraGraphState`, plus ``max_cameras`` (None: unbounded; else least recently
    pushed cameras are evicted).
    """

    def __init__(
        self,
        names: Sequence[str],
        window: int,
        dims: Mapping[str, int] | None = None,
        projectors: Mapping[str, Projector] | None = None,
        dtype=np.float32,
        max_cameras: int | None = None,
        node_encoders: Mapping[str, Projector] | None = None,
    ):
        self.names = list(names)
        self.n = int(window)
        self._kw = dict(dims=dims, projectors=projectors, dtype=dtype, node_encoders=node_encoders)
        self.node_dim = CameraGraphState(self.names, self.n, **self._kw).node_dim
        self.max_cameras = max_cameras
        self._states: OrderedDict[str, CameraGraphState] = OrderedDict()

    @classmethod
    def from_model(cls, model, dtype=np.float32, max_cameras: int | None = None) -> GraphStateStore:
        enc = model.node_encoders() if hasattr(model, "node_encoders") else {}
        return cls(model.names, model.window, model.dims, model.projectors(), dtype, max_cameras, node_encoders=enc)

    def __contains__(self, camera: str) -> bool:
        return camera in self._states

    def __len__(self) -> int:
        return len(self._states)

    def cameras(self) -> list[str]:
        return list(self._states)

    def get(self, camera: str) -> CameraGraphState:
        """The camera's state (created empty if unknown)."""
        st = self._states.get(camera)
        if st is None:
            st = CameraGraphState(self.names, self.n, **self._kw)
            self._states[camera] = st
            if self.max_cameras is not None:
                while len(self._states) > self.max_cameras:
                    self._states.popitem(last=False)
        return st

    def push(self, camera: str, feats: Mapping[str, np.ndarray | None]) -> CameraGraphState:
        st = self.get(camera)
        st.push(feats)
        self._states.move_to_end(camera)
        return st

    def drop(self, camera: str) -> None:
        self._states.pop(camera, None)

    def batch(self, cameras: Iterable[str]) -> Window:
        """→ ``(R B×M×N×N, mask B×N, present B×M)`` float32 for these cameras (in order), plus
        ``U B×M×N×k`` with node encoders."""
        cams = list(cameras)
        m, n = len(self.names), self.n
        out = (
            np.zeros((len(cams), m, n, n), np.float32),
            np.zeros((len(cams), n), np.float32),
            np.zeros((len(cams), m), np.float32),
        )
        if self.node_dim:
            out += (np.zeros((len(cams), m, n, self.node_dim), np.float32),)
        for b, cam in enumerate(cams):
            self.get(cam).window(out=tuple(a[b] for a in out))
        return out
