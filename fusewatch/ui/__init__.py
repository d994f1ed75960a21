"""The live web UI (``fusewatch ui``, ``fusewatch demo --ui``): camera tiles, alerts, labels, zones.

:mod:`.state` (what the pages show, fed by :mod:`.feed` from the alerts / scores / thumbnails
topics), :mod:`.labels` (acknowledge / false-positive in SQLite, export for training),
:mod:`.app` (Starlette routes, REST + SSE), :mod:`.server` (uvicorn, bind / token / TLS guard).
"""
