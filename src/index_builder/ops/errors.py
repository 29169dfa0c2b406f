"""HTTP-only errors of the protection layer, answered as problem+json with headers.

Unlike :class:`index_builder.errors.IndexBuilderError` (shared with the CLI),
these exist only in the API: an unknown API key, a missing scope, a spent rate
limit. They carry response headers (``WWW-Authenticate``, ``Retry-After``).
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response

from index_builder.api.problems import problem_response


class ProblemError(Exception):
    """An error answered as ``status`` problem+json with ``code`` and extra headers."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.field = field
        self.headers = headers or {}


def install_problem_error_handler(app: FastAPI) -> None:
    """Answer :class:`ProblemError` as problem+json with its headers."""

    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> Response:
        response = problem_response(
            exc.status, exc.code, exc.detail, field=exc.field, instance=request.url.path
        )
        response.headers.update(exc.headers)
        return response
