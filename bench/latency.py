"""End-to-end latency over a real Kafka broker: clip end → scored, and clip end → alert on the topic.

    python bench/latency.py [--cameras 16] [--seconds 60] [--extractors flow] [--procs 2]
                            [--bootstrap 127.0.0.1:9092] [--backend onnxruntime] [--json OUT.json]

What runs (all on this machine, the broker included):

1. **Model** — a LEGO model over the chosen representations (default ``flow`` only: 16 cameras of
   full CNN extractors cannot run in real time on 2 cores) is trained on the fly for a few epochs
   on features the worker pipeline extracts from 6 Ped2 videos (3 normal training videos, 3
   abnormal test videos). Alert thresholds are set LOW on purpose — ``alerts.on``/``off`` = the
   60th/40th percentile of the model's scores on those videos — so that alerts fire and their
   latency can be measured (this measures latency, not detection quality).
2. **Cameras** — ``--cameras`` camera workers (:class:`fusewatch.stream.worker.Worker`, one thread each, spread
   over ``--procs`` worker processes) replay ``../shared/data/cctv/vtest.avi`` and the Ped2 videos
   (repeated as needed, distinct camera ids) as *live* cameras: paced at real time, looping, the
   wall clock anchored at each camera's first decoded frame (so a clip's ``wall_end`` is when its
   last frame was "captured"), queue policy ``drop_oldest``; starts are staggered over one clip
   period. Features go to a fresh features topic on the broker.
3. **Engine** — one :class:`fusewatch.engines.serving.service.EngineService` (this process) consumes, scores and
   publishes alerts to a fresh alerts topic created with ``message.timestamp.type=LogAppendTime``,
   so an alert record's timestamp is the broker's append time.

Figures (one run; p50/p90/p99/max over all clips, and over alerts):

* ``clip_end_to_scored``  — engine wall clock when the clip's score is known − the clip's ``wall_end``;
  split into ``clip_end_to_produced`` (worker: dequeue, extraction, encoding; the message's
  ``produced`` stamp) and ``produced_to_scored`` (producer linger, broker, engine poll, decode, scoring);
* ``clip_end_to_alert_record`` — broker append timestamp of each alert record − ``end_time`` of the
  alert (= ``wall_end`` of the clip that caused it).

Also reported: clips published/expected per camera (real-time keeping up?), frames dropped by the
``drop_oldest`` queues, load average. ``--seconds`` is stream time per camera (the whole run takes
about ``seconds`` + 60 s).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from fusewatch.stream.paths import shared_data  # noqa: E402

DATA = shared_data()
CALIBRATION = ["train_01", "train_02", "train_03", "test_02", "test_04", "test_06"]


# ---------------------------------------------------------------------------------------------
# shared with bench/soak.py
def camera_videos(n: int) -> list[tuple[str, Path]]:
    """``n`` (camera id, video) pairs: vtest.avi and the Ped2 videos, repeated with distinct ids."""
    vids = [DATA / "cctv" / "vtest.avi"] + sorted((DATA / "ped2").glob("*.mp4"))
    vids = [v for v in vids if v.is_file()]
    if not vids:
        raise SystemExit(f"no videos under {DATA}")
    return [(f"cam{i:02d}-{vids[i % len(vids)].stem}", vids[i % len(vids)]) for i in range(n)]


def percentiles(xs) -> dict:
    a = np.asarray(list(xs), dtype=np.float64)
    if a.size == 0:
        return {"n": 0}
    return {
        "n": int(a.size),
        "p50": float(np.percentile(a, 50)),
        "p90": float(np.percentile(a, 90)),
        "p99": float(np.percentile(a, 99)),
        "max": float(a.max()),
        "mean": float(a.mean()),
    }


def prepare_model(
    extractors: list[str],
    out: Path,
    *,
    window: int = 16,
    epochs: int = 4,
    q_on: float = 0.6,
    q_off: float = 0.4,
    train: bool = True,
    log=print,
) -> dict:
    """Extract calibration features, train (or randomly initialise) a LEGO model, pick thresholds.

    Returns ``{"path", "on", "off", "train": summary, "calibration_clips", "seconds"}``."""
    import torch

    from fusewatch.engines.data.records import VideoFeatures
    from fusewatch.engines.evaluation.scoring import score_video
    from fusewatch.engines.fusion.factory import build_model
    from fusewatch.engines.training.checkpoint import save_checkpoint
    from fusewatch.engines.training.loop import train as train_model
    from fusewatch.stream.config import load_config
    from fusewatch.stream.extract import extract_video
    from fusewatch.stream.extractors import build_extractors

    t0 = time.monotonic()
    cfg = load_config(
        env={},
        overrides={
            "features.extractors": ",".join(extractors),
            "features.threads": 1,
            "model.window": window,
            "model.representations": ",".join(extractors),
            "model.node_dim": 0,
            "train.epochs": epochs,
            "train.batch_size": 4,
            "train.seed": 0,
        },
    )
    exs = build_extractors(cfg.features)
    names = [e.name for e in exs]
    cfg.model.representations = names
    videos = []
    for stem in CALIBRATION:
        path = DATA / "ped2" / f"{stem}.mp4"
        if not path.is_file():
            continue
        r = extract_video(path, cfg, exs)
        videos.append(
            VideoFeatures(
                name=stem,
                feats=r["reps"],
                video_label=int(stem.startswith("test")),
                clip_to_frames=cfg.clips.clip_len,
                n_frames=r["frames"],
            )
        )
    if not videos:
        raise SystemExit(f"calibration videos not found under {DATA / 'ped2'}")
    log(
        f"model: extracted {sum(len(next(iter(v.feats.values()))) for v in videos)} calibration clips "
        f"from {len(videos)} Ped2 videos ({','.join(names)}) in {time.monotonic() - t0:.1f}s"
    )
    summary = None
    if train and len({v.video_label for v in videos}) == 2:
        summary = train_model(videos, cfg, out, progress=False)
        model = None
        from fusewatch.engines.training.checkpoint import load_model

        model, _ = load_model(out)
        log(
            f"model: LEGO {names} N={window} trained {epochs} epochs in {summary.seconds:.1f}s "
            f"(best val AUC {summary.best_val_auc})"
        )
    else:
        torch.manual_seed(0)
        dims = {n: int(next(iter(v.feats[n] for v in videos if n in v.feats)).shape[1]) for n in names}
        model = build_model(cfg.model, dims)
        save_checkpoint(model, out)
        log(f"model: LEGO {names} N={window} random initialisation (not trained)")
    model.eval()
    with torch.no_grad():
        scores = np.concatenate([score_video(model, v.feats) for v in videos])
    on, off = float(np.quantile(scores, q_on)), float(np.quantile(scores, q_off))
    log(
        f"alerts: thresholds set low on purpose so that alerts fire: on={on:.4f} (q{q_on:.2f}), "
        f"off={off:.4f} (q{q_off:.2f}) of {scores.size} calibration clip scores"
    )
    return {
        "path": str(out),
        "on": on,
        "off": off,
        "representations": names,
        "window": window,
        "train": {k: v for k, v in summary.to_dict().items() if k != "history"} if summary else None,
        "calibration_clips": int(scores.size),
        "seconds": time.monotonic() - t0,
    }


def joined(name: str, build, tries: int = 3, timeout: float = 20.0):
    """``build(attempt) -> (transport, step, obj)``; step until the consumer has partitions.

    Works around an intermittent hang of a consumer joining its group for a just-created topic
    (poll() blocks for good after the second JoinGroup/SyncGroup): the attempt runs in a thread;
    one that has no assignment after ``timeout`` s is abandoned and retried with a new group."""
    for attempt in range(tries):
        t, step, obj = build(attempt)

        def until_assigned(t=t, step=step):
            while not t.assignment():
                step()

        th = threading.Thread(target=until_assigned, daemon=True)
        th.start()
        th.join(timeout)
        if not th.is_alive() and t.assignment():
            return t, step, obj
        print(
            f"WARNING: {name}: consumer got no partitions within {timeout:g}s (group join hung, "
            f"attempt {attempt + 1}/{tries}); abandoning it and retrying with a new group",
            flush=True,
        )
    raise SystemExit(f"{name}: consumer could not join its group")


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


# ---------------------------------------------------------------------------------------------
# worker processes
def run_workers(args) -> int:
    """``--role workers``: live-camera workers for the given cameras; stats as JSON to --stats-out."""
    from fusewatch.stream.config import load_config
    from fusewatch.stream.transport.kafka import KafkaTransport
    from fusewatch.stream.worker import Worker

    cfg = load_config(
        env={},
        overrides={
            "kafka.bootstrap_servers": args.bootstrap,
            "topics.features": args.features_topic,
            "features.extractors": args.extractors,
            "features.threads": 1,
            "source.overflow": "drop_oldest",
        },
    )
    t = KafkaTransport(cfg, consume=False)
    cams = [c.split("=", 1) for c in args.cams.split(",")]
    offsets = [float(x) for x in args.offsets.split(",")]
    workers = [
        Worker(cfg, cam, path, transport=t, wall_anchor=None, realtime=True, speed=1.0, loop=0, serve_metrics=False)
        for cam, path in cams
    ]
    results: dict = {}
    errors: dict = {}
    start = time.monotonic() + 0.5

    def one(w, off):
        time.sleep(max(0.0, start + off - time.monotonic()))
        try:
            results[w.camera] = w.run()
        except Exception as e:  # noqa: BLE001 - reported in the stats
            errors[w.camera] = f"{type(e).__name__}: {e}"
            results[w.camera] = w.stats()

    th = [threading.Thread(target=one, args=(w, o), daemon=True) for w, o in zip(workers, offsets)]
    for x in th:
        x.start()
    # each camera plays `seconds` of stream from its own (staggered) start
    for w, o in sorted(zip(workers, offsets), key=lambda p: p[1]):
        time.sleep(max(0.0, start + o + args.seconds - time.monotonic()))
        w.stop()
    for x in th:
        x.join(30)
    t.close()
    keep = (
        "frames_decoded",
        "frames_sampled",
        "frames_processed",
        "frames_dropped",
        "clips_published",
        "clips_lost",
        "publish_errors",
        "decode_errors",
    )
    out = {c: {k: getattr(r, k) for k in keep} for c, r in results.items()}
    Path(args.stats_out).write_text(json.dumps({"cameras": out, "errors": errors}))
    return 0


# ---------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cameras", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60.0, help="stream seconds per camera (default 60)")
    ap.add_argument(
        "--extractors",
        default="flow",
        help="comma-separated extractors (default flow: full CNNs for 16 cameras do not run in real time on 2 cores)",
    )
    ap.add_argument("--procs", type=int, default=2, help="worker processes (cameras spread over them)")
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "torch", "auto", "tensorrt"))
    ap.add_argument("--epochs", type=int, default=4, help="training epochs of the on-the-fly model")
    ap.add_argument("--no-train", action="store_true", help="random-initialised model instead of training")
    ap.add_argument("--json", metavar="OUT", help="write the results as JSON")
    # internal: worker processes
    ap.add_argument("--role", default="main", choices=("main", "workers"), help=argparse.SUPPRESS)
    ap.add_argument("--cams", help=argparse.SUPPRESS)
    ap.add_argument("--offsets", help=argparse.SUPPRESS)
    ap.add_argument("--features-topic", help=argparse.SUPPRESS)
    ap.add_argument("--stats-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.role == "workers":
        return run_workers(args)

    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)

    from fusewatch.engines.serving.runtime import load_serving_model
    from fusewatch.engines.serving.service import EngineService, ScoreSink
    from fusewatch.stream.alert_schema import decode_alert
    from fusewatch.stream.config import load_config
    from fusewatch.stream.topics import create_topics
    from fusewatch.stream.transport.kafka import _RECORD_OVERHEAD, KafkaTransport, admin_client

    t_run = time.monotonic()
    load_before = loadavg()
    run = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="fw-latency-"))
    extractors = [e.strip() for e in args.extractors.split(",") if e.strip()]
    print(
        f"latency bench: {args.cameras} cameras x {args.seconds:g}s real-time stream, extractors "
        f"{','.join(extractors)}{' (flow only: CNN extractors for 16 cameras cannot run in real time on 2 cores)' if extractors == ['flow'] else ''}, "
        f"broker {args.bootstrap}, {os.cpu_count()} CPUs, load {load_before}",
        flush=True,
    )
    model = prepare_model(
        extractors, tmp / "model.pt", epochs=args.epochs, train=not args.no_train, log=lambda s: print(s, flush=True)
    )
    over = {
        "kafka.bootstrap_servers": args.bootstrap,
        "kafka.connect_timeout_s": 15,
        "topics.features": f"fwbench.latency.features.{run}",
        "topics.alerts": f"fwbench.latency.alerts.{run}",
        "topics.dead_letter": f"fwbench.latency.deadletter.{run}",
        "engine.group_id": f"fwbench.latency.{run}",
        "engine.backend": args.backend,
        "features.threads": 1,
        "alerts.thresholds": "config",
        "alerts.on": model["on"],
        "alerts.off": model["off"],
    }
    cfg = load_config(env={}, overrides=over)
    create_topics(cfg, names=[cfg.topics.features, cfg.topics.dead_letter])
    admin = admin_client(cfg)
    try:  # alerts: broker append time as the record timestamp
        admin.create_topics(
            {
                cfg.topics.alerts: {
                    "num_partitions": cfg.topics.partitions,
                    "replication_factor": 1,
                    "configs": {
                        "message.timestamp.type": "LogAppendTime",
                        "max.message.bytes": str(cfg.max_message_bytes + _RECORD_OVERHEAD),
                    },
                }
            },
            timeout_ms=30000,
            raise_errors=True,
        )
        admin.wait_for_topics([cfg.topics.alerts], timeout_ms=30000)
    finally:
        admin.close()

    scored: list[tuple] = []  # (camera, clip, end->scored, end->produced, produced->scored)
    alerts: list[tuple] = []  # (type, camera, end->record)
    lock = threading.Lock()

    class Sink(ScoreSink):
        def on_score(self, camera, msg, score):
            now = time.time()
            with lock:
                scored.append((camera, msg.clip, now - msg.wall_end, msg.produced - msg.wall_end, now - msg.produced))

    serving = load_serving_model(cfg, model["path"], args.backend)
    sink = Sink()

    def new_engine(attempt):
        if attempt:
            cfg.engine.group_id = f"fwbench.latency.{run}.{attempt}"
        t = KafkaTransport(cfg, group_id=cfg.engine.group_id)
        svc = EngineService(cfg, serving, t, sink=sink)
        svc.start()
        return t, (lambda: svc.step(timeout=0.2)), svc

    def new_reader(attempt):
        g = f"{cfg.engine.group_id}.alert-reader.{attempt}"
        t = KafkaTransport(cfg, group_id=g, produce=False)
        t.subscribe([cfg.topics.alerts], g, from_beginning=True)
        return t, (lambda: t.poll(500, 0.2)), t

    eng_t, _, svc = joined("engine", new_engine)
    reader, _, _ = joined("alert reader", new_reader)
    stop = threading.Event()
    errors: list[str] = []
    last_alert = [time.monotonic()]

    def engine_loop():
        try:
            while not stop.is_set():
                svc.step()
        except Exception as e:  # noqa: BLE001
            errors.append(f"engine: {type(e).__name__}: {e}")

    def reader_loop():
        try:
            while not stop.is_set():
                for r in reader.poll(500, 0.2):
                    a = decode_alert(r.value, cfg.max_message_bytes)
                    with lock:
                        alerts.append((a.type, a.camera, r.timestamp_ms / 1000.0 - a.end_time))
                    last_alert[0] = time.monotonic()
        except Exception as e:  # noqa: BLE001
            errors.append(f"alert reader: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=engine_loop, daemon=True), threading.Thread(target=reader_loop, daemon=True)]
    for th in threads:
        th.start()

    cams = camera_videos(args.cameras)
    period = cfg.clips.clip_len / cfg.source.sample_fps
    offsets = [i * period / len(cams) for i in range(len(cams))]
    procs = []
    nproc = max(1, min(args.procs, len(cams)))
    for k in range(nproc):
        mine = list(range(k, len(cams), nproc))
        stats_out = tmp / f"workers{k}.json"
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--role",
            "workers",
            "--bootstrap",
            args.bootstrap,
            "--features-topic",
            cfg.topics.features,
            "--extractors",
            ",".join(extractors),
            "--seconds",
            str(args.seconds),
            "--stats-out",
            str(stats_out),
            "--cams",
            ",".join(f"{cams[i][0]}={cams[i][1]}" for i in mine),
            "--offsets",
            ",".join(f"{offsets[i]:.3f}" for i in mine),
        ]
        log = open(tmp / f"workers{k}.log", "w")
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT), stats_out, log))
    print(f"stream: {len(cams)} cameras in {nproc} worker processes, staggered over {period:g}s ...", flush=True)
    t_stream = time.monotonic()
    load_during = []
    for p, _, _ in procs:
        while p.poll() is None and time.monotonic() - t_stream < args.seconds + 180:
            time.sleep(1.0)
            if len(load_during) < (time.monotonic() - t_stream) / 10:
                load_during.append(loadavg()[0] if loadavg() else None)
        if p.poll() is None:
            p.kill()
            errors.append("a worker process did not finish in time")
    workers = {"cameras": {}, "errors": {}}
    for p, stats_out, log in procs:
        log.close()
        if stats_out.is_file():
            d = json.loads(stats_out.read_text())
            workers["cameras"].update(d["cameras"])
            workers["errors"].update(d["errors"])
        else:
            errors.append(f"worker process exit {p.returncode}: {(Path(log.name).read_text())[-500:]}")
    published = sum(int(c.get("clips_published") or 0) for c in workers["cameras"].values())
    deadline = time.monotonic() + 60
    while svc.stats.records < published and time.monotonic() < deadline and not errors:
        time.sleep(0.1)
    while time.monotonic() - last_alert[0] < 2.0 and time.monotonic() < deadline + 10:
        time.sleep(0.2)
    stop.set()
    for th in threads:
        th.join(30)
    eng_t.close()
    reader.close()

    first = {}
    for cam, clip, *_ in scored:
        first[cam] = min(first.get(cam, clip), clip)
    expected = int(args.seconds / period)
    res = {
        "config": {
            "cameras": len(cams),
            "seconds_per_camera": args.seconds,
            "extractors": extractors,
            "worker_processes": nproc,
            "bootstrap": args.bootstrap,
            "backend": serving.scorer.backend,
            "sample_fps": cfg.source.sample_fps,
            "clip_len": cfg.clips.clip_len,
            "alerts": {
                "on": model["on"],
                "off": model["off"],
                "min_duration": cfg.alerts.min_duration,
                "cooldown": cfg.alerts.cooldown,
                "update_interval": cfg.alerts.update_interval,
                "note": "thresholds = 60th/40th percentile of calibration scores: low on purpose so that alerts fire",
            },
            "alerts_topic_timestamps": "LogAppendTime (broker append time)",
            "videos": sorted({str(v) for _, v in cams}),
        },
        "model": model,
        "host": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "load_before": load_before,
            "load_1min_during": load_during,
            "load_after": loadavg(),
        },
        "clip_end_to_scored_s": percentiles(x[2] for x in scored),
        "clip_end_to_scored_s_without_first_clip": percentiles(x[2] for x in scored if x[1] != first[x[0]]),
        "clip_end_to_produced_s": percentiles(x[3] for x in scored),
        "produced_to_scored_s": percentiles(x[4] for x in scored),
        "clip_end_to_alert_record_s": percentiles(x[2] for x in alerts),
        "alerts_by_type": {t: sum(1 for a in alerts if a[0] == t) for t in ("new", "update", "end")},
        "cameras_with_alerts": len({a[1] for a in alerts}),
        "clips": {
            "published": published,
            "scored": len(scored),
            "expected_per_camera": expected,
            "min_per_camera": min((int(c.get("clips_published") or 0) for c in workers["cameras"].values()), default=0),
            "frames_dropped": sum(int(c.get("frames_dropped") or 0) for c in workers["cameras"].values()),
            "frames_sampled": sum(int(c.get("frames_sampled") or 0) for c in workers["cameras"].values()),
        },
        "engine": {k: v for k, v in svc.stats.__dict__.items()},
        "workers": workers,
        "errors": errors,
        "wall_s": time.monotonic() - t_run,
    }

    def fmt(p):
        return (
            "n=0"
            if not p.get("n")
            else (
                f"p50 {p['p50'] * 1000:7.1f} ms  p90 {p['p90'] * 1000:7.1f} ms  "
                f"p99 {p['p99'] * 1000:7.1f} ms  max {p['max'] * 1000:7.1f} ms  (n={p['n']})"
            )
        )

    c = res["clips"]
    print(
        f"clips: {c['published']} published ({c['min_per_camera']}..{expected} per camera, {expected} expected "
        f"at real time), {c['scored']} scored; frames dropped by drop_oldest: {c['frames_dropped']} of "
        f"{c['frames_sampled']} sampled"
    )
    print(f"clip end -> scored        {fmt(res['clip_end_to_scored_s'])}")
    print(f"  (without 1st clip/cam)  {fmt(res['clip_end_to_scored_s_without_first_clip'])}")
    print(f"  clip end -> produced    {fmt(res['clip_end_to_produced_s'])}")
    print(f"  produced -> scored      {fmt(res['produced_to_scored_s'])}")
    print(
        f"clip end -> alert record {fmt(res['clip_end_to_alert_record_s'])}  "
        f"{res['alerts_by_type']} on {res['cameras_with_alerts']} cameras (low thresholds on purpose)"
    )
    print(
        f"engine: {svc.stats.records} records, {svc.stats.batches} batches, scoring {svc.stats.score_seconds:.2f}s "
        f"in all; load average before {load_before}, during {load_during}, after {res['host']['load_after']}; "
        f"run {res['wall_s']:.0f}s"
    )
    if errors or workers["errors"]:
        print(f"ERRORS: {errors} {workers['errors']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1, default=str) + "\n")
        print(f"wrote {args.json}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
