"""GPU check that needs no TensorRT: the torch backend on CUDA against ONNX Runtime on CPU.

    PYTHONPATH=. python3 bench/gpu_check.py [--device cuda|cuda:N|cpu] [--batches 1,16,64]
                                            [--model M.pt] [--reps 20] [--json OUT]

Needs only numpy, torch, onnx and onnxruntime (no av / kafka / cv2 / msgpack / rich /
prometheus_client / TensorRT). Without ``--model`` a seeded random LEGO model at serving sizes is
used (N=32; mobilenetv2 1280, effnet_lite0 1280, flow 80; node branch on). TF32 is switched off in
torch so that FP32 parity is judged at FP32.

Checks, one summary line each (``PASS`` / ``FAIL`` + numbers):

* ``parity-graphs`` / ``parity-features``: torch on the device vs ONNX Runtime (CPU) on the same
  windows for every batch size; fails on any non-finite score or max |Δ| > 1e-4.
* ``absent``: windows with one representation absent and with all absent (all-zero inputs): finite
  and within 1e-4.
* ``incremental``: clips pushed one by one into :class:`fusewatch.engines.serving.state.CameraGraphState`
  (projections, node signals, missing clips); its windows scored on the device in the graphs-in form
  vs the features-in form on the raw windows (device) and ONNX Runtime: within 1e-4.
* ``throughput``: windows/s per batch for torch on the device and ONNX Runtime (reported; fails
  only when a rate is not finite/positive).

``--device cpu`` runs everything except CUDA (what CI runs). Exit status: 0 all checks passed,
1 a check failed, 2 the device is unavailable.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

TOL_FP32 = 1e-4
TOL_FP16 = 1e-2
DEFAULT_DIMS = {"mobilenetv2": 1280, "effnet_lite0": 1280, "flow": 80}
DEFAULT_N = 32


class Report:
    """Collects checks; prints one line per check."""

    def __init__(self):
        self.rows: list[dict] = []

    def check(self, name: str, ok: bool, **info) -> bool:
        self.rows.append({"check": name, "ok": bool(ok), **info})
        txt = " ".join(f"{k}={_fmt(v)}" for k, v in info.items())
        print(f"{'PASS' if ok else 'FAIL'} {name} {txt}", flush=True)
        return bool(ok)

    @property
    def ok(self) -> bool:
        return all(r["ok"] for r in self.rows)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, (list, tuple)):
        return ",".join(_fmt(x) for x in v)
    return str(v)


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a − b| (inf when either has a non-finite value or the shapes differ)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("inf")
    return float(np.abs(a - b).max()) if a.size else 0.0


def seeded_model(seed: int = 0, dims: dict | None = None, window: int | None = None):
    """A random LEGO model, the same for the same seed (weights → model_version → caches)."""
    import torch

    from fusewatch.engines.fusion.factory import build_model
    from fusewatch.stream.config import ModelConfig

    dims = dict(dims or DEFAULT_DIMS)
    torch.manual_seed(seed)
    return build_model(ModelConfig(window=window or DEFAULT_N, representations=list(dims)), dims).eval()


def load_or_build(model_path: str | None, seed: int):
    """→ (model, meta)."""
    from fusewatch.engines.training.checkpoint import load_model, model_meta

    if model_path:
        return load_model(model_path)
    m = seeded_model(seed)
    return m, model_meta(m)


def graph_windows(scorer, batch: int, rng, absent: str = "") -> tuple:
    """``(R B×M×N×N, mask B×N, present B×M, U B×M×N×k | None)`` of cosine graphs of random features;
    ``absent="one"``: representation 1 absent in every window, ``"all"``: nothing present."""
    m, n = len(scorer.names), scorer.window
    mask = np.ones((batch, n), np.float32)
    mask[::2, : n // 4] = 0  # front padding on even rows
    present = np.ones((batch, m), np.float32)
    rs = []
    for _name in scorer.names:
        z = rng.normal(size=(batch, n, 16)).astype(np.float32)
        z /= np.linalg.norm(z, axis=-1, keepdims=True)
        z *= mask[:, :, None]
        rs.append(z @ np.swapaxes(z, -1, -2))
    r = np.stack(rs, axis=1).astype(np.float32)
    nd = int(scorer.node_dim)
    u = (rng.normal(size=(batch, m, n, nd)) * mask[:, None, :, None]).astype(np.float32) if nd else None
    gone = [1 % m] if absent == "one" else (list(range(m)) if absent == "all" else [])
    for i in gone:
        present[:, i] = 0
        r[:, i] = 0
        if u is not None:
            u[:, i] = 0
    return r, mask, present, u


def feature_windows(scorer, batch: int, rng) -> tuple:
    """``({name: B×N×d}, mask B×N, present B×M)`` with front padding on even rows."""
    n = scorer.window
    mask = np.ones((batch, n), np.float32)
    mask[::2, : n // 4] = 0
    feats = {k: (rng.normal(size=(batch, n, d)) * mask[:, :, None]).astype(np.float32) for k, d in scorer.dims.items()}
    return feats, mask, np.ones((batch, len(scorer.names)), np.float32)


def rate(fn, batch: int, reps: int) -> float:
    """windows/s: ``batch`` / median seconds of ``reps`` calls (after one warm-up)."""
    fn()
    ts = []
    for _ in range(max(1, reps)):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return batch / max(statistics.median(ts), 1e-9)


def parity_checks(rep: Report, test, ref, batches, rng, tol: float, label: str, reps: int) -> None:
    """parity-graphs, parity-features, absent, throughput of scorer ``test`` vs ``ref``."""
    rates = {}
    for form in ("graphs", "features"):
        if form not in test.forms or form not in ref.forms:
            continue
        diffs = []
        for b in batches:
            if form == "graphs":
                args = graph_windows(ref, b, rng)
                a, r = test.score_graphs(*args), ref.score_graphs(*args)
                rates[b] = (
                    rate(lambda: test.score_graphs(*args), b, reps),
                    rate(lambda: ref.score_graphs(*args), b, reps),
                )
            else:
                args = feature_windows(ref, b, rng)
                a, r = test.score_features(*args), ref.score_features(*args)
            diffs.append(max_diff(a, r))
        worst = max(diffs)
        rep.check(
            f"parity-{form}",
            worst <= tol,
            test=label,
            batches=list(batches),
            max_abs_diff=worst,
            per_batch=diffs,
            tol=tol,
        )
    if "graphs" in test.forms:
        diffs = []
        for absent in ("one", "all"):
            args = graph_windows(ref, 4, rng, absent=absent)
            diffs.append(max_diff(test.score_graphs(*args), ref.score_graphs(*args)))
        rep.check("absent", max(diffs) <= tol, test=label, one_absent=diffs[0], all_absent=diffs[1], tol=tol)
    if rates:
        ok = all(np.isfinite(x) and x > 0 for pair in rates.values() for x in pair)
        rep.check(
            "throughput",
            ok,
            test=label,
            batches=list(rates),
            test_windows_per_s=[round(v[0]) for v in rates.values()],
            ort_windows_per_s=[round(v[1]) for v in rates.values()],
        )


def incremental_check(rep: Report, model, scorer, ort, rng, clips: int = 40, tol: float = TOL_FP32) -> None:
    """CameraGraphState windows (graphs-in form on ``scorer``'s device) vs the features-in form on the
    raw windows (same device, and ONNX Runtime)."""
    from fusewatch.engines.serving.state import CameraGraphState

    names, n = list(model.names), model.window
    state = CameraGraphState.from_model(model)
    hist: list[dict] = []
    snaps, raw = [], []
    take = {1, n // 2, n, n + 3, clips}
    for t in range(1, clips + 1):
        clip = {k: rng.normal(size=model.dims[k]).astype(np.float32) * (1 + np.sin(t / 3)) for k in names}
        if t % 5 == 0:
            clip[names[-1]] = None  # representation missing for this clip
        state.push(clip)
        hist.append(clip)
        if t in take:
            snaps.append(state.window())
            last = hist[-n:]
            feats = {k: np.zeros((n, model.dims[k]), np.float32) for k in names}
            for j, c in enumerate(last):
                for k in names:
                    if c[k] is not None:
                        feats[k][n - len(last) + j] = c[k]
            mask = np.zeros(n, np.float32)
            mask[n - len(last) :] = 1
            present = np.array([any(c[k] is not None for c in last) for k in names], np.float32)
            raw.append((feats, mask, present))
    r = np.stack([s[0] for s in snaps])
    mask = np.stack([s[1] for s in snaps])
    present = np.stack([s[2] for s in snaps])
    u = np.stack([s[3] for s in snaps]) if len(snaps[0]) > 3 else None
    inc = scorer.score_graphs(r, mask, present, u)
    feats = {k: np.stack([x[0][k] for x in raw]) for k in names}
    fmask = np.stack([x[1] for x in raw])
    fpresent = np.stack([x[2] for x in raw])
    full = scorer.score_features(feats, fmask, fpresent)
    d_dev = max_diff(inc * fmask, full * fmask)
    d_ort = max_diff(inc * fmask, ort.score_features(feats, fmask, fpresent) * fmask)
    rep.check(
        "incremental",
        max(d_dev, d_ort) <= tol,
        windows=len(snaps),
        vs_features_same_device=d_dev,
        vs_features_ort=d_ort,
        tol=tol,
    )


def set_fp32_matmul(torch) -> None:
    """No TF32 in torch (matmul and cuDNN): FP32 parity is judged at FP32."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu (cpu: everything but CUDA)")
    ap.add_argument("--model", help="checkpoint (.pt); default: a seeded random LEGO model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--reps", type=int, default=20, help="timed calls per batch size")
    ap.add_argument("--tol", type=float, default=TOL_FP32, help="max |Δ| for the parity checks (default 1e-4)")
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args(argv)
    import onnxruntime
    import torch

    set_fp32_matmul(torch)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print(
                f"gpu_check: CUDA unavailable (torch {torch.__version__}, built for CUDA "
                f"{torch.version.cuda}); use --device cpu to run the CPU part",
                file=sys.stderr,
            )
            return 2
        idx = device.index or 0
        if idx >= torch.cuda.device_count():
            print(f"gpu_check: {device} does not exist ({torch.cuda.device_count()} visible)", file=sys.stderr)
            return 2
        gpu = torch.cuda.get_device_name(idx)
        cc = "{}.{}".format(*torch.cuda.get_device_capability(idx))
    else:
        gpu, cc = "none (cpu)", ""
    print(
        f"gpu_check: device={device} gpu={gpu!r} cc={cc} torch={torch.__version__} cuda={torch.version.cuda} "
        f"onnxruntime={onnxruntime.__version__} python={sys.version.split()[0]}",
        flush=True,
    )
    from fusewatch.engines.export.onnx import export_onnx
    from fusewatch.engines.serving.backends.onnxruntime import OrtScorer
    from fusewatch.engines.serving.backends.torch import TorchScorer

    t0 = time.perf_counter()
    model, meta = load_or_build(args.model, args.seed)
    batches = [int(x) for x in args.batches.split(",")]
    rep = Report()
    with tempfile.TemporaryDirectory() as d:
        forms = ("graphs", "features") if hasattr(model, "node_encoders") else ("features",)
        paths = {f: export_onnx(model, meta, Path(d) / f"{f}.onnx", form=f) for f in forms}
        ort = OrtScorer(paths)
        dev = TorchScorer(model, meta, device=str(device))
        rng = np.random.default_rng(args.seed)
        parity_checks(rep, dev, ort, batches, rng, args.tol, f"torch:{device}", args.reps)
        if "graphs" in forms:
            incremental_check(rep, model, dev, ort, rng, tol=args.tol)
    print(
        f"gpu_check: {'PASS' if rep.ok else 'FAIL'} ({sum(r['ok'] for r in rep.rows)}/{len(rep.rows)} checks, "
        f"{time.perf_counter() - t0:.1f} s)",
        flush=True,
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "device": str(device),
                    "gpu": gpu,
                    "compute_capability": cc,
                    "model": args.model or f"seeded random LEGO (seed {args.seed})",
                    "checks": rep.rows,
                },
                indent=1,
                default=str,
            )
        )
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
