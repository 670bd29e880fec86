"""Errors as RFC 9457 problem details (``application/problem+json``), everywhere in the API.

Every error response has ``type``, ``title``, ``status`` and a human-readable ``detail`` that
names the field or setting at fault; validation errors add ``errors`` (one entry per field,
without echoing the submitted value, which may be personal data): at most
:data:`MAX_ERRORS` entries, and ``errors_omitted`` with the number left out when there were
more, so that a body of many bad values cannot make an answer larger than the request.
:func:`install_handlers` routes FastAPI's and Starlette's own errors through the same shape,
so a client's mistake is never a 500 and never an HTML page.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from churn.errors import ChurnError, ModelUnavailable, StoreError

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
#: Validation errors listed in one answer at most; the rest are counted in ``errors_omitted``.
MAX_ERRORS = 50

_TITLES: dict[int, str] = {
    400: "Malformed request",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    408: "Request timeout",
    409: "Conflict",
    413: "Request too large",
    415: "Unsupported media type",
    422: "Invalid request",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
    504: "Answer timed out",
}


class Problem(Exception):
    """Raise anywhere in a request to answer with a problem+json response.

    ``extra`` members are added to the body (e.g. ``errors``, ``model_version``); ``headers``
    are sent with it (``WWW-Authenticate``, ``Retry-After``).
    """

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or _TITLES.get(status, "Error")
        self.headers = dict(headers or {})
        self.extra = extra


def store_unavailable(exc: StoreError) -> Problem:
    """The 503 of a route whose score store cannot be read."""
    return Problem(503, f"The score store cannot be read: {exc}", hint=exc.hint)


def invalid_field(loc: Sequence[str | int], message: str, kind: str = "value_error") -> Problem:
    """The 422 of one field a route finds invalid after FastAPI's own validation, with an
    ``errors`` entry shaped like :func:`validation_errors`' (``loc`` e.g. ``("query",
    "as_of")`` or ``("body", "accounts", 0, "revenue")``)."""
    field = field_path(loc)
    entry = {"field": field, "loc": list(loc), "message": message, "type": kind}
    return Problem(422, f"{field}: {message}.", errors=[entry])


def problem_body(
    status: int, detail: str, title: str | None = None, **extra: Any
) -> dict[str, Any]:
    """The JSON body of a problem response."""
    return {
        "type": "about:blank",
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        **extra,
    }


def problem_response(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A ``JSONResponse`` carrying a problem body with the problem+json media type."""
    return JSONResponse(
        problem_body(status, detail, title, **extra),
        status_code=status,
        headers=dict(headers or {}),
        media_type=PROBLEM_MEDIA_TYPE,
    )


def field_path(loc: Sequence[str | int]) -> str:
    """``("body", "accounts", 0, "features", "foo")`` -> ``accounts[0].features.foo``."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        where = parts.pop(0)
        if where != "body" and parts:
            return f"{where} parameter {parts[0]}"
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def _message(err: Mapping[str, Any]) -> str:
    kind = err.get("type", "")
    if kind == "json_invalid":
        loc = err.get("loc", ())
        where = f" at character {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
        return f"not valid JSON{where}: {err.get('ctx', {}).get('error', 'decode error')}"
    if kind == "extra_forbidden":
        loc = err.get("loc", ())
        if len(loc) >= 2 and loc[-2] == "features":
            return "unknown feature (see GET /v1/model for the feature catalogue)"
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    return str(err.get("msg", "invalid value")).removeprefix("Value error, ")


def validation_errors(errors: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic errors as ``{field, loc, message, type}`` entries (the input is not echoed)."""
    return [
        {
            "field": "body"
            if err.get("type") == "json_invalid"
            else field_path(err.get("loc", ())),
            "loc": list(err.get("loc", ())),
            "message": _message(err),
            "type": err.get("type", ""),
        }
        for err in errors
    ]


def validation_problem(errors: Sequence[Mapping[str, Any]], limit: int = 5) -> JSONResponse:
    """422 naming each invalid field (400 when the body is not JSON at all).

    The ``detail`` names the first ``limit`` fields; ``errors`` lists the first
    :data:`MAX_ERRORS` and ``errors_omitted`` counts the others (absent when none were left
    out).
    """
    entries = validation_errors(errors[:MAX_ERRORS])
    omitted = max(len(errors) - MAX_ERRORS, 0)
    extra: dict[str, Any] = {"errors_omitted": omitted} if omitted else {}
    if any(e["type"] == "json_invalid" for e in entries):
        return problem_response(
            400, f"The request body is {entries[0]['message']}.", errors=entries[:limit]
        )
    shown = "; ".join(f"{e['field']}: {e['message']}" for e in entries[:limit])
    more = f" (and {len(errors) - limit:,} more)" if len(errors) > limit else ""
    return problem_response(422, f"{shown}{more}", errors=entries, **extra)


async def _on_validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
    return validation_problem(exc.errors())


async def _on_problem(_request: Request, exc: Problem) -> JSONResponse:
    return problem_response(
        exc.status, exc.detail, title=exc.title, headers=exc.headers, **exc.extra
    )


async def _on_http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "Error")
    if exc.status_code == 404 and detail == "Not Found":
        detail = "No such resource; see /docs for the API's routes."
    if exc.status_code == 405:
        detail = "This route does not accept that HTTP method; see /docs."
    return problem_response(exc.status_code, detail, headers=getattr(exc, "headers", None))


async def _on_model_unavailable(_request: Request, exc: ModelUnavailable) -> JSONResponse:
    return problem_response(503, str(exc), hint=exc.hint)


async def _on_churn_error(request: Request, exc: ChurnError) -> JSONResponse:
    log.error("request failed: %s", type(exc).__name__, extra={"route": _route(request)})
    return problem_response(500, str(exc), hint=exc.hint)


def unhandled_problem(route: str, exc: BaseException) -> JSONResponse:
    """Log an unforeseen error and answer 500 (``serving.app.ServingMiddleware`` calls this).

    The message of such an error may contain request data (a name, a value), so only the
    exception's type and the stack of code lines are logged, never its message.
    """
    log.error(
        "unhandled %s",
        type(exc).__name__,
        extra={
            "route": route,
            "error": type(exc).__name__,
            "stack": "".join(traceback.format_tb(exc.__traceback__)),
        },
    )
    return problem_response(500, "The server failed to answer this request; the error was logged.")


def _route(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", "unmatched")


def install_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` as problem+json (unforeseen ones: ``unhandled_problem``)."""
    # Starlette types a handler as taking any Exception; each of these takes the one class it
    # is registered for, which Starlette guarantees but cannot express.
    app.add_exception_handler(RequestValidationError, _on_validation)  # type: ignore[arg-type]
    app.add_exception_handler(Problem, _on_problem)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _on_http)  # type: ignore[arg-type]
    app.add_exception_handler(ModelUnavailable, _on_model_unavailable)  # type: ignore[arg-type]
    app.add_exception_handler(ChurnError, _on_churn_error)  # type: ignore[arg-type]
