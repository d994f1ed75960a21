"""int8 vs fp32 backbones: cosine of the embeddings on held-out frames and per-frame CPU time.

    python bench/int8.py [--backbones mobilenetv2,effnet_lite0] [--json OUT.json]

Held-out frames: 16 frames spread over each Ped2 *test* video (the int8 calibration uses the Ped2
training videos and vtest.avi). Per frame: cosine(int8, fp32) of the 1280-d pooled features;
per clip (16 frames, mean-pooled as the extractor does): the same for the clip embedding. CPU time:
process time per frame at batch 16 and 64, one ONNX Runtime thread, median of 5, both precisions
measured in this run (ratio = fp32 / int8).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fusewatch.stream.config import load_config  # noqa: E402
from fusewatch.stream.extractors.backbones import BackboneExtractor  # noqa: E402
from fusewatch.stream.extractors.quantize import video_frames  # noqa: E402
from fusewatch.stream.paths import shared_data  # noqa: E402


def held_out_frames(per_video: int = 16) -> list[np.ndarray]:
    return [f for v in sorted(shared_data("ped2").glob("test_*.mp4")) for f in video_frames(v, per_video)]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)


def cpu_ms_per_frame(ex, x: np.ndarray, reps: int = 5) -> float:
    ex.session.run(None, {ex.input_name: x})
    ts = []
    for _ in range(reps):
        t = time.process_time()
        ex.session.run(None, {ex.input_name: x})
        ts.append(time.process_time() - t)
    return 1000 * statistics.median(ts) / len(x)


def compare(name: str, frames) -> dict:
    out = {}
    exs = {
        p: BackboneExtractor(
            name, load_config(env={}, overrides=[("features.cnn_precision", p), ("features.threads", "1")]).features
        )
        for p in ("fp32", "int8")
    }
    f32, i8 = (exs[p].per_frame(frames) for p in ("fp32", "int8"))
    c = cosine(f32, i8)
    clips32, clips8 = (a.reshape(-1, 16, a.shape[-1]).mean(1) for a in (f32, i8))
    cc = cosine(clips32, clips8)
    out.update(
        frames=len(frames),
        cos_frame_mean=float(c.mean()),
        cos_frame_min=float(c.min()),
        cos_clip_mean=float(cc.mean()),
        cos_clip_min=float(cc.min()),
        int8_version=exs["int8"].version,
        int8_file=str(exs["int8"].onnx_path),
    )
    x = exs["fp32"].prepare(frames[:64])
    for b in (16, 64):
        t32, t8 = (cpu_ms_per_frame(exs[p], x[:b]) for p in ("fp32", "int8"))
        out[f"batch{b}"] = {"fp32_ms_per_frame": t32, "int8_ms_per_frame": t8, "speedup": t32 / t8}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbones", default="mobilenetv2,effnet_lite0")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    frames = held_out_frames()
    res = {}
    for name in args.backbones.split(","):
        r = res[name] = compare(name, frames)
        print(
            f"{name}: cos(int8, fp32) per frame mean {r['cos_frame_mean']:.4f} min {r['cos_frame_min']:.4f}, "
            f"per 16-frame clip mean {r['cos_clip_mean']:.4f} min {r['cos_clip_min']:.4f} ({r['frames']} "
            f"held-out frames); CPU ms/frame fp32 / int8 = "
            + ", ".join(
                f"{r[k]['fp32_ms_per_frame']:.2f} / {r[k]['int8_ms_per_frame']:.2f} = "
                f"{r[k]['speedup']:.2f}x (batch {k[5:]})"
                for k in ("batch16", "batch64")
            ),
            flush=True,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
