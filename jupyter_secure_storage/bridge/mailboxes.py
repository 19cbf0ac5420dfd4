"""Where the relay keeps mailboxes (docs/bridge-protocol.md §5): in memory, or in Redis Streams.

A mailbox is named by ``box`` (``b64u(SHA-256("jss-mailbox/1" || cap))``); the stores never
see a capability. Each message has a ``seq``, a string ``"<ms>-<n>"`` (the format of a
Redis stream id, in both stores) that increases within the mailbox.

:class:`MailboxStore` is the whole interface the relay uses:

- ``post(box, data, ttl)`` appends and returns the new ``seq``, or raises
  :class:`MailboxFullError` when the mailbox's message or byte limit would be passed;
- ``ack(box, seq)`` deletes every message up to and including ``seq``;
- ``read(box, after, count=, timeout=)`` returns a :class:`Batch` of the unexpired
  messages after ``after`` (oldest first), waiting up to ``timeout`` seconds for one.

Any failure of the storage itself is :class:`StoreUnavailableError`. Neither store logs
message contents; Redis URLs (which may hold a password) are never logged either.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("jupyter_secure_storage.relay")

U64_MAX = 2**64 - 1
ZERO_SEQ = "0-0"
_SEQ = re.compile(r"(0|[1-9][0-9]{0,19})-(0|[1-9][0-9]{0,19})")


class MailboxError(Exception):
    """Base of the stores' errors. Messages name limits and counts, never contents."""


class MailboxFullError(MailboxError):
    """The post would pass the mailbox's message count or byte limit."""


class StoreUnavailableError(MailboxError):
    """The storage cannot serve now (Redis unreachable, or the relay's memory budget spent)."""


@dataclass(frozen=True)
class Message:
    seq: str
    data: bytes


@dataclass(frozen=True)
class Batch:
    """What one ``read`` found: the messages, and where the next ``read`` starts.

    ``cursor`` can be past the last message when expired entries were skipped.
    """

    messages: list[Message]
    cursor: str


@dataclass(frozen=True)
class MailboxLimits:
    """What one mailbox may hold (§5): 256 messages and 4 MiB of decoded ``data``."""

    max_messages: int = 256
    max_bytes: int = 4 * 1024 * 1024


def parse_seq(text: str) -> tuple[int, int] | None:
    """``"<ms>-<n>"`` (canonical decimal, each at most 2**64-1) as a tuple, else None."""
    match = _SEQ.fullmatch(text)
    if match is None:
        return None
    ms, n = int(match.group(1)), int(match.group(2))
    if ms > U64_MAX or n > U64_MAX:
        return None
    return ms, n


def format_seq(seq: tuple[int, int]) -> str:
    return f"{seq[0]}-{seq[1]}"


class MailboxStore(abc.ABC):
    """The storage interface the relay needs; see the module docstring."""

    limits: MailboxLimits
    # How many mailboxes may be followed (``read`` waiting) at once; None: no limit.
    max_followers: int | None = None

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect or start background work; called once, in the running event loop."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and background work."""

    @abc.abstractmethod
    async def post(self, box: str, data: bytes, ttl: int) -> str: ...

    @abc.abstractmethod
    async def ack(self, box: str, seq: str) -> None: ...

    @abc.abstractmethod
    async def read(self, box: str, after: str, *, count: int, timeout: float) -> Batch: ...

    @abc.abstractmethod
    def describe(self) -> str:
        """A line for logs and ``--help`` output, with no password in it."""


# --- in memory ---------------------------------------------------------------------------

# What one held message and one mailbox cost besides their data, charged against the
# memory budget so a flood of tiny messages to many mailboxes is bounded too.
_MESSAGE_OVERHEAD = 256
_BOX_OVERHEAD = 1024


@dataclass
class _Entry:
    seq: tuple[int, int]
    data: bytes
    expires: float  # time.monotonic()


@dataclass
class _Box:
    entries: list[_Entry] = field(default_factory=list)
    nbytes: int = 0
    waiters: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


class MemoryMailboxes(MailboxStore):
    """Mailboxes in this process: lost when it exits. Safe for any number of asyncio tasks.

    Every method changes state without awaiting in between, so concurrent tasks of one
    event loop never see a half-done operation (it is not meant to be shared by threads).
    Expired messages are dropped whenever a mailbox is touched and by a sweep every
    ``sweep_interval`` seconds; empty mailboxes nobody waits on are forgotten. The whole
    store is bounded by ``max_total_bytes`` (data plus a fixed overhead per message and
    per mailbox): past it, posts fail with :class:`StoreUnavailableError`.
    """

    def __init__(
        self,
        limits: MailboxLimits | None = None,
        max_total_bytes: int = 256 * 1024 * 1024,
        sweep_interval: float = 30.0,
    ) -> None:
        self.limits = limits or MailboxLimits()
        self.max_total_bytes = max_total_bytes
        self.sweep_interval = sweep_interval
        self._boxes: dict[str, _Box] = {}
        self._total = 0
        self._last = (0, 0)
        self._sweeper: asyncio.Task[None] | None = None

    def describe(self) -> str:
        return f"memory (at most {self.max_total_bytes} bytes; lost when the relay stops)"

    async def start(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    @property
    def total_bytes(self) -> int:
        return self._total

    async def post(self, box: str, data: bytes, ttl: int) -> str:
        mailbox = self._boxes.get(box)
        if mailbox is not None:
            self._purge(box, mailbox)
        held = len(mailbox.entries) if mailbox else 0
        held_bytes = mailbox.nbytes if mailbox else 0
        if held + 1 > self.limits.max_messages or held_bytes + len(data) > self.limits.max_bytes:
            raise MailboxFullError(
                f"the mailbox holds at most {self.limits.max_messages} messages "
                f"and {self.limits.max_bytes} bytes"
            )
        cost = len(data) + _MESSAGE_OVERHEAD + (0 if mailbox else _BOX_OVERHEAD)
        if self._total + cost > self.max_total_bytes:
            raise StoreUnavailableError("the relay's message storage is full; try again later")
        if mailbox is None:
            mailbox = self._boxes[box] = _Box()
            self._total += _BOX_OVERHEAD
        # One sequence for the whole store: a mailbox forgotten while empty and made again
        # still never hands out a seq at or below one a subscriber has already passed.
        now_ms = time.time_ns() // 1_000_000
        ms, n = self._last
        seq = (now_ms, 0) if now_ms > ms else (ms, n + 1)
        self._last = seq
        mailbox.entries.append(_Entry(seq, data, time.monotonic() + ttl))
        mailbox.nbytes += len(data)
        self._total += len(data) + _MESSAGE_OVERHEAD
        arrived, mailbox.arrived = mailbox.arrived, asyncio.Event()
        arrived.set()
        return format_seq(seq)

    async def ack(self, box: str, seq: str) -> None:
        upto = parse_seq(seq)
        mailbox = self._boxes.get(box)
        if upto is None or mailbox is None:
            return
        keep = [entry for entry in mailbox.entries if entry.seq > upto]
        self._drop(mailbox, [entry for entry in mailbox.entries if entry.seq <= upto])
        mailbox.entries = keep
        self._forget_if_idle(box, mailbox)

    async def read(self, box: str, after: str, *, count: int, timeout: float) -> Batch:
        start = parse_seq(after) or (0, 0)
        deadline = time.monotonic() + timeout
        while True:
            mailbox = self._boxes.get(box)
            if mailbox is not None:
                self._purge(box, mailbox)
                found = [
                    Message(format_seq(entry.seq), entry.data)
                    for entry in mailbox.entries
                    if entry.seq > start
                ][:count]
                if found:
                    return Batch(found, found[-1].seq)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return Batch([], after)
            mailbox = self._boxes.get(box)
            if mailbox is None:
                mailbox = self._boxes[box] = _Box()
                self._total += _BOX_OVERHEAD
            mailbox.waiters += 1
            arrived = mailbox.arrived
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), remaining)
            finally:
                mailbox.waiters -= 1
                self._forget_if_idle(box, mailbox)

    # --- housekeeping ---------------------------------------------------------------------

    def _drop(self, mailbox: _Box, entries: list[_Entry]) -> None:
        for entry in entries:
            mailbox.nbytes -= len(entry.data)
            self._total -= len(entry.data) + _MESSAGE_OVERHEAD

    def _purge(self, box: str, mailbox: _Box) -> None:
        now = time.monotonic()
        expired = [entry for entry in mailbox.entries if entry.expires <= now]
        if expired:
            self._drop(mailbox, expired)
            mailbox.entries = [entry for entry in mailbox.entries if entry.expires > now]

    def _forget_if_idle(self, box: str, mailbox: _Box) -> None:
        if not mailbox.entries and mailbox.waiters == 0 and self._boxes.get(box) is mailbox:
            del self._boxes[box]
            self._total -= _BOX_OVERHEAD

    def sweep(self) -> None:
        """Drop every expired message and every empty mailbox nobody waits on."""
        for box, mailbox in list(self._boxes.items()):
            self._purge(box, mailbox)
            self._forget_if_idle(box, mailbox)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            self.sweep()


# --- Redis Streams -----------------------------------------------------------------------

# KEYS[1] the stream, KEYS[2] its index (hash: seq -> "<expiry ms> <size>").
# ARGV: data, ttl ms, max messages, max bytes. Returns the new id, or 0 when full.
# Expired entries are dropped first, so the limits count only what is really held.
_POST = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local index = redis.call('HGETALL', KEYS[2])
local count, bytes = 0, 0
for i = 1, #index, 2 do
  local exp, size = string.match(index[i + 1], '^(%d+) (%d+)$')
  if exp == nil or tonumber(exp) <= now then
    redis.call('XDEL', KEYS[1], index[i])
    redis.call('HDEL', KEYS[2], index[i])
  else
    count = count + 1
    bytes = bytes + tonumber(size)
  end
end
local size = string.len(ARGV[1])
local ttl = tonumber(ARGV[2])
if count + 1 > tonumber(ARGV[3]) or bytes + size > tonumber(ARGV[4]) then
  return 0
end
local exp = now + ttl
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'd', ARGV[1], 'e', exp)
redis.call('HSET', KEYS[2], id, string.format('%d %d', exp, size))
local pttl = redis.call('PTTL', KEYS[1])
if pttl < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return id
"""

# KEYS as above; ARGV[1] the acknowledged seq, ARGV[2] the smallest id after it (or '').
_ACK = """
local function parts(id)
  local ms, n = string.match(id, '^(%d+)-(%d+)$')
  return ms, n
end
local function lt(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local function le(x, y)
  local xm, xn = parts(x)
  local ym, yn = parts(y)
  if xm == nil or ym == nil then return false end
  if xm ~= ym then return lt(xm, ym) end
  return xn == yn or lt(xn, yn)
end
local index = redis.call('HKEYS', KEYS[2])
local deleted = 0
for i = 1, #index do
  if le(index[i], ARGV[1]) then
    deleted = deleted + redis.call('XDEL', KEYS[1], index[i])
    redis.call('HDEL', KEYS[2], index[i])
  end
end
if ARGV[2] ~= '' then
  deleted = deleted + redis.call('XTRIM', KEYS[1], 'MINID', ARGV[2])
end
return deleted
"""


_MAX_BLOCK = 30.0  # seconds one XREAD BLOCK waits at most


def _next_seq(seq: tuple[int, int]) -> str:
    ms, n = seq
    if n < U64_MAX:
        return format_seq((ms, n + 1))
    if ms < U64_MAX:
        return format_seq((ms + 1, 0))
    return ""


class RedisMailboxes(MailboxStore):
    """Mailboxes in Redis Streams (Redis 6.2 or later), shared by any number of relays.

    One stream per mailbox, ``<prefix>{<box>}``, and beside it an index hash
    ``<prefix>{<box>}:m`` (seq -> expiry and size) that makes the limits exact without
    reading message data. The braces are a Redis Cluster hash tag: both keys of a mailbox
    live in one slot, so each operation is one single-slot Lua script. Posting runs
    ``XADD ... MAXLEN ~`` and sets ``PEXPIRE`` to the longest ttl held; acknowledging runs
    ``XDEL`` and ``XTRIM MINID``; a subscriber runs ``XREAD BLOCK`` from the last id it
    delivered. Relays keep no mailbox state, so a post to one relay reaches a subscriber on
    another, and messages survive a relay restart.

    Connections: posts and acks share a pool of ``max_commands`` (a burst waits up to five
    seconds for one); each followed mailbox holds a connection of its own for its blocking
    ``XREAD``, at most ``max_readers`` of them (``max_followers``): the relay refuses
    further subscriptions with ``unavailable`` rather than let them stall.
    """

    def __init__(
        self,
        url: str,
        limits: MailboxLimits | None = None,
        prefix: str = "jss:",
        *,
        max_readers: int = 10_000,
        max_commands: int = 64,
    ) -> None:
        import redis.asyncio

        self.limits = limits or MailboxLimits()
        self.prefix = prefix
        self.max_followers = max_readers
        options: dict[str, Any] = {"decode_responses": False, "socket_connect_timeout": 5}
        commands: dict[str, Any] = {"socket_timeout": 5}
        self._redis: redis.asyncio.Redis = redis.asyncio.Redis(
            connection_pool=redis.asyncio.BlockingConnectionPool.from_url(
                url, max_connections=max_commands, timeout=5, **commands, **options
            )
        )
        # A reader's socket waits out its XREAD BLOCK (at most _MAX_BLOCK) and then some;
        # redis-py 8's default socket timeout (5 s) would cut every longer block short.
        self._readers: redis.asyncio.Redis = redis.asyncio.Redis(
            connection_pool=redis.asyncio.ConnectionPool.from_url(
                url,
                max_connections=max_readers,
                socket_timeout=_MAX_BLOCK + 15,
                **options,
            )
        )
        kwargs = self._redis.connection_pool.connection_kwargs
        self._where = f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
        if "path" in kwargs:
            self._where = str(kwargs["path"])
        self._post = self._redis.register_script(_POST)
        self._ack = self._redis.register_script(_ACK)

    def describe(self) -> str:
        return f"redis at {self._where} (keys {self.prefix}{{<box>}})"

    def _keys(self, box: str) -> list[str]:
        stream = f"{self.prefix}{{{box}}}"
        return [stream, stream + ":m"]

    async def start(self) -> None:
        import redis.exceptions

        try:
            await self._redis.ping()
        except (redis.exceptions.RedisError, OSError) as error:
            raise StoreUnavailableError(
                f"cannot reach redis at {self._where} ({type(error).__name__})"
            ) from error

    async def close(self) -> None:
        await self._readers.aclose()
        await self._redis.aclose()

    async def post(self, box: str, data: bytes, ttl: int) -> str:
        result = await self._call(
            self._post,
            keys=self._keys(box),
            args=[data, ttl * 1000, self.limits.max_messages, self.limits.max_bytes],
        )
        if result == 0:
            raise MailboxFullError(
                f"the mailbox holds at most {self.limits.max_messages} messages "
                f"and {self.limits.max_bytes} bytes"
            )
        return result.decode("ascii") if isinstance(result, bytes) else str(result)

    async def ack(self, box: str, seq: str) -> None:
        upto = parse_seq(seq)
        if upto is None:
            return
        await self._call(self._ack, keys=self._keys(box), args=[seq, _next_seq(upto)])

    async def read(self, box: str, after: str, *, count: int, timeout: float) -> Batch:
        import redis.exceptions

        stream = self._keys(box)[0]
        block = max(1, int(min(timeout, _MAX_BLOCK) * 1000))
        # redis-py (8.1) can swallow a cancellation that arrives while it sets up a
        # connection and go on to finish the XREAD (cf. redis/redis-py#2028). The XREAD
        # runs in a task of its own so that cancelling read() always works at once; the
        # orphan ends by its BLOCK timeout at the latest.
        xread = asyncio.ensure_future(
            self._readers.xread({stream: after}, count=count, block=block)
        )
        try:
            reply = await asyncio.shield(xread)
        except asyncio.CancelledError:
            xread.cancel()
            xread.add_done_callback(_consume_outcome)
            raise
        except (redis.exceptions.RedisError, OSError) as error:
            raise StoreUnavailableError(f"redis read failed ({type(error).__name__})") from error
        now_ms = time.time() * 1000
        found: list[Message] = []
        cursor = after
        for entry_id, fields in _stream_entries(reply):
            cursor = entry_id
            expires, data = fields.get(b"e"), fields.get(b"d")
            if data is None or expires is None or not expires.isdigit():
                continue
            if int(expires) > now_ms:
                found.append(Message(entry_id, bytes(data)))
        return Batch(found, cursor)

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        import redis.exceptions

        try:
            return await script(keys=keys, args=args)
        except (redis.exceptions.RedisError, OSError) as error:
            raise StoreUnavailableError(f"redis is unavailable ({type(error).__name__})") from error


def _consume_outcome(task: asyncio.Future[Any]) -> None:
    """Retrieve an orphaned read's outcome so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


def _stream_entries(reply: Any) -> list[tuple[str, dict[bytes, bytes]]]:
    """The entries of an XREAD reply for one stream, in RESP2 or RESP3 shape."""
    if not reply:
        return []
    streams = reply.items() if isinstance(reply, dict) else reply
    entries: list[tuple[str, dict[bytes, bytes]]] = []
    for item in streams:
        records = item[1]
        if isinstance(records, list) and records and isinstance(records[0], list):
            records = records[0]  # RESP3 wraps each stream's entries once more
        for entry_id, fields in records:
            text = entry_id.decode("ascii") if isinstance(entry_id, bytes) else str(entry_id)
            entries.append((text, dict(fields) if fields else {}))
    return entries
