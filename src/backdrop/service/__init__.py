"""`backdrop serve`: the HTTP API over the persistent job queue (FastAPI + uvicorn, extra ``service``).

- :mod:`.settings`  Settings (host, port, token, allowed roots, upload limits)
- :mod:`.app`       create_app(): the /v1 routes, results, errors as one JSON line, offline /docs
- :mod:`.a1111`     the AUTOMATIC1111-compatible subset (/sdapi/v1/...)
- :mod:`.security`  token, binding rule, PathGuard (server paths only under --allow-root)
- :mod:`.uploads`   uploads with limits; zip-slip- and zip-bomb-safe extract_zip
- :mod:`.server`    serve(): the worker processes, recovery, uvicorn

Nothing here is imported by ``import backdrop``; fastapi and uvicorn load only when serving.
"""
