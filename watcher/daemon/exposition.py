"""The per-batch families as a scrape writes them, again only where they changed.

prometheus-client's encoders write every line; a scrape has them write again only the lines whose
values changed since the last scrape (:class:`BatchExposition`), which at 10,000 batches is the
difference between rendering 160,000 samples and rendering what the polls in between moved.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import partial
from itertools import accumulate

from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import ALLOWUTF8, UNDERSCORES
from prometheus_client.openmetrics.exposition import (
    generate_latest as openmetrics_generate_latest,
)
from prometheus_client.registry import Collector

from ..core.watch import Key
from .batch_metrics import BATCH_FAMILIES, BatchSample
from .lines import PART_LINES, escape, writes_like

Encoder = Callable[[Collector], bytes]

#: Every family's parts, in order, and where each family's begin and end among them.
_PARTS = tuple(part for family in BATCH_FAMILIES for part in family.parts)
_ENDS = tuple(accumulate(len(family.parts) for family in BATCH_FAMILIES))
_SPANS = tuple(zip((0, *_ENDS[:-1]), _ENDS, strict=True))
#: (part, its key, its family) for every part, as a scrape walks them for each batch.
_PART_KEYS = tuple(
    (p, _PARTS[p].key, i) for i, (start, end) in enumerate(_SPANS) for p in range(start, end)
)


class _Families(Collector):
    """Some families, as a collector an encoder takes."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


class _Lines:
    """A batch's lines from the last scrape of a format, per part, with the keys they show."""

    __slots__ = ("batch", "keys", "lines", "sample", "vs")

    def __init__(self, b: BatchSample) -> None:
        self.keys: list[object] = [None] * len(_PARTS)
        #: Each part's lines, each ending in a newline (b"" for none).
        self.lines: list[bytes] = [b""] * len(_PARTS)
        #: The sample the lines show: a scrape given the same object again compares nothing.
        self.sample: BatchSample | None = None
        #: The batch's ids as label values.
        self.vs, self.batch = escape(b.vector_store_id), escape(b.batch_id)


def _line_encoder(encoder: Encoder) -> Encoder:
    """An encoder that writes what ``encoder`` writes for the per-batch families, faster.

    prometheus-client's OpenMetrics encoder, asked for the "underscores" escaping (Prometheus 2
    asks for no escaping, and gets that), walks every sample's metric name character by character
    to escape it. Every name and label name of the per-batch families is a legacy Prometheus name
    (user label names that are not are left out), which no escaping changes; "allow-utf-8" leaves
    them as they are without the walk. Label values are escaped alike in both.
    """
    if (
        isinstance(encoder, partial)
        and encoder.func is openmetrics_generate_latest
        and encoder.keywords.get("escaping") == UNDERSCORES
    ):
        return partial(encoder.func, *encoder.args, **{**encoder.keywords, "escaping": ALLOWUTF8})
    return encoder


class _Format:
    """One exposition format: its encoder, the frame it puts around a family, and the lines of
    the last scrape, by batch."""

    #: Samples given to the encoder at a time: the samples and their labels, made for it, are
    #: many small objects, which are better reused a slice at a time than made all at once.
    SLICE = 4096

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = _line_encoder(encoder)
        #: Whether the lines are written by :mod:`.lines` (for prometheus-client's encoders)
        #: rather than by the encoder.
        self.direct = writes_like(encoder)
        # An encoder writes each family as a header and one line per gauge sample, then a
        # trailer ("# EOF" in OpenMetrics). Both are taken from the encoder itself.
        self.trailer = encoder(_Families(()))
        self.headers = [self._strip(encoder(_Families((f.metric(),)))) for f in BATCH_FAMILIES]
        self.by_batch: dict[Key, _Lines] = {}

    def _strip(self, output: bytes) -> bytes:
        if not output.endswith(self.trailer):
            raise RuntimeError("the encoder's output does not end with its trailer")
        return output[: len(output) - len(self.trailer)]

    def lines(self, i: int, dirty: Sequence[tuple[_Lines, int, BatchSample]]) -> list[bytes]:
        """The encoder's lines for the samples of each (batch, part) in family ``i``: for each,
        its lines without their last newline (b"" for none)."""
        out: list[bytes] = []
        for start in range(0, len(dirty), self.SLICE):
            out += self._lines(i, dirty[start : start + self.SLICE])
        return out

    def _lines(self, i: int, dirty: Sequence[tuple[_Lines, int, BatchSample]]) -> list[bytes]:
        family = BATCH_FAMILIES[i]
        metric = family.metric()
        sizes = [family.add(metric, b, _PARTS[p]) for _, p, b in dirty]
        body = self._strip(self.encoder(_Families((metric,))))
        header = self.headers[i]
        if not body.startswith(header):
            raise RuntimeError(f"the encoder framed {family.name} differently")
        lines = body[len(header) : -1].split(b"\n") if len(body) > len(header) else []
        if len(lines) != sum(sizes) or not body.endswith(b"\n"):
            raise RuntimeError(f"the encoder wrote {family.name} in other than a line a sample")
        if all(size == 1 for size in sizes):  # most parts: a sample each
            return lines
        chunks, at = [], 0
        for size in sizes:
            chunks.append(b"\n".join(lines[at : at + size]))
            at += size
        return chunks


#: Parts' lines joined into one piece of a render's output (about 0.5 MB).
CHUNK_LINES = 4096


class BatchExposition:
    """Renders the per-batch families with prometheus-client's encoders, reusing a batch's lines
    from the last scrape in the same format where what they show has not changed.

    At 10,000 batches a whole render is 160,000 samples, and nearly all of its time is the
    encoder formatting each one; between two scrapes only what the polls since have changed is
    rendered again (a file count that moved, the last poll, the ETA). The output is what the
    encoder writes for the whole families, byte for byte. One render at a time.
    """

    #: Formats (text, OpenMetrics) whose lines are kept; the lines of another evict the oldest.
    MAX_FORMATS = 2

    def __init__(self) -> None:
        self._formats: dict[str, _Format] = {}
        self.rendered = 0  # (batch, part) lines rendered by the encoder, for the tests

    def render(
        self,
        batches: Sequence[BatchSample],
        encoder: Encoder,
        content_type: str,
        tail: bytes = b"",
    ) -> bytes:
        """The per-batch families of ``batches``, without the encoder's trailer, then ``tail``."""
        return b"".join(self.render_chunks(batches, encoder, content_type, tail))

    def render_chunks(
        self,
        batches: Sequence[BatchSample],
        encoder: Encoder,
        content_type: str,
        tail: bytes = b"",
    ) -> list[bytes]:
        """:meth:`render`, as pieces of at most :data:`CHUNK_LINES` parts' lines each: each is
        joined in one call that holds the GIL, so that a render in a worker thread lets the
        event loop in between, where one join of the whole 19 MB would hold it for tens of
        milliseconds."""
        fmt = self._formats.pop(content_type, None) or _Format(encoder)
        # Should the render fail, the format's lines go with it: its keys may by then claim
        # lines that were never rendered.
        chunks = self._render(fmt, batches, tail)
        self._formats[content_type] = fmt  # the most recent last
        while len(self._formats) > self.MAX_FORMATS:
            del self._formats[next(iter(self._formats))]
        return chunks

    def _render(self, fmt: _Format, batches: Sequence[BatchSample], tail: bytes) -> list[bytes]:
        previous, current = fmt.by_batch, {}
        entries: list[_Lines] = []
        dirty: list[list[tuple[_Lines, int, BatchSample]]] = [[] for _ in BATCH_FAMILIES]
        direct, rendered = fmt.direct, 0
        for b in batches:
            entry = previous.get(b.key) or _Lines(b)
            current[b.key] = entry
            entries.append(entry)
            if entry.sample is b:
                continue
            entry.sample = b
            old = entry.keys
            for p, key, i in _PART_KEYS:
                value = key(b)
                if value != old[p]:
                    old[p] = value
                    if value is None:
                        entry.lines[p] = b""
                    elif direct:
                        text = PART_LINES[p](b, entry.vs, entry.batch)
                        entry.lines[p] = f"{text}\n".encode() if text else b""
                        rendered += 1
                    else:
                        dirty[i].append((entry, p, b))
        self.rendered += rendered
        fmt.by_batch = current
        out = []
        for i, (start, end) in enumerate(_SPANS):
            if dirty[i]:
                chunks = fmt.lines(i, dirty[i])
                for (entry, p, _), chunk in zip(dirty[i], chunks, strict=True):
                    entry.lines[p] = chunk + b"\n" if chunk else b""
                self.rendered += len(chunks)
            out.append(fmt.headers[i])
            # One copy of the body, in the join: empty lines join as nothing.
            if end - start == 1:
                out += [entry.lines[start] for entry in entries]
            else:
                out += [line for entry in entries for line in entry.lines[start:end]]
        out.append(tail)
        return [b"".join(out[at : at + CHUNK_LINES]) for at in range(0, len(out), CHUNK_LINES)]
