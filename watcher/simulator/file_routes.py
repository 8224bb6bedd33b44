"""The simulator's file endpoints and batch creation, served by :class:`~.app.SimulatorApp`:

GET    /files/{id}                        a file: a name and size that follow from its id
GET    /vector_stores/{vs}/files/{id}     the file as its store holds it
DELETE /vector_stores/{vs}/files/{id}     detach it from the store (the file stays)
POST   /vector_stores/{vs}/file_batches   a new batch: ``file_ids`` or ``files`` (never
                                          both), 1 to 2,000 known files, none still
                                          attached; the same ``Idempotency-Key`` gives back
                                          the same batch
"""

from __future__ import annotations

import json
from typing import Any, Final

from .batch import MAX_BATCH_FILES, BatchRefused, UnknownBatch
from .batch_routes import batch_reply
from .faults import Endpoint, Fault
from .files import file_json, file_object
from .simulator import Simulator
from .wire import Reply, error_reply, json_reply

#: A batch-creation body larger than this is refused (2,000 files with attributes fit).
MAX_CREATE_BYTES: Final = 4 << 20


def route_store_file(method: str, vs_id: str, rest: list[str]) -> tuple[Endpoint, str, str] | None:
    """``/vector_stores/{vs}/files/{file}``: read or detach one file of the store."""
    if len(rest) != 1:
        return None
    if method == "GET":
        return "store_file", vs_id, rest[0]
    if method == "DELETE":
        return "detach_file", vs_id, rest[0]
    return None


def answer_file(sim: Simulator, endpoint: Endpoint, vs_id: str, fid: str) -> Reply:
    """The reply of ``file``, ``store_file`` or ``detach_file``."""
    if endpoint == "file":
        return _file(sim, fid)
    if endpoint == "store_file":
        return _store_file(sim, vs_id, fid)
    return _detach(sim, vs_id, fid)


def _file(sim: Simulator, fid: str) -> Reply:
    located = sim.locate_file(fid)
    if located is None:
        return error_reply(404, f"No such File object: {fid}", param="id")
    return json_reply(200, file_object(fid, located[0].created_at))


def _store_file(sim: Simulator, vs_id: str, fid: str) -> Reply:
    try:
        found, index = sim.store_file(vs_id, fid)
    except UnknownBatch:
        return error_reply(404, f"No file found with id '{fid}' in vector store '{vs_id}'.")
    progress = found.progress(sim.clock(), sim.cancel_seconds)
    meta = sim.file_meta(vs_id, fid)
    return json_reply(
        200, file_json(found.spec, progress, index, found.created_at, fid=fid, meta=meta)
    )


def _detach(sim: Simulator, vs_id: str, fid: str) -> Reply:
    try:
        sim.detach(vs_id, fid)
    except UnknownBatch:
        return error_reply(404, f"No file found with id '{fid}' in vector store '{vs_id}'.")
    return json_reply(200, {"id": fid, "object": "vector_store.file.deleted", "deleted": True})


def create_batch(
    sim: Simulator, vs_id: str, body: bytes, idempotency_key: str | None, fault: Fault | None
) -> Reply:
    """The new batch (or the one ``idempotency_key`` made before), or a 400 refusal."""
    try:
        files = _batch_files(body)
        found = sim.create_batch(vs_id, files, idempotency_key=idempotency_key)
    except BatchRefused as exc:
        code = "file_already_attached" if exc.attached else "invalid_request"
        return error_reply(400, str(exc), param="files", code=code)
    progress = found.progress(sim.clock(), sim.cancel_seconds)
    return batch_reply(sim, found, progress, fault)


def _batch_files(body: bytes) -> list[tuple[str, Any, Any]]:
    """The files of a ``POST .../file_batches`` body: ``file_ids`` or ``files``, never both."""
    try:
        data = json.loads(body or b"null")
    except ValueError:
        raise BatchRefused("The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise BatchRefused("The request body must be a JSON object.")
    has_ids, has_files = "file_ids" in data, "files" in data
    if has_ids == has_files:
        raise BatchRefused("Provide exactly one of 'file_ids' or 'files'.")
    items = data["file_ids"] if has_ids else data["files"]
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH_FILES:
        raise BatchRefused(f"A file batch holds 1 to {MAX_BATCH_FILES} files.")
    files: list[tuple[str, Any, Any]] = []
    for item in items:
        if has_ids:
            item = {"file_id": item}
        if not isinstance(item, dict) or not isinstance(item.get("file_id"), str):
            raise BatchRefused("Each file needs a 'file_id' string.")
        attributes, chunking = item.get("attributes"), item.get("chunking_strategy")
        if not isinstance(attributes, dict | None) or not isinstance(chunking, dict | None):
            raise BatchRefused("'attributes' and 'chunking_strategy' must be objects.")
        files.append((item["file_id"], attributes, chunking))
    return files
