"""End-to-end latency over a real Kafka broker: clip end → scored, and clip end → alert on the topic.

    python bench/latency.py [--cameras auto|N] [--seconds 60] [--extractors mobilenetv2,flow]
                            [--cnn-frames 0] [--precision int8|fp32] [--multi | --no-multi] [--procs 2]
                            [--target-cpu 0.8] [--probe-cameras 4] [--probe-seconds 20]
                            [--bootstrap 127.0.0.1:9092] [--backend onnxruntime] [--set S.F=V] [--json OUT]

What runs (all on this machine, the broker included):

1. **Model** — a LEGO model over the default model's representations (``--extractors``, default
   ``Config().model.representations`` = ``mobilenetv2,flow``; the CNN sees all 16 frames of each
   clip, ``--cnn-frames 0``, with ``--precision`` backbones, default int8) is trained on the fly for
   a few epochs on features the worker pipeline extracts from 6 Ped2 videos (3 normal training
   videos, 3 abnormal test videos), with the same feature settings as the cameras. Alert
   thresholds are set LOW on purpose — ``alerts.on``/``off`` = the 60th/40th percentile of the
   model's scores on those videos — so that alerts fire and their latency can be measured (this
   measures latency, not detection quality).
2. **Cameras** — N cameras replay ``../shared/data/cctv/vtest.avi`` and the Ped2 videos (repeated as
   needed, distinct camera ids) as *live* cameras: paced at real time, looping, the wall clock
   anchored at each camera's first decoded frame (so a clip's ``wall_end`` is when its last frame
   was "captured"), queue policy ``drop_oldest``; starts are staggered over one clip period
   (1.6 s). They are spread over ``--procs`` worker processes; with ``--multi`` (default) each
   process runs one :class:`fusewatch.stream.multi_worker.MultiWorker` serving its share of the
   cameras with per-frame extraction (``worker.per_frame``, the default: each frame's CNN
   embedding and flow field computed as it arrives; ``--set worker.per_frame=false``: whole clips
   at clip end through the shared extractor pool, CNNs batched across cameras; motion gate OFF;
   backbones and gate set up by ``bench/worker.py``'s :func:`serving_setup`, as its multi-camera
   mode does), with ``--no-multi`` one :class:`fusewatch.stream.worker.Worker` thread per camera.
   Every process builds and warms its extractors first; the cameras start together once all are
   ready. Features (and thumbnails) go to fresh topics on the broker.
3. **Engine** — one :class:`fusewatch.engines.serving.service.EngineService` (this process) consumes, scores and
   publishes alerts to a fresh alerts topic created with ``message.timestamp.type=LogAppendTime``,
   so an alert record's timestamp is the broker's append time; every clip's score goes to a fresh
   scores topic (``engine.publish_scores``, on as in a deployment).

Camera count (``--cameras auto``, the default): a capacity probe first streams ``--probe-cameras``
cameras (ids ``probeNN-…``) for ``--probe-seconds`` through the same pipeline (same topics, engine,
broker) and measures CPU from ``/proc`` (utime + stime of the worker processes, of this process —
engine and alert reader — and of the local broker's JVM). Beforehand 5 s with nothing streaming
give the fixed cost. Then::

    fixed      = (engine + broker) CPU while idle                          [cores]
    per_camera = (workers + engine + broker CPU during the probe − fixed) / probe cameras
    N          = floor((target_cpu × cpus − fixed) / per_camera)           (≥ 1, ≤ --max-cameras)
    predicted  = fixed + N × per_camera                                    (≤ target_cpu × cpus)

i.e. on 2 cores with ``--target-cpu 0.8``: 1.6 core-seconds per second for workers + engine +
broker. The measured run then *measures* CPU utilisation the same way over its steady window (all
cameras streaming, from one clip period after the last camera started until the first one stops):
``pipeline`` (workers + engine + broker, % of all cores) and ``system`` (the whole machine, from
``/proc/stat``; minus pipeline = other load). The probe's clips and alerts are left out of the
run's figures.

Figures (one run; p50/p90/p99/max over all clips, and over alerts):

* ``clip_end_to_scored``  — engine wall clock when the clip's score is known − the clip's ``wall_end``;
  split into ``clip_end_to_produced`` (worker: dequeue, extraction, encoding; the message's
  ``produced`` stamp) and ``produced_to_scored`` (producer linger, broker, engine poll, decode, scoring);
* ``clip_end_to_alert_record`` — broker append timestamp of each alert record − ``end_time`` of the
  alert (= ``wall_end`` of the clip that caused it); target p99 ≤ 250 ms.

Also reported: cameras, CPU % (pipeline and system), clips published/expected per camera
(real-time keeping up?), frames dropped by the ``drop_oldest`` queues, load average.
``--seconds`` is stream time per camera (the whole run takes about ``seconds`` + 90 s, plus
``probe-seconds`` + 20 s with ``--cameras auto``).
"""

from __future__ import annotations

import argparse
import json
import math
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
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from fusewatch.stream.paths import shared_data  # noqa: E402

DATA = shared_data()
CALIBRATION = ["train_01", "train_02", "train_03", "test_02", "test_04", "test_06"]
TARGET_P99_S = 0.250


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
    features: dict | None = None,
    log=print,
) -> dict:
    """Extract calibration features, train (or randomly initialise) a LEGO model, pick thresholds.

    ``features``: more ``features.*`` overrides (e.g. ``{"cnn_frames": 0, "cnn_precision": "int8"}``)
    so that the model sees the same features as the camera workers (an int8 backbone is quantised
    and cached here, before the workers start).

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
            **{f"features.{k}": v for k, v in (features or {}).items()},
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
# CPU accounting from /proc
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of process ``pid`` (all its threads), seconds; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def system_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat (idle and iowait are not busy)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    total = sum(v[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return total - idle, total


def cpu_snapshot(groups: dict[str, list[int]]) -> dict:
    return {
        "t": time.monotonic(),
        "system": system_ticks(),
        "groups": {g: sum(proc_cpu_s(p) or 0.0 for p in pids) for g, pids in groups.items()},
    }


def cpu_usage(a: dict, b: dict) -> dict:
    """CPU between two snapshots: cores used per group, pipeline (all groups) and system %."""
    cpus = os.cpu_count() or 1
    dt = max(1e-6, b["t"] - a["t"])
    cores = {g: (b["groups"][g] - a["groups"][g]) / dt for g in a["groups"]}
    pipeline = sum(cores.values())
    busy, total = b["system"][0] - a["system"][0], b["system"][1] - a["system"][1]
    system = 100.0 * busy / total if total > 0 else None
    return {
        "seconds": dt,
        "cpus": cpus,
        "cores_used": cores,
        "pipeline_cores": pipeline,
        "pipeline_percent": 100.0 * pipeline / cpus,
        "system_percent": system,
        "other_percent": None if system is None else system - 100.0 * pipeline / cpus,
    }


def broker_pid(bootstrap: str) -> int | None:
    """The local fusewatch broker's JVM pid when ``bootstrap`` is that broker (else None)."""
    try:
        from fusewatch.stream.broker import kafka_status

        st = kafka_status(timeout=15)
    except Exception:  # noqa: BLE001 - not the scripts' broker: its CPU is not measured
        return None
    return st.pid if st.running and st.bootstrap == bootstrap else None


# ---------------------------------------------------------------------------------------------
# worker processes
def worker_overrides(args) -> list[tuple[str, str]]:
    """Config overrides of the camera workers (the model's calibration uses the same features)."""
    return [
        ("kafka.bootstrap_servers", args.bootstrap),
        ("features.extractors", args.extractors),
        ("features.threads", "1"),
        ("features.cnn_frames", str(args.cnn_frames)),
        ("source.overflow", "drop_oldest"),
        *[(k, v) for k, v in args.set_pairs],
    ]


def run_workers(args) -> int:
    """``--role workers``: live cameras (one MultiWorker, or one Worker thread each); stats as JSON
    to --stats-out. Builds and warms the extractors, writes ``<stats-out>.ready``, waits for the
    ``--go`` file (a wall-clock start time), then starts its cameras at their ``--offsets``."""
    from worker import iter_clips, serving_setup  # bench/worker.py

    from fusewatch.stream.config import load_config
    from fusewatch.stream.memory import tune_malloc
    from fusewatch.stream.transport.kafka import KafkaTransport
    from fusewatch.stream.worker import Worker

    tune_malloc()  # as `fusewatch worker` does
    over = worker_overrides(args) + [("topics.features", args.features_topic)]
    if args.thumbnails_topic:
        over.append(("topics.thumbnails", args.thumbnails_topic))
    cams = [tuple(c.split("=", 1)) for c in args.cams.split(",")]
    offsets = [float(x) for x in args.offsets.split(",")]
    cfg = load_config(env={}, overrides=over)
    warm = next(iter_clips(cams[0][1], cfg), None)
    cfg, extractors = serving_setup(cfg, args.precision, gate=False, warm=warm)
    t = KafkaTransport(cfg, consume=False)
    mw = None
    if args.multi:
        from fusewatch.stream.multi_worker import MultiWorker

        mw = MultiWorker(
            cfg,
            cams,
            transport=t,
            extractors=extractors,
            wall_anchor=None,
            realtime=True,
            speed=1.0,
            loop=0,
            overflow="drop_oldest",
            serve_metrics=False,
            start_delays=offsets,
        )
        workers = dict(mw.workers)
    else:  # one Worker thread per camera, each with its own extractors (as one process per camera)
        workers = {
            cam: Worker(
                cfg, cam, path, transport=t, wall_anchor=None, realtime=True, speed=1.0, loop=0, serve_metrics=False
            )
            for cam, path in cams
        }
    Path(args.stats_out + ".ready").write_text(str(os.getpid()))
    go = Path(args.go)
    deadline = time.monotonic() + 900
    while not go.is_file():
        if time.monotonic() > deadline:
            raise SystemExit("workers: no go signal")
        time.sleep(0.02)
    time.sleep(max(0.0, float(go.read_text()) - time.time()))
    start = time.monotonic()
    results: dict = {}
    errors: dict = {}
    if mw is not None:
        out = {}

        def run_multi():
            try:
                out["res"] = mw.run()
            except Exception as e:  # noqa: BLE001 - reported in the stats
                out["error"] = f"{type(e).__name__}: {e}"

        threads = [threading.Thread(target=run_multi, daemon=True)]
    else:

        def one(w, off):
            time.sleep(max(0.0, start + off - time.monotonic()))
            try:
                results[w.camera] = w.run()
            except Exception as e:  # noqa: BLE001 - reported in the stats
                errors[w.camera] = f"{type(e).__name__}: {e}"
                results[w.camera] = w.stats()

        threads = [threading.Thread(target=one, args=(w, o), daemon=True) for w, o in zip(workers.values(), offsets)]
    for x in threads:
        x.start()
    # each camera plays `seconds` of stream from its own (staggered) start
    for (cam, _), o in sorted(zip(cams, offsets), key=lambda p: p[1]):
        time.sleep(max(0.0, start + o + args.seconds - time.monotonic()))
        if cam in workers:
            workers[cam].stop()
    for x in threads:
        x.join(60)
    pool = None
    if mw is not None:
        if "res" in out:
            results, errors = dict(out["res"].cameras), dict(out["res"].errors)
        else:
            results = {c: w.stats() for c, w in workers.items()}
            errors = {"multi_worker": out.get("error", "MultiWorker did not finish")}
        pool = {
            "batches": mw.pool.batches,
            "clips": mw.pool.clips,
            "clips_per_batch": mw.pool.clips / max(1, mw.pool.batches),
        }
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
    res = {c: {k: getattr(r, k, None) for k in keep} for c, r in results.items()}
    extractors_v = [getattr(e, "version", e.name) for e in extractors]
    Path(args.stats_out).write_text(
        json.dumps({"cameras": res, "errors": errors, "pool": pool, "extractors": extractors_v})
    )
    return 0


def stream_cameras(args, cfg, tmp: Path, cams, seconds: float, tag: str, groups: dict, errors: list) -> dict:
    """Stream ``cams`` for ``seconds`` each in ``--procs`` worker processes (staggered over one
    clip period, started together once every process is ready); CPU measured over the steady
    window. Returns ``{"workers", "cpu", "cpu_timeline", "worker_processes", "expected_per_camera", ...}``."""
    period = cfg.clips.clip_len / cfg.source.sample_fps
    offsets = [i * period / len(cams) for i in range(len(cams))]
    nproc = max(1, min(args.procs, len(cams)))
    go = tmp / f"{tag}.go"
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    procs = []
    for k in range(nproc):
        mine = list(range(k, len(cams), nproc))
        stats_out = tmp / f"{tag}-workers{k}.json"
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--role",
            "workers",
            "--bootstrap",
            args.bootstrap,
            "--features-topic",
            cfg.topics.features,
            "--thumbnails-topic",
            cfg.topics.thumbnails,
            "--extractors",
            args.extractors,
            "--cnn-frames",
            str(args.cnn_frames),
            "--precision",
            args.precision,
            "--multi" if args.multi else "--no-multi",
            "--seconds",
            str(seconds),
            "--stats-out",
            str(stats_out),
            "--go",
            str(go),
            "--cams",
            ",".join(f"{cams[i][0]}={cams[i][1]}" for i in mine),
            "--offsets",
            ",".join(f"{offsets[i]:.3f}" for i in mine),
            *[x for k_, v in args.set_pairs for x in ("--set", f"{k_}={v}")],
        ]
        log = open(tmp / f"{tag}-workers{k}.log", "w")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        procs.append((p, stats_out, log))
    t0 = time.monotonic()
    while not all(Path(str(s) + ".ready").is_file() for _, s, _ in procs):
        dead = [p for p, s, _ in procs if p.poll() is not None]
        if dead or time.monotonic() - t0 > 600:
            errors.append(f"{tag}: worker processes did not get ready ({len(dead)} exited)")
            break
        time.sleep(0.1)
    ready_s = time.monotonic() - t0
    go_wall = time.time() + 1.0
    go.with_suffix(".tmp").write_text(repr(go_wall))
    go.with_suffix(".tmp").replace(go)
    go_m = time.monotonic() + (go_wall - time.time())
    mode = "MultiWorker" if args.multi else "Worker thread per camera"
    print(
        f"{tag}: {len(cams)} cameras in {nproc} worker processes ({mode}, ready in {ready_s:.1f}s), "
        f"staggered over {period:g}s, {seconds:g}s each ...",
        flush=True,
    )
    groups = dict(groups, workers=[p.pid for p, _, _ in procs])
    w0, w1 = go_m + max(offsets) + period + 1.0, go_m + min(offsets) + seconds - 0.5
    if w1 - w0 < 4.0:  # too short for a steady window: the whole stream
        w0, w1 = go_m + 0.5, go_m + seconds - 0.5
    snaps = []
    for t in list(np.arange(w0, w1, 5.0)) + [w1]:
        time.sleep(max(0.0, t - time.monotonic()))
        if snaps and time.monotonic() - snaps[-1]["t"] < 1.0:
            continue
        snaps.append(cpu_snapshot(groups))
    load_during = loadavg()
    for p, _, _ in procs:
        while p.poll() is None and time.monotonic() - go_m < seconds + 180:
            time.sleep(0.5)
        if p.poll() is None:
            p.kill()
            errors.append(f"{tag}: a worker process did not finish in time")
    workers: dict = {"cameras": {}, "errors": {}, "pool": [], "extractors": None}
    for p, stats_out, log in procs:
        p.wait(30)
        log.close()
        if stats_out.is_file():
            d = json.loads(stats_out.read_text())
            workers["cameras"].update(d["cameras"])
            workers["errors"].update(d["errors"])
            workers["pool"].append(d.get("pool"))
            workers["extractors"] = d.get("extractors")
        else:
            errors.append(f"{tag}: worker process exit {p.returncode}: {(Path(log.name).read_text())[-800:]}")
    cpu = cpu_usage(snaps[0], snaps[-1]) if len(snaps) >= 2 else None
    timeline = [
        {
            k: round(v, 1)
            for k, v in cpu_usage(a, b).items()
            if k in ("seconds", "pipeline_percent", "system_percent") and v is not None
        }
        for a, b in zip(snaps, snaps[1:])
    ]
    per_cam = {c: int(v.get("clips_published") or 0) for c, v in workers["cameras"].items()}
    return {
        "cameras": len(cams),
        "worker_processes": nproc,
        "mode": "multi" if args.multi else "threads",
        "ready_s": ready_s,
        "cpu": cpu,
        "cpu_window_s": [w0 - go_m, w1 - go_m],
        "cpu_timeline": timeline,
        "load_1min_end": load_during,
        "workers": workers,
        "published": sum(per_cam.values()),
        "published_per_camera": per_cam,
        "expected_per_camera": int(seconds / period),
        "frames_dropped": sum(int(c.get("frames_dropped") or 0) for c in workers["cameras"].values()),
        "frames_sampled": sum(int(c.get("frames_sampled") or 0) for c in workers["cameras"].values()),
    }


def fmt_cpu(c: dict | None) -> str:
    if not c:
        return "CPU not measured"
    per = ", ".join(f"{g} {v:.2f}" for g, v in c["cores_used"].items())
    sysp = (
        "n/a" if c["system_percent"] is None else f"{c['system_percent']:.0f} % (other load {c['other_percent']:.0f} %)"
    )
    return (
        f"pipeline {c['pipeline_cores']:.2f} cores = {c['pipeline_percent']:.0f} % of {c['cpus']} CPUs ({per}); "
        f"whole machine {sysp} over {c['seconds']:.0f}s"
    )


# ---------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    from fusewatch.stream.config import Config, parse_set

    default_reps = ",".join(Config().model.representations)
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cameras", default="auto", help="camera count, or auto (measured capacity; default)")
    ap.add_argument("--seconds", type=float, default=60.0, help="stream seconds per camera (default 60)")
    ap.add_argument(
        "--extractors", default=default_reps, help=f"comma-separated extractors (default: the model's, {default_reps})"
    )
    ap.add_argument("--cnn-frames", type=int, default=0, help="features.cnn_frames (default 0: all frames of a clip)")
    ap.add_argument("--precision", default="int8", choices=("int8", "fp32"), help="CNN backbones (default int8)")
    ap.add_argument(
        "--multi",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one MultiWorker per worker process (default; --no-multi: one Worker thread per camera)",
    )
    ap.add_argument("--procs", type=int, default=2, help="worker processes (cameras spread over them; default 2)")
    ap.add_argument("--target-cpu", type=float, default=0.8, help="--cameras auto: CPU fraction to fill (default 0.8)")
    ap.add_argument("--probe-cameras", type=int, default=4, help="--cameras auto: cameras of the probe (default 4)")
    ap.add_argument("--probe-seconds", type=float, default=20.0, help="--cameras auto: probe seconds (default 20)")
    ap.add_argument("--max-cameras", type=int, default=64, help="--cameras auto: upper bound (default 64)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="worker config override (e.g. worker.batch_wait_ms=2; features.* also reach the model's calibration)",
    )
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
    ap.add_argument("--thumbnails-topic", help=argparse.SUPPRESS)
    ap.add_argument("--stats-out", help=argparse.SUPPRESS)
    ap.add_argument("--go", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.set_pairs = parse_set(args.set)
    if args.role == "workers":
        return run_workers(args)
    if args.cameras != "auto" and not (args.cameras.isdigit() and int(args.cameras) > 0):
        ap.error("--cameras: a positive number or auto")

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
    cpus = os.cpu_count() or 1
    run = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="fw-latency-"))
    extractors = [e.strip() for e in args.extractors.split(",") if e.strip()]
    print(
        f"latency bench: {args.cameras} cameras x {args.seconds:g}s real-time stream, extractors "
        f"{','.join(extractors)} (cnn_frames={args.cnn_frames}, {args.precision}), "
        f"{'MultiWorker' if args.multi else 'Worker threads'} in {args.procs} processes, motion gate off, "
        f"broker {args.bootstrap}, {cpus} CPUs, load {load_before}",
        flush=True,
    )
    feat = {"cnn_frames": args.cnn_frames, "cnn_precision": args.precision}
    feat.update({k.split(".", 1)[1]: v for k, v in args.set_pairs if k.startswith("features.")})
    model = prepare_model(
        extractors,
        tmp / "model.pt",
        epochs=args.epochs,
        train=not args.no_train,
        features=feat,
        log=lambda s: print(s, flush=True),
    )
    over = {
        "kafka.bootstrap_servers": args.bootstrap,
        "kafka.connect_timeout_s": 15,
        "topics.features": f"fwbench.latency.features.{run}",
        "topics.alerts": f"fwbench.latency.alerts.{run}",
        "topics.dead_letter": f"fwbench.latency.deadletter.{run}",
        "topics.scores": f"fwbench.latency.scores.{run}",  # the engine publishes every clip's score
        "topics.thumbnails": f"fwbench.latency.thumbnails.{run}",  # the workers publish thumbnails
        "engine.group_id": f"fwbench.latency.{run}",
        "engine.backend": args.backend,
        "features.threads": 1,
        "alerts.thresholds": "config",
        "alerts.on": model["on"],
        "alerts.off": model["off"],
    }
    cfg = load_config(env={}, overrides=over)
    create_topics(cfg, names=[cfg.topics.features, cfg.topics.dead_letter, cfg.topics.scores, cfg.topics.thumbnails])
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

    bpid = broker_pid(args.bootstrap)
    groups = {"engine": [os.getpid()], **({"broker": [bpid]} if bpid else {})}
    if bpid is None:
        print(f"WARNING: {args.bootstrap} is not the local fusewatch broker: its CPU is not measured", flush=True)
    published_total = [0]

    def drain(published: int) -> None:
        """Wait until the engine has consumed every published clip and alerts have settled."""
        published_total[0] += published
        deadline = time.monotonic() + 60
        while svc.stats.records < published_total[0] and time.monotonic() < deadline and not errors:
            time.sleep(0.1)
        while time.monotonic() - last_alert[0] < 2.0 and time.monotonic() < deadline + 10:
            time.sleep(0.2)

    def engine_counts() -> dict:
        return {k: v for k, v in svc.stats.__dict__.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    def figures(cams: set) -> dict:
        with lock:
            sc = [x for x in scored if x[0] in cams]
            al = [x for x in alerts if x[1] in cams]
        first = {}
        for cam, clip, *_ in sc:
            first[cam] = min(first.get(cam, clip), clip)
        return {
            "clip_end_to_scored_s": percentiles(x[2] for x in sc),
            "clip_end_to_scored_s_without_first_clip": percentiles(x[2] for x in sc if x[1] != first[x[0]]),
            "clip_end_to_produced_s": percentiles(x[3] for x in sc),
            "produced_to_scored_s": percentiles(x[4] for x in sc),
            "clip_end_to_alert_record_s": percentiles(x[2] for x in al),
            "alerts_by_type": {t: sum(1 for a in al if a[0] == t) for t in ("new", "update", "end")},
            "cameras_with_alerts": len({a[1] for a in al}),
            "scored": len(sc),
        }

    # -- capacity probe (--cameras auto) -----------------------------------------------------
    capacity = None
    probe = None
    if args.cameras == "auto":
        base = cpu_snapshot(groups)
        time.sleep(5.0)
        idle = cpu_usage(base, cpu_snapshot(groups))
        pcams = [(c.replace("cam", "probe", 1), v) for c, v in camera_videos(args.probe_cameras)]
        probe = stream_cameras(args, cfg, tmp, pcams, args.probe_seconds, "probe", groups, errors)
        drain(probe["published"])
        probe.update(figures({c for c, _ in pcams}))
        fixed = idle["pipeline_cores"]
        if probe["cpu"] is None:
            raise SystemExit("probe: CPU not measured")
        per_camera = max(1e-6, (probe["cpu"]["pipeline_cores"] - fixed) / len(pcams))
        budget = args.target_cpu * cpus
        n = int(math.floor((budget - fixed) / per_camera))
        n = max(1, min(args.max_cameras, n))
        capacity = {
            "formula": "N = floor((target_cpu * cpus - fixed) / per_camera), 1 <= N <= max_cameras; "
            "predicted = fixed + N * per_camera; fixed = engine + broker CPU while idle; per_camera = "
            "(workers + engine + broker CPU during the probe - fixed) / probe cameras (CPU in cores = "
            "core-seconds per second, from /proc utime + stime)",
            "cpus": cpus,
            "target_cpu": args.target_cpu,
            "budget_cores": budget,
            "fixed_cores": fixed,
            "idle": idle,
            "probe_cameras": len(pcams),
            "probe_seconds": args.probe_seconds,
            "per_camera_cores": per_camera,
            "cameras": n,
            "predicted_cores": fixed + n * per_camera,
            "predicted_percent": 100.0 * (fixed + n * per_camera) / cpus,
            "probe_frames_dropped": probe["frames_dropped"],
        }
        print(f"probe: {fmt_cpu(probe['cpu'])}; idle (engine + broker) {fixed:.3f} cores", flush=True)
        print(
            f"capacity: per camera {per_camera:.3f} cores, fixed {fixed:.3f} cores -> N = floor(({args.target_cpu:g} x "
            f"{cpus} - {fixed:.3f}) / {per_camera:.3f}) = {n} cameras (predicted {capacity['predicted_cores']:.2f} "
            f"cores = {capacity['predicted_percent']:.0f} %)"
            + (f"; WARNING: the probe dropped {probe['frames_dropped']} frames" if probe["frames_dropped"] else ""),
            flush=True,
        )
        n_cams = n
    else:
        n_cams = int(args.cameras)
    engine_before = engine_counts()

    # -- the measured run ---------------------------------------------------------------------
    cams = camera_videos(n_cams)
    st = stream_cameras(args, cfg, tmp, cams, args.seconds, "stream", groups, errors)
    drain(st["published"])
    stop.set()
    for th in threads:
        th.join(30)
    eng_t.close()
    reader.close()
    fig = figures({c for c, _ in cams})
    engine_after = engine_counts()
    expected = st["expected_per_camera"]
    per_cam = st["published_per_camera"]
    res = {
        "config": {
            "cameras": len(cams),
            "cameras_chosen": "auto (measured capacity)" if args.cameras == "auto" else "given",
            "seconds_per_camera": args.seconds,
            "extractors": extractors,
            "extractor_versions": st["workers"]["extractors"],
            "cnn_frames": args.cnn_frames,
            "precision": args.precision,
            "motion_gate": False,
            "mode": st["mode"],
            "worker_processes": st["worker_processes"],
            "set": dict(args.set_pairs),
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
            "target_p99_s": TARGET_P99_S,
        },
        "model": model,
        "capacity": capacity,
        "probe": probe,
        "cpu": st["cpu"],
        "cpu_window_s": st["cpu_window_s"],
        "cpu_timeline": st["cpu_timeline"],
        "host": {
            "cpus": cpus,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "load_before": load_before,
            "load_at_stream_end": st["load_1min_end"],
            "load_after": loadavg(),
        },
        **{k: v for k, v in fig.items() if k != "scored"},
        "clips": {
            "published": st["published"],
            "scored": fig["scored"],
            "expected_per_camera": expected,
            "min_per_camera": min(per_cam.values(), default=0),
            "max_per_camera": max(per_cam.values(), default=0),
            "per_camera": per_cam,
            "frames_dropped": st["frames_dropped"],
            "frames_sampled": st["frames_sampled"],
        },
        "engine": {k: engine_after[k] - engine_before.get(k, 0) for k in engine_after},
        "workers": st["workers"],
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
        f"cameras: {len(cams)} ({res['config']['cameras_chosen']}); clips: {c['published']} published "
        f"({c['min_per_camera']}..{c['max_per_camera']} per camera, {expected} expected at real time), "
        f"{c['scored']} scored; frames dropped by drop_oldest: {c['frames_dropped']} of {c['frames_sampled']} sampled"
    )
    cpu = res["cpu"]
    ok_cpu = cpu is not None and cpu["pipeline_percent"] <= 100 * args.target_cpu
    print(
        f"CPU during the run: {fmt_cpu(cpu)}"
        + ("" if cpu is None else f" (target <= {100 * args.target_cpu:.0f} %: {'OK' if ok_cpu else 'ABOVE'})")
    )
    print(f"clip end -> scored        {fmt(res['clip_end_to_scored_s'])}")
    print(f"  (without 1st clip/cam)  {fmt(res['clip_end_to_scored_s_without_first_clip'])}")
    print(f"  clip end -> produced    {fmt(res['clip_end_to_produced_s'])}")
    print(f"  produced -> scored      {fmt(res['produced_to_scored_s'])}")
    ar = res["clip_end_to_alert_record_s"]
    verdict = (
        ""
        if not ar.get("n")
        else f"; p99 target <= {TARGET_P99_S * 1000:.0f} ms: {'OK' if ar['p99'] <= TARGET_P99_S else 'ABOVE'}"
    )
    print(
        f"clip end -> alert record {fmt(ar)}  "
        f"{res['alerts_by_type']} on {res['cameras_with_alerts']} cameras (low thresholds on purpose){verdict}"
    )
    pools = [p for p in st["workers"]["pool"] if p]
    print(
        f"engine: {res['engine'].get('records')} records, {res['engine'].get('batches')} batches, scoring "
        f"{res['engine'].get('score_seconds', 0):.2f}s in all"
        + (
            f"; worker pools: {sum(p['clips'] for p in pools)} clips in {sum(p['batches'] for p in pools)} batches"
            if pools
            else ""
        )
        + f"; load average before {load_before}, at stream end {st['load_1min_end']}, after {res['host']['load_after']}; "
        f"run {res['wall_s']:.0f}s"
    )
    if errors or st["workers"]["errors"]:
        print(f"ERRORS: {errors} {st['workers']['errors']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1, default=str) + "\n")
        print(f"wrote {args.json}")
    return 1 if errors or st["workers"]["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
