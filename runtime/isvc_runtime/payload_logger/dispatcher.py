"""The payload logger's sending side: events queue without waiting, sender tasks post them to the sink.

An inference only ever calls :meth:`PayloadLogger.log`, which copies nothing, awaits nothing and never
raises: a full queue drops the event (reason ``queue_full``). Each sender keeps one connection and
retries a failed event with exponential backoff (``connection``, ``timeout``, a 5xx/408/429 ``status``)
before dropping it under that reason; while senders back off, the queue absorbs bursts and overflows
cheaply. A sink that refuses connections, or accepts them and never answers, therefore costs the
inferences one ``put_nowait`` each. Drops are counted by reason (``dropped``, exported by
``payload_logger.metrics``) and logged as a warning at most once a minute, naming the sink's host only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from .events import REQUEST, RESPONSE, event_head, wants
from .settings import LoggerSettings
from .sink import SendError, SinkConnection

log = logging.getLogger("isvc_runtime.payload_logger")

QUEUE_SIZE = 1024  # events; ~2 s of c32 traffic at full speed
SENDERS = 4  # concurrent connections to the sink
MAX_ATTEMPTS = 4
BACKOFF_BASE = 0.1  # seconds; doubled per attempt
BACKOFF_CAP = 2.0
WARN_INTERVAL = 60.0  # seconds between two drop warnings
DROP_REASONS = ("queue_full", "connection", "timeout", "status", "shutdown")


@dataclass(frozen=True, slots=True)
class Event:
    type: str
    id: str
    body: bytes
    content_type: str


def backoff(attempt: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first retry)."""
    return min(cap, base * 2**attempt)


def warning_due(last: float | None, now: float, interval: float = WARN_INTERVAL) -> bool:
    return last is None or now - last >= interval


class PayloadLogger:
    def __init__(
        self, settings: LoggerSettings, *, queue_size: int = QUEUE_SIZE, senders: int = SENDERS,
        max_attempts: int = MAX_ATTEMPTS, connect: Callable[[], SinkConnection] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.dropped: Counter[str] = Counter()
        self.sent = 0
        self._queue: asyncio.Queue[Event] | None = None
        self._queue_size = queue_size
        self._senders = senders
        self._max_attempts = max(1, max_attempts)
        ssl_context = settings.ssl_context()
        self._connect = connect or (lambda: SinkConnection(settings.url, ssl_context))
        self._clock = clock
        self._tasks: list[asyncio.Task[None]] = []
        self._last_warning: float | None = None
        self._dropped_at_warning = 0
        parts = urlsplit(settings.url)
        self._sink_name = f"{parts.scheme}://{parts.hostname}:{parts.port or ''}".rstrip(":")

    def log(self, event_type: str, event_id: str, body: bytes, content_type: str) -> None:
        """Queue one event if the mode wants it; never waits, never raises. Call on the event loop."""
        if not wants(self.settings.mode, event_type):
            return
        queue = self._queue
        if queue is None:
            self.start()
            queue = self._queue
            assert queue is not None
        if queue.full():  # the common case while the sink fails: no event object, no exception
            self._drop("queue_full")
            return
        queue.put_nowait(Event(event_type, event_id, body, content_type))

    def saturated(self) -> bool:
        """Whether the queue is full: an inference that starts now is not recorded at all (see
        :meth:`drop_unrecorded`), which spares a failing sink's every request the cost of recording."""
        return self._queue is not None and self._queue.full()

    def drop_unrecorded(self) -> None:
        """Count the events of one inference that was not recorded (queue full when it started)."""
        for event_type in (REQUEST, RESPONSE):
            if wants(self.settings.mode, event_type):
                self._drop("queue_full")

    def log_request(self, event_id: str, body: bytes, content_type: str) -> None:
        self.log(REQUEST, event_id, body, content_type)

    def log_response(self, event_id: str, body: bytes, content_type: str) -> None:
        self.log(RESPONSE, event_id, body, content_type)

    def start(self) -> None:
        if self._queue is not None:
            return
        self._queue = asyncio.Queue(self._queue_size)
        self._tasks = [asyncio.create_task(self._send_forever(self._queue), name=f"payload-logger-{i}")
                       for i in range(self._senders)]

    async def stop(self, drain_timeout: float = 1.0) -> None:
        """Give queued events ``drain_timeout`` seconds to go out; what is left is dropped (shutdown)."""
        queue, self._queue = self._queue, None
        if queue is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_timeout):
                await queue.join()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        while not queue.empty():
            queue.get_nowait()
            self._drop("shutdown")

    async def _send_forever(self, queue: asyncio.Queue[Event]) -> None:
        connection = self._connect()
        try:
            while True:
                event = await queue.get()
                try:
                    await self._send(connection, event)
                except asyncio.CancelledError:  # stopped while sending or backing off
                    self._drop("shutdown")
                    raise
                finally:
                    queue.task_done()
        finally:
            await connection.close()

    async def _send(self, connection: SinkConnection, event: Event) -> None:
        head = event_head(self.settings.url, event.type, event.id, self.settings.identity,
                          event.content_type, len(event.body))
        for attempt in range(self._max_attempts):
            try:
                await connection.post(head, event.body)
            except SendError as exc:
                if not exc.retry or attempt + 1 == self._max_attempts:
                    self._drop(exc.reason, str(exc))
                    return
                await asyncio.sleep(backoff(attempt))
            else:
                self.sent += 1
                return

    def _drop(self, reason: str, detail: str = "") -> None:
        self.dropped[reason] += 1
        now = self._clock()
        if warning_due(self._last_warning, now):
            total = sum(self.dropped.values())
            log.warning(
                "payload logger: %d event(s) dropped since the last warning (%s), sink %s%s",
                total - self._dropped_at_warning,
                ", ".join(f"{name} {count}" for name, count in sorted(self.dropped.items())),
                self._sink_name, f": {detail}" if detail else "",
            )
            self._last_warning, self._dropped_at_warning = now, total
