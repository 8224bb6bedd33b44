"""What an API request meets before its endpoint: the rate limit, the key, the required query
parameters, and the reply an armed fault gives instead of the endpoint's."""

from __future__ import annotations

import math
from typing import Final
from urllib.parse import parse_qs

from starlette.types import Scope

from .faults import Fault, FaultKind
from .ratelimit import RateDecision
from .simulator import Simulator
from .wire import HTML, Reply, error_reply

_HTML_PAGE: Final = (
    "<html>\r\n<head><title>{status} Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>{status} Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
_SERVER_ERROR: Final = "The server had an error while processing your request. Sorry about that!"
_NO_KEY: Final = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
_BAD_KEY: Final = "Incorrect API key provided."
QueryParams = dict[str, list[str]]


def rate_limited(decision: RateDecision, headers: list[tuple[bytes, bytes]]) -> Reply:
    """The 429 of a request over the global rate limit."""
    wait = decision.reset_seconds
    return error_reply(
        429,
        f"Rate limit reached for requests. Limit {decision.limit}. "
        f"Please try again in {math.ceil(wait * 1000)}ms.",
        type_="requests",
        code="rate_limit_exceeded",
        headers=headers + retry_after(wait),
    )


def check_access(sim: Simulator, scope: Scope, headers: list[tuple[bytes, bytes]]) -> Reply | None:
    """401 without the key, 400 without a required query parameter; None if all is well."""
    key = sim.api_key
    if key is not None:
        presented = list(_presented_keys(scope["headers"]))
        if not any(key.matches(candidate) for candidate in presented):
            message = _BAD_KEY if presented else _NO_KEY
            return error_reply(401, message, code="invalid_api_key", headers=headers)
    if sim.required_query:
        query = query_params(scope)
        for name, wanted in sim.required_query.items():
            given = query.get(name, [""])[0]
            if not given or (wanted is not None and given != wanted):
                return error_reply(
                    400,
                    f"Missing or unsupported query parameter '{name}'.",
                    param=name,
                    code="missing_required_parameter" if not given else "invalid_value",
                    headers=headers,
                )
    return None


def fault_reply(fault: Fault, headers: list[tuple[bytes, bytes]]) -> Reply | None:
    """The reply a fault gives instead of the endpoint's, or None if it alters the real one."""
    kind = fault.kind
    if kind is FaultKind.RATE_LIMIT:
        return error_reply(
            429,
            "Rate limit reached for requests. Please try again later.",
            type_="requests",
            code="rate_limit_exceeded",
            headers=headers + retry_after(fault.retry_after_seconds),
        )
    if kind is FaultKind.RATE_LIMIT_BARE:
        return error_reply(
            429,
            "Rate limit reached for requests.",
            type_="requests",
            code="rate_limit_exceeded",
            headers=headers,
        )
    if kind is FaultKind.SERVER_ERROR:
        return error_reply(fault.http_status, _SERVER_ERROR, type_="server_error", headers=headers)
    if kind is FaultKind.HTML_ERROR:
        page = _HTML_PAGE.format(status=fault.http_status).encode()
        return Reply(fault.http_status, page, [], HTML)
    return None


def retry_after(seconds: float) -> list[tuple[bytes, bytes]]:
    return [
        (b"retry-after", str(math.ceil(seconds)).encode()),
        (b"retry-after-ms", str(math.ceil(seconds * 1000)).encode()),
    ]


def _presented_keys(headers: list[tuple[bytes, bytes]]) -> list[str]:
    keys = []
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                keys.append(token.strip())
        elif name == b"api-key" and value.strip():
            keys.append(value.decode("latin-1").strip())
    return keys


def query_params(scope: Scope) -> QueryParams:
    """The request's query string, parsed (blank values kept)."""
    raw: bytes = scope["query_string"]
    return parse_qs(raw.decode("latin-1"), keep_blank_values=True) if raw else {}


def header(scope: Scope, name: bytes) -> str | None:
    """The request's first header called ``name`` (lower-case), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None
