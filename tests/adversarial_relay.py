"""A hostile relay for tests: the real relay code, with a store and a handler that cheat.

:class:`AdversarialRelay` serves the real :class:`~jupyter_secure_storage.bridge.relay.Relay`
(frame parsing, limits, subscriptions, delivery) on 127.0.0.1 in a thread of its own, with
two places an attacker can act:

- the store (:class:`AdversarialMailboxes`, a :class:`MemoryMailboxes`) hands every ``post``
  to ``tamper`` first, which returns what to store instead: nothing (drop), the message
  twice (duplicate), a changed copy (bit flip, truncation), a copy in another mailbox
  (reflection), or the message held back and posted later (reorder). Every original post
  is recorded in ``posts`` (a recorded session to replay), and :meth:`AdversarialRelay.inject`
  puts any bytes into any mailbox (replay, forgery);
- the handler asks ``operation_hook`` about each operation: answer normally, not at all
  (``"silent"``, a tarpit), with an error code, or perform it and still answer an error
  (``"lie"``: the client believes its post failed, but the message is delivered).

The relay sees every capability in the frames (``sub`` and ``post`` carry them), so this is
exactly what a relay operator could do. Nothing here prints or logs message data.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import tornado.httpserver
import tornado.netutil
import tornado.web

from jupyter_secure_storage.bridge import protocol
from jupyter_secure_storage.bridge.mailboxes import MemoryMailboxes
from jupyter_secure_storage.bridge.relay import (
    DEFAULT_PATH,
    Operation,
    Post,
    Relay,
    RelayHandler,
    error_frame,
)

T = TypeVar("T")


@dataclass(frozen=True)
class Posted:
    """One ``post`` as a client sent it (before any tampering)."""

    box: str
    data: bytes
    ttl: int
    at: float

    @property
    def kind(self) -> int | None:
        if len(self.data) >= protocol.ENVELOPE_HEADER and self.data[:4] == protocol.MAGIC:
            return self.data[4]
        return None

    @property
    def conversation(self) -> bytes | None:
        if len(self.data) >= protocol.ENVELOPE_HEADER:
            return self.data[5:21]
        return None

    def __repr__(self) -> str:  # never show message data
        return f"Posted(box={self.box!r}, kind={self.kind}, size={len(self.data)})"


# What the store does with a post: a list of (box, data) to really store, in order.
Tamper = Callable[[Posted], list[tuple[str, bytes]]]


class AdversarialMailboxes(MemoryMailboxes):
    """Memory mailboxes that let ``tamper`` rewrite every post and record all of them."""

    def __init__(self) -> None:
        super().__init__()
        self.tamper: Tamper | None = None
        self.posts: list[Posted] = []
        self._fake_seq = 0

    async def post(self, box: str, data: bytes, ttl: int) -> str:
        posted = Posted(box, bytes(data), ttl, time.monotonic())
        self.posts.append(posted)
        tamper = self.tamper
        actions = [(box, data)] if tamper is None else tamper(posted)
        seq = ""
        for target, payload in actions:
            seq = await super().post(target, payload, ttl)
        if not seq:  # dropped: the client still gets an ok, as from an honest relay
            self._fake_seq += 1
            seq = f"1-{self._fake_seq}"
        return seq

    async def put(self, box: str, data: bytes, ttl: int = 600) -> str:
        """Store bytes without tampering or recording (the attacker's own posts)."""
        return await super().post(box, data, ttl)

    def post_later(self, delay: float, box: str, data: bytes, ttl: int = 600) -> None:
        """Hold a message back and store it after ``delay`` seconds (call in the relay loop)."""
        loop = asyncio.get_running_loop()
        loop.call_later(delay, lambda: loop.create_task(self.put(box, data, ttl)))

    def held(self) -> list[bytes]:
        """Every message the relay holds now."""
        return [entry.data for mailbox in self._boxes.values() for entry in mailbox.entries]


# An operation hook returns None (perform it), "silent" (never answer), "lie" (perform it,
# answer `unavailable`) or an error code.
OperationHook = Callable[[Operation], str | None]


class AdversarialHandler(RelayHandler):
    async def _perform(self, operation: Operation) -> None:
        adversary: AdversarialRelay = self.relay.adversary  # type: ignore[attr-defined]
        hook = adversary.operation_hook
        decision = hook(operation) if hook is not None else None
        if decision is None:
            await super()._perform(operation)
        elif decision == "lie" and isinstance(operation, Post):
            await self.relay.store.post(operation.box, operation.data, operation.ttl)
            await self._send(error_frame(operation.id, "unavailable", "try again"))
        elif decision != "silent":
            await self._send(error_frame(operation.id, decision, "refused by the adversary"))


class AdversarialRelay:
    """The real relay with a cheating store and handler, in a thread; ``url`` once started."""

    def __init__(self) -> None:
        self.store = AdversarialMailboxes()
        self.relay = Relay(self.store, ping_interval=0)
        self.relay.adversary = self  # type: ignore[attr-defined]
        self.operation_hook: OperationHook | None = None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="adversarial-relay", daemon=True)
        self.url = ""
        self._server: tornado.httpserver.HTTPServer | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> AdversarialRelay:
        self.thread.start()

        async def listen() -> str:
            await self.relay.start()
            app = tornado.web.Application(
                [(re.escape(DEFAULT_PATH), AdversarialHandler, {"relay": self.relay})]
            )
            self._server = tornado.httpserver.HTTPServer(app)
            sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
            self._server.add_sockets(sockets)
            return f"ws://127.0.0.1:{sockets[0].getsockname()[1]}{DEFAULT_PATH}"

        self.url = self.call(listen())
        return self

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run ``coroutine`` in the relay's loop and wait for it (from another thread)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def acall(self, coroutine: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """The same, awaited from another event loop."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout)

    async def inject(self, box: str, data: bytes, ttl: int = 600) -> str:
        return await self.acall(self.store.put(box, data, ttl))

    def close_subscribers(self, box: str) -> None:
        """Close every connection subscribed to ``box`` (call in the relay loop)."""
        for handler in list(self.relay.handlers):
            if box in handler._subscriptions:
                handler.close(1011, "the adversary hangs up")

    async def hang_up(self, box: str) -> None:
        """From another event loop: close every connection subscribed to ``box``."""

        async def close() -> None:
            self.close_subscribers(box)

        await self.acall(close())

    def reset(self) -> None:
        self.store.tamper = None
        self.operation_hook = None
        self.store.posts.clear()

    def stop(self) -> None:
        async def shut() -> None:
            if self._server is not None:
                self._server.stop()
            await self.relay.close()
            if self._server is not None:
                await self._server.close_all_connections()

        try:
            self.call(shut())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
