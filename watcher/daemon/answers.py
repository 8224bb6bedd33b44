"""The control API's error answers, one shape for every route: ``{"error": ..., ...}``."""

from __future__ import annotations

from typing import Any, Final

from starlette.responses import JSONResponse

from ..errors import StoreUnavailable
from ..store import WriteFailure

#: When a client whose change the store could not write may try again (the store's flusher
#: retries about this often at first).
STORE_RETRY_AFTER_SECONDS: Final = 5


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def store_unavailable(failure: WriteFailure | StoreUnavailable, **extra: Any) -> JSONResponse:
    """The 503 of a change the state store cannot make now; the client tries again later."""
    if isinstance(failure, StoreUnavailable):
        said = str(failure)  # it says which store, and why
    else:
        said = f"the state store cannot write: {failure.error}"
    response = error(503, said, **extra)
    response.headers["Retry-After"] = str(STORE_RETRY_AFTER_SECONDS)
    return response
