"""A client of the relay protocol (docs/bridge-protocol.md §5), for the host and the device.

One :class:`RelayConnection` is one WebSocket to a relay. It posts envelopes to mailboxes,
subscribes to mailboxes, and hands every delivered message to a per-mailbox queue;
:meth:`RelayConnection.receive` waits on that queue and acknowledges what it returns, so
a message is deleted from the relay only once this side has taken it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from dataclasses import dataclass
from typing import Any

import websockets

from .protocol import b64u, mailbox_id, unb64u


class RelayError(Exception):
    """The relay could not be reached, refused an operation, or went away."""

    def __init__(self, message: str, code: str = "unavailable") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Delivery:
    box: str
    seq: str
    data: bytes


# Put in every mailbox queue when the connection ends, so nobody waits on a dead socket.
CLOSED = Delivery("", "", b"")


class RelayConnection:
    """``async with RelayConnection(url) as relay: await relay.post(cap, data)``."""

    def __init__(self, url: str, connect_timeout: float = 10.0) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self._socket: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._queues: dict[str, asyncio.Queue[Delivery]] = {}
        self._caps: dict[str, bytes] = {}
        self._closed_reason: str | None = None

    async def __aenter__(self) -> RelayConnection:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        try:
            self._socket = await asyncio.wait_for(
                websockets.connect(self.url, max_size=256 * 1024, open_timeout=None),
                self.connect_timeout,
            )
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as error:
            raise RelayError(
                f"cannot reach the relay at {self.url} ({type(error).__name__})"
            ) from error
        self._reader = asyncio.create_task(self._read())

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._socket is not None:
            with contextlib.suppress(Exception):
                await self._socket.close()
        self._socket = None

    # --- operations ------------------------------------------------------------------

    async def _call(self, message: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        if self._socket is None or self._closed_reason:
            raise RelayError(f"the connection to the relay is closed ({self._closed_reason})")
        request_id = str(next(self._ids))
        message["id"] = request_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        try:
            await self._socket.send(json.dumps(message))
            answer = await asyncio.wait_for(future, timeout)
        except websockets.exceptions.WebSocketException as error:
            raise RelayError(f"the relay connection failed ({type(error).__name__})") from error
        except TimeoutError as error:
            raise RelayError("the relay did not answer in time") from error
        finally:
            self._waiting.pop(request_id, None)
        if answer.get("op") == "error":
            raise RelayError(
                f"the relay refused {message['op']}: {answer.get('message', '')}",
                str(answer.get("code", "unavailable")),
            )
        return answer

    async def subscribe(self, cap: bytes) -> str:
        box = mailbox_id(cap)
        self._queues.setdefault(box, asyncio.Queue())
        self._caps[box] = cap
        await self._call({"op": "sub", "cap": b64u(cap)})
        return box

    async def unsubscribe(self, cap: bytes) -> None:
        await self._call({"op": "unsub", "cap": b64u(cap)})

    async def post(self, cap: bytes, data: bytes, ttl: int = 3600) -> str:
        for attempt in range(5):
            try:
                answer = await self._call(
                    {"op": "post", "cap": b64u(cap), "data": b64u(data), "ttl": ttl}
                )
            except RelayError as error:
                if error.code != "rate_limited" or attempt == 4:
                    raise
                await asyncio.sleep(0.05 * 2**attempt)  # the relay asks us to slow down
                continue
            return str(answer.get("seq", ""))
        raise RelayError("unreachable")  # pragma: no cover - the loop returns or raises

    async def ack(self, cap: bytes, seq: str) -> None:
        await self._call({"op": "ack", "cap": b64u(cap), "seq": seq})

    def messages(self, cap: bytes) -> asyncio.Queue[Delivery]:
        """The queue a subscribed mailbox's messages arrive in, for readers that do not ack."""
        return self._queues[mailbox_id(cap)]

    async def receive(self, cap: bytes, timeout: float | None) -> Delivery:
        """The next message of a subscribed mailbox, acknowledged; TimeoutError if none."""
        box = mailbox_id(cap)
        queue = self._queues[box]
        delivery = await asyncio.wait_for(queue.get(), timeout)
        if delivery is CLOSED:
            queue.put_nowait(CLOSED)  # for the next reader too
            raise RelayError(f"the relay closed the connection ({self._closed_reason})")
        with contextlib.suppress(RelayError):
            await self.ack(cap, delivery.seq)
        return delivery

    # --- reading ---------------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            async for frame in self._socket:
                if not isinstance(frame, str):
                    continue
                try:
                    message = json.loads(frame)
                except ValueError:
                    continue
                if not isinstance(message, dict):
                    continue
                if message.get("op") == "msg":
                    self._deliver(message)
                elif isinstance(message.get("id"), str) and message["id"] in self._waiting:
                    future = self._waiting[message["id"]]
                    if not future.done():
                        future.set_result(message)
        except websockets.exceptions.WebSocketException as error:
            self._closed_reason = type(error).__name__
        finally:
            self._closed_reason = self._closed_reason or "closed"
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(RelayError("the relay closed the connection"))
            for queue in self._queues.values():
                queue.put_nowait(CLOSED)

    def _deliver(self, message: dict[str, Any]) -> None:
        box, seq = message.get("box"), message.get("seq")
        if not isinstance(box, str) or box not in self._queues or not isinstance(seq, str):
            return
        try:
            data = unb64u(message.get("data"), what="data")
        except ValueError:
            return
        self._queues[box].put_nowait(Delivery(box, seq, data))

    @property
    def closed(self) -> bool:
        return self._closed_reason is not None
