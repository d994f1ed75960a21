"""Worker metrics: Prometheus (per-worker :class:`CollectorRegistry`) plus plain counters for tests.

Every worker owns a :class:`WorkerMetrics`. By default it also owns a private registry, so
several workers in one process never clash; a replay of several files shares one
:class:`MetricSet` (metrics labelled by ``camera``) and serves it on one port.

Exported series (all labelled ``camera``)::

    fusewatch_frames_decoded_total      frames decoded from the source
    fusewatch_frames_sampled_total      frames kept by the sample_fps sampler
    fusewatch_frames_processed_total    sampled frames taken off the queue by the worker
    fusewatch_frames_dropped_total      sampled frames dropped by the drop_oldest queue
    fusewatch_reconnects_total          reconnect attempts (live sources)
    fusewatch_decode_errors_total       packets/frames that failed to decode
    fusewatch_clips_produced_total      feature messages handed to the transport
    fusewatch_clips_published_total     feature messages acknowledged by the transport (broker)
    fusewatch_clips_lost_total          feature messages finally not delivered (never published)
    fusewatch_publish_errors_total      feature messages that could not be produced
    fusewatch_input_fps                 decoded frames per second (recent)
    fusewatch_processed_fps             sampled frames processed per second (recent)
    fusewatch_publish_latency_seconds   clip ready (last frame decoded) -> produce() returned
    fusewatch_extract_seconds           per-extractor time per clip (label ``extractor``)
"""

from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

COUNTERS = (
    "frames_decoded",
    "frames_sampled",
    "frames_processed",
    "frames_dropped",
    "reconnects",
    "decode_errors",
    "frames_missing",
    "timestamp_jumps",
    "resolution_changes",
    "clips_produced",
    "clips_published",
    "clips_lost",
    "publish_errors",
    "health_events",
)
_HELP = {
    "frames_decoded": "Frames decoded from the source",
    "frames_sampled": "Frames kept by the sample_fps sampler",
    "frames_processed": "Sampled frames taken off the queue by the worker",
    "frames_dropped": "Sampled frames dropped by the drop_oldest queue",
    "reconnects": "Source reconnect attempts",
    "decode_errors": "Packets or frames that failed to decode",
    "frames_missing": "Frames of a file lost to decode errors (from its timestamps; frame numbers skip them)",
    "timestamp_jumps": "Source timestamps that stepped backwards or jumped far ahead (splices, wraps, gaps)",
    "resolution_changes": "Mid-stream frame size changes (the clip spanning one is dropped)",
    "clips_produced": "Feature messages handed to the transport",
    "clips_published": "Feature messages acknowledged by the transport (broker)",
    "clips_lost": "Feature messages finally not delivered (retries exhausted or rejected)",
    "publish_errors": "Feature messages that could not be produced",
    "health_events": "Camera health state changes (offline, frozen, black, tamper, ok)",
}
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class MetricSet:
    """The metric families on one registry; label values (cameras) are added by WorkerMetrics."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.counters = {n: Counter(f"fusewatch_{n}", _HELP[n], ["camera"], registry=r) for n in COUNTERS}
        self.input_fps = Gauge("fusewatch_input_fps", "Decoded frames per second", ["camera"], registry=r)
        self.processed_fps = Gauge(
            "fusewatch_processed_fps", "Sampled frames processed per second", ["camera"], registry=r
        )
        self.latency = Histogram(
            "fusewatch_publish_latency_seconds",
            "Clip ready (last frame decoded) to produce() returned",
            ["camera"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.extract = Histogram(
            "fusewatch_extract_seconds",
            "Extractor time per clip",
            ["camera", "extractor"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._server = None
        self._port: int | None = None

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Start the HTTP exposition server once (port 0: any free port); returns the bound port."""
        if self._server is None:
            res = start_http_server(port, addr=addr, registry=self.registry)
            server = res[0] if isinstance(res, tuple) else res
            self._server = server
            self._port = server.server_port if server is not None and hasattr(server, "server_port") else port
        return int(self._port or port)

    def shutdown(self) -> None:
        if self._server is not None and hasattr(self._server, "shutdown"):
            try:
                self._server.shutdown()
                self._server.server_close()
            except Exception:
                pass
        self._server = None


class _Rate:
    """Events per second over a sliding window of ~``window`` seconds."""

    def __init__(self, window: float = 5.0):
        self.window = window
        self._marks: list[tuple[float, int]] = []

    def update(self, total: int, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        self._marks.append((now, total))
        while len(self._marks) > 2 and now - self._marks[1][0] >= self.window:
            self._marks.pop(0)
        t0, n0 = self._marks[0]
        return (total - n0) / (now - t0) if now > t0 else 0.0


class WorkerMetrics:
    """One camera's metrics: Prometheus children plus a plain ``values`` dict (thread-safe)."""

    def __init__(self, camera: str, metric_set: MetricSet | None = None):
        self.camera = camera
        self.set = metric_set or MetricSet()
        self.values: dict[str, float] = {n: 0 for n in COUNTERS}
        self.values.update(input_fps=0.0, processed_fps=0.0)
        self.latencies: list[float] = []
        self.extract_time: dict[str, float] = {}
        self.extract_calls: dict[str, int] = {}
        self._lock = threading.Lock()
        self._c = {n: self.set.counters[n].labels(camera=camera) for n in COUNTERS}
        self._in_rate, self._proc_rate = _Rate(), _Rate()
        self._last_rate = 0.0

    @property
    def registry(self) -> CollectorRegistry:
        return self.set.registry

    def inc(self, name: str, n: int = 1) -> None:
        if n <= 0:
            return
        with self._lock:
            self.values[name] += n
        self._c[name].inc(n)
        if name in ("frames_decoded", "frames_processed"):
            self._update_rates()

    def _update_rates(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_rate < 0.5:
            return
        self._last_rate = now
        with self._lock:
            fin = self._in_rate.update(int(self.values["frames_decoded"]), now)
            fproc = self._proc_rate.update(int(self.values["frames_processed"]), now)
            self.values["input_fps"], self.values["processed_fps"] = fin, fproc
        self.set.input_fps.labels(camera=self.camera).set(fin)
        self.set.processed_fps.labels(camera=self.camera).set(fproc)

    def observe_latency(self, seconds: float) -> None:
        with self._lock:
            self.latencies.append(seconds)
            if len(self.latencies) > 10000:
                del self.latencies[:5000]
        self.set.latency.labels(camera=self.camera).observe(seconds)

    def observe_extract(self, extractor: str, seconds: float) -> None:
        with self._lock:
            self.extract_time[extractor] = self.extract_time.get(extractor, 0.0) + seconds
            self.extract_calls[extractor] = self.extract_calls.get(extractor, 0) + 1
        self.set.extract.labels(camera=self.camera, extractor=extractor).observe(seconds)

    def snapshot(self) -> dict:
        """Plain dict of every counter and gauge (ints for counters)."""
        with self._lock:
            out: dict = {k: (int(v) if k in COUNTERS else float(v)) for k, v in self.values.items()}
            out["extract_ms_per_clip"] = {
                k: 1000.0 * t / max(1, self.extract_calls.get(k, 1)) for k, t in self.extract_time.items()
            }
            lat = sorted(self.latencies)
        if lat:
            out["publish_latency_p50"] = lat[len(lat) // 2]
            out["publish_latency_max"] = lat[-1]
        return out
