"""Which file is it: a file's name and size from ``GET /files/{id}``, looked up once per id.

Names are for people (the report, the JSON, the webhook, the pages), never for metric labels.
A lookup goes through the same client, so it waits for its turn in the shared request budget.
A file that cannot be looked up keeps its id and says why; a lookup that failed for a passing
reason is not remembered, so the next listing tries again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Final

from ..api.client import APIClient
from ..errors import APIError, AuthError, NotFound, RateLimited
from .results import FileName

#: Names remembered at most; the least recently used is forgotten first.
MAX_CACHED_NAMES: Final = 10_000
#: After this many lookups in a row fail, the rest of a call's files are not asked for: a
#: server without the Files API (or a key without access to it) must not cost a request per
#: failed file of every batch.
MAX_FAILURES_IN_A_ROW: Final = 3


class FileNames:
    """A bounded cache of file names in front of ``GET /files/{id}``."""

    def __init__(self, client: APIClient, *, max_entries: int = MAX_CACHED_NAMES) -> None:
        self._client = client
        self._max = max_entries
        self._known: OrderedDict[str, FileName] = OrderedDict()
        self.lookups = 0  # requests sent

    def __len__(self) -> int:
        return len(self._known)

    async def look_up(self, file_ids: Iterable[str]) -> dict[str, FileName]:
        """The name of each file, in order. After a 429, a refused key or
        :data:`MAX_FAILURES_IN_A_ROW` failures in a row, the rest are not asked for: each says
        so."""
        names: dict[str, FileName] = {}
        stop: str | None = None
        failures = 0
        for fid in file_ids:
            if fid in names:
                continue
            known = self._known.get(fid)
            if known is not None:
                self._known.move_to_end(fid)
                names[fid] = known
                continue
            if stop is not None:
                names[fid] = FileName(error=stop)
                continue
            self.lookups += 1
            try:
                found = await self._client.retrieve_file(fid)
            except APIError as exc:
                names[fid] = FileName(error=str(exc))
                failures += 1
                if isinstance(exc, NotFound):
                    self._remember(fid, names[fid])  # a deleted file stays deleted
                if isinstance(exc, RateLimited | AuthError):
                    stop = f"not looked up: an earlier lookup was refused ({exc})"
                elif failures >= MAX_FAILURES_IN_A_ROW:
                    stop = f"not looked up: the {failures} lookups before it failed ({exc})"
                continue
            failures = 0
            names[fid] = FileName(found.filename, found.bytes)
            self._remember(fid, names[fid])
        return names

    def _remember(self, fid: str, name: FileName) -> None:
        self._known[fid] = name
        if len(self._known) > self._max:
            self._known.popitem(last=False)
