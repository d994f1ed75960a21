"""Memory soak: peak RSS and its trend over a long replay through worker → bus → engine.

    python bench/soak.py [--minutes 30] [--cameras 4] [--extractors flow] [--speed 1.0]
                         [--sample-every 10] [--retain 256] [--json OUT.json]

Run on request, not in CI (default 30 minutes). Everything runs in this one process, as the
embedded demo does: ``--cameras`` camera workers (:class:`fusewatch.stream.worker.Worker`, one thread each)
loop videos (``../shared/data/cctv/vtest.avi`` and the Ped2 videos, distinct camera ids) as live
cameras paced at ``--speed``× real time, publish to the in-process bus
(:class:`fusewatch.stream.transport.InProcessBus`, whose logs keep the last ``--retain`` records per partition
— the bus's stand-in for Kafka retention; unbounded retention would be a leak by design), and one
:class:`fusewatch.engines.serving.service.EngineService` thread scores the clips with a LEGO model over the chosen
representations (random initialisation, thresholds at the 60th/40th percentile of its scores on
Ped2 calibration clips so the alert path is exercised) and publishes alerts back to the bus.

Every ``--sample-every`` seconds the process RSS (``VmRSS`` of ``/proc/self/status``) is printed
with the clip/alert counters. At the end: peak RSS, and the least-squares slope of RSS over the
second half of the run in MB/hour (the first half includes warm-up: allocator arenas, model and
extractor buffers, bus logs filling up to ``--retain``).

glibc's allocator matters here: with its defaults (dynamic mmap threshold, one arena per thread)
the frame-sized buffers (~260 KB Ped2, ~1.3 MB vtest) that decoder, queue and extractor threads
allocate and free are served from fragmenting heap arenas and RSS creeps up; compare with
``MALLOC_MMAP_THRESHOLD_=131072 MALLOC_ARENA_MAX=2 python bench/soak.py ...`` (the ``MALLOC_*``
variables in effect are recorded in the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from latency import ROOT, camera_videos, loadavg, prepare_model  # noqa: E402  (also puts ROOT on sys.path)


def rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("VmRSS not found in /proc/*/status")


def slope_mb_per_hour(t_s, rss) -> float:
    t = np.asarray(t_s, np.float64)
    r = np.asarray(rss, np.float64)
    if t.size < 2 or np.ptp(t) == 0:
        return float("nan")
    return float(np.polyfit(t / 3600.0, r, 1)[0])


def main(argv=None) -> int:
    from fusewatch.stream.memory import tune_malloc

    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--minutes", type=float, default=30.0, help="soak duration (default 30)")
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--extractors", default="flow")
    ap.add_argument("--speed", type=float, default=1.0, help="replay speed factor (default real time)")
    ap.add_argument("--sample-every", type=float, default=10.0, metavar="S", help="RSS sample period (s)")
    ap.add_argument(
        "--retain",
        type=int,
        default=256,
        help="records kept per bus partition (default 256: steady state within minutes)",
    )
    ap.add_argument("--json", metavar="OUT")
    ap.add_argument(
        "--default-malloc",
        action="store_true",
        help="keep glibc's default malloc settings (fusewatch tunes them: stream/memory.py)",
    )
    args = ap.parse_args(argv)
    malloc_tuned = {} if args.default_malloc else tune_malloc()

    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from fusewatch.engines.serving.runtime import load_serving_model
    from fusewatch.engines.serving.service import EngineService, ScoreSink
    from fusewatch.stream.config import load_config
    from fusewatch.stream.transport import BusTransport, InProcessBus
    from fusewatch.stream.worker import Worker

    extractors = [e.strip() for e in args.extractors.split(",") if e.strip()]
    tmp = Path(tempfile.mkdtemp(prefix="fw-soak-"))
    print(
        f"soak: {args.minutes:g} min, {args.cameras} cameras x {args.speed:g}x real time, extractors "
        f"{','.join(extractors)}, in-process bus keeping {args.retain} records/partition; "
        f"{os.cpu_count()} CPUs, load {loadavg()}",
        flush=True,
    )
    rss_start = rss_mb()
    model = prepare_model(extractors, tmp / "model.pt", window=32, train=False, log=lambda s: print(s, flush=True))
    cfg = load_config(
        env={},
        overrides={
            "features.extractors": ",".join(extractors),
            "features.threads": 1,
            "engine.backend": "onnxruntime",
            "engine.model": model["path"],
            "alerts.thresholds": "config",
            "alerts.on": model["on"],
            "alerts.off": model["off"],
            "source.overflow": "drop_oldest",
        },
    )
    bus = InProcessBus(partitions=cfg.topics.partitions, max_records_per_partition=args.retain)
    counts = {"scored": 0, "alerts": 0}

    class Count(ScoreSink):
        def on_score(self, camera, msg, score):
            counts["scored"] += 1

        def on_alert(self, alert):
            counts["alerts"] += 1

    svc = EngineService(cfg, load_serving_model(cfg), BusTransport(bus), sink=Count())
    svc.start()
    stop = threading.Event()
    errors: list[str] = []

    def engine_loop():
        try:
            while not stop.is_set():
                svc.step(timeout=0.2)
        except Exception as e:  # noqa: BLE001
            errors.append(f"engine: {type(e).__name__}: {e}")

    workers = [
        Worker(
            cfg,
            cam,
            str(path),
            transport=BusTransport(bus),
            wall_anchor=None,
            realtime=True,
            speed=args.speed,
            loop=0,
            serve_metrics=False,
        )
        for cam, path in camera_videos(args.cameras)
    ]

    def run_worker(w):
        try:
            w.run()
        except Exception as e:  # noqa: BLE001
            errors.append(f"worker {w.camera}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=engine_loop, daemon=True, name="engine")]
    threads += [threading.Thread(target=run_worker, args=(w,), daemon=True, name=f"worker-{w.camera}") for w in workers]
    rss_ready = rss_mb()
    t0 = time.monotonic()
    for th in threads:
        th.start()
    samples: list[dict] = []
    duration = args.minutes * 60.0
    print(f"{'t':>7}  {'RSS MB':>7}  {'clips':>7}  {'scored':>7}  {'alerts':>6}  {'dropped':>7}", flush=True)
    try:
        while True:
            t = time.monotonic() - t0
            clips = sum(w.counters["clips_published"] for w in workers)
            dropped = sum(w.counters["frames_dropped"] for w in workers)
            s = {
                "t_s": round(t, 1),
                "rss_mb": round(rss_mb(), 1),
                "clips": clips,
                "scored": counts["scored"],
                "alerts": counts["alerts"],
                "frames_dropped": dropped,
            }
            samples.append(s)
            print(
                f"{s['t_s']:7.0f}  {s['rss_mb']:7.1f}  {clips:7d}  {s['scored']:7d}  {s['alerts']:6d}  {dropped:7d}",
                flush=True,
            )
            if t >= duration or errors:
                break
            time.sleep(max(0.0, min(args.sample_every, duration - t)))
    except KeyboardInterrupt:
        print("interrupted: reporting what was sampled", flush=True)
    finally:
        for w in workers:
            w.stop()
        stop.set()
        for th in threads:
            th.join(15)
    second = [s for s in samples if s["t_s"] >= samples[-1]["t_s"] / 2]
    slope = slope_mb_per_hour([s["t_s"] for s in second], [s["rss_mb"] for s in second])
    slope_all = slope_mb_per_hour([s["t_s"] for s in samples], [s["rss_mb"] for s in samples])
    peak = max(s["rss_mb"] for s in samples)
    res = {
        "config": {
            "minutes": args.minutes,
            "cameras": args.cameras,
            "extractors": extractors,
            "speed": args.speed,
            "sample_every_s": args.sample_every,
            "retain": args.retain,
            "videos": sorted({str(v) for _, v in camera_videos(args.cameras)}),
            "alerts": {"on": model["on"], "off": model["off"]},
            "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
            "malloc_tuned": malloc_tuned,
        },
        "rss_mb": {
            "process_start": round(rss_start, 1),
            "pipeline_ready": round(rss_ready, 1),
            "first_sample": samples[0]["rss_mb"],
            "last_sample": samples[-1]["rss_mb"],
            "peak": peak,
        },
        "slope_second_half_mb_per_hour": slope,
        "slope_whole_run_mb_per_hour": slope_all,
        "samples": samples,
        "engine": dict(svc.stats.__dict__),
        "errors": errors,
        "load_after": loadavg(),
        "root": str(ROOT),
    }
    print(
        f"peak RSS {peak:.1f} MB (start {rss_start:.0f}, pipeline ready {rss_ready:.0f}, first sample "
        f"{samples[0]['rss_mb']:.0f}, last {samples[-1]['rss_mb']:.0f}); slope of the second half "
        f"{slope:+.1f} MB/hour over {len(second)} samples (whole run {slope_all:+.1f} MB/hour); "
        f"{samples[-1]['clips']} clips, {samples[-1]['scored']} scored, {samples[-1]['alerts']} alerts, "
        f"{samples[-1]['frames_dropped']} frames dropped"
    )
    half_s = samples[-1]["t_s"] - second[0]["t_s"] if second else 0.0
    if half_s < 600:
        res["note"] = (
            f"short run: the second half spans {half_s:.0f} s, so the slope is dominated by "
            "RSS noise (+-10-20 MB between samples) and warm-up; use the default 30 minutes"
        )
        print(f"note: {res['note']}")
    if errors:
        print(f"ERRORS: {errors}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1, default=str) + "\n")
        print(f"wrote {args.json}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
