"""The file's ``[[watch]]`` tables in the daemon's terms: the records built from them, and the
small index of which keys the file declares where."""

from __future__ import annotations

from watcher.config import PollConfig, parse_watch
from watcher.core.retry import RetryPolicy
from watcher.core.watch import WatchOptions
from watcher.daemon.declared import DeclaredKeys, declared_watches


def _specs() -> list[dict[str, object]]:
    return [
        {"vector_store_id": "vs_a", "batch_id": "vsfb_1"},
        {"vector_store_id": "vs_b", "batch_id": "vsfb_1", "interval_seconds": 7.0},
        {"vector_store_id": "vs_a", "batch_id": "vsfb_2"},
        {"vector_store_id": "vs_a", "batch_id": "vsfb_3", "retry": {"max_attempts": 3}},
    ]


def test_each_spec_becomes_a_record_with_its_place_and_options() -> None:
    declared = declared_watches(parse_watch(s, PollConfig()) for s in _specs())
    assert [(d.index, d.vector_store_id, d.batch_id) for d in declared] == [
        (0, "vs_a", "vsfb_1"),
        (1, "vs_b", "vsfb_1"),
        (2, "vs_a", "vsfb_2"),
        (3, "vs_a", "vsfb_3"),
    ]
    assert declared[1].options == WatchOptions(interval_seconds=7.0)
    assert declared[3].options == WatchOptions(retry=RetryPolicy(("server_error",), 3))
    # Equal options are one object: 10,000 plain watches share one.
    assert declared[0].options is declared[2].options


def test_declared_keys_give_each_watch_its_index_in_the_file() -> None:
    keys = DeclaredKeys(declared_watches(parse_watch(s, PollConfig()) for s in _specs()))
    assert keys.index("vs_a", "vsfb_1") == 0
    assert keys.index("vs_b", "vsfb_1") == 1
    assert keys.index("vs_a", "vsfb_2") == 2
    assert keys.index("vs_a", "vsfb_3") == 3
    assert keys.index("vs_b", "vsfb_2") is None
    assert keys.index("vs_c", "vsfb_1") is None
    assert DeclaredKeys().index("vs_a", "vsfb_1") is None
