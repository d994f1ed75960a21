"""Issue 10 measurements: bounded state rebuild and bounded camera memory.

``rebuild``: C cameras (default 20,000) with short histories (default 3 clips each, interleaved)
on ONE partition of a real broker (``--bootstrap``), the group's offset committed at the end
without processing, then a fresh engine is timed through its rebuild: records read, seconds,
cameras held, cold starts. Small feature dims (12 + 5) so the broker traffic stays small.

``memory``: peak RSS of an engine (in-process bus, default model dims 1280 + 80, N = 32,
node_dim 16, default ``engine.max_cameras``) after one batch of warm cameras (idle RSS) and after C = 20,000
distinct camera ids (3 clips each, fed in groups of 1,000 cameras: with max_cameras 512 every camera
is evicted before its next clip — the thrashing worst case).

    python bench/hostile.py rebuild --bootstrap 127.0.0.1:9092 [--cameras 20000] [--clips 3]
    python bench/hostile.py memory [--cameras 20000]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np


def rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def model(dims: dict, window: int, node_dim: int, out: Path, **over) -> tuple:
    import torch

    from fusewatch.engines.fusion.factory import build_model
    from fusewatch.engines.serving.runtime import load_serving_model
    from fusewatch.engines.training.checkpoint import save_checkpoint
    from fusewatch.stream.config import load_config

    torch.manual_seed(0)
    o = {"model.window": window, "model.representations": ",".join(dims), "model.node_dim": node_dim}
    save_checkpoint(build_model(load_config(overrides=o, env={}).model, dims), out)
    cfg = load_config(env={}, overrides={"engine.model": str(out), "engine.backend": "onnxruntime", **over})
    return cfg, load_serving_model(cfg)


def feature(cam: str, clip: int, dims: dict, rng) -> bytes:
    from fusewatch.stream.schema import FeatureMessage, Representation

    t = clip * 1.6
    return FeatureMessage(
        cam,
        clip,
        t,
        t + 1.5,
        1.7e9 + t,
        1.7e9 + t + 1.5,
        16 * clip,
        16 * clip + 15,
        [Representation(k, rng.normal(size=d).astype(np.float32)) for k, d in dims.items()],
        produced=0.0,
    ).encode()


def bench_rebuild(a) -> dict:
    from kafka import KafkaProducer

    from fusewatch.engines.serving.service import EngineService
    from fusewatch.stream.topics import create_topics
    from fusewatch.stream.transport.kafka import KafkaTransport

    dims = {"a": 12, "b": 5}
    run = uuid.uuid4().hex[:8]
    over = {
        "kafka.bootstrap_servers": a.bootstrap,
        "topics.features": f"fwbench.rebuild.f.{run}",
        "topics.alerts": f"fwbench.rebuild.a.{run}",
        "topics.dead_letter": f"fwbench.rebuild.d.{run}",
        "engine.group_id": f"fwbench.rebuild.g.{run}",
    }
    with tempfile.TemporaryDirectory() as d:
        cfg, m = model(dims, 32, 16, Path(d) / "m.pt", **over)
    create_topics(cfg, partitions=1)
    rng = np.random.default_rng(0)
    p = KafkaProducer(bootstrap_servers=a.bootstrap, acks="all", linger_ms=20, batch_size=1 << 20)
    t0 = time.monotonic()
    cams = [f"cam{i:05d}" for i in range(a.cameras)]
    for clip in range(a.clips):
        for c in cams:
            p.send(cfg.topics.features, key=c.encode(), value=feature(c, clip, dims, rng))
    p.flush()
    p.close()
    produce_s = time.monotonic() - t0
    total = a.cameras * a.clips
    t = KafkaTransport(cfg, group_id=cfg.engine.group_id)  # commit "all processed" directly
    t.subscribe([cfg.topics.features], cfg.engine.group_id)
    while not t.assignment():
        t.poll(10, 0.2)
    t.commit({tp: t.end_offset(tp) for tp in t.assignment()})
    t.close()
    t = KafkaTransport(cfg, group_id=cfg.engine.group_id)
    svc = EngineService(cfg, m, t)
    svc.start()
    t0 = time.monotonic()
    while svc.stats.rebuilds == 0 and time.monotonic() - t0 < 120:
        svc.step(timeout=0.2)
    wall = time.monotonic() - t0
    t.close()
    st = svc.stats
    need = 32 + cfg.engine.rebuild_history
    return {
        "cameras": a.cameras,
        "clips_per_camera": a.clips,
        "records_in_partition": total,
        "produce_s": round(produce_s, 1),
        "rebuild_records": st.rebuild_max_records,
        "bound_records": need * min(a.cameras, cfg.engine.max_cameras) + need,
        "rebuild_s": round(st.rebuild_seconds / max(st.rebuilds, 1), 2),
        "first_step_wall_s": round(wall, 2),
        "cameras_held": len(svc.cams),
        "cold_starts": st.cold_starts,
        "max_cameras": cfg.engine.max_cameras,
    }


def bench_memory(a) -> dict:
    from fusewatch.engines.serving.service import EngineService
    from fusewatch.stream.transport import BusTransport, InProcessBus

    dims = {"mobilenetv2": 1280, "flow": 80}
    with tempfile.TemporaryDirectory() as d:
        cfg, m = model(dims, 32, 16, Path(d) / "m.pt")
    bus = InProcessBus(partitions=3, max_records_per_partition=2000)
    prod = BusTransport(bus)
    svc = EngineService(cfg, m, BusTransport(bus))
    svc.start()
    rng = np.random.default_rng(0)

    def feed(names):
        for clip in range(a.clips):
            for c in names:
                prod.produce(cfg.topics.features, c, feature(c, clip, dims, rng))
            while svc.step(timeout=0.0):
                pass

    feed([f"warm{i}" for i in range(cfg.engine.max_batch)])  # one full scoring batch: runtime buffers allocated
    idle = rss_mb()
    peak = idle
    for k in range(0, a.cameras, 1000):
        feed([f"cam{i:05d}" for i in range(k, min(k + 1000, a.cameras))])
        peak = max(peak, rss_mb())
    return {
        "camera_ids": a.cameras,
        "max_cameras": cfg.engine.max_cameras,
        "cameras_held": len(svc.cams),
        "idle_rss_mb": round(idle, 1),
        "peak_rss_mb": round(peak, 1),
        "growth_mb": round(peak - idle, 1),
        "evictions": svc.stats.evictions,
        "scored": svc.stats.scored,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("rebuild", "memory"))
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--cameras", type=int, default=20000)
    ap.add_argument("--clips", type=int, default=3)
    ap.add_argument("--json")
    a = ap.parse_args()
    from fusewatch.stream.memory import tune_malloc

    tune_malloc()  # as fusewatch's CLI does at start-up
    res = bench_rebuild(a) if a.what == "rebuild" else bench_memory(a)
    print(json.dumps(res, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
