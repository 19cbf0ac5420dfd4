"""The relay (docs/bridge-protocol.md §5): mailboxes over WebSocket, served by tornado.

``jupyter-secure-storage relay`` (or ``python -m jupyter_secure_storage.bridge.relay``)
runs it standalone; :mod:`jupyter_secure_storage.bridge.server_extension` mounts the same
:class:`RelayHandler` in a Jupyter Server. Operating it: docs/relay.md.

The relay is untrusted by design: it forwards opaque, end-to-end encrypted envelopes and
learns sizes and timing. What it guards is itself -- every limit of §5 is enforced, every
frame is validated by the pure function :func:`parse_frame` (which raises nothing but
:class:`FrameError`), and it never keeps or logs a capability or message data: mailboxes
are stored under ``box = b64u(SHA-256("jss-mailbox/1" || cap))``, logs name boxes and
sizes at most.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import math
import os
import re
import signal
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket

from .mailboxes import (
    ZERO_SEQ,
    MailboxFullError,
    MailboxLimits,
    MailboxStore,
    MemoryMailboxes,
    RedisMailboxes,
    StoreUnavailableError,
    parse_seq,
)
from .protocol import ProtocolError, b64u, mailbox_id, unb64u

logger = logging.getLogger("jupyter_secure_storage.relay")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_PATH = "/relay"
REDIS_URL_ENV = "JSS_RELAY_REDIS_URL"
CAP_BYTES = 32
MAX_ID_CHARS = 32

BAD_REQUEST = "bad_request"
TOO_LARGE = "too_large"
MAILBOX_FULL = "mailbox_full"
RATE_LIMITED = "rate_limited"
TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
UNAVAILABLE = "unavailable"
ERROR_CODES = (
    BAD_REQUEST,
    TOO_LARGE,
    MAILBOX_FULL,
    RATE_LIMITED,
    TOO_MANY_SUBSCRIPTIONS,
    UNAVAILABLE,
)


# --- limits --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """§5's limits. A relay may be stricter, never looser: each field is at most its default."""

    max_data: int = 65_600  # bytes of `data` after base64url decoding
    max_messages: int = 256  # per mailbox
    max_mailbox_bytes: int = 4 * 1024 * 1024  # per mailbox, decoded data
    max_subscriptions: int = 64  # per connection
    ops_per_second: int = 1000  # per connection (a token bucket, burst = one second's worth)
    max_frame: int = 128 * 1024  # bytes; a larger frame closes the connection (1009)
    max_ttl: int = 86_400  # seconds
    default_ttl: int = 3_600  # seconds, when a post has no ttl (capped at max_ttl)

    def __post_init__(self) -> None:
        for spec in fields(Limits):
            value = getattr(self, spec.name)
            ceiling = spec.default
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{spec.name} must be a positive integer")
            if isinstance(ceiling, int) and value > ceiling:
                raise ValueError(
                    f"{spec.name} may be at most {ceiling} (docs/bridge-protocol.md §5)"
                )

    @property
    def ttl_when_absent(self) -> int:
        return min(self.default_ttl, self.max_ttl)

    @property
    def max_data_chars(self) -> int:
        """The longest base64url (unpadded) text that can decode to ``max_data`` bytes."""
        return math.ceil(self.max_data * 4 / 3)

    def mailbox_limits(self) -> MailboxLimits:
        return MailboxLimits(max_messages=self.max_messages, max_bytes=self.max_mailbox_bytes)


DEFAULT_LIMITS = Limits()


# --- frames (pure functions: no I/O, no state) ----------------------------------------------


class FrameError(Exception):
    """A client frame the relay refuses; ``code`` is one of :data:`ERROR_CODES`.

    ``request_id`` is the frame's ``id`` when it had a valid one (so the error can be
    matched to the request), else None. The message never quotes the frame.
    """

    def __init__(self, code: str, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True)
class Sub:
    id: str
    box: str


@dataclass(frozen=True)
class Unsub:
    id: str
    box: str


@dataclass(frozen=True)
class Post:
    id: str
    box: str
    data: bytes
    ttl: int

    def __repr__(self) -> str:  # never show message data
        return f"Post(id={self.id!r}, box={self.box!r}, size={len(self.data)}, ttl={self.ttl})"


@dataclass(frozen=True)
class Ack:
    id: str
    box: str
    seq: str


@dataclass(frozen=True)
class Ping:
    id: str


Operation = Sub | Unsub | Post | Ack | Ping
OPS = ("sub", "unsub", "post", "ack", "ping")


def _reject_constant(name: str) -> Any:
    raise ValueError("NaN and Infinity are not JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError("duplicate key")
        result[key] = value
    return result


def _frame_object(frame: str | bytes, limits: Limits) -> dict[str, Any]:
    if not isinstance(frame, str):
        raise FrameError(BAD_REQUEST, "frames must be text frames holding a JSON object")
    if len(frame) > limits.max_frame:
        raise FrameError(TOO_LARGE, f"a frame may be at most {limits.max_frame} bytes")
    try:
        value = json.loads(frame, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:
        raise FrameError(BAD_REQUEST, "the frame is not a JSON object") from error
    if not isinstance(value, dict):
        raise FrameError(BAD_REQUEST, "the frame is not a JSON object")
    return value


def _request_id(message: dict[str, Any]) -> str:
    request_id = message.get("id")
    if not isinstance(request_id, str) or not 1 <= len(request_id) <= MAX_ID_CHARS:
        raise FrameError(BAD_REQUEST, f"id must be a string of 1 to {MAX_ID_CHARS} characters")
    try:
        request_id.encode("utf-8")
    except UnicodeEncodeError as error:  # a lone surrogate from a \\ud800 escape
        raise FrameError(BAD_REQUEST, "id must be valid Unicode") from error
    return request_id


def _box(message: dict[str, Any], request_id: str) -> str:
    try:
        cap = unb64u(message.get("cap"), CAP_BYTES, "cap")
    except ProtocolError as error:
        raise FrameError(
            BAD_REQUEST, f"cap must be {CAP_BYTES} bytes in base64url without padding", request_id
        ) from error
    return mailbox_id(cap)


def _data(message: dict[str, Any], request_id: str, limits: Limits) -> bytes:
    text = message.get("data")
    if not isinstance(text, str):
        raise FrameError(BAD_REQUEST, "data must be a base64url string", request_id)
    too_large = FrameError(TOO_LARGE, f"data may be at most {limits.max_data} bytes", request_id)
    if len(text) > limits.max_data_chars:
        raise too_large
    try:
        data = unb64u(text, None, "data")
    except ProtocolError as error:
        raise FrameError(
            BAD_REQUEST, "data must be base64url without padding", request_id
        ) from error
    if len(data) > limits.max_data:
        raise too_large
    return data


def _ttl(message: dict[str, Any], request_id: str, limits: Limits) -> int:
    if "ttl" not in message:
        return limits.ttl_when_absent
    ttl = message["ttl"]
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= limits.max_ttl:
        raise FrameError(
            BAD_REQUEST, f"ttl must be an integer from 1 to {limits.max_ttl} seconds", request_id
        )
    return ttl


def parse_frame(frame: str | bytes, limits: Limits = DEFAULT_LIMITS) -> Operation:
    """One client frame as an :data:`Operation`; raises only :class:`FrameError`.

    The capability is checked and turned into its ``box`` here, so nothing after this
    function ever holds it. Unknown fields are ignored; missing or mistyped ones, unknown
    ops, duplicate keys, NaN and non-canonical base64url are ``bad_request``; ``data``
    over the limit is ``too_large``.
    """
    message = _frame_object(frame, limits)
    request_id = _request_id(message)
    op = message.get("op")
    if not isinstance(op, str) or op not in OPS:
        raise FrameError(BAD_REQUEST, f"op must be one of {', '.join(OPS)}", request_id)
    if op == "ping":
        return Ping(request_id)
    box = _box(message, request_id)
    if op == "sub":
        return Sub(request_id, box)
    if op == "unsub":
        return Unsub(request_id, box)
    if op == "post":
        data = _data(message, request_id, limits)
        return Post(request_id, box, data, _ttl(message, request_id, limits))
    seq = message.get("seq")
    if not isinstance(seq, str) or parse_seq(seq) is None:
        raise FrameError(BAD_REQUEST, "seq must be a seq from a msg of this relay", request_id)
    return Ack(request_id, box, seq)


def ok_frame(request_id: str, **extra: str) -> str:
    return json.dumps({"op": "ok", "id": request_id, **extra}, separators=(",", ":"))


def error_frame(request_id: str | None, code: str, message: str) -> str:
    """``id`` is null when the frame had no usable id (it was not JSON, or id was bad)."""
    return json.dumps(
        {"op": "error", "id": request_id, "code": code, "message": message},
        separators=(",", ":"),
    )


def msg_frame(box: str, seq: str, data: bytes) -> str:
    return json.dumps(
        {"op": "msg", "box": box, "seq": seq, "data": b64u(data)}, separators=(",", ":")
    )


class TokenBucket:
    """``rate`` operations per second with a burst of ``burst``; ``take`` says if one may run."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.tokens = burst
        self.stamp = clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


# --- the relay -------------------------------------------------------------------------------


class Relay:
    """What every connection shares: the store, the limits, and the open connections."""

    def __init__(
        self,
        store: MailboxStore,
        limits: Limits = DEFAULT_LIMITS,
        *,
        max_connections: int = 10_000,
        ping_interval: float = 30.0,
        read_timeout: float = 20.0,
        batch: int = 32,
    ) -> None:
        self.store = store
        self.limits = limits
        self.max_connections = max_connections
        self.ping_interval = ping_interval
        self.read_timeout = read_timeout
        self.batch = batch
        self.handlers: set[RelayHandler] = set()
        self.followers = 0  # subscriptions being delivered, over all connections
        self._started = False
        self._start_lock: asyncio.Lock | None = None

    async def start(self) -> None:
        """Start the store (idempotent); raises StoreUnavailableError if it cannot."""
        if self._started:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if not self._started:
                await self.store.start()
                self._started = True

    async def close(self) -> None:
        for handler in list(self.handlers):
            handler.close(1001, "relay shutting down")
        if self._started:
            await self.store.close()
            self._started = False


class RelayHandler(tornado.websocket.WebSocketHandler):
    """One client connection: parse each frame, run it, answer it; deliver subscriptions."""

    relay: Relay

    def initialize(self, relay: Relay) -> None:
        self.relay = relay
        self._subscriptions: dict[str, asyncio.Task[None]] = {}
        self._bucket = TokenBucket(relay.limits.ops_per_second, relay.limits.ops_per_second)
        self._opened = False
        self._closed = False

    # Capabilities, not cookies or origins, decide who may use a mailbox, and the relay sets
    # no cookies: a page of any origin (the web companion, a phone app) may connect.
    def check_origin(self, origin: str) -> bool:
        return True

    @property
    def max_message_size(self) -> int:
        return self.relay.limits.max_frame

    @property
    def ping_interval(self) -> float | None:
        return self.relay.ping_interval or None

    @property
    def ping_timeout(self) -> float | None:
        return self.relay.ping_interval or None

    def get_compression_options(self) -> dict[str, Any] | None:
        return None  # no permessage-deflate: frames are ciphertext, and no inflation bombs

    async def get(self, *args: Any, **kwargs: Any) -> None:
        if len(self.relay.handlers) >= self.relay.max_connections:
            self.set_status(503)
            self.finish("relay busy: too many connections")
            return
        try:
            await self.relay.start()
        except StoreUnavailableError:
            logger.warning("relay storage unavailable; refusing a connection")
            self.set_status(503)
            self.finish("relay storage unavailable")
            return
        await super().get(*args, **kwargs)

    def open(self, *args: str, **kwargs: str) -> None:
        # Answers and deliveries are small frames written back to back: without this,
        # Nagle's algorithm holds the second one for the client's delayed ACK (~40 ms).
        self.set_nodelay(True)
        self._opened = True
        self.relay.handlers.add(self)
        logger.debug("connection opened (%d open)", len(self.relay.handlers))

    def on_close(self) -> None:
        self._closed = True
        for task in self._subscriptions.values():
            task.cancel()
        self._subscriptions.clear()
        if self._opened:
            self.relay.handlers.discard(self)
            logger.debug("connection closed (%d open)", len(self.relay.handlers))

    async def _send(self, frame: str) -> bool:
        try:
            await self.write_message(frame)
        except tornado.websocket.WebSocketClosedError:
            return False
        return True

    async def on_message(self, message: str | bytes) -> None:
        # tornado reads the next frame only when this returns: one operation at a time per
        # connection, and a client that does not read its answers stops being read.
        limits = self.relay.limits
        try:
            operation = parse_frame(message, limits)
        except FrameError as error:
            if not self._bucket.take():
                await self._rate_limited(error.request_id)
                return
            await self._send(error_frame(error.request_id, error.code, error.message))
            return
        if not self._bucket.take():
            await self._rate_limited(operation.id)
            return
        try:
            await self._perform(operation)
        except MailboxFullError as error:
            await self._send(error_frame(operation.id, MAILBOX_FULL, str(error)))
        except StoreUnavailableError as error:
            await self._send(error_frame(operation.id, UNAVAILABLE, str(error)))
        except Exception as error:  # the type only: an exception's text could quote input
            logger.error("relay operation failed: %s", type(error).__name__)
            await self._send(error_frame(operation.id, UNAVAILABLE, "internal relay error"))

    async def _rate_limited(self, request_id: str | None) -> None:
        limit = self.relay.limits.ops_per_second
        await self._send(
            error_frame(request_id, RATE_LIMITED, f"at most {limit} operations per second")
        )

    async def _perform(self, operation: Operation) -> None:
        store = self.relay.store
        if isinstance(operation, Ping):
            await self._send(ok_frame(operation.id))
        elif isinstance(operation, Post):
            seq = await store.post(operation.box, operation.data, operation.ttl)
            logger.debug("post box=%s size=%d", operation.box, len(operation.data))
            await self._send(ok_frame(operation.id, seq=seq))
        elif isinstance(operation, Ack):
            await store.ack(operation.box, operation.seq)
            logger.debug("ack box=%s", operation.box)
            await self._send(ok_frame(operation.id))
        elif isinstance(operation, Unsub):
            task = self._subscriptions.pop(operation.box, None)
            if task is not None:
                task.cancel()
            await self._send(ok_frame(operation.id))
        elif isinstance(operation, Sub):
            await self._subscribe(operation)

    async def _subscribe(self, operation: Sub) -> None:
        box = operation.box
        previous = self._subscriptions.pop(box, None)
        if previous is not None:
            previous.cancel()  # subscribing again starts over: every held message again
        elif len(self._subscriptions) >= self.relay.limits.max_subscriptions:
            limit = self.relay.limits.max_subscriptions
            await self._send(
                error_frame(
                    operation.id,
                    TOO_MANY_SUBSCRIPTIONS,
                    f"a connection may subscribe to at most {limit} mailboxes",
                )
            )
            return
        ceiling = self.relay.store.max_followers
        if previous is None and ceiling is not None and self.relay.followers >= ceiling:
            logger.warning("refusing a subscription: %d mailboxes followed", ceiling)
            await self._send(
                error_frame(operation.id, UNAVAILABLE, "the relay follows too many mailboxes now")
            )
            return
        # Counted before the ok goes out (another connection's sub may run while it does);
        # followed only after, so the ok comes before any msg of the mailbox.
        self.relay.followers += 1
        if not await self._send(ok_frame(operation.id, box=box)) or self._closed:
            self.relay.followers -= 1  # closed meanwhile: on_close has come and gone
            return
        logger.debug("sub box=%s", box)
        task = asyncio.create_task(self._follow(box))
        task.add_done_callback(self._unfollowed)
        self._subscriptions[box] = task

    def _unfollowed(self, task: asyncio.Task[None]) -> None:
        self.relay.followers -= 1

    async def _follow(self, box: str) -> None:
        """Deliver the mailbox's held messages, oldest first, then each new one."""
        store = self.relay.store
        cursor = ZERO_SEQ
        pause = 0.5
        while not self._closed:
            try:
                batch = await store.read(
                    box, cursor, count=self.relay.batch, timeout=self.relay.read_timeout
                )
            except StoreUnavailableError as error:
                cause = type(error.__cause__ or error).__name__
                logger.warning("mailbox read failed (%s); retrying in %.1f s", cause, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 10.0)
                continue
            except Exception as error:
                logger.error("mailbox read failed: %s", type(error).__name__)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 10.0)
                continue
            pause = 0.5
            for message in batch.messages:
                if not await self._send(msg_frame(box, message.seq, message.data)):
                    return
            cursor = batch.cursor


# --- serving ---------------------------------------------------------------------------------


class HealthHandler(tornado.web.RequestHandler):
    """``GET /healthz``: 200 while the relay serves (for load balancers)."""

    def get(self) -> None:
        self.set_header("Content-Type", "text/plain")
        self.finish("ok\n")


def relay_handlers(
    relay: Relay, path: str = DEFAULT_PATH, handler: type[RelayHandler] | None = None
) -> list[tuple[str, Any, Any]]:
    """The tornado route for ``path`` (a literal path, not a pattern)."""
    return [(re.escape(path), handler or RelayHandler, {"relay": relay})]


# --- the web companion's page ------------------------------------------------------------------

WEB_STATIC = Path(__file__).with_name("web_static")
# The page talks to relays only (any origin the offer names: ws: and wss:), loads nothing
# from elsewhere, and is never framed.
COMPANION_CSP = (
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def companion_path(relay_path: str) -> str:
    """The page's route beside the relay's: ``/relay`` -> ``/device/`` (protocol.companion_url)."""
    return relay_path.rsplit("/", 1)[0] + "/device/"


class CompanionHandler(tornado.web.StaticFileHandler):
    """The built web companion (``web_static``), with headers that keep the offer private.

    The offer travels in the URL fragment, which browsers never send; ``no-referrer`` keeps
    the page's own URL out of any request, and ``no-store`` keeps the page out of caches,
    so a page update reaches phones at once.
    """

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Security-Policy", COMPANION_CSP)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        if status_code == 404 and not (WEB_STATIC / "index.html").exists():
            self.finish(
                "The web companion is not built in this installation: run "
                "`npm ci && npm run build` in the source tree's web/ folder, or install a "
                "wheel (which ships it).\n"
            )
            return
        self.finish(f"{status_code}\n")


def companion_handlers(
    relay_path: str = DEFAULT_PATH,
    handler: type[CompanionHandler] | None = None,
    redirect: type[tornado.web.RedirectHandler] | None = None,
) -> list[tuple[str, Any, Any]]:
    """Routes serving the page at ``companion_path(relay_path)`` (and a redirect to it)."""
    page = companion_path(relay_path)
    return [
        (re.escape(page.rstrip("/")), redirect or tornado.web.RedirectHandler, {"url": page}),
        (
            re.escape(page) + "(.*)",
            handler or CompanionHandler,
            {"path": str(WEB_STATIC), "default_filename": "index.html"},
        ),
    ]


def make_app(relay: Relay, path: str = DEFAULT_PATH) -> tornado.web.Application:
    handlers: list[Any] = [
        *relay_handlers(relay, path),
        *companion_handlers(path),
        (r"/healthz", HealthHandler),
    ]
    return tornado.web.Application(handlers)


def make_store(
    redis_url: str | None,
    limits: Limits,
    *,
    memory_limit: int,
    redis_prefix: str = "jss:",
    redis_max_readers: int = 10_000,
) -> MailboxStore:
    if redis_url:
        return RedisMailboxes(
            redis_url, limits.mailbox_limits(), prefix=redis_prefix, max_readers=redis_max_readers
        )
    return MemoryMailboxes(limits.mailbox_limits(), max_total_bytes=memory_limit)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _raise_open_file_limit() -> None:
    """Each connection is a file descriptor (two with Redis): use the hard limit."""
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve_relay(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    redis_url: str | None = None,
    path: str = DEFAULT_PATH,
    limits: Limits = DEFAULT_LIMITS,
    *,
    certfile: str | None = None,
    keyfile: str | None = None,
    max_connections: int = 10_000,
    memory_limit: int = 256 * 1024 * 1024,
    redis_prefix: str = "jss:",
    redis_max_readers: int = 10_000,
    xheaders: bool = False,
    ping_interval: float = 30.0,
    stop: asyncio.Event | None = None,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Serve until ``stop`` is set (or SIGINT/SIGTERM); ``announce`` gets the URL once listening."""
    store = make_store(
        redis_url,
        limits,
        memory_limit=memory_limit,
        redis_prefix=redis_prefix,
        redis_max_readers=redis_max_readers,
    )
    relay = Relay(store, limits, max_connections=max_connections, ping_interval=ping_interval)
    await relay.start()
    ssl_options: ssl.SSLContext | None = None
    if certfile:
        ssl_options = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_options.load_cert_chain(certfile, keyfile)
    server = tornado.httpserver.HTTPServer(
        make_app(relay, path),
        ssl_options=ssl_options,
        xheaders=xheaders,
        max_buffer_size=limits.max_frame * 2,
    )
    try:
        sockets = tornado.netutil.bind_sockets(port, host)
    except BaseException:
        await relay.close()
        raise
    server.add_sockets(sockets)
    bound_port = sockets[0].getsockname()[1]
    url_host = f"[{host}]" if ":" in host else host
    url = f"{'wss' if ssl_options else 'ws'}://{url_host}:{bound_port}{path}"
    logger.info("relay storage: %s", store.describe())
    if announce is not None:
        announce(url)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        server.stop()
        await relay.close()
        await server.close_all_connections()


def run_relay(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    redis_url: str | None = None,
    path: str = DEFAULT_PATH,
    limits: Limits = DEFAULT_LIMITS,
    **options: Any,
) -> None:
    """Run the relay in this thread until SIGINT/SIGTERM; prints its URL when listening."""

    def announce(url: str) -> None:
        print(f"relay listening on {url}", flush=True)

    _raise_open_file_limit()
    options.setdefault("announce", announce)
    asyncio.run(serve_relay(host, port, redis_url, path, limits, **options))


# --- the command -----------------------------------------------------------------------------


def _limit(name: str) -> Callable[[str], int]:
    ceiling = int(getattr(DEFAULT_LIMITS, name))

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError("must be an integer") from None
        if not 1 <= value <= ceiling:
            raise argparse.ArgumentTypeError(f"must be from 1 to {ceiling} (§5's limit)")
        return value

    return parse


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be an integer") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be from 0 to 65535")
    return value


def build_parser(prog: str = "jupyter-secure-storage relay") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Run the paired-device relay (docs/bridge-protocol.md §5): WebSocket mailboxes "
            "that forward end-to-end encrypted messages. See docs/relay.md."
        ),
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="address to bind (default 127.0.0.1; any other address must be given here)",
    )
    parser.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help="port (default 8765; 0 picks a free one)"
    )
    parser.add_argument("--path", default=DEFAULT_PATH, help="WebSocket path (default /relay)")
    parser.add_argument(
        "--redis",
        metavar="URL",
        default=None,
        help=(
            f"keep mailboxes in Redis Streams (redis://, rediss://, unix://); also read from "
            f"${REDIS_URL_ENV}, which keeps a password out of the process list. "
            "Default: in memory, lost when the relay stops"
        ),
    )
    parser.add_argument("--redis-prefix", default="jss:", help="Redis key prefix (default jss:)")
    parser.add_argument(
        "--redis-max-readers",
        type=int,
        default=10_000,
        help="Redis connections for followed mailboxes, one each (default 10000); "
        "past it, sub answers unavailable",
    )
    parser.add_argument("--certfile", help="serve wss:// with this certificate chain (PEM)")
    parser.add_argument("--keyfile", help="the certificate's private key (PEM)")
    parser.add_argument(
        "--xheaders",
        action="store_true",
        help="trust X-Forwarded-For / X-Real-Ip (only behind a reverse proxy)",
    )
    parser.add_argument(
        "--max-connections", type=int, default=10_000, help="open WebSockets (default 10000)"
    )
    parser.add_argument(
        "--memory-limit",
        type=int,
        default=256 * 1024 * 1024,
        help="bytes the in-memory store may hold in all (default 256 MiB)",
    )
    parser.add_argument(
        "--ping-interval",
        type=float,
        default=30.0,
        help="WebSocket ping every N seconds; no pong within N closes (0: off; default 30)",
    )
    limits = parser.add_argument_group("limits", "§5's limits; each may be lowered, none raised")
    for name, flag, what in (
        ("max_data", "--max-data", "bytes of decoded data per message"),
        ("max_messages", "--max-messages", "messages per mailbox"),
        ("max_mailbox_bytes", "--max-mailbox-bytes", "bytes per mailbox"),
        ("max_subscriptions", "--max-subscriptions", "subscriptions per connection"),
        ("ops_per_second", "--ops-per-second", "operations per second per connection"),
        ("max_frame", "--max-frame", "bytes per frame (larger closes the connection)"),
        ("max_ttl", "--max-ttl", "seconds a message may be held"),
    ):
        default = int(getattr(DEFAULT_LIMITS, name))
        limits.add_argument(
            flag, dest=name, type=_limit(name), default=default, help=f"{what} (default {default})"
        )
    parser.add_argument(
        "--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )
    return parser


def relay_command(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """``jupyter-secure-storage relay [options]``; returns the exit code (0, 1, or 2)."""
    parser = build_parser(prog) if prog else build_parser()
    args = parser.parse_args(argv)
    if args.keyfile and not args.certfile:
        parser.error("--keyfile needs --certfile")
    if not args.path.startswith("/"):
        parser.error("--path must start with /")
    if min(args.max_connections, args.memory_limit, args.redis_max_readers) < 1:
        parser.error("--max-connections, --memory-limit and --redis-max-readers must be positive")
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    limits = Limits(
        max_data=args.max_data,
        max_messages=args.max_messages,
        max_mailbox_bytes=args.max_mailbox_bytes,
        max_subscriptions=args.max_subscriptions,
        ops_per_second=args.ops_per_second,
        max_frame=args.max_frame,
        max_ttl=args.max_ttl,
    )
    redis_url = args.redis or os.environ.get(REDIS_URL_ENV) or None
    if not _is_loopback(args.host) and not args.certfile:
        print(
            f"warning: serving plain ws:// on {args.host}: put a TLS reverse proxy in front "
            "(docs/relay.md) or give --certfile/--keyfile",
            file=sys.stderr,
        )
    try:
        run_relay(
            args.host,
            args.port,
            redis_url,
            args.path,
            limits,
            certfile=args.certfile,
            keyfile=args.keyfile,
            max_connections=args.max_connections,
            memory_limit=args.memory_limit,
            redis_prefix=args.redis_prefix,
            redis_max_readers=args.redis_max_readers,
            xheaders=args.xheaders,
            ping_interval=args.ping_interval,
        )
    except StoreUnavailableError as error:
        print(f"relay: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # address in use, certificate unreadable, ...
        print(f"relay: cannot serve on {args.host}:{args.port}: {error.strerror}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def main() -> None:
    sys.exit(relay_command(sys.argv[1:], prog="python -m jupyter_secure_storage.bridge.relay"))


if __name__ == "__main__":
    main()
