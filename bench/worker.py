"""Camera-worker benchmark (CPU) on a real CCTV clip: where the time of one camera goes.

    python bench/worker.py [--video ../shared/data/cctv/vtest.avi] [--frames N] [--repeat R]
                           [--extractors mobilenetv2,flow] [--threads T] [--set features.x=y]
                           [--json OUT.json]

Stages, each timed with wall clock and process CPU time (all threads, ONNX Runtime's included):

1. ``decode``   — the worker's source alone: PyAV decode + sample to ``source.sample_fps`` + RGB
                  conversion, through the bounded queue (policy ``block``), nothing else.
2. ``extract``  — the extractors alone (default: ``cfg.features.extractors``) on the same clips,
                  decoded beforehand clip by clip (decode time excluded); per-extractor ms/clip.
3. ``worker``   — the full :class:`fusewatch.stream.worker.Worker` (decode thread + clip windows +
                  extractors + FeatureMessage encoding + produce to the in-process bus).

Derived figures:

* ``efficiency = (decode + extract) / worker`` (wall; target >= 0.8: the worker adds little on
  top of its parts — above 1 when decoding overlaps extraction on another core);
* ``cameras_per_core = video seconds / worker CPU seconds`` (how many real-time cameras at
  ``sample_fps`` one core sustains; target >= 5 at 10 sampled fps).

Multi-camera mode (``--cameras N``): in the same run, (a) today's one-process-per-camera path —
one :class:`Worker` with fp32 backbones (its ``cameras_per_core`` as above; memory per camera = that
process's RSS) — and (b) one :class:`fusewatch.stream.multi_worker.MultiWorker` serving N cameras
of the same video (distinct ids, as fast as it decodes, queue policy ``block``) with
``--precision`` backbones and per-frame extraction (``worker.per_frame``, the default; ``--set
worker.per_frame=false``: whole clips through the shared batched extractor pool): ``cameras_per_core = N × video
seconds / CPU seconds``; memory per camera = (peak RSS during the run − RSS before) / N, and the
whole process's peak RSS / N. The figure is the ratio (b) / (a). ``--gate`` adds a third run with
the motion gate on (reported separately; not part of the ratio). ``--floor`` adds each irreducible
part's CPU (decode, CNN inference, optical flow; bench/worker_floor.py) and the cameras-per-core
bound they set.

With ``--repeat R`` every figure is the median over R runs. Extractors are built once and warmed
up on one clip before timing (CNN backbones are exported to ONNX on first use, see
``fusewatch.stream.extractors``).
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from fusewatch.stream.clips import ClipBuilder, Frame  # noqa: E402
from fusewatch.stream.config import load_config, parse_set  # noqa: E402
from fusewatch.stream.paths import shared_data  # noqa: E402
from fusewatch.stream.sampling import FrameSampler  # noqa: E402
from fusewatch.stream.sources import EndOfStream, VideoEvent, VideoSource, parse_source  # noqa: E402
from fusewatch.stream.sources.pyav_reader import PyAVReader  # noqa: E402
from fusewatch.stream.transport import BusTransport, InProcessBus  # noqa: E402
from fusewatch.stream.worker import Worker, default_extractors  # noqa: E402

DEFAULT_VIDEO = shared_data("cctv", "vtest.avi")


class Timer:
    def __enter__(self):
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.w0
        self.cpu = time.process_time() - self.c0


def trim_video(src: Path, n_frames: int, out_dir: Path) -> Path:
    """Copy the first ``n_frames`` video packets of ``src`` (stream copy, no re-encode)."""
    import av

    dst = out_dir / f"{src.stem}_first{n_frames}{src.suffix}"
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream_from_template(vin)
        n = 0
        for pkt in inp.demux(vin):
            if pkt.dts is None:
                continue
            if n >= n_frames:
                break
            pkt.stream = vout
            out.mux(pkt)
            n += 1
    return dst


def decode_only(video: str, cfg, want_audio: bool) -> dict:
    src = VideoSource(video, cfg.source, wall_anchor=0.0, overflow="block", want_audio=want_audio)
    n = 0
    with Timer() as t:
        src.start()
        while True:
            it = src.get(1.0)
            if isinstance(it, EndOfStream):
                if it.error:
                    raise SystemExit(it.error)
                break
            if isinstance(it, Frame):
                n += 1
    src.stop()
    return {
        "wall_s": t.wall,
        "cpu_s": t.cpu,
        "frames_decoded": src.counts["decoded"],
        "frames_sampled": n,
        "fps": src.info["fps"],
    }


def iter_clips(video: str, cfg):
    """Clips decoded synchronously in this thread (so extraction can be timed on its own)."""
    spec = parse_source(video, cfg.source)
    reader = PyAVReader(spec, cfg.source, want_audio=False)
    sampler = FrameSampler(cfg.source.sample_fps)
    builder = ClipBuilder.from_config(cfg)
    ref = None
    i = 0
    try:
        for ev in reader:
            if not isinstance(ev, VideoEvent):
                continue
            raw = ev.raw_pts if ev.raw_pts is not None else i / (reader.fps or cfg.source.sample_fps)
            ref = raw if ref is None else ref
            pts = raw - ref
            if sampler.keep(pts):
                yield from builder.push(Frame(index=i, pts=pts, wall=pts, image=ev.convert()))
            i += 1
    finally:
        reader.close()


def extract_only(video: str, cfg, extractors) -> dict:
    per = {e.name: {"wall_s": 0.0, "cpu_s": 0.0} for e in extractors}
    clips = 0
    for clip in iter_clips(video, cfg):
        clips += 1
        for e in extractors:
            with Timer() as t:
                e.extract(clip.frames, clip.audio, clip.audio_rate)
            per[e.name]["wall_s"] += t.wall
            per[e.name]["cpu_s"] += t.cpu
    return {
        "clips": clips,
        "wall_s": sum(p["wall_s"] for p in per.values()),
        "cpu_s": sum(p["cpu_s"] for p in per.values()),
        "per_extractor_ms_per_clip": {k: 1000 * v["wall_s"] / max(1, clips) for k, v in per.items()},
        "per_extractor_cpu_ms_per_clip": {k: 1000 * v["cpu_s"] / max(1, clips) for k, v in per.items()},
    }


def full_worker(video: str, cfg, extractors) -> dict:
    bus = InProcessBus()
    w = Worker(
        cfg,
        "bench",
        video,
        transport=BusTransport(bus),
        extractors=extractors,
        wall_anchor=0.0,
        overflow="block",
        serve_metrics=False,
    )
    with Timer() as t:
        st = w.run()
    return {
        "wall_s": t.wall,
        "cpu_s": t.cpu,
        "clips": st.clips_published,
        "frames_decoded": st.frames_decoded,
        "frames_dropped": st.frames_dropped,
        "publish_latency_p50_s": st.publish_latency_p50,
        "per_extractor_ms_per_clip": st.extract_ms_per_clip,
    }


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def multi_worker(video: str, cfg, extractors, n: int) -> dict:
    """N cameras of ``video`` through one MultiWorker (shared batched pool); CPU and RSS."""
    import threading

    from fusewatch.stream.multi_worker import MultiWorker

    base = rss_mb()
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.wait(0.05):
            peak[0] = max(peak[0], rss_mb())

    bus = InProcessBus()
    mw = MultiWorker(
        cfg,
        [(f"cam{i:02d}", video) for i in range(n)],
        transport=BusTransport(bus),
        extractors=extractors,
        wall_anchor=0.0,
        overflow="block",
        serve_metrics=False,
    )
    th = threading.Thread(target=sample, daemon=True)
    th.start()
    with Timer() as t:
        res = mw.run()
    done.set()
    th.join()
    if res.errors:
        raise SystemExit(f"bench/worker.py: cameras failed: {res.errors}")
    return {
        "wall_s": t.wall,
        "cpu_s": t.cpu,
        "clips": res.clips_published,
        "batches": mw.pool.batches,
        "frame_batches": mw.batcher.batches if mw.batcher is not None else 0,
        "frames_batched": mw.batcher.frames if mw.batcher is not None else 0,
        "clips_gated": mw.clips_gated,
        "rss_before_mb": base,
        "rss_peak_mb": peak[0],
        "frames_dropped": sum(s.frames_dropped for s in res.cameras.values()),
    }


def serving_setup(cfg, precision: str = "int8", *, gate: bool = False, warm=None):
    """``(cfg copy, extractors)`` for camera serving: backbones at ``precision`` (``fp32`` | ``int8``:
    static int8 QDQ, quantised and cached on first use), the motion gate ``gate`` (off by default),
    extractors built once for sharing (a :class:`MultiWorker`'s pool) and warmed up on the clip
    ``warm`` when given (ONNX sessions, OpenCV, allocations). Shared with bench/latency.py."""
    import copy

    out = copy.deepcopy(cfg)
    out.features.cnn_precision = precision
    out.features.motion_gate = bool(gate)
    extractors = default_extractors(out)
    if warm is not None:
        for e in extractors:
            e.extract(warm.frames, warm.audio, warm.audio_rate)
    return out, extractors


def multi_mode(args, cfg, path: str) -> dict:
    """One-process-per-camera (fp32 Worker) vs MultiWorker (``--precision``), same run."""
    import copy
    import gc

    first = next(iter_clips(path, cfg))
    fps_cfg, single_ex = serving_setup(cfg, "fp32", warm=first)
    mcfg, multi_ex = serving_setup(cfg, args.precision, warm=first)
    gcfg = copy.deepcopy(mcfg)
    gcfg.features.motion_gate = True
    sing, mult, gate = [], [], []
    for _ in range(max(1, args.repeat)):
        gc.collect()
        sing.append(full_worker(path, fps_cfg, single_ex))
        sing[-1]["rss_mb"] = rss_mb()
        mult.append(multi_worker(path, mcfg, multi_ex, args.cameras))
        if args.gate:
            gate.append(multi_worker(path, gcfg, multi_ex, args.cameras))
    fps = cfg.source.sample_fps
    video_s = sing[0]["frames_decoded"] / fps
    one = video_s / _median(sing, "cpu_s")
    many = args.cameras * video_s / _median(mult, "cpu_s")
    res = {
        "cameras": args.cameras,
        "precision": args.precision,
        "video_seconds": video_s,
        "single": {
            "cpu_s": _median(sing, "cpu_s"),
            "wall_s": _median(sing, "wall_s"),
            "cameras_per_core": one,
            "rss_mb_per_camera": _median(sing, "rss_mb"),
            "extractors": [e.version for e in single_ex],
        },
        "multi": {
            "cpu_s": _median(mult, "cpu_s"),
            "wall_s": _median(mult, "wall_s"),
            "cameras_per_core": many,
            "clips": mult[0]["clips"],
            "batches": mult[0]["batches"],
            "frame_batches": mult[0]["frame_batches"],
            "frames_batched": mult[0]["frames_batched"],
            "frames_dropped": mult[0]["frames_dropped"],
            "rss_mb_per_camera_marginal": (_median(mult, "rss_peak_mb") - _median(mult, "rss_before_mb"))
            / args.cameras,
            "rss_mb_per_camera_total": _median(mult, "rss_peak_mb") / args.cameras,
            "extractors": [e.version for e in multi_ex],
            "pool_threads": cfg.worker.pool_threads,
            "batch_clips": cfg.worker.batch_clips,
        },
        "ratio_multi_over_single": many / one,
        "target_cameras_per_core": 10.0,
    }
    print(
        f"one process per camera (fp32): {one:.2f} cameras/core ({res['single']['cpu_s']:.2f} CPU s for "
        f"{video_s:.1f} s of video), RSS {res['single']['rss_mb_per_camera']:.0f} MB per camera (process)"
    )
    print(
        f"MultiWorker x{args.cameras} ({args.precision}): {many:.2f} cameras/core ({res['multi']['cpu_s']:.2f} "
        f"CPU s, {res['multi']['clips']} clips in {res['multi']['batches']} pool batches, "
        f"{res['multi']['frames_batched']} frames in {res['multi']['frame_batches']} frame batches), RSS per camera "
        f"{res['multi']['rss_mb_per_camera_marginal']:.1f} MB marginal / "
        f"{res['multi']['rss_mb_per_camera_total']:.1f} MB total"
    )
    print(
        f"ratio multi / single = {res['ratio_multi_over_single']:.2f}; cameras per core {many:.2f} "
        f"(target >= 10) {'OK' if many >= 10 else 'BELOW TARGET'}"
    )
    if args.floor:
        from worker_floor import floor, report

        res["floor"] = floor(path, mcfg, multi_ex, decode_only, iter_clips)
        print(report(res["floor"], many, res["target_cameras_per_core"]))
    if gate:
        g = args.cameras * video_s / _median(gate, "cpu_s")
        res["gated"] = {
            "cpu_s": _median(gate, "cpu_s"),
            "cameras_per_core": g,
            "clips_gated": gate[0]["clips_gated"],
            "clips": gate[0]["clips"],
        }
        print(
            f"with motion gate (separate, not counted): {g:.2f} cameras/core, "
            f"{gate[0]['clips_gated']}/{gate[0]['clips']} clips gated"
        )
    return res


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _median_dict(runs: list[dict], key: str) -> dict:
    names = runs[0][key].keys()
    return {n: statistics.median(r[key][n] for r in runs) for n in names}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--video", default=str(DEFAULT_VIDEO))
    ap.add_argument("--frames", type=int, default=0, help="only the first N frames of the video")
    ap.add_argument("--repeat", type=int, default=1, help="runs per stage (medians reported)")
    ap.add_argument("--extractors", default=None, help="comma list (default: cfg.features.extractors)")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (features.threads)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="config override; unknown features.* fields are set as attributes (e.g. cnn_frames)",
    )
    ap.add_argument("--config", default=None, help="TOML config file")
    ap.add_argument("--json", default=None, metavar="OUT", help="write the results as JSON")
    ap.add_argument("--cameras", type=int, default=0, help="multi-camera mode: N cameras in one MultiWorker")
    ap.add_argument("--precision", default="int8", choices=("fp32", "int8"), help="multi mode: backbone precision")
    ap.add_argument("--gate", action="store_true", help="multi mode: also a run with the motion gate")
    ap.add_argument(
        "--floor", action="store_true", help="multi mode: also the irreducible CPU per frame (bench/worker_floor.py)"
    )
    args = ap.parse_args(argv)

    video = Path(args.video)
    if not video.exists():
        print(f"bench/worker.py: video not found: {video}", file=sys.stderr)
        return 2
    known = set(load_config(env={}).features.__dataclass_fields__)
    over, extra = [], {}
    for k, v in parse_set(args.set):
        if k.startswith("features.") and k.split(".", 1)[1] not in known:
            extra[k.split(".", 1)[1]] = v  # optional extractor settings read with getattr
        else:
            over.append((k, v))
    if args.extractors:
        over.append(("features.extractors", args.extractors))
    if args.threads is not None:
        over.append(("features.threads", str(args.threads)))
    over.append(("source.overflow", "block"))
    cfg = load_config(args.config, overrides=over, env={})
    for k, v in extra.items():
        setattr(cfg.features, k, int(v) if v.lstrip("-").isdigit() else v)

    with tempfile.TemporaryDirectory() as tmp:
        path = str(trim_video(video, args.frames, Path(tmp)) if args.frames > 0 else video)
        if args.cameras > 0:
            from fusewatch.stream.memory import tune_malloc

            tune_malloc()  # as `fusewatch worker` does: freed frame buffers go back to the OS
            res = multi_mode(args, cfg, path)
            res.update(
                video=str(video),
                cpu_count=os.cpu_count(),
                platform=platform.platform(),
                repeat=max(1, args.repeat),
                sample_fps=cfg.source.sample_fps,
            )
            if args.json:
                Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
            return 0
        t0 = time.perf_counter()
        extractors = default_extractors(cfg)
        build_s = time.perf_counter() - t0
        want_audio = any(getattr(e, "needs_audio", False) for e in extractors)
        first = next(iter_clips(path, cfg), None)
        if first is None:
            print("bench/worker.py: video shorter than one clip", file=sys.stderr)
            return 2
        for e in extractors:  # warm-up (ONNX sessions, OpenCV, allocations)
            e.extract(first.frames, first.audio, first.audio_rate)
        dec, ext, wrk = [], [], []
        for _rep in range(max(1, args.repeat)):
            dec.append(decode_only(path, cfg, want_audio))
            ext.append(extract_only(path, cfg, extractors))
            wrk.append(full_worker(path, cfg, extractors))

    fps = dec[0]["fps"] or cfg.source.sample_fps
    video_s = dec[0]["frames_decoded"] / fps
    d_wall, d_cpu = _median(dec, "wall_s"), _median(dec, "cpu_s")
    e_wall, e_cpu = _median(ext, "wall_s"), _median(ext, "cpu_s")
    w_wall, w_cpu = _median(wrk, "wall_s"), _median(wrk, "cpu_s")
    res_frames = dec[0]["frames_decoded"]
    res = {
        "video": str(video),
        "frames": dec[0]["frames_decoded"],
        "sampled_frames": dec[0]["frames_sampled"],
        "native_fps": fps,
        "video_seconds": video_s,
        "clips": wrk[0]["clips"],
        "sample_fps": cfg.source.sample_fps,
        "clip_len": cfg.clips.clip_len,
        "clip_stride": cfg.clips.clip_stride,
        "extractors": [f"{e.name}:{e.version}" for e in extractors],
        "extractor_build_s": build_s,
        "threads": cfg.features.threads,
        "repeat": max(1, args.repeat),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "decode": {"wall_s": d_wall, "cpu_s": d_cpu, "fps": dec[0]["frames_decoded"] / d_wall},
        "extract": {
            "wall_s": e_wall,
            "cpu_s": e_cpu,
            "per_extractor_ms_per_clip": _median_dict(ext, "per_extractor_ms_per_clip"),
            "per_extractor_cpu_ms_per_clip": _median_dict(ext, "per_extractor_cpu_ms_per_clip"),
        },
        "worker": {
            "wall_s": w_wall,
            "cpu_s": w_cpu,
            "frames_dropped": wrk[0]["frames_dropped"],
            "per_extractor_ms_per_clip": _median_dict(wrk, "per_extractor_ms_per_clip"),
            "publish_latency_p50_s": wrk[0]["publish_latency_p50_s"],
        },
        "efficiency": (d_wall + e_wall) / w_wall if w_wall else None,
        "efficiency_cpu": (d_cpu + e_cpu) / w_cpu if w_cpu else None,
        "realtime_factor": video_s / w_wall if w_wall else None,
        "cameras_per_core": video_s / w_cpu if w_cpu else None,
        "worker_fps": res_frames / w_wall if w_wall else None,
        "worker_fps_over_decode_fps": (res_frames / w_wall) / (dec[0]["frames_decoded"] / d_wall)
        if w_wall and d_wall
        else None,
        "targets": {"efficiency": 0.8, "cameras_per_core": 5.0},
    }

    print(
        f"video      {video.name}: {res['frames']} frames, {video_s:.1f} s at {fps:g} fps, "
        f"{res['sampled_frames']} sampled at {cfg.source.sample_fps:g} fps, {res['clips']} clips"
    )
    print(
        f"extractors {', '.join(res['extractors'])}  (threads={cfg.features.threads}, "
        f"{os.cpu_count()} CPUs, median of {res['repeat']})"
    )
    print(f"{'stage':<10}{'wall s':>10}{'CPU s':>10}")
    for name in ("decode", "extract", "worker"):
        print(f"{name:<10}{res[name]['wall_s']:>10.2f}{res[name]['cpu_s']:>10.2f}")
    print("per extractor (ms/clip, extract-only wall | CPU | in worker wall):")
    for n, ms in res["extract"]["per_extractor_ms_per_clip"].items():
        print(
            f"  {n:<22}{ms:>9.1f} |{res['extract']['per_extractor_cpu_ms_per_clip'][n]:>9.1f} |"
            f"{res['worker']['per_extractor_ms_per_clip'].get(n, float('nan')):>9.1f}"
        )
    eff, cpc = res["efficiency"], res["cameras_per_core"]
    print(
        f"efficiency (decode + extract) / worker = {eff:.2f} wall, {res['efficiency_cpu']:.2f} CPU "
        f"(target >= 0.8) {'OK' if eff >= 0.8 else 'BELOW TARGET'}"
    )
    print(
        f"worker fps / decode-only fps = {res['worker_fps']:.1f} / {res['decode']['fps']:.1f} = "
        f"{res['worker_fps_over_decode_fps']:.3f} (decode is not the bottleneck: the extractors are)"
    )
    print(
        f"cameras per core at {cfg.source.sample_fps:g} sampled fps = {cpc:.2f} "
        f"(target >= 5) {'OK' if cpc >= 5 else 'BELOW TARGET'}; real-time factor {res['realtime_factor']:.1f}x"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
