"""The per-batch sample lines, written as prometheus-client's own encoders write them, faster.

prometheus-client's text and OpenMetrics encoders write a gauge sample with legacy names (every
per-batch family's) alike in both formats: the name, the labels sorted by name as
``name="value"`` with ``\\``, newline and ``"`` escaped, joined by commas in braces, a space,
then ``floatToGoString(value)``. At 10,000 batches the encoders spend a few microseconds a line
on checks that give the same answer for every line of a family; this module writes the
same bytes with what they check worked out once: a template per part, the batch's ids escaped
once per batch. The value is formatted as ``floatToGoString`` does (:func:`go_float`).
The property test in ``tests/test_metrics_exposition.py`` holds every render against the encoder.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import partial

from prometheus_client import exposition as text_exposition
from prometheus_client.openmetrics import exposition as om_exposition

from .batch_metrics import BATCH_FAMILIES, BatchSample, Part

Encoder = Callable[..., bytes]
#: A part's lines for one batch (without the last newline), given the batch and its ids as
#: their escaped label values.
PartLines = Callable[[BatchSample, str, str], str]


_ESCAPINGS = frozenset({om_exposition.UNDERSCORES, om_exposition.ALLOWUTF8})
_IDS = frozenset({"vector_store_id", "batch_id"})


def escape(value: str) -> str:
    """A label value as both encoders write it."""
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


#: A name no escaping of either encoder changes (a legacy label name, so without ':').
_LEGACY = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def writes_like(encoder: Encoder) -> bool:
    """Whether ``encoder`` is one of prometheus-client's own (text, or OpenMetrics) with an
    escaping that leaves legacy names as they are, the encoders this module stands in
    for."""
    func, keywords = encoder, {}
    if isinstance(encoder, partial):
        func, keywords = encoder.func, encoder.keywords
    if func is not text_exposition.generate_latest and func is not om_exposition.generate_latest:
        return False
    return keywords.get("escaping", om_exposition.UNDERSCORES) in _ESCAPINGS


_SPECIAL = {"inf": "+Inf", "-inf": "-Inf", "nan": "NaN"}


def go_float(value: float) -> str:
    """``prometheus_client.utils.floatToGoString(value)``, in fewer steps: Python's ``repr``,
    except for infinities and NaN, and in Go's exponent form from 10^7 up."""
    s = repr(float(value))
    dot = s.find(".")
    if dot > 6 and s[0] != "-":
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1 :]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    if dot < 0:
        return _SPECIAL.get(s, s)
    return s


def line(name: str, labels: Mapping[str, str], value: float) -> str:
    """One sample's line, as the encoders write it for legacy names."""
    pairs = ",".join(f'{k}="{escape(v)}"' for k, v in sorted(labels.items()))
    return f"{name}{{{pairs}}} {go_float(value)}"


def _templated(name: str, part: Part) -> PartLines | None:
    """Lines for a part of one sample labelled by the batch's ids and constant labels, whose
    key is its value (``Part.fixed``): a template made once, the ids put in per batch."""
    if part.fixed is None:
        return None
    labels = {"vector_store_id": "", "batch_id": "", **part.fixed}
    pairs = ",".join(
        f'{k}="%s"' if k in _IDS else f'{k}="{escape(v).replace("%", "%%")}"'
        for k, v in sorted(labels.items())
    )
    # Sorted, batch_id comes before vector_store_id: the template takes them in that order.
    template = f"{name}{{{pairs}}} "
    key = part.key

    def lines(b: BatchSample, vs: str, batch: str) -> str:
        return template % (batch, vs) + go_float(key(b))  # type: ignore[arg-type]

    return lines


def _generic(name: str, part: Part) -> PartLines:
    samples = part.samples

    def lines(b: BatchSample, vs: str, batch: str) -> str:
        return "\n".join(line(name, labels, value) for labels, value in samples(b))

    return lines


#: Stand-ins for the ids in a part's lines made once per key; no escaping changes them.
_VS, _BATCH = "\0vs\0", "\0batch\0"


def _by_key(name: str, part: Part) -> PartLines | None:
    """Lines for a part whose samples depend on its key and the batch's ids alone
    (``Part.by_key``): written once per key with stand-ins for the ids, which are put in per
    batch. Up to :data:`MAX_KEYS` keys are kept."""
    if not part.by_key:
        return None
    generic = _generic(name, part)
    key = part.key
    made: dict[object, str] = {}

    def lines(b: BatchSample, vs: str, batch: str) -> str:
        if "\0" in vs or "\0" in batch:
            return generic(b, vs, batch)
        k = key(b)
        template = made.get(k)
        if template is None:
            if not isinstance(k, str) or "\0" in k:
                return generic(b, vs, batch)
            if len(made) >= MAX_KEYS:
                made.clear()
            stand_in = replace(b, vector_store_id=_VS, batch_id=_BATCH)
            template = made[k] = generic(stand_in, _VS, _BATCH)
        return template.replace(_BATCH, batch).replace(_VS, vs)

    return lines


MAX_KEYS = 64


def _part_lines() -> tuple[PartLines, ...]:
    out: list[PartLines] = []
    for family in BATCH_FAMILIES:
        if not _LEGACY.fullmatch(family.name):
            raise RuntimeError(f"{family.name} is not a legacy metric name")
        for part in family.parts:
            out.append(
                _templated(family.name, part)
                or _by_key(family.name, part)
                or _generic(family.name, part)
            )
    return tuple(out)


#: Every part's line writer, in the order of ``exposition._PARTS``.
PART_LINES = _part_lines()
