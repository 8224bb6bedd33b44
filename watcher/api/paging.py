"""Lists that span pages: following their cursors, and the bounds that stop an endless one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

from ..config.model import DEFAULTS
from ..errors import PaginationError
from .headers import ResponseMeta
from .replies import parse_reply

#: The most pages of files one list may take, whatever the batch's counts say: 100,000 files.
MAX_FILE_PAGES: Final = DEFAULTS.api.max_file_pages
#: Pages a list may take beyond those its batch's counts need (the counts are a poll old).
FILE_PAGE_MARGIN: Final = 5


def file_page_limit(
    files: int | None,
    *,
    page_size: int = 100,
    margin: int = FILE_PAGE_MARGIN,
    cap: int = MAX_FILE_PAGES,
) -> int:
    """The most pages a list of a batch's ``files`` may take before it is called endless: the
    pages the count needs, plus ``margin`` and a tenth, never over ``cap``; ``cap`` when the
    count is unknown. A server that hands out fresh ids forever is stopped there, having cost
    that many requests and a seen-set of that many pages, not :data:`MAX_FILE_PAGES`."""
    if files is None:
        return cap
    needed = -(-max(files, 0) // page_size)
    return max(1, min(cap, needed + margin + needed // 10))


def list_params(limit: int, order: str, status: str | None) -> dict[str, str]:
    """The query of one list: ``limit`` (1..100), ``order``, a ``status`` filter."""
    if not 1 <= limit <= 100:
        raise ValueError("limit must be within 1..100")
    params = {"limit": str(limit), "order": order}
    if status is not None:
        params["filter"] = status
    return params


async def paged(
    fetch: Callable[[dict[str, str]], Awaitable[tuple[Any, ResponseMeta]]],
    params: dict[str, str],
    parse_page: Callable[[Any], Any],
    what: str,
    max_pages: int,
) -> AsyncIterator[Any]:
    """The items of every page of a list, following ``after`` from each page's last id.

    ``fetch`` gets one page for ``params``. Raises :class:`PaginationError` rather than loop
    forever: on a cursor seen before, an empty page that claims more, or more than
    ``max_pages`` pages.
    """
    seen_cursors: set[str] = set()
    for page_number in range(1, max_pages + 1):
        body, meta = await fetch(params)
        page = parse_reply(parse_page, body, meta)
        for item in page.data:
            yield item
        if not page.has_more:
            return
        if not page.data:
            raise PaginationError(
                f"page {page_number} of {what} is empty "
                "but says has_more: the server's pagination is broken",
                status=meta.status,
                request_id=meta.request_id,
            )
        cursor: str = page.data[-1].id
        if cursor in seen_cursors:
            raise PaginationError(
                f"{what} repeat cursor {cursor!r} on page "
                f"{page_number}: the server's pagination loops",
                status=meta.status,
                request_id=meta.request_id,
            )
        seen_cursors.add(cursor)
        params["after"] = cursor
    raise PaginationError(f"{what} span more than {max_pages} pages; stopped there")
