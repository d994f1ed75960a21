"""The alert page's zone editor: ``PUT /api/zones/{camera}`` writes ``alerts.zones_file`` (or
``<ui.data_dir>/zones.json``), ``GET /api/zones`` shows ``[zones]`` overlaid by the file; and in a
real headless Chromium a polygon clicked on the snapshot is saved and still drawn after a reload."""

from __future__ import annotations

import json
import os
import urllib.error

import numpy as np
import pytest

from fusewatch.stream.config import load_config
from fusewatch.stream.live import encode_thumbnail
from fusewatch.stream.transport import BusTransport, InProcessBus
from tests.test_ui_api import _alert, _get, _wait

pytest.importorskip("uvicorn")
from fusewatch.ui.server import UiServer  # noqa: E402

LEFT = [[[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]]
BOX = [[[0.1, 0.1], [0.4, 0.1], [0.4, 0.3]], [[0.6, 0.6], [0.9, 0.6], [0.9, 0.9], [0.6, 0.9]]]


def _server(tmp_path, **over):
    o = {"ui.port": "0", "ui.data_dir": str(tmp_path / "ui"), "ui.evidence_dir": str(tmp_path / "ev")}
    cfg = load_config(overrides={**o, **over}, env={})
    cfg.zones = {"cam1": LEFT}
    bus = InProcessBus(partitions=1)
    prod = BusTransport(bus)
    img = np.full((240, 320, 3), 90, np.uint8)
    prod.produce(cfg.topics.thumbnails, "cam2", encode_thumbnail("cam2", img, 1000.0, 0, width=320))
    prod.produce(cfg.topics.alerts, "cam2", _alert("a2", cam="cam2").encode())
    srv = UiServer(cfg, BusTransport(bus)).start()
    _wait(lambda: "a2" in srv.state.alerts and srv.state.thumbnail("cam2") is not None)
    return srv


def _put(srv, cam, body, token=None):
    return json.loads(_get(srv.url + f"api/zones/{cam}", token=token, method="PUT", body=body)[2])


def _error(fn) -> tuple[int, str]:
    with pytest.raises(urllib.error.HTTPError) as e:
        fn()
    return e.value.code, json.loads(e.value.read()).get("error", "")


def test_zones_api_writes_the_file_and_merges_config(tmp_path):
    zf = tmp_path / "site" / "zones.json"
    srv = _server(tmp_path, **{"alerts.zones_file": str(zf), "ui.token": "s3cret"})
    tok = "s3cret"
    try:
        # token required, as for every other endpoint (a PUT without it writes nothing)
        assert _error(lambda: _get(srv.url + "api/zones"))[0] == 401
        assert _error(lambda: _put(srv, "cam2", {"polygons": BOX}))[0] == 401
        assert not zf.exists()
        assert json.loads(_get(srv.url + "api/zones", token=tok)[2])["zones"] == {"cam1": LEFT}

        r = _put(srv, "cam2", {"polygons": BOX}, token=tok)
        assert r["zones"] == BOX and r["file"] == str(zf) and r["engine_reads_file"] is True
        assert json.loads(zf.read_text())["cameras"] == {"cam2": BOX}
        got = json.loads(_get(srv.url + "api/zones", token=tok)[2])
        assert got["zones"] == {"cam1": LEFT, "cam2": BOX} and "hint" not in got
        assert json.loads(_get(srv.url + "api/alerts/a2", token=tok)[2])["zones"] == BOX  # the alert page's overlay

        # the file wins over [zones] per camera; [] removes the camera from the file ([zones] again)
        _put(srv, "cam1", {"polygons": BOX[:1]}, token=tok)
        assert json.loads(_get(srv.url + "api/zones", token=tok)[2])["zones"]["cam1"] == BOX[:1]
        assert _put(srv, "cam1", {"polygons": []}, token=tok)["zones"] == LEFT
        assert set(json.loads(zf.read_text())["cameras"]) == {"cam2"}

        # user mistakes: 400 with a one-line message, the file unchanged
        before = zf.read_text()
        for body, msg in (
            ({"polygons": [[[0.1, 0.1], [1.5, 0.1], [0.4, 0.3]]]}, "less than or equal to 1"),
            ({"polygons": [[[0.1, 0.1], [0.2, 0.2]]]}, "at least 3"),
            ({"polygons": "everywhere"}, "expected a JSON object"),
            ([1, 2], "expected a JSON object"),
        ):
            code, err = _error(lambda b=body: _put(srv, "cam2", b, token=tok))
            assert code == 400 and msg in err and "\n" not in err, (body, err)
        assert zf.read_text() == before
    finally:
        srv.stop()


def test_zones_file_defaults_to_the_ui_data_dir(tmp_path):
    srv = _server(tmp_path)
    try:
        r = _put(srv, "cam2", {"polygons": BOX})
        default = tmp_path / "ui" / "zones.json"
        assert r["file"] == str(default) and r["engine_reads_file"] is False
        assert f'alerts.zones_file = "{default}"' in r["hint"]  # the engine must be told
        assert json.loads(default.read_text())["cameras"] == {"cam2": BOX}
        assert json.loads(_get(srv.url + "api/zones")[2])["zones"] == {"cam1": LEFT, "cam2": BOX}
    finally:
        srv.stop()


@pytest.mark.timeout(300)
def test_zone_drawn_in_the_browser_is_saved(tmp_path):
    from tests.test_ui_browser import CHROMIUM, DRIVER

    if not (os.access(CHROMIUM, os.X_OK) and os.access(DRIVER, os.X_OK)):
        pytest.skip("Debian's chromium + chromium-driver are not installed (deploy/setup.sh installs them)")
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    from tests.test_ui_browser import _wait as wait_page

    zf = tmp_path / "zones.json"
    srv = _server(tmp_path, **{"alerts.zones_file": str(zf)})
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1100"):
        opts.add_argument(a)
    d = webdriver.Chrome(options=opts, service=Service(DRIVER))
    try:
        d.set_page_load_timeout(60)
        d.get(srv.url + "alerts/a2")
        wait_page(lambda: d.find_element(By.ID, "alert-id").text == "a2", 30, "the alert page")
        wait_page(lambda: d.execute_script("return document.getElementById('snapshot').naturalWidth") > 0, 30, "img")
        assert d.execute_script("return document.querySelectorAll('#zones polygon').length") == 0
        svg = d.find_element(By.ID, "zones")
        w, h = svg.size["width"], svg.size["height"]
        assert w > 100 and h > 50
        want = [(0.2, 0.2), (0.8, 0.25), (0.7, 0.8), (0.25, 0.7)]
        d.find_element(By.ID, "draw").click()
        for x, y in want:  # offsets from the element's centre (Selenium 4)
            ActionChains(d).move_to_element_with_offset(svg, int((x - 0.5) * w), int((y - 0.5) * h)).click().perform()
        assert d.execute_script("return document.querySelectorAll('#zones polygon.draft').length") == 1
        d.find_element(By.ID, "finish").click()
        d.find_element(By.ID, "save-zone").click()
        wait_page(lambda: d.find_element(By.ID, "zone-status").text.startswith("saved to "), 20, "the save")
        d.refresh()
        wait_page(lambda: d.find_element(By.ID, "alert-id").text == "a2", 30, "the reloaded alert page")
        pts = wait_page(
            lambda: d.execute_script(
                "const p = document.querySelector('#zones polygon.zone'); return p && p.getAttribute('points')"
            ),
            20,
            "the saved polygon after a reload",
        )
        drawn = [tuple(float(v) for v in p.split(",")) for p in pts.split()]
        assert len(drawn) == 4 and all(abs(a - b) < 0.02 for p, q in zip(drawn, want) for a, b in zip(p, q)), drawn
        saved = json.loads(zf.read_text())["cameras"]["cam2"]
        assert [[tuple(p) for p in poly] for poly in saved] == [drawn]
        assert json.loads(_get(srv.url + "api/zones")[2])["zones"]["cam2"] == saved
        # "clear zones" removes them (the camera is watched everywhere again)
        d.find_element(By.ID, "clear-zones").click()
        wait_page(
            lambda: d.execute_script("return document.querySelectorAll('#zones polygon').length") == 0, 20, "clear"
        )
        assert "cam2" not in json.loads(zf.read_text())["cameras"]
    finally:
        d.quit()
        srv.stop()
