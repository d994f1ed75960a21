"""TensorRT check for a machine with an NVIDIA GPU (not runnable on CPU-only machines).

    python bench/trt_check.py [--model M.pt] [--batches 1,16,64] [--json OUT]

Builds the TensorRT engine of the graphs-in ONNX (engine cache in ~/.cache/fusewatch/trt), scores
the same random windows with TensorRT and ONNX Runtime, prints max |TensorRT − ORT| and windows/s
per batch size for both. Without ``--model`` a random LEGO model (N=32; dims 1280/1280/80) is used.
Exit status 2 with the reason when TensorRT or a GPU is missing.
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


def windows(scorer, batch: int, rng) -> tuple:
    m, n = len(scorer.names), scorer.window
    z = {k: rng.normal(size=(batch, n, d)).astype(np.float32) for k, d in scorer.dims.items()}
    r = np.stack([np.einsum("bnd,bmd->bnm", *(2 * [z[k] / np.linalg.norm(z[k], axis=-1, keepdims=True)]))
                  for k in scorer.names], axis=1).astype(np.float32)
    mask = np.ones((batch, n), np.float32)
    present = np.ones((batch, m), np.float32)
    nd = int(scorer.meta.get("node_dim") or 0)
    u = rng.normal(size=(batch, m, n, nd)).astype(np.float32) if nd else None
    return r, mask, present, u


def rate(fn, batch: int, reps: int = 20) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return batch / statistics.median(ts)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="checkpoint (.pt); default: a random LEGO model")
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args(argv)
    from fusewatch.engines.serving.backends import BackendError, select_backend, tensorrt_status
    ok, why = tensorrt_status()
    if not ok:
        print(f"trt_check: TensorRT backend unavailable here: {why}", file=sys.stderr)
        return 2
    model = args.model
    if model is None:
        from fusewatch.engines.training.checkpoint import save_checkpoint
        from fusewatch.engines.fusion.factory import build_model
        from fusewatch.stream.config import ModelConfig
        model = str(Path(tempfile.mkdtemp()) / "lego.pt")
        save_checkpoint(build_model(ModelConfig(representations=["mobilenetv2", "effnet_lite0", "flow"]),
                                    {"mobilenetv2": 1280, "effnet_lite0": 1280, "flow": 80}), model)
    try:
        trt = select_backend("tensorrt", model=model, max_batch=64)
    except BackendError as e:
        print(f"trt_check: {e}", file=sys.stderr)
        return 2
    ort = select_backend("onnxruntime", model=model)
    rng = np.random.default_rng(0)
    out = {"model": model, "gpu": trt.meta.get("gpu", ""), "batches": {}}
    for b in [int(x) for x in args.batches.split(",")]:
        r, mask, present, u = windows(ort, b, rng)
        s_trt = trt.score_graphs(r, mask, present, u)
        s_ort = ort.score_graphs(r, mask, present, u)
        row = {"max_abs_diff": float(np.abs(s_trt - s_ort).max()),
               "trt_windows_per_s": rate(lambda: trt.score_graphs(r, mask, present, u), b),
               "ort_windows_per_s": rate(lambda: ort.score_graphs(r, mask, present, u), b)}
        out["batches"][b] = row
        print(f"batch {b:3d}: max|TRT-ORT| {row['max_abs_diff']:.2e}  TRT {row['trt_windows_per_s']:,.0f}/s  "
              f"ORT {row['ort_windows_per_s']:,.0f}/s")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
