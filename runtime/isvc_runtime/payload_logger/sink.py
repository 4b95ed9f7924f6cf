"""One keep-alive HTTP/1.1 connection to the sink: POST an event, read the answer's status.

asyncio streams and httptools (the runtime's HTTP parser already) rather than a client library: an event
costs one write and one parse on the event loop the inferences share. Every failure is a
:class:`SendError` with the reason the dispatcher counts drops by.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

import httptools

from .events import target

CONNECT_TIMEOUT = 2.0  # seconds
ANSWER_TIMEOUT = 5.0  # seconds from the last byte sent to the end of the answer


class SendError(Exception):
    """An event not delivered: ``reason`` is ``connection``, ``timeout`` or ``status``; ``retry`` whether
    another attempt may succeed (a 4xx other than 408/429 will not)."""

    def __init__(self, reason: str, detail: str, *, retry: bool = True) -> None:
        super().__init__(detail)
        self.reason = reason
        self.retry = retry


class _Answer:
    """httptools callbacks: the answer is complete when its message is."""

    def __init__(self) -> None:
        self.complete = False

    def on_message_complete(self) -> None:
        self.complete = True


class SinkConnection:
    def __init__(self, url: str, ssl_context: ssl.SSLContext | None, *,
                 connect_timeout: float = CONNECT_TIMEOUT, answer_timeout: float = ANSWER_TIMEOUT) -> None:
        parts, _ = target(url)
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = ssl_context
        self._connect_timeout = connect_timeout
        self._answer_timeout = answer_timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, head: bytes, body: bytes) -> int:
        """Send one request, return the answer's status (2xx); SendError otherwise."""
        if self._writer is None or self._writer.is_closing():
            await self._connect()
        assert self._reader is not None and self._writer is not None
        try:
            self._writer.writelines((head, body))
            async with asyncio.timeout(self._answer_timeout):
                await self._writer.drain()
                status, keep_alive = await self._read_answer(self._reader)
        except TimeoutError:
            await self.close()
            raise SendError("timeout", f"no answer within {self._answer_timeout:g} s") from None
        except (OSError, httptools.HttpParserError, EOFError) as exc:
            await self.close()
            raise SendError("connection", f"{type(exc).__name__}: {exc}") from None
        if not keep_alive:
            await self.close()
        if 200 <= status < 300:
            return status
        raise SendError("status", f"the sink answered {status}", retry=status >= 500 or status in (408, 429))

    async def _connect(self) -> None:
        try:
            async with asyncio.timeout(self._connect_timeout):
                self._reader, self._writer = await asyncio.open_connection(
                    self._host, self._port, ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None)
        except TimeoutError:
            raise SendError("timeout", f"no connection within {self._connect_timeout:g} s") from None
        except (OSError, ssl.SSLError) as exc:
            raise SendError("connection", f"{type(exc).__name__}: {exc}") from None

    @staticmethod
    async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
        answer = _Answer()
        parser = httptools.HttpResponseParser(answer)
        while not answer.complete:
            data = await reader.read(65536)
            if not data:
                raise EOFError("the sink closed the connection before answering")
            parser.feed_data(data)
        return parser.get_status_code(), parser.should_keep_alive()

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
