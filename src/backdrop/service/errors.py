"""Every error the service answers is one JSON object on one line: ``{"error": "...", "status": N}``
(422s also name the ``option``); never a traceback, never an HTML page."""

from __future__ import annotations

import json
import logging
from typing import Any, Optional

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answer: HTTP ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str, *, option: Optional[str] = None,
                 headers: Optional[dict[str, str]] = None):
        super().__init__(message)
        self.status = status
        self.message = " ".join(str(message).split())  # one line
        self.option = option
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.message, "status": self.status}
        if self.option:
            out["option"] = self.option
        return out


def json_error(status: int, message: str, option: Optional[str] = None,
               headers: Optional[dict[str, str]] = None) -> Any:
    from starlette.responses import Response

    err = ApiError(status, message, option=option, headers=headers)
    return Response(json.dumps(err.body()) + "\n", status_code=status, media_type="application/json",
                    headers=err.headers)


def install(app: Any) -> None:
    """Handlers that turn every failure into one JSON line."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    @app.exception_handler(ApiError)
    async def _api(request, exc: ApiError):
        return json_error(exc.status, exc.message, exc.option, exc.headers)

    @app.exception_handler(HTTPException)
    async def _http(request, exc: HTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such route: {request.method} {request.url.path}"
        return json_error(exc.status_code, detail, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request, exc: RequestValidationError):
        errs = exc.errors()
        first = errs[0] if errs else {}
        loc = [str(x) for x in first.get("loc", ()) if x not in ("body", "query", "path")]
        name = ".".join(loc) or "request"
        return json_error(422, f"{name}: {first.get('msg', 'invalid')}", option=name)

    @app.exception_handler(Exception)
    async def _any(request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return json_error(500, f"internal error ({type(exc).__name__}); see the server's log")
