"""The control plane under ``/_sim/``: the truth, the stats, and levers for tests and benchmarks
that drive the simulator from another process. Never subject to auth, rate limits or faults.

    GET    /_sim/stats                 request counts (?per_batch=0 leaves out the per-batch maps)
    POST   /_sim/stats/reset           start counting again (and empty the request log)
    GET    /_sim/requests              the last API requests, oldest first
                                       (?limit=100, 0 for all kept; ?batch_id=<id>)
    GET    /_sim/batches               {"now", "now_unix", "data": [truth, ...]}
                                       (?id=<batch> repeatable; ?failed_files=0)
    GET    /_sim/batches/<id>          one batch's truth
    POST   /_sim/batches               a batch spec, or {"template": spec, "count", "prefix", ...}
    POST   /_sim/batches/<id>/vanish   404 for this batch from now on
    GET    /_sim/stores                every store, as the API shows it
    POST   /_sim/stores                a store spec (vector_store_id, name, expires_after_days, ...)
    POST   /_sim/stores/<id>/expire    the store says "expired" from now on
    GET    /_sim/faults                the armed faults
    POST   /_sim/faults                arm one: a fault object, plus "batch_id" (optional)
    DELETE /_sim/faults                disarm all (?batch_id=<id>: that batch's only)
    POST   /_sim/api-key               {"api_key": "..." | null}
    POST   /_sim/rate-limit            {"requests": n, "window_seconds": s} | {"requests": null}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from starlette.types import Receive, Scope, Send

from .batch import UnknownBatch, UnknownStore
from .faults import Fault
from .ratelimit import RateLimit
from .scenario import spec_from_json
from .simulator import Simulator
from .stores import StoreSpec
from .wire import Reply, json_reply, new_request_id, read_body, send_reply

_TEMPLATE_OPTIONS = ("prefix", "vector_store_id", "start_jitter_seconds", "duration_jitter", "seed")


class _BadRequest(Exception):
    pass


async def handle_control(sim: Simulator, scope: Scope, receive: Receive, send: Send) -> None:
    method: str = scope["method"]
    parts = scope["path"].removeprefix("/_sim/").strip("/").split("/")
    query = parse_qs(scope["query_string"].decode("latin-1"))
    try:
        body: object = None
        if method in ("POST", "PUT"):
            raw = await read_body(receive)
            try:
                body = json.loads(raw) if raw.strip() else {}
            except ValueError:
                raise _BadRequest("the body is not JSON") from None
        reply = _dispatch(sim, method, parts, query, body)
    except _BadRequest as exc:
        reply = _problem(400, str(exc))
    except UnknownBatch as exc:
        reply = _problem(404, f"no batch {exc}")
    except UnknownStore as exc:
        reply = _problem(404, f"no store {exc}")
    except ValueError as exc:
        reply = _problem(400, str(exc))
    await send_reply(send, reply, new_request_id())


def _dispatch(
    sim: Simulator, method: str, parts: list[str], query: dict[str, list[str]], body: object
) -> Reply:
    route = (method, *parts)
    match route:
        case ("GET", "stats"):
            return json_reply(200, sim.stats.as_json(per_batch=_flag(query, "per_batch")))
        case ("GET", "requests"):
            count = int(query.get("limit", ["100"])[0])
            batch = query.get("batch_id", [None])[0]
            records = sim.stats.recent(count, batch)
            return json_reply(200, {"data": [r.as_json() for r in records]})
        case ("POST", "stats", "reset"):
            sim.stats.reset()
            return json_reply(200, {"reset": True})
        case ("GET", "batches"):
            ids = query.get("id") or sim.batch_ids()
            with_failed = _flag(query, "failed_files")
            data = [sim.truth(batch_id, failed_files=with_failed) for batch_id in ids]
            return json_reply(200, {"now": sim.clock(), "now_unix": sim.wall_clock(), "data": data})
        case ("GET", "batches", batch_id):
            return json_reply(200, sim.truth(batch_id))
        case ("POST", "batches"):
            return json_reply(201, {"ids": list(_add_batches(sim, _object(body)))})
        case ("POST", "batches", batch_id, "vanish"):
            sim.vanish(batch_id)
            return json_reply(200, sim.truth(batch_id, failed_files=False))
        case ("GET", "stores"):
            return json_reply(200, {"data": [sim.store(i) for i in sim.store_ids()]})
        case ("POST", "stores"):
            try:
                spec = StoreSpec(**_object(body))
            except TypeError as exc:
                raise _BadRequest(str(exc)) from None
            return json_reply(201, sim.store(sim.add_store(spec)))
        case ("POST", "stores", store_id, "expire"):
            sim.expire_store(store_id)
            return json_reply(200, sim.store(store_id))
        case ("GET", "faults"):
            return json_reply(200, {"data": sim.faults.snapshot()})
        case ("POST", "faults"):
            fault_fields = dict(_object(body))
            target = fault_fields.pop("batch_id", None)
            if target is not None and not isinstance(target, str):
                raise _BadRequest("batch_id: must be a string or null")
            if target is not None:
                sim.batch(target)
            return json_reply(201, sim.inject(Fault.from_json(fault_fields), target).as_json())
        case ("DELETE", "faults"):
            only = query.get("batch_id", [None])[0]
            return json_reply(200, {"cleared": sim.clear_faults(only)})
        case ("POST", "api-key"):
            key = _object(body).get("api_key")
            if key is not None and not isinstance(key, str):
                raise _BadRequest("api_key: must be a string or null")
            sim.set_api_key(key)
            # Never echo the key.
            return json_reply(200, {"auth": "required" if sim.api_key else "off"})
        case ("POST", "rate-limit"):
            limit_fields = _object(body)
            if limit_fields.get("requests") is None:
                sim.set_rate_limit(None)
                return json_reply(200, {"rate_limit": None})
            limit = RateLimit(limit_fields["requests"], limit_fields.get("window_seconds", 60.0))
            sim.set_rate_limit(limit)
            return json_reply(
                200,
                {
                    "rate_limit": {
                        "requests": limit.requests,
                        "window_seconds": limit.window_seconds,
                    }
                },
            )
    return _problem(404, f"no control endpoint {method} /_sim/{'/'.join(parts)}")


def _add_batches(sim: Simulator, fields: Mapping[str, Any]) -> tuple[str, ...]:
    if "template" not in fields:
        return (sim.add_batch(spec_from_json(fields)),)
    unknown = sorted(set(fields) - {"template", "count", *_TEMPLATE_OPTIONS})
    if unknown:
        raise _BadRequest(f"unknown template fields: {unknown}")
    count = fields.get("count")
    if not isinstance(count, int) or isinstance(count, bool):
        raise _BadRequest("count: must be an integer")
    options = {k: fields[k] for k in _TEMPLATE_OPTIONS if k in fields}
    try:
        return sim.add_template(count, spec_from_json(fields["template"]), **options)
    except TypeError as exc:
        raise _BadRequest(str(exc)) from None


def _object(body: object) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise _BadRequest("the body must be a JSON object")
    return body


def _flag(query: dict[str, list[str]], name: str) -> bool:
    return query.get(name, ["1"])[0].lower() not in ("0", "false", "no")


def _problem(status: int, message: str) -> Reply:
    return json_reply(status, {"error": {"message": message, "type": "simulator_control"}})
