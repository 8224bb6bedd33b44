"""``batch-watcher run``: the long-running service.

One task group owns everything: the engine, the state store's flusher, retention, the webhook
notifier and the HTTP server. The first SIGTERM or SIGINT stops polling, lets in-flight writes
finish and exits 0 within a grace period; a second one exits at once.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import anyio
import structlog

from .. import __version__
from ..config import Config, parse_listen, require_api_key
from ..config.settings import client_settings, engine_settings
from ..config.values import is_loopback, password_of
from ..core import lifecycle
from ..core.engine import Engine
from ..core.events import Sink
from ..core.states import Phase, State
from ..core.watch import STORE
from ..credentials import Secret
from ..errors import ConfigError, TooManyWatches
from ..fleet.replica import replica_name
from ..logs import log_event, register_secret
from ..serving import EmbeddedServer, ServerLimits, address, bind, server_config
from ..store import StateStore
from ..store.postgres import PostgresStore
from ..store.sqlite import SQLiteStore
from .declared import DeclaredKeys, DeclaredWatch, declared_watches
from .discovery import discover_stores
from .fleet import FleetReplica
from .fleet_view import FleetView
from .history import BatchHistory
from .metrics import WatcherMetrics
from .notify import Notifier
from .web import LOOPBACK_NAMES, AppState, build_app

log = structlog.get_logger("watcher.daemon.service")

GRACE_SECONDS = 10.0


@dataclass
class Daemon:
    """Everything ``run`` starts, built from a :class:`Config` (and reachable by tests)."""

    config: Config
    extra_sinks: Sequence[Sink] = ()
    grace_seconds: float = GRACE_SECONDS
    on_listening: Callable[[str], object] | None = None  # called with the bound host:port
    limits: ServerLimits = field(default_factory=ServerLimits)
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    store: StateStore = field(init=False)
    engine: Engine = field(init=False)
    metrics: WatcherMetrics = field(init=False)
    history: BatchHistory = field(init=False)
    notifier: Notifier | None = field(init=False, default=None)
    fleet: FleetReplica | None = field(init=False, default=None)
    #: The file's ``[[watch]]`` tables; the config keeps none (see :mod:`.declared`).
    declared: tuple[DeclaredWatch, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.declared = declared_watches(self.config.watches)
        config = self.config = self.config.model_copy(update={"watches": ()})
        secrets = (config.api.api_key, config.server.control_token, config.notify.webhook_secret)
        for source in secrets:
            register_secret(source)
        outbox = bool(config.notify.webhook_url)
        if config.state.url is not None:
            # Fleet mode. The database's password shows nowhere: not in logs, not in errors.
            for password in (password_of(config.state.url), self.environ.get("PGPASSWORD")):
                if password:
                    register_secret(Secret(password))
            self.store = PostgresStore(
                config.state.url, replica=replica_name(self.environ), outbox=outbox
            )
        else:
            self.store = SQLiteStore(config.state.path, outbox=outbox)
        self.metrics = WatcherMetrics()
        self.history = BatchHistory()
        sinks: list[Sink] = [
            log_event,
            self.metrics.on_event,
            self.history.on_event,
            *self.extra_sinks,
        ]
        if config.notify.webhook_url:
            self.notifier = Notifier(
                config.notify.webhook_url,
                self.store,
                secret=config.notify.webhook_secret,
                timeout_seconds=config.notify.timeout_seconds,
                max_attempts=config.notify.max_attempts,
            )
            sinks.append(self.notifier.on_event)
        if isinstance(self.store, PostgresStore):
            self.fleet = FleetReplica(config, self.store, self.store.replica)
            sinks.append(self.fleet.on_event)
        self.engine = Engine.create(
            client_settings(config),
            engine_settings(config),
            observer=self.metrics.on_exchange,
            sinks=sinks,
            store=self.store,
        )
        if self.fleet is not None:
            self.fleet.attach(self.engine)
            self.metrics.own.register(self.fleet)

    async def restore(self) -> None:
        """Open the store, resume every watch in it, then add the configured ones."""
        assert self.fleet is None, "a fleet replica starts with FleetReplica.start"
        # Rejected requests are usually a configuration problem (a missing api-version):
        # after a restart, presumably with a fixed configuration, they are tried again.
        restored = [
            lifecycle.reopen(w) if w.result is not None and w.result.status is State.REJECTED else w
            for w in await self.store.open()
        ]
        limit = self.config.state.max_watches
        unfinished = sum(1 for w in restored if w.phase is not Phase.FINISHED)
        if unfinished > limit:
            await self.store.aclose()
            raise ConfigError(
                f"state.max_watches: {limit} is less than the {unfinished} unfinished watches in "
                f"the state store ({self.store.location})"
            )
        for watch in restored:
            self.engine.add(watch.vector_store_id, watch.batch_id, restored=watch)
        for spec in self.declared:
            try:
                self.engine.add(
                    spec.vector_store_id, spec.batch_id, labels=spec.labels, options=spec.options
                )
            except TooManyWatches:
                # The store holds watches registered through the API: the file alone was valid.
                await self.store.aclose()
                raise ConfigError(
                    f"state.max_watches: {limit} leaves no room for watch[{spec.index}] "
                    f"({spec.vector_store_id}/{spec.batch_id}) next to the {unfinished} "
                    "unfinished watches in the state store"
                ) from None
        for index, store in enumerate(self.config.stores):
            try:
                self.engine.add(store.vector_store_id, STORE, labels=store.labels)
            except TooManyWatches:
                raise ConfigError(
                    f"state.max_watches: {limit} leaves no room for store[{index}] "
                    f"({store.vector_store_id}) next to the other unfinished watches"
                ) from None
        log.info(
            "watches_restored",
            restored=len(restored),
            configured=len(self.declared) + len(self.config.stores),
            watching=self.engine.unfinished,
            finished=len(self.engine) - self.engine.unfinished,
        )

    def _fleet_problems(self) -> list[str]:
        problems = []
        if self.fleet is not None and not self.fleet.ready:
            problems.append("the fleet's database does not answer (leases not renewed)")
        if isinstance(self.store, PostgresStore) and self.store.write_failure is not None:
            problems.append(f"the state store cannot write: {self.store.write_failure.error}")
        return problems

    async def _retention(self) -> None:
        keep = self.config.state.retention_seconds
        while True:
            await anyio.sleep(min(60.0, max(keep / 4, 1.0)))
            gone = self.engine.prune_finished(time.time() - keep)
            if gone:
                log.info("watches_pruned", count=len(gone))

    def _api_key_missing(self) -> str | None:
        """Why the API has no key when it needs one, as ``check-config`` says it; else None."""
        try:
            require_api_key(self.config)
        except ConfigError as exc:
            return str(exc)
        return None

    async def serve(self) -> int:
        host, port = parse_listen(self.config.server.listen)
        try:
            sock = bind(host, port)
        except OSError as exc:
            raise ConfigError(f"server.listen: cannot listen on {host}:{port}: {exc}") from None
        try:
            if self.fleet is not None:
                await self.fleet.start(self.declared)
            else:
                await self.restore()
        except BaseException:
            sock.close()  # a refused state store must not leave the port held
            raise
        if self.on_listening is not None:
            self.on_listening(address(sock))
        state = AppState(
            engine=self.engine,
            metrics=self.metrics,
            store=self.store,
            poll=self.config.poll,
            control_token=self.config.server.control_token,
            loopback=is_loopback(host),
            declared=DeclaredKeys(self.declared),
            declared_stores={
                spec.vector_store_id: index for index, spec in enumerate(self.config.stores)
            },
            local_names=LOOPBACK_NAMES | {host.lower()},
            body_timeout_seconds=self.limits.body_timeout_seconds,
            api_key_missing=self._api_key_missing,
            history=self.history,
            more_problems=self._fleet_problems if self.fleet is not None else None,
            fleet=FleetView(self.fleet) if self.fleet is not None else None,
        )
        # The declared watches are in the engine (or the fleet's database) now, and AppState
        # keeps which keys the file declares.
        self.declared = ()
        self.config = self.config.model_copy(update={"stores": ()})
        server = EmbeddedServer(
            server_config(build_app(state), self.limits, timeout_graceful_shutdown=1)
        )
        work = anyio.CancelScope()

        async def run_work() -> None:
            with work:
                async with anyio.create_task_group() as inner:
                    await inner.start(self.engine.run)
                    inner.start_soon(self.store.run)
                    if self.fleet is not None:
                        await inner.start(self.fleet.run)
                    inner.start_soon(self._retention)
                    if self.notifier is not None:
                        inner.start_soon(self.notifier.run)
                    discovery = self.config.discovery
                    if discovery.vector_stores:
                        inner.start_soon(
                            partial(
                                discover_stores, self.engine, interval=discovery.interval_seconds
                            )
                        )

        try:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async with anyio.create_task_group() as outer:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(run_work)
                        tg.start_soon(server.serve, [sock])
                        log.info(
                            "daemon_started",
                            version=__version__,
                            listen=address(sock),
                            watches=len(self.engine),
                            pid=os.getpid(),
                        )
                        async for signum in signals:
                            log.info("shutdown_requested", signal=signal.Signals(signum).name)
                            break
                        outer.start_soon(_exit_on_second_signal, signals)
                        # Stop polling (the store flushes on its way out), stop serving, and
                        # give both the grace period at most.
                        work.cancel()
                        server.should_exit = True
                        tg.cancel_scope.deadline = anyio.current_time() + self.grace_seconds
                    outer.cancel_scope.cancel()
        finally:
            await self.store.aclose()
            sock.close()
        log.info("daemon_stopped")
        return 0


async def _exit_on_second_signal(signals: AsyncIterator[int]) -> None:
    async for signum in signals:
        log.warning("shutdown_forced", signal=signal.Signals(signum).name)
        os._exit(128 + signum)
