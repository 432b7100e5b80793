"""JSON errors: every failure the client can cause answers `{"error", "message"}` with a 4xx status."""
from __future__ import annotations

from typing import Any

from voxsam import errors as voxsam_errors


class ApiError(Exception):
    """An error with its HTTP status, e.g. ApiError(404, "not_found", "no session 'abc'")."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message


def not_found(what: str, key: str) -> ApiError:
    return ApiError(404, "not_found", f"no {what} {key!r}")


def status_of(exc: voxsam_errors.VoxsamError) -> int:
    """400 for bad input; 413 for files beyond a limit."""
    return 413 if isinstance(exc, voxsam_errors.ResourceLimitError) else 400


def body(kind: str, message: str) -> dict[str, Any]:
    return {"error": kind, "message": " ".join(str(message).split())}


def install(app: Any) -> None:
    """Register the handlers that turn exceptions into JSON answers."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(body(exc.kind, exc.message), status_code=exc.status)

    @app.exception_handler(voxsam_errors.VoxsamError)
    async def voxsam_error(request: Request, exc: voxsam_errors.VoxsamError) -> JSONResponse:
        return JSONResponse(body(type(exc).__name__, str(exc)), status_code=status_of(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors()[:3]:
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            problems.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid")))
        return JSONResponse(body("invalid_request", "; ".join(problems) or "invalid request"), status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(body(kind, str(exc.detail)), status_code=exc.status_code)
