"""Engine micro-benchmarks (CPU): LEGO scoring throughput and incremental graph updates.

    python bench/engine.py [--threads 2] [--json OUT.json] [--quick]

1. windows/s of the LEGO model for torch (eager) vs ONNX Runtime at batch 1/16/64, for both
   forms: ``graphs`` (expansion + fusion + head, fed by incremental graphs — what the service
   runs) and ``features`` (everything from raw clip features). N=32, three representations
   (1280/1280/128: two CNN embeddings + audio), P=Q=2.
2. Per-clip cost of the incremental graph update (push, push + window assembly) vs a full
   recompute of the window's cosine graphs, at N=32 and N=128, and the ratios. The state has the
   default node branch (``node_dim`` 16: one ``Linear(d_m, 16)`` per clip and representation at
   push time, the ``U`` array assembled with the window); the recompute does the same for the
   whole window.

Every figure is the median of repeated timings (after warm-up).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fusewatch.engines.export.onnx import example_inputs, export_onnx  # noqa: E402
from fusewatch.engines.fusion.factory import build_model  # noqa: E402
from fusewatch.engines.fusion.graphs import np_l2_normalize  # noqa: E402
from fusewatch.engines.fusion.names import EXPANSIONS  # noqa: E402
from fusewatch.engines.serving.backends.onnxruntime import OrtScorer  # noqa: E402
from fusewatch.engines.serving.backends.torch import TorchScorer  # noqa: E402
from fusewatch.engines.serving.state import CameraGraphState  # noqa: E402
from fusewatch.engines.training.checkpoint import model_meta  # noqa: E402
from fusewatch.stream.config import ModelConfig  # noqa: E402

DIMS = {"mobilenetv2": 1280, "effnet_lite0": 1280, "audio": 128}


def _median_time(fn, min_reps: int = 5, budget_s: float = 0.6, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    ts: list[float] = []
    t_end = time.perf_counter() + budget_s
    while len(ts) < min_reps or (time.perf_counter() < t_end and len(ts) < 2000):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def bench_scoring(threads: int, batches: list[int], budget: float, expansion: str) -> dict:
    torch.manual_seed(0)
    cfg = ModelConfig(window=32, representations=list(DIMS), expansion=expansion, order_p=2, order_q=2)
    model = build_model(cfg, DIMS).eval()
    meta = model_meta(model)
    with tempfile.TemporaryDirectory() as d:
        paths = {f: export_onnx(model, meta, Path(d) / f"{f}.onnx", form=f) for f in ("graphs", "features")}
        ort_s = OrtScorer(paths, threads=threads)
        torch_s = TorchScorer(model, meta)
        results: dict = {"graphs": {}, "features": {}}
        outputs: dict = {}
        # one backend at a time: torch's OpenMP workers and ORT's spinning pool must not overlap
        for backend, sc in (("torch", torch_s), ("onnxruntime", ort_s)):
            for form in ("graphs", "features"):
                for b in batches:
                    ex = example_inputs(model, form, batch=b, seed=b)
                    if form == "graphs":
                        fn = lambda sc=sc, ex=ex: sc.score_graphs(ex["R"], ex["mask"], ex["present"], ex.get("U"))
                    else:
                        feats = [ex[f"feat_{i}"] for i in range(model.num_reps)]
                        fn = lambda sc=sc, ex=ex, feats=feats: sc.score_features(feats, ex["mask"], ex["present"])
                    t = _median_time(fn, budget_s=budget)
                    results[form].setdefault(backend, {})[str(b)] = {"median_s": t, "windows_per_s": b / t}
                    outputs[(backend, form, b)] = fn()
        for form in ("graphs", "features"):
            results[form]["max_abs_diff"] = {
                str(b): float(np.abs(outputs[("torch", form, b)] - outputs[("onnxruntime", form, b)]).max())
                for b in batches
            }
        ort_s.close()
    return results


def bench_incremental(windows: list[int], reps: int, budget: float) -> dict:
    rng = np.random.default_rng(0)
    names = list(DIMS)
    out: dict = {}
    for n in windows:
        stream = [{k: rng.standard_normal(d).astype(np.float32) for k, d in DIMS.items()} for _ in range(n + reps)]
        torch.manual_seed(0)
        model = build_model(ModelConfig(window=n, representations=names), DIMS).eval()
        st = CameraGraphState.from_model(model)
        enc = model.node_encoders()
        for c in stream[:n]:
            st.push(c)  # fill the window (steady state: ring wrap-around)
        it = iter(stream[n:] * 1000)
        push_t = _median_time(lambda: st.push(next(it)), min_reps=reps, budget_s=budget)
        buf = st.empty_window()
        win_t = _median_time(lambda: st.window(out=buf), min_reps=reps, budget_s=budget)
        raw = {k: np.stack([c[k] for c in stream[:n]]) for k in names}

        def recompute():
            r = np.empty((len(names), n, n), np.float32)
            u = np.empty((len(names), n, st.node_dim), np.float32)
            for i, k in enumerate(names):
                z = np_l2_normalize(raw[k])
                np.matmul(z, z.T, out=r[i])
                if enc:
                    u[i] = enc[k](raw[k])
            return r, u

        rec_t = _median_time(recompute, min_reps=reps, budget_s=budget)
        out[str(n)] = {
            "push_s": push_t,
            "window_s": win_t,
            "push_plus_window_s": push_t + win_t,
            "recompute_s": rec_t,
            "speedup_push": rec_t / push_t,
            "speedup_push_plus_window": rec_t / (push_t + win_t),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="ORT intra-op and torch threads (default 2)")
    ap.add_argument("--expansion", default=EXPANSIONS[0], choices=EXPANSIONS)
    ap.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    ap.add_argument("--quick", action="store_true", help="shorter timing budgets (noisier)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    budget = 0.25 if a.quick else 0.8
    t0 = time.perf_counter()
    try:  # the incremental path is single-threaded numpy per camera: compare like with like
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            incr = bench_incremental([32, 128], reps=50, budget=budget / 2)
    except ImportError:
        incr = bench_incremental([32, 128], reps=50, budget=budget / 2)
    scoring = bench_scoring(a.threads, [1, 16, 64], budget, a.expansion)
    res = {
        "env": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "onnxruntime": __import__("onnxruntime").__version__,
            "threads": a.threads,
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
        },
        "model": {
            "fusion": "lego",
            "N": 32,
            "P": 2,
            "Q": 2,
            "expansion": a.expansion,
            "dims": DIMS,
            "node_dim": ModelConfig().node_dim,
        },
        "scoring": scoring,
        "incremental": incr,
    }
    print(f"LEGO N=32 M=3 dims={list(DIMS.values())} P=Q=2 expansion={a.expansion} threads={a.threads}")
    print(
        f"{'form':<9} {'backend':<12} "
        + " ".join(f"{'b=' + str(b):>12}" for b in (1, 16, 64))
        + "   (windows/s, median)"
    )
    for form in ("graphs", "features"):
        for be in ("torch", "onnxruntime"):
            row = " ".join(f"{scoring[form][be][str(b)]['windows_per_s']:>12,.0f}" for b in (1, 16, 64))
            print(f"{form:<9} {be:<12} {row}")
        print(
            f"{'':<9} {'max|Δ|':<12} "
            + " ".join(f"{scoring[form]['max_abs_diff'][str(b)]:>12.1e}" for b in (1, 16, 64))
        )
    print("\nincremental graph update per clip (3 reps, dims 1280/1280/128), median:")
    print(f"{'N':>5} {'push':>10} {'+window':>10} {'recompute':>10} {'ratio push':>11} {'ratio +win':>11}")
    for n, r in incr.items():
        print(
            f"{n:>5} {r['push_s'] * 1e6:>8.1f}µs {r['push_plus_window_s'] * 1e6:>8.1f}µs "
            f"{r['recompute_s'] * 1e6:>8.1f}µs {r['speedup_push']:>10.1f}x {r['speedup_push_plus_window']:>10.1f}x"
        )
    res["elapsed_s"] = time.perf_counter() - t0
    print(f"\n(total {res['elapsed_s']:.1f} s)")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
