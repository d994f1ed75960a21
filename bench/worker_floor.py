"""A camera's irreducible CPU per frame for a set of extractors: an upper bound on cameras per core.

    python bench/worker.py --cameras 8 --floor [...]    (measured in the same run as the MultiWorker)

Each part is timed alone (process CPU time, one ONNX Runtime thread as configured) on the same
video, clip by clip, with nothing else running in the process:

* ``decode``          — PyAV decode + sampling to ``source.sample_fps`` + RGB at the working
                        resolution (``source.max_width``), the worker's source alone;
* ``cnn_inference``   — each CNN backbone's ONNX session on the clip's frames as one batch (the
                        cheapest way to run it: one call per clip, batch = frames through the CNN);
* ``optical_flow``    — the flow extractor's optical-flow call on each consecutive pair of the
                        clip's already-downscaled grey frames;
* ``cnn_preprocess`` and ``grey_downscale`` — the input preparation those two need (resize,
                        normalisation; grey conversion + downscale): needed, but reducible in
                        principle (e.g. fused into the decoder's scaler).

``floor`` = decode + cnn_inference + optical_flow, in ms of CPU per sampled frame; the bound is
``1000 / (sample_fps × floor)`` real-time cameras per core — what a worker that spent *nothing*
on preparing inputs, statistics, health, encoding or producing could serve. ``with_inputs`` adds
the two preparation parts. A target above the bound cannot be met by engineering the worker: only
by cheaper representations (or other hardware).
"""

from __future__ import annotations

import time

import numpy as np


def _cpu_ms(fn) -> tuple[float, object]:
    c0 = time.process_time()
    out = fn()
    return 1000.0 * (time.process_time() - c0), out


def floor(path: str, cfg, extractors, decode_only, iter_clips) -> dict:
    """Per-part CPU ms per sampled frame and the cameras-per-core bounds (module doc).

    ``decode_only`` / ``iter_clips``: bench/worker.py's decode-only stage and synchronous clip
    iterator (passed in to keep one copy of each)."""
    dec = decode_only(path, cfg, False)
    frames_sampled = max(1, dec["frames_sampled"])
    parts = {"cnn_preprocess": 0.0, "cnn_inference": 0.0, "grey_downscale": 0.0, "optical_flow": 0.0}
    frames = 0
    for clip in iter_clips(path, cfg):
        imgs = clip.frames
        frames += len(imgs)
        for e in extractors:
            if hasattr(e, "session") and hasattr(e, "prepare"):  # a CNN backbone
                ms, x = _cpu_ms(lambda e=e: e.prepare(imgs))
                parts["cnn_preprocess"] += ms
                ms, _ = _cpu_ms(lambda e=e, x=x: e.session.run(None, {e.input_name: x}))
                parts["cnn_inference"] += ms
            elif hasattr(e, "_flow") and hasattr(e, "_grey"):  # the optical-flow extractor
                size = e._size(imgs[0])
                ms, greys = _cpu_ms(lambda e=e, size=size: [e._grey(f, size) for f in imgs])
                parts["grey_downscale"] += ms
                ms, _ = _cpu_ms(lambda e=e, g=greys: [e._flow(a, b) for a, b in zip(g, g[1:])])
                parts["optical_flow"] += ms
    if frames == 0:
        raise SystemExit("bench/worker.py --floor: the video is shorter than one clip")
    per_frame = {k: v / frames for k, v in parts.items()}
    per_frame["decode"] = 1000.0 * dec["cpu_s"] / frames_sampled
    fps = float(cfg.source.sample_fps)
    floor_ms = per_frame["decode"] + per_frame["cnn_inference"] + per_frame["optical_flow"]
    inputs_ms = floor_ms + per_frame["cnn_preprocess"] + per_frame["grey_downscale"]
    return {
        "cpu_ms_per_frame": {k: float(np.round(v, 3)) for k, v in per_frame.items()},
        "frames": frames,
        "floor_ms_per_frame": floor_ms,
        "with_inputs_ms_per_frame": inputs_ms,
        "bound_cameras_per_core": 1000.0 / (fps * floor_ms),
        "bound_with_inputs_cameras_per_core": 1000.0 / (fps * inputs_ms),
    }


def report(res: dict, measured: float, target: float) -> str:
    """Two lines for the console: the parts and the bounds against the measured figure."""
    p = res["cpu_ms_per_frame"]
    parts = ", ".join(f"{k} {v:.2f}" for k, v in p.items())
    return (
        f"floor, CPU ms per sampled frame: {parts}\n"
        f"upper bound: {res['bound_cameras_per_core']:.2f} cameras/core if only decode + CNN inference + optical "
        f"flow cost anything, {res['bound_with_inputs_cameras_per_core']:.2f} with their input preparation; "
        f"measured {measured:.2f} ({measured / res['bound_cameras_per_core']:.0%} of the bound); target {target:g} "
        f"{'reachable' if res['bound_cameras_per_core'] >= target else 'ABOVE the bound: not reachable with these representations'}"
    )
