"""Causal per-clip scoring of whole videos with a torch fusion model (validation, evaluation, benchmarks).

Per-clip scores (validation, evaluation, streaming) use one causal protocol, :func:`score_video`:
clip ``t`` is the LAST node of the window of clips ``[t−N+1 .. t]`` (front padding + mask at the start
of the video), exactly what the streaming engine computes; the other nodes' scores are discarded.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from fusewatch.engines.data.records import VideoFeatures
from fusewatch.engines.fusion.motion_prior import factor as motion_factor
from fusewatch.engines.fusion.motion_prior import window_score
from fusewatch.engines.fusion.normalize import normalize_rows
from fusewatch.engines.fusion.presence import fill_absent, present_flags


@torch.no_grad()
def score_video(
    model: nn.Module,
    feats_by_rep: Mapping[str, np.ndarray | Tensor],
    window: int | None = None,
    present: Sequence[float] | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Causal per-clip scores of one video, ``(T,)`` float32.

    Clip ``t`` is scored as the LAST node of the window of clips ``[t−N+1 .. t]`` (``N = window``,
    default ``model.window``); the first ``N−1`` clips get front padding + mask. All ``T`` windows
    are built as strided views and run in batches of ``batch_size``. ``feats_by_rep``: ``{name: T×d}``
    (representations the model does not know are ignored; a missing one is absent, ``present = 0``).
    ``present``: optional per-representation flags in ``model.names`` order.

    Scores are multiplied by the model's local-motion prior when it has one
    (:mod:`fusewatch.engines.fusion.motion_prior`). Raw features in: the model's feature normalisation (``model.feature_norm``, set by
    :func:`fusewatch.engines.training.checkpoint.load_model` and by training; see
    :mod:`fusewatch.engines.fusion.normalize`) is applied here, before padding, exactly as the
    engine's state applies it to each streamed clip.
    """
    names = list(getattr(model, "names", feats_by_rep.keys()))
    N = int(window or model.window)
    if hasattr(model, "window") and N != int(model.window):
        raise ValueError(f"score_video: window {N} differs from the model's window {model.window}")
    if device is None:
        try:
            device = next(model.parameters()).device
        except StopIteration:
            device = torch.device("cpu")
    arrs = {}
    T = None
    norm = getattr(model, "feature_norm", None) or {}
    for n in names:
        a = feats_by_rep.get(n)
        if a is None:
            continue
        if n in norm:
            a = normalize_rows(a.detach().cpu().numpy() if isinstance(a, Tensor) else a, norm[n])
        t = torch.as_tensor(np.asarray(a, dtype=np.float32) if not isinstance(a, Tensor) else a, dtype=torch.float32)
        if t.ndim != 2:
            raise ValueError(f"score_video: features {n!r} must be T×d (got shape {tuple(t.shape)})")
        if T is None:
            T = t.shape[0]
        elif t.shape[0] != T:
            raise ValueError(f"score_video: representation {n!r} has {t.shape[0]} clips, expected {T}")
        arrs[n] = torch.cat([t.new_zeros(N - 1, t.shape[1]), t], dim=0)  # (T+N−1)×d
    if T is None:
        raise ValueError(f"score_video: none of the model's representations {names} given")
    if T == 0:
        return np.zeros(0, dtype=np.float32)
    pres = torch.ones(len(names)) if present is None else torch.as_tensor(list(present), dtype=torch.float32)
    pres = pres * torch.from_numpy(present_flags(arrs, names))
    m = torch.cat([torch.zeros(N - 1), torch.ones(T)])
    win_mask = m.unfold(0, N, 1)  # T×N
    views = {n: a.unfold(0, N, 1).transpose(1, 2) for n, a in arrs.items()}  # T×N×d (strided)
    dims = getattr(model, "dims", {n: a.shape[1] for n, a in arrs.items()})
    prior = getattr(model, "motion_prior", None)
    was_training = model.training
    model.eval()
    out = np.empty(T, dtype=np.float32)
    try:
        for s in range(0, T, batch_size):
            e = min(T, s + batch_size)
            b = e - s
            lst, _ = fill_absent(
                {n: v[s:e].contiguous().to(device) for n, v in views.items()},
                names,
                lambda n: torch.zeros(b, N, int(dims[n]), device=device),  # noqa: B023 - called right here
            )
            feats = dict(zip(names, lst))
            pr = pres.unsqueeze(0).expand(b, -1).contiguous().to(device)
            y = model(feats, win_mask[s:e].contiguous().to(device), pr)
            out[s:e] = window_score(y.float().cpu().numpy(), win_mask[s:e].numpy(), prior)
    finally:
        model.train(was_training)
    if prior:  # the model's local-motion prior, from the raw features (as the engine applies it per clip)
        raw = {
            k: (v.detach().cpu().numpy() if isinstance(v, Tensor) else np.asarray(v)) for k, v in feats_by_rep.items()
        }
        out = (out * motion_factor(prior, raw)).astype(np.float32)
    return out


def score_dataset(model: nn.Module, videos: Sequence[VideoFeatures], batch_size: int = 256) -> dict[str, np.ndarray]:
    """:func:`score_video` for every video → ``{name: (T,) scores}``."""
    return {v.name: score_video(model, v.feats, batch_size=batch_size) for v in videos}
