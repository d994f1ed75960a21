"""`fusewatch ui` as its own process over the real broker: alert, score and thumbnail records on
fresh topics show up in the REST API; a record produced later arrives on the SSE stream."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest

from fusewatch.stream.alert_schema import AlertMessage
from fusewatch.stream.live import encode_score, encode_thumbnail

pytestmark = pytest.mark.kafka
pytest.importorskip("uvicorn")


def test_ui_process_over_kafka(kafka_bootstrap, make_topic, make_transport, kafka_cfg, tmp_path):
    alerts, scores, thumbs = make_topic("uialerts"), make_topic("uiscores"), make_topic("uithumbs")
    p = make_transport(kafka_cfg, consume=False)
    p.produce(
        alerts,
        "cam-k",
        AlertMessage(
            id="k1",
            type="new",
            camera="cam-k",
            score=0.9,
            peak=0.9,
            start_clip=1,
            end_clip=2,
            start_time=1.7e9,
            end_time=1.7e9 + 3,
            model_name="lego",
            model_version="v1",
            backend="onnxruntime",
        ).encode(),
    )
    for i in range(5):
        p.produce(scores, "cam-k", encode_score("cam-k", i, 1.7e9 + i, 0.2 * i, "v1"))
    p.produce(thumbs, "cam-k", encode_thumbnail("cam-k", np.zeros((120, 160, 3), np.uint8), 1.7e9, 0))
    p.flush(timeout=30)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fusewatch",
            "--transport",
            "kafka",
            "--bootstrap",
            kafka_bootstrap,
            "--set",
            f"topics.alerts={alerts}",
            "--set",
            f"topics.scores={scores}",
            "--set",
            f"topics.thumbnails={thumbs}",
            "--set",
            f"ui.data_dir={tmp_path}",
            "ui",
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: [lines.append(x) for x in proc.stdout], daemon=True).start()
    try:
        t0 = time.monotonic()
        url = None
        while not url and time.monotonic() - t0 < 60 and proc.poll() is None:
            url = next((m.group(1) for x in list(lines) for m in [re.search(r"serving (http://\S+/)", x)] if m), None)
            time.sleep(0.1)
        assert url, "".join(lines)[-2000:]

        def get(path):
            with urllib.request.urlopen(url + path, timeout=10) as r:
                return json.loads(r.read())

        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:
            cams = get("api/cameras")["cameras"]
            if cams and len(cams[0]["scores"]) == 5 and cams[0]["thumbnail"] and get("api/alerts")["alerts"]:
                break
            time.sleep(0.3)
        assert [a["id"] for a in get("api/alerts")["alerts"]] == ["k1"]
        assert cams[0]["camera"] == "cam-k" and len(cams[0]["scores"]) == 5 and cams[0]["thumbnail"]
        port = int(url.rsplit(":", 1)[1].strip("/"))
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.sendall(b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n")
        buf = b""
        while b": connected" not in buf:
            buf += s.recv(4096)
        p.produce(
            alerts,
            "cam-k",
            AlertMessage(
                id="k1",
                type="end",
                camera="cam-k",
                score=0.3,
                peak=0.9,
                start_clip=1,
                end_clip=4,
                start_time=1.7e9,
                end_time=1.7e9 + 6,
                model_name="lego",
                model_version="v1",
                backend="onnxruntime",
            ).encode(),
        )
        p.flush(timeout=30)
        while b'"state":"closed"' not in buf:
            buf += s.recv(4096)
        s.close()
        assert get("api/alerts/k1")["state"] == "closed"
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode == 0, "".join(lines)[-2000:]
