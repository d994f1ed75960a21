"""Engine observability: Prometheus metrics and ``/healthz`` / ``/readyz`` on ``engine.metrics_port``.

Series (own :class:`CollectorRegistry` per engine)::

    fusewatch_engine_records_total                   feature records consumed (live)
    fusewatch_engine_scored_total                    clips scored (live)
    fusewatch_engine_alerts_total                    alert messages produced
    fusewatch_engine_dead_letters_total{reason}      records dead-lettered, by reason
    fusewatch_engine_dropped_total{reason}           records dropped without a dead letter (duplicate_clip)
    fusewatch_engine_restarts_total{reason}          camera streams restarted (new_epoch, legacy_restart, resync)
    fusewatch_engine_cold_starts_total{reason}       cameras starting without history (evicted_lru, evicted_idle,
                                                     unknown_history, rebuild_partial)
    fusewatch_engine_evictions_total{reason}         cameras evicted (lru, idle)
    fusewatch_engine_late_clips_total                clips scored after engine.late_after_s
    fusewatch_engine_cameras                         cameras held
    fusewatch_engine_lag_records{partition}          end offset − position per assigned partition
    fusewatch_engine_rebuild_records_total           records re-read by rebuilds
    fusewatch_engine_rebuild_seconds                 duration of the last rebuild (histogram)
    fusewatch_engine_info{backend,model}             1
    fusewatch_engine_model{version}                  1 for the model new cameras get (live rollout target)
    fusewatch_engine_model_loads_total               models loaded, warmed and staged by a rollout
    fusewatch_engine_model_load_failures_total{reason}  rollouts refused, the old model kept
    fusewatch_engine_model_switches_total            cameras switched to a staged model
    fusewatch_engine_model_pending_cameras           cameras still scoring with a previous model

``/healthz``: 200 while the main loop completed a step within ``engine.stall_timeout`` (or 60 s),
else 503. ``/readyz``: 200 once partitions are assigned and their state rebuilt, else 503.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class EngineMetrics:
    def __init__(self, backend: str, model: str):
        self.registry = r = CollectorRegistry()
        p = "fusewatch_engine_"
        self.records = Counter(p + "records", "Feature records consumed", registry=r)
        self.scored = Counter(p + "scored", "Clips scored", registry=r)
        self.alerts = Counter(p + "alerts", "Alert messages produced", registry=r)
        self.dead_letters = Counter(p + "dead_letters", "Records dead-lettered", ["reason"], registry=r)
        self.dropped = Counter(p + "dropped", "Records dropped (no dead letter)", ["reason"], registry=r)
        self.restarts = Counter(p + "restarts", "Camera streams restarted", ["reason"], registry=r)
        self.cold_starts = Counter(p + "cold_starts", "Cameras starting without history", ["reason"], registry=r)
        self.evictions = Counter(p + "evictions", "Cameras evicted", ["reason"], registry=r)
        self.late = Counter(p + "late_clips", "Clips scored after engine.late_after_s", registry=r)
        self.cameras = Gauge(p + "cameras", "Cameras held", registry=r)
        self.lag = Gauge(p + "lag_records", "End offset minus position", ["partition"], registry=r)
        self.rebuild_records = Counter(p + "rebuild_records", "Records re-read by rebuilds", registry=r)
        self.rebuild_seconds = Histogram(
            p + "rebuild_seconds", "Rebuild duration", buckets=(0.1, 0.5, 1, 2, 5, 10, 20, 60), registry=r
        )
        Gauge(p + "info", "Engine backend and model", ["backend", "model"], registry=r).labels(backend, model).set(1)
        self.model = Gauge(p + "model", "Model version served to new cameras", ["version"], registry=r)
        self.model_loads = Counter(p + "model_loads", "Models staged by a live rollout", registry=r)
        self.model_load_failures = Counter(
            p + "model_load_failures", "Rollouts refused (old model kept)", ["reason"], registry=r
        )
        self.model_switches = Counter(p + "model_switches", "Cameras switched to a staged model", registry=r)
        self.model_pending = Gauge(p + "model_pending_cameras", "Cameras still on a previous model", registry=r)

    def set_model(self, version: str) -> None:
        self.model.clear()
        self.model.labels(version).set(1)


class HealthServer:
    """HTTP server (daemon thread): ``/metrics``, ``/healthz``, ``/readyz``. ``port`` 0 → any free port
    (see :attr:`port`)."""

    def __init__(self, metrics: EngineMetrics, healthy, ready, port: int, addr: str = "0.0.0.0"):
        reg = metrics.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server API
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    code, body, ctype = 200, generate_latest(reg), CONTENT_TYPE_LATEST
                elif path in ("/healthz", "/readyz"):
                    ok = healthy() if path == "/healthz" else ready()
                    code, body, ctype = (200, b"ok\n", "text/plain") if ok else (503, b"not ok\n", "text/plain")
                else:
                    code, body, ctype = 404, b"not found\n", "text/plain"
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):  # quiet
                pass

        self.server = ThreadingHTTPServer((addr, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="engine-http", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def healthy_since(last_progress: float, limit: float) -> bool:
    return time.monotonic() - last_progress <= limit
