"""TensorRT check for a machine with an NVIDIA GPU and TensorRT >= 10.0 (exit 2 elsewhere).

    PYTHONPATH=. python3 bench/trt_check.py [--model M.pt] [--batches 1,16,64] [--fp16] [--tf32]
                                            [--device N] [--module tensorrt|tensorrt_rtx] [--json OUT]

Builds the TensorRT engines of BOTH ONNX forms (engine cache in ``<CACHE_DIR>/trt_check``; the seeded
default model is exported once per model version there, so a second run loads the cached engines)
and compares TensorRT with ONNX Runtime on CPU on the same windows. Without ``--model`` a seeded
random LEGO model at serving sizes is used (as in ``bench/gpu_check.py``).

Checks, one summary line each (``PASS`` / ``FAIL``): ``parity-graphs``, ``parity-features``
(every batch size), ``absent`` (one / all representations absent), ``throughput`` (windows/s of
TensorRT and ONNX Runtime per batch), ``engine-cache`` (a second scorer loads the engines instead of
building them). Failure: any non-finite score, or max |Δ| above 1e-4 in FP32 (TF32 off, the default)
or above 1e-2 with ``--fp16``. Exit status: 0 all passed, 1 a check failed, 2 TensorRT unusable here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from gpu_check import TOL_FP16, TOL_FP32, Report, load_or_build, parity_checks  # noqa: E402


def main(argv=None, cuda=None) -> int:
    """``cuda``: a :class:`fusewatch.engines.serving.backends.cuda.CudaOps` to use instead of torch's (tests)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="checkpoint (.pt); default: a seeded random LEGO model")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--fp16", action="store_true", help="FP16 engines (tolerance 1e-2)")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 (off by default; FP32 tolerance stays 1e-4)")
    ap.add_argument("--device", type=int, default=0, help="CUDA ordinal")
    ap.add_argument("--module", default="tensorrt", choices=("tensorrt", "tensorrt_rtx"))
    ap.add_argument("--reps", type=int, default=20, help="timed calls per batch size")
    ap.add_argument("--cache-dir", help="default <CACHE_DIR>/trt_check")
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args(argv)
    from fusewatch.engines.export.onnx import export_cached
    from fusewatch.engines.serving.backends import BackendError
    from fusewatch.engines.serving.backends.artifacts import _default_cache
    from fusewatch.engines.serving.backends.onnxruntime import OrtScorer
    from fusewatch.engines.serving.backends.tensorrt import TrtScorer

    cache = Path(args.cache_dir) if args.cache_dir else _default_cache() / "trt_check"
    model, meta = load_or_build(args.model, args.seed)
    forms = ("graphs", "features") if hasattr(model, "node_encoders") else ("features",)
    paths = {f: export_cached(model, meta, cache / "onnx", form=f) for f in forms}
    opts = dict(
        max_batch=args.max_batch,
        cache_dir=cache / "trt",
        fp16=args.fp16,
        tf32=args.tf32,
        device=args.device,
        module=args.module,
        cuda=cuda,
    )
    t0 = time.perf_counter()
    try:
        trt = TrtScorer(paths, **opts)
    except BackendError as e:
        print(f"trt_check: {e}", file=sys.stderr)
        return 2
    build_s = time.perf_counter() - t0
    print(
        f"trt_check: gpu={trt.gpu_name!r} cc={trt.compute_capability} {args.module}={trt.trt_version} "
        f"precision={trt.precision} tf32={'on' if args.tf32 else 'off'} engines={'built' if trt.built else 'cached'} "
        f"({build_s:.1f} s) model={args.model or f'seeded random LEGO (seed {args.seed})'}",
        flush=True,
    )
    ort = OrtScorer(paths)
    rep = Report()
    tol = TOL_FP16 if args.fp16 else TOL_FP32
    batches = [int(x) for x in args.batches.split(",")]
    parity_checks(
        rep, trt, ort, batches, np.random.default_rng(args.seed), tol, f"{args.module}:{trt.precision}", args.reps
    )
    again = TrtScorer(paths, **opts)
    rep.check(
        "engine-cache",
        again.built == [],
        built_first=",".join(trt.built) or "none (cached)",
        built_second=",".join(again.built) or "none",
        engines=",".join(p.name for p in again.engine_paths.values()),
    )
    print(
        f"trt_check: {'PASS' if rep.ok else 'FAIL'} ({sum(r['ok'] for r in rep.rows)}/{len(rep.rows)} checks)",
        flush=True,
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "gpu": trt.gpu_name,
                    "compute_capability": trt.compute_capability,
                    "trt_version": trt.trt_version,
                    "precision": trt.precision,
                    "checks": rep.rows,
                },
                indent=1,
                default=str,
            )
        )
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
