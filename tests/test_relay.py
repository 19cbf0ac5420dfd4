"""The relay (docs/bridge-protocol.md §5) as a real process, spoken to over real WebSockets.

Each relay runs as ``python -m jupyter_secure_storage.bridge.relay --port 0`` on 127.0.0.1;
the Redis tests start a real ``redis-server`` on a free loopback port (no persistence, in
a temporary directory) and run two relays against it. Without ``redis-server`` those tests
skip, loudly, unless ``JSS_REQUIRE_REDIS=1`` makes that a failure. All traffic stays on
loopback. No assertion message shows a capability or message data.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import select
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

websockets = pytest.importorskip("websockets")
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402

from jupyter_secure_storage.bridge.mailboxes import parse_seq  # noqa: E402
from jupyter_secure_storage.bridge.protocol import mailbox_id  # noqa: E402
from jupyter_secure_storage.bridge.relay import (  # noqa: E402
    ERROR_CODES,
    WEB_STATIC,
    Ack,
    FrameError,
    Limits,
    Ping,
    Post,
    Sub,
    TokenBucket,
    Unsub,
    parse_frame,
)

MAX_DATA = 65_600
MAX_FRAME = 128 * 1024
REPO = Path(__file__).resolve().parent.parent


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def new_cap() -> str:
    return b64u(secrets.token_bytes(32))


def box_of(cap: str) -> str:
    return mailbox_id(base64.urlsafe_b64decode(cap + "="))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(coroutine: Any, timeout: float = 120.0) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


# --- processes ---------------------------------------------------------------------------------


class RelayProcess:
    """``python -m jupyter_secure_storage.bridge.relay --port 0 ARGS``; ``url`` once listening."""

    def __init__(self, log: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log = log
        self.env = env
        self.process: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> RelayProcess:
        command = [sys.executable, "-m", "jupyter_secure_storage.bridge.relay", "--port", "0"]
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                [*command, *self.args],
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                text=True,
                cwd=REPO,
                env={**os.environ, **(self.env or {})},
            )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 30)
        line = self.process.stdout.readline() if ready else ""
        if not line.startswith("relay listening on ws"):
            self.stop()
            raise AssertionError(f"the relay did not start; see {self.log}")
        self.url = line.split()[-1]
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None

    def __enter__(self) -> RelayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisServer:
    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
                "--protected-mode", "yes",
            ],
            stdout=(self.directory / "redis.log").open("ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock,
            ):
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return self
            time.sleep(0.05)
        self.stop()
        raise AssertionError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


def redis_available() -> bool:
    if shutil.which("redis-server"):
        return True
    message = (
        "redis-server is not installed (apt-get install -y redis-server): "
        "the Redis Streams relay is NOT tested"
    )
    if os.environ.get("JSS_REQUIRE_REDIS") == "1":
        pytest.fail(message)
    pytest.skip(message)
    return False


@pytest.fixture(scope="module")
def memory_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    log = tmp_path_factory.mktemp("relay") / "relay.log"
    with RelayProcess(log) as relay:
        yield relay


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    redis_available()
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_relay(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RelayProcess]:
    log = tmp_path_factory.mktemp("relay-redis") / "relay.log"
    with RelayProcess(log, "--redis", redis_server.url) as relay:
        yield relay


@pytest.fixture(params=["memory", "redis"])
def relay(request: pytest.FixtureRequest) -> RelayProcess:
    fixture = "memory_relay" if request.param == "memory" else "redis_relay"
    process: RelayProcess = request.getfixturevalue(fixture)
    return process


# --- a small client ----------------------------------------------------------------------------


class Client:
    """Sends operations and matches answers by id; keeps ``msg`` frames aside in order."""

    def __init__(self, socket_: ClientConnection) -> None:
        self.ws = socket_
        self.pending: list[dict[str, Any]] = []
        self.counter = 0

    def next_id(self) -> str:
        self.counter += 1
        return f"r{self.counter}"

    async def send(self, op: str, **fields: Any) -> str:
        request_id = fields.pop("id", None) or self.next_id()
        await self.ws.send(json.dumps({"op": op, "id": request_id, **fields}))
        return str(request_id)

    async def answer(self, request_id: str | None, timeout: float = 10.0) -> dict[str, Any]:
        while True:
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
            if frame.get("op") == "msg":
                self.pending.append(frame)
            elif frame.get("id") == request_id:
                return dict(frame)

    async def call(self, op: str, **fields: Any) -> dict[str, Any]:
        return await self.answer(await self.send(op, **fields))

    async def paced(self, op: str, **fields: Any) -> dict[str, Any]:
        """``call``, waiting out ``rate_limited`` answers."""
        while True:
            answer = await self.call(op, **fields)
            if answer.get("code") != "rate_limited":
                return answer
            await asyncio.sleep(0.2)

    async def message(self, timeout: float = 10.0) -> dict[str, Any]:
        while not self.pending:
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
            if frame.get("op") == "msg":
                self.pending.append(frame)
        return self.pending.pop(0)

    async def quiet(self, wait: float = 0.5) -> bool:
        """True when no msg arrives within ``wait`` seconds."""
        if self.pending:
            return False
        try:
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), wait))
        except TimeoutError:
            return True
        self.pending.append(frame)
        return frame.get("op") != "msg"

    async def post(self, cap: str, data: bytes, **fields: Any) -> str:
        answer = await self.call("post", cap=cap, data=b64u(data), **fields)
        assert answer["op"] == "ok", f"post answered {answer.get('code')}"
        return str(answer["seq"])

    async def sub(self, cap: str) -> None:
        answer = await self.call("sub", cap=cap)
        assert answer["op"] == "ok", f"sub answered {answer.get('code')}"
        assert answer["box"] == box_of(cap), "sub answered another box"


@contextlib.asynccontextmanager
async def client(url: str) -> Any:
    async with connect(url, max_size=4 * MAX_FRAME, open_timeout=10) as ws:
        yield Client(ws)


async def held(url: str, cap: str, wait: float = 0.7) -> list[bytes]:
    """Everything a fresh subscriber to ``cap`` receives within ``wait`` seconds."""
    received: list[bytes] = []
    async with client(url) as c:
        await c.sub(cap)
        while not await c.quiet(wait):
            frame = c.pending.pop(0)
            if frame.get("op") == "msg":
                received.append(base64.urlsafe_b64decode(frame["data"] + "=="))
    return received


# --- the protocol, over a real socket (memory and Redis) -----------------------------------


def test_ping_post_sub_ack_unsub(relay: RelayProcess) -> None:
    cap = new_cap()

    async def body() -> None:
        async with client(relay.url) as c:
            assert await c.call("ping") == {"op": "ok", "id": f"r{c.counter}"}
            await c.sub(cap)
            assert await c.quiet(0.3), "an empty mailbox delivered something"
            seq = await c.post(cap, b"first")
            got = await c.message()
            assert got["box"] == box_of(cap), "delivered under another box"
            assert got["seq"] == seq, "delivered with another seq"
            assert got["data"] == b64u(b"first"), "delivered other data"
            assert set(got) == {"op", "box", "seq", "data"}
            assert (await c.call("ack", cap=cap, seq=seq))["op"] == "ok"
            assert (await c.call("unsub", cap=cap))["op"] == "ok"
            await c.post(cap, b"after unsub")
            assert await c.quiet(0.5), "an unsubscribed mailbox still delivered"
            assert (await c.call("unsub", cap=cap))["op"] == "ok", "unsub is idempotent"

    run(body())


def test_live_delivery_in_order_between_connections(relay: RelayProcess) -> None:
    cap = new_cap()

    async def body() -> None:
        async with client(relay.url) as reader, client(relay.url) as writer:
            await reader.sub(cap)
            seqs = [await writer.post(cap, bytes([i]) * 10) for i in range(20)]
            got = [await reader.message() for _ in seqs]
            assert [m["seq"] for m in got] == seqs, "messages out of order"
            parsed = [parse_seq(s) for s in seqs]
            assert all(p is not None for p in parsed)
            assert parsed == sorted(parsed), "seq does not increase"
            assert len(set(seqs)) == len(seqs)

    run(body())


def test_offline_holding_then_delivery_oldest_first(relay: RelayProcess) -> None:
    cap = new_cap()

    async def body() -> None:
        async with client(relay.url) as writer:
            for i in range(3):
                await writer.post(cap, f"held {i}".encode())
        assert await held(relay.url, cap) == [b"held 0", b"held 1", b"held 2"], "not held"

    run(body())


def test_unacked_messages_are_redelivered_on_reconnect(relay: RelayProcess) -> None:
    cap = new_cap()

    async def body() -> None:
        async with client(relay.url) as c:
            seq = await c.post(cap, b"once")
            await c.sub(cap)
            assert (await c.message())["seq"] == seq
        async with client(relay.url) as c:  # reconnect without having acknowledged
            await c.sub(cap)
            again = await c.message()
            assert again["seq"] == seq, "not re-delivered"
            assert (await c.call("ack", cap=cap, seq=again["seq"]))["op"] == "ok"
        assert await held(relay.url, cap) == [], "an acknowledged message came back"

    run(body())


def test_ack_deletes_up_to_and_including_seq(relay: RelayProcess) -> None:
    cap = new_cap()

    async def body() -> None:
        async with client(relay.url) as c:
            seqs = [await c.post(cap, f"m{i}".encode()) for i in range(4)]
            assert (await c.call("ack", cap=cap, seq=seqs[1]))["op"] == "ok"
        assert await held(relay.url, cap) == [b"m2", b"m3"]
        async with client(relay.url) as c:
            assert (await c.call("ack", cap=cap, seq=seqs[3]))["op"] == "ok"
            assert (await c.call("ack", cap=cap, seq=seqs[3]))["op"] == "ok", "ack is idempotent"
            assert (await c.call("ack", cap=new_cap(), seq="1-0"))["op"] == "ok"
        assert await held(relay.url, cap) == []

    run(body())


def test_resubscribing_starts_over(relay: RelayProcess) -> None:
    cap = new_cap()

    async def body() -> None:
        async with client(relay.url) as c:
            seq = await c.post(cap, b"x")
            await c.sub(cap)
            assert (await c.message())["seq"] == seq
            await c.sub(cap)
            assert (await c.message())["seq"] == seq, "a second sub did not re-deliver"
            assert await c.quiet(0.3)

    run(body())


def test_ttl_expiry(relay: RelayProcess) -> None:
    cap = new_cap()

    async def body() -> None:
        async with client(relay.url) as c:
            await c.post(cap, b"short", ttl=1)
            await c.post(cap, b"long", ttl=60)
            await c.post(cap, b"default")  # no ttl: 3600
        await asyncio.sleep(1.6)
        assert await held(relay.url, cap) == [b"long", b"default"], "ttl not honoured"

    run(body())


def test_ttl_validation(relay: RelayProcess) -> None:
    cap = new_cap()

    async def body() -> None:
        async with client(relay.url) as c:
            assert (await c.call("post", cap=cap, data="", ttl=86_400))["op"] == "ok"
            for ttl in (86_401, 0, -1, "60", True, 60.0, None, 10**30):
                answer = await c.call("post", cap=cap, data="", ttl=ttl)
                assert answer["code"] == "bad_request", f"ttl of type {type(ttl).__name__}"

    run(body())


def test_a_stranger_sees_nothing_and_cannot_fill_anothers_mailbox(relay: RelayProcess) -> None:
    owner, stranger = new_cap(), new_cap()

    async def body() -> None:
        async with client(relay.url) as o, client(relay.url) as s:
            await o.post(owner, b"for the owner")
            await s.sub(stranger)
            assert await s.quiet(0.5), "a stranger received another mailbox's message"
            # The stranger fills its own mailbox to the brim; the owner's is untouched.
            for i in range(256):
                answer = await s.paced("post", cap=stranger, data=b64u(bytes([i % 256])))
                assert answer["op"] == "ok", f"stranger post {i}: {answer.get('code')}"
            assert (await s.call("post", cap=stranger, data="AA"))["code"] == "mailbox_full"
            await o.post(owner, b"still room")
            got = [base64.urlsafe_b64decode(m["data"] + "==") for m in s.pending if "data" in m]
            assert b"for the owner" not in got
            assert b"still room" not in got
        assert await held(relay.url, owner) == [b"for the owner", b"still room"]

    run(body())


# --- limits -------------------------------------------------------------------------------------


def test_data_size_limit(relay: RelayProcess) -> None:
    cap = new_cap()

    async def body() -> None:
        async with client(relay.url) as c:
            assert (await c.call("post", cap=cap, data=b64u(b"\0" * MAX_DATA)))["op"] == "ok"
            answer = await c.call("post", cap=cap, data=b64u(b"\0" * (MAX_DATA + 1)))
            assert answer["code"] == "too_large"
            assert "65600" in answer["message"], "the error does not say the limit"

    run(body())


def test_mailbox_message_limit(relay: RelayProcess) -> None:
    cap = new_cap()

    async def body() -> None:
        async with client(relay.url) as c:
            seqs = []
            for i in range(256):
                answer = await c.paced("post", cap=cap, data=b64u(i.to_bytes(2, "big")))
                assert answer["op"] == "ok", f"post {i}: {answer.get('code')}"
                seqs.append(answer["seq"])
            assert (await c.paced("post", cap=cap, data="AA"))["code"] == "mailbox_full"
            assert (await c.paced("ack", cap=cap, seq=seqs[0]))["op"] == "ok"
            assert (await c.paced("post", cap=cap, data="AA"))["op"] == "ok", "ack freed no room"
            assert (await c.paced("post", cap=cap, data="AA"))["code"] == "mailbox_full"

    run(body())


def test_mailbox_byte_limit(relay: RelayProcess) -> None:
    cap = new_cap()

    async def body() -> None:
        async with client(relay.url) as c:
            for _ in range(63):
                await c.post(cap, b"\1" * MAX_DATA)
            room = 4 * 1024 * 1024 - 63 * MAX_DATA
            assert (await c.call("post", cap=cap, data=b64u(b"\2" * (room + 1))))[
                "code"
            ] == "mailbox_full"
            await c.post(cap, b"\2" * room)  # exactly 4 MiB held
            assert (await c.call("post", cap=cap, data="AA"))["code"] == "mailbox_full"
            assert (await c.call("post", cap=cap, data=""))["op"] == "ok", "empty data fits"

    run(body())


def test_expired_messages_free_their_room(relay: RelayProcess) -> None:
    cap = new_cap()

    async def body() -> None:
        async with client(relay.url) as c:
            for _ in range(63):
                await c.post(cap, b"\1" * MAX_DATA, ttl=1)
            await c.post(cap, b"\1" * (4 * 1024 * 1024 - 63 * MAX_DATA), ttl=1)
            assert (await c.call("post", cap=cap, data=b64u(b"x")))["code"] == "mailbox_full"
            await asyncio.sleep(1.5)
            await c.post(cap, b"x")

    run(body())


def test_subscription_limit(relay: RelayProcess) -> None:
    async def body() -> None:
        async with client(relay.url) as c:
            caps = [new_cap() for _ in range(64)]
            for cap in caps:
                await c.sub(cap)
            await c.sub(caps[0])  # subscribing again is not one more subscription
            answer = await c.call("sub", cap=new_cap())
            assert answer["code"] == "too_many_subscriptions"
            assert (await c.call("unsub", cap=caps[5]))["op"] == "ok"
            await c.sub(new_cap())
        async with client(relay.url) as other:  # the limit is per connection
            await other.sub(new_cap())

    run(body())


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_rate_limit(store: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    # A low limit (the flag may lower §5's 1,000/s, never raise it), so that 2,500 pings
    # overrun it however slowly a loaded machine lets the relay answer them.
    rate = 50
    extra = ["--redis", request.getfixturevalue("redis_server").url] if store == "redis" else []
    arguments = [*extra, "--ops-per-second", str(rate)]

    async def body(relay: RelayProcess) -> None:
        async with client(relay.url) as c, client(relay.url) as bystander:
            ids = [f"p{i}" for i in range(2500)]
            await asyncio.gather(*(c.ws.send(json.dumps({"op": "ping", "id": i})) for i in ids))
            answers = [json.loads(await asyncio.wait_for(c.ws.recv(), 10)) for _ in ids]
            assert [a["id"] for a in answers] == ids, "answers out of order"
            codes = [a.get("code", a["op"]) for a in answers]
            assert set(codes) == {"ok", "rate_limited"}
            assert codes[:rate] == ["ok"] * rate, "the first second's burst was limited"
            assert codes.count("rate_limited") >= 1000, "no rate limit"
            assert (await bystander.call("ping"))["op"] == "ok", "limit is not per connection"
            await asyncio.sleep(1.1)
            assert (await c.call("ping"))["op"] == "ok", "the bucket did not refill"

    with RelayProcess(tmp_path / "relay.log", *arguments) as relay:
        run(body(relay))


def test_oversized_frame_closes_the_connection(relay: RelayProcess) -> None:
    async def body() -> None:
        async with client(relay.url) as c:
            frame = json.dumps({"op": "ping", "id": "big", "pad": ""})
            exact = frame.replace('"pad": ""', '"pad": "' + "x" * (MAX_FRAME - len(frame)) + '"')
            assert len(exact.encode()) == MAX_FRAME
            await c.ws.send(exact)
            assert (await c.answer("big"))["op"] == "ok", "a frame of exactly 128 KiB refused"
            await c.ws.send(exact.replace('"pad": "', '"pad": "y'))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(c.ws.recv(), 10)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1009
        async with client(relay.url) as other:
            assert (await other.call("ping"))["op"] == "ok"

    run(body())


BAD_FRAMES: list[tuple[str, str | None, str]] = [
    # (frame, id the error must carry, code)
    ("not json", None, "bad_request"),
    ("", None, "bad_request"),
    ("[1, 2]", None, "bad_request"),
    ('"ping"', None, "bad_request"),
    ("[" * 100_000, None, "bad_request"),
    ('{"op": "ping"}', None, "bad_request"),
    ('{"op": "ping", "id": ""}', None, "bad_request"),
    ('{"op": "ping", "id": 7}', None, "bad_request"),
    ('{"op": "ping", "id": "' + "i" * 33 + '"}', None, "bad_request"),
    ('{"op": "ping", "id": "\\ud800"}', None, "bad_request"),
    ('{"op": "ping", "id": "a", "id": "b"}', None, "bad_request"),
    ('{"op": "launch", "id": "x1"}', "x1", "bad_request"),
    ('{"op": "PING", "id": "x2"}', "x2", "bad_request"),
    ('{"op": null, "id": "x3"}', "x3", "bad_request"),
    ('{"op": "sub", "id": "x4"}', "x4", "bad_request"),
    ('{"op": "sub", "id": "x5", "cap": "' + b64u(b"\0" * 31) + '"}', "x5", "bad_request"),
    ('{"op": "sub", "id": "x6", "cap": "' + b64u(b"\0" * 33) + '"}', "x6", "bad_request"),
    ('{"op": "sub", "id": "x7", "cap": "' + b64u(b"\0" * 32) + '="}', "x7", "bad_request"),
    (
        '{"op": "sub", "id": "x8", "cap": "'
        + base64.b64encode(b"\xfb" * 32).decode().rstrip("=")
        + '"}',
        "x8",
        "bad_request",
    ),
    ('{"op": "sub", "id": "x9", "cap": "' + "A" * 42 + 'B"}', "x9", "bad_request"),
    ('{"op": "post", "id": "y1", "cap": "CAP"}', "y1", "bad_request"),
    ('{"op": "post", "id": "y2", "cap": "CAP", "data": 5}', "y2", "bad_request"),
    ('{"op": "post", "id": "y3", "cap": "CAP", "data": "AAA="}', "y3", "bad_request"),
    ('{"op": "post", "id": "y4", "cap": "CAP", "data": "A"}', "y4", "bad_request"),
    ('{"op": "post", "id": "y5", "cap": "CAP", "data": "AB"}', "y5", "bad_request"),
    ('{"op": "post", "id": "y6", "cap": "CAP", "data": "a+b/"}', "y6", "bad_request"),
    ('{"op": "post", "id": "y7", "cap": "CAP", "data": "", "ttl": NaN}', None, "bad_request"),
    ('{"op": "ack", "id": "z1", "cap": "CAP"}', "z1", "bad_request"),
    ('{"op": "ack", "id": "z2", "cap": "CAP", "seq": 5}', "z2", "bad_request"),
    ('{"op": "ack", "id": "z3", "cap": "CAP", "seq": "01-0"}', "z3", "bad_request"),
    (
        '{"op": "ack", "id": "z4", "cap": "CAP", "seq": "18446744073709551616-0"}',
        "z4",
        "bad_request",
    ),
    ('{"op": "ack", "id": "z5", "cap": "CAP", "seq": "1-2-3"}', "z5", "bad_request"),
]


def test_bad_frames_are_bad_requests_and_the_relay_keeps_serving(relay: RelayProcess) -> None:
    cap = new_cap()

    async def body() -> None:
        async with client(relay.url) as c, client(relay.url) as bystander:
            await bystander.sub(cap)
            for index, (frame, request_id, code) in enumerate(BAD_FRAMES):
                await c.ws.send(frame.replace("CAP", cap))
                answer = json.loads(await asyncio.wait_for(c.ws.recv(), 10))
                assert answer["op"] == "error", f"bad frame {index} accepted"
                assert answer["code"] == code, f"bad frame {index}: {answer['code']}"
                assert answer["id"] == request_id, f"bad frame {index}: wrong id"
                assert isinstance(answer["message"], str)
            await c.ws.send(b'{"op": "ping", "id": "binary"}')
            answer = json.loads(await asyncio.wait_for(c.ws.recv(), 10))
            assert answer["code"] == "bad_request", "a binary frame was accepted"
            assert (await c.call("ping"))["op"] == "ok", "the connection stopped serving"
            await c.post(cap, b"still works")
            assert (await bystander.message())["data"] == b64u(b"still works")

    run(body())


def test_unknown_fields_are_ignored(relay: RelayProcess) -> None:
    cap = new_cap()

    async def body() -> None:
        async with client(relay.url) as c:
            answer = await c.call("post", cap=cap, data="", ttl=5, extra={"x": [1]}, v=2)
            assert answer["op"] == "ok"
            assert (await c.call("ping", cap="not even base64!"))["op"] == "ok"

    run(body())


# --- the process: logs, restarts, the command line ----------------------------------------------


def test_logs_never_show_capabilities_or_data(tmp_path: Path) -> None:
    log = tmp_path / "relay.log"
    cap, data = new_cap(), secrets.token_bytes(48)

    async def body(url: str) -> None:
        async with client(url) as c:
            await c.sub(cap)
            seq = await c.post(cap, data)
            await c.message()
            await c.call("ack", cap=cap, seq=seq)
            await c.call("post", cap=cap, data=b64u(data) + "=")
            await c.call("nonsense-op " + b64u(data))

    with RelayProcess(log, "--log-level", "DEBUG") as relay:
        run(body(relay.url))
    text = log.read_text()
    assert box_of(cap) in text, "debug logging does not name the mailbox"
    assert cap not in text, "a capability reached the log"
    assert b64u(data) not in text, "message data reached the log"
    assert data.hex() not in text, "message data reached the log"


def test_memory_store_loses_messages_on_restart(tmp_path: Path) -> None:
    cap = new_cap()
    relay = RelayProcess(tmp_path / "relay.log")

    async def post(url: str) -> None:
        async with client(url) as c:
            await c.post(cap, b"volatile")

    with relay:
        run(post(relay.url))
        assert run(held(relay.url, cap)) == [b"volatile"]
    with relay:
        assert run(held(relay.url, cap)) == [], "the memory store kept a message across restart"


def test_shutdown_is_graceful(tmp_path: Path) -> None:
    relay = RelayProcess(tmp_path / "relay.log").start()

    async def body() -> None:
        async with client(relay.url) as c:
            await c.sub(new_cap())
            assert relay.process is not None
            relay.process.terminate()
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(c.ws.recv(), 10)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1001

    try:
        run(body())
        assert relay.process is not None
        assert relay.process.wait(10) == 0
    finally:
        relay.stop()


def test_stricter_limits_from_flags_and_connection_cap(tmp_path: Path) -> None:
    cap = new_cap()
    flags = ("--max-data", "100", "--max-messages", "2", "--max-ttl", "60",
             "--max-subscriptions", "1", "--max-connections", "2")  # fmt: skip

    async def body(url: str) -> None:
        async with client(url) as c, client(url):
            answer = await c.call("post", cap=cap, data=b64u(b"\0" * 101))
            assert answer["code"] == "too_large"
            assert "100" in answer["message"]
            await c.post(cap, b"1")  # no ttl: the default 3600 is capped to 60
            assert (await c.call("post", cap=cap, data="", ttl=61))["code"] == "bad_request"
            await c.post(cap, b"2", ttl=60)
            assert (await c.call("post", cap=cap, data=""))["code"] == "mailbox_full"
            await c.sub(cap)
            assert (await c.call("sub", cap=new_cap()))["code"] == "too_many_subscriptions"
            with pytest.raises(InvalidStatus) as refused:
                await connect(url, open_timeout=10)
            assert refused.value.response.status_code == 503

    with RelayProcess(tmp_path / "relay.log", *flags) as relay:
        run(body(relay.url))
        port = relay.url.split(":")[2].split("/")[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
            assert r.status == 200


def test_memory_budget_answers_unavailable(tmp_path: Path) -> None:
    async def body(url: str) -> None:
        async with client(url) as c:
            await c.post(new_cap(), b"\0" * 4000)
            await c.post(new_cap(), b"\0" * 4000)
            answer = await c.call("post", cap=new_cap(), data=b64u(b"\0" * 4000))
            assert answer["code"] == "unavailable", "the memory budget was not enforced"
            assert (await c.call("ping"))["op"] == "ok"

    with RelayProcess(tmp_path / "relay.log", "--memory-limit", "12000") as relay:
        run(body(relay.url))


def test_path_is_literal_as_behind_a_hub_proxy(tmp_path: Path) -> None:
    path = "/services/secure-storage.relay/relay"

    async def body(url: str) -> None:
        async with client(url) as c:
            assert (await c.call("ping"))["op"] == "ok"
        for other in ("/services/secure-storage-relay/relay", "/relay"):
            with pytest.raises(InvalidStatus) as refused:
                await connect(url.replace(path, other), open_timeout=10)
            assert refused.value.response.status_code == 404

    with RelayProcess(tmp_path / "relay.log", "--path", path) as relay:
        assert relay.url.endswith(":" + relay.url.split(":")[2].split("/")[0] + path)
        run(body(relay.url))


@pytest.mark.parametrize(
    "args",
    [
        ["--max-data", "65601"],
        ["--max-messages", "257"],
        ["--max-ttl", "86401"],
        ["--ops-per-second", "0"],
        ["--port", "70000"],
        ["--path", "relay"],
        ["--keyfile", "k.pem"],
    ],
)
def test_command_refuses_bad_flags(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "jupyter_secure_storage.bridge.relay", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 2, f"exit {result.returncode}"
    assert "relay listening" not in result.stdout


def test_unreachable_redis_fails_fast_without_showing_the_password() -> None:
    port = free_port()
    password = "redis-password-" + secrets.token_hex(8)
    result = subprocess.run(
        [sys.executable, "-m", "jupyter_secure_storage.bridge.relay", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "JSS_RELAY_REDIS_URL": f"redis://:{password}@127.0.0.1:{port}/0"},
    )
    assert result.returncode == 1, f"exit {result.returncode}"
    assert "cannot reach redis" in result.stderr
    assert password not in result.stderr + result.stdout, "the Redis password was printed"


def test_tls(tmp_path: Path) -> None:
    import datetime
    import ipaddress
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "relay test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(cafile=str(certfile))
    cap = new_cap()

    async def body(url: str) -> None:
        async with connect(url, ssl=context, open_timeout=10) as ws:
            c = Client(ws)
            await c.sub(cap)
            await c.post(cap, b"over tls")
            assert (await c.message())["data"] == b64u(b"over tls")

    args = ("--certfile", str(certfile), "--keyfile", str(keyfile))
    with RelayProcess(tmp_path / "relay.log", *args) as relay:
        assert relay.url.startswith("wss://127.0.0.1:")
        run(body(relay.url))


# --- Redis: shared by relays, surviving restarts --------------------------------------------------


def test_two_relays_share_redis_mailboxes(redis_server: RedisServer, tmp_path: Path) -> None:
    cap = new_cap()
    a = RelayProcess(tmp_path / "a.log", "--redis", redis_server.url)
    b = RelayProcess(tmp_path / "b.log", "--redis", redis_server.url)

    async def body() -> None:
        async with client(a.url) as on_a, client(b.url) as on_b:
            held_seq = await on_a.post(cap, b"held, posted to A")
            await on_b.sub(cap)
            first = await on_b.message()
            assert first["seq"] == held_seq, "B did not get what was posted to A"
            live_seq = await on_a.post(cap, b"live, posted to A")
            second = await on_b.message()
            assert second["seq"] == live_seq, "B did not get A's live post"
            assert second["data"] == b64u(b"live, posted to A")
            assert (await on_b.call("ack", cap=cap, seq=second["seq"]))["op"] == "ok"
        assert await held(a.url, cap) == [], "A still holds what B acknowledged"
        # and the other way round, subscribers on both relays at once
        async with client(a.url) as on_a, client(b.url) as on_b:
            await on_a.sub(cap)
            await on_b.sub(cap)
            seq = await on_b.post(cap, b"to both")
            assert (await on_a.message())["seq"] == seq
            assert (await on_b.message())["seq"] == seq

    with a, b:
        run(body())


def test_redis_mailboxes_survive_a_relay_restart(redis_server: RedisServer, tmp_path: Path) -> None:
    cap = new_cap()
    relay = RelayProcess(tmp_path / "relay.log", "--redis", redis_server.url)

    async def post(url: str) -> None:
        async with client(url) as c:
            await c.post(cap, b"durable")

    with relay:
        run(post(relay.url))
    with relay:
        assert run(held(relay.url, cap)) == [b"durable"], "lost across a relay restart"


def test_redis_keys_hold_boxes_never_caps(
    redis_server: RedisServer, redis_relay: RelayProcess
) -> None:
    import redis

    cap = new_cap()

    async def post() -> None:
        async with client(redis_relay.url) as c:
            await c.post(cap, b"k", ttl=100)

    run(post())
    r = redis.Redis.from_url(redis_server.url)
    try:
        stream = f"jss:{{{box_of(cap)}}}"
        assert r.exists(stream) == 1, "no stream under the mailbox's box"
        assert 0 < r.pttl(stream) <= 100_000, "the stream has no expiry"
        assert r.pttl(stream + ":m") > 0, "the index has no expiry"
        for key in r.scan_iter(count=1000):
            assert cap.encode() not in key, "a capability is part of a Redis key"
    finally:
        r.close()


def test_redis_reader_connections_are_capped(redis_server: RedisServer, tmp_path: Path) -> None:
    relay = RelayProcess(tmp_path / "relay.log", "--redis", redis_server.url,
                         "--redis-max-readers", "2")  # fmt: skip

    async def body() -> None:
        async with client(relay.url) as c, client(relay.url) as d:
            first = new_cap()
            await c.sub(first)
            await d.sub(new_cap())
            assert (await c.call("sub", cap=new_cap()))["code"] == "unavailable"
            await c.sub(first)  # subscribing again needs no new reader
            assert (await d.call("unsub", cap=first))["op"] == "ok"  # d never followed it
            assert (await c.call("unsub", cap=first))["op"] == "ok"
            deadline = time.monotonic() + 10
            while (await d.call("sub", cap=new_cap()))["op"] != "ok":
                assert time.monotonic() < deadline, "an unsub did not free its reader"
                await asyncio.sleep(0.1)

    with relay:
        run(body())


def test_redis_outage_answers_unavailable_and_recovers(tmp_path: Path) -> None:
    redis_available()
    server = RedisServer(tmp_path / "redis").start()
    relay = RelayProcess(tmp_path / "relay.log", "--redis", server.url)
    cap = new_cap()

    async def body() -> None:
        async with client(relay.url) as c:
            await c.sub(cap)
            server.stop()
            answer = await c.call("post", cap=cap, data="AA")
            assert answer["code"] == "unavailable", "a post without Redis did not fail"
            assert (await c.call("ping"))["op"] == "ok", "the relay stopped serving"
            server.start()  # same port
            deadline = time.monotonic() + 20
            while (answer := await c.call("post", cap=cap, data="AA"))["op"] != "ok":
                assert time.monotonic() < deadline, "the relay did not reconnect to Redis"
                await asyncio.sleep(0.2)
            got = await c.message(timeout=30)  # the subscription recovered as well
            assert got["seq"] == answer["seq"]

    try:
        with relay:
            run(body())
    finally:
        server.stop()


# --- inside Jupyter Server -----------------------------------------------------------------


def test_mounted_in_jupyter_server_without_its_token(tmp_path: Path) -> None:
    pytest.importorskip("jupyter_server")
    port = free_port()
    token = secrets.token_hex(16)
    log = tmp_path / "server.log"
    (tmp_path / "root").mkdir()
    command = [
        sys.executable, "-m", "jupyter_server",
        "--ServerApp.jpserver_extensions="
        "{'jupyter_secure_storage.bridge.server_extension': True}",
        f"--ServerApp.port={port}", "--ServerApp.ip=127.0.0.1",
        "--ServerApp.port_retries=0", "--ServerApp.open_browser=False",
        "--ServerApp.base_url=/base/", f"--ServerApp.root_dir={tmp_path / 'root'}",
        "--ServerApp.allow_unauthenticated_access=False", "--ServerApp.allow_root=True",
    ]  # fmt: skip
    cap = new_cap()
    with log.open("wb") as out:
        server = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "JUPYTER_TOKEN": token},
        )
    api = f"http://127.0.0.1:{port}/base/api"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{api}/status?token={token}", timeout=2):  # noqa: S310
                    break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None, "jupyter server exited"
                assert time.monotonic() < deadline, "jupyter server did not start"
                time.sleep(0.2)
        # Everything else still needs the token ...
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{api}/contents", timeout=10)  # noqa: S310 - loopback
        assert refused.value.code == 403

        # ... the relay does not: capabilities are its access control.
        async def body() -> None:
            url = f"ws://127.0.0.1:{port}/base/secure-storage/relay"
            async with client(url) as c, client(url) as d:
                await c.sub(cap)
                await d.post(cap, b"through jupyter")
                assert (await c.message())["data"] == b64u(b"through jupyter")
                assert (await d.call("bogus"))["code"] == "bad_request"

        run(body())

        # The web companion's page beside it, without the token too (the phone has none).
        if (WEB_STATIC / "index.html").exists():
            page = f"http://127.0.0.1:{port}/base/secure-storage/device/"
            with urllib.request.urlopen(page, timeout=10) as answer:
                assert answer.status == 200
                assert b'src="app.js"' in answer.read()
                assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
                assert answer.headers["Referrer-Policy"] == "no-referrer"
            for url in (page + "app.js", page.rstrip("/")):  # the redirect is public too
                with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310
                    assert answer.status == 200
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    text = log.read_text(errors="replace")
    assert "RelayHandler" not in text, "jupyter_server warned about the relay's route"
    assert "CompanionHandler" not in text, "jupyter_server warned about the page's route"
    assert "RedirectHandler" not in text, "jupyter_server warned about the page's redirect"
    assert "jupyter_secure_storage relay at /base/secure-storage/relay" in text


# --- the stores in process ------------------------------------------------------------------


def test_memory_store_concurrent_readers_and_writers() -> None:
    from jupyter_secure_storage.bridge.mailboxes import MailboxLimits, MemoryMailboxes

    async def body() -> None:
        store = MemoryMailboxes(MailboxLimits(max_messages=256), sweep_interval=0.05)
        await store.start()

        async def follow(box: str, want: int) -> list[str]:
            seen: list[str] = []
            cursor = "0-0"
            while len(seen) < want:
                batch = await store.read(box, cursor, count=7, timeout=5)
                seen += [m.seq for m in batch.messages]
                cursor = batch.cursor
            return seen

        boxes = [f"box{i}" for i in range(10)]
        readers = [asyncio.create_task(follow(box, 50)) for box in boxes for _ in range(3)]
        posted: dict[str, list[str]] = {box: [] for box in boxes}

        async def write(box: str) -> None:
            for i in range(50):
                posted[box].append(await store.post(box, bytes([i]), 60))
                await asyncio.sleep(0)

        await asyncio.gather(*(write(box) for box in boxes))
        results = await asyncio.gather(*readers)
        for index, seen in enumerate(results):
            assert seen == posted[boxes[index // 3]], "a reader missed or reordered messages"
        everything = [parse_seq(seq) for seqs in posted.values() for seq in seqs]
        assert len(set(everything)) == len(everything), "a seq was handed out twice"
        for box in boxes:
            await store.ack(box, posted[box][-1])
        await asyncio.sleep(0.2)  # a sweep forgets the empty mailboxes
        assert store.total_bytes == 0, "acknowledged messages still counted"
        await store.close()

    run(body())


def test_redis_store_reads_can_always_be_cancelled(redis_server: RedisServer) -> None:
    """redis-py 8.1 may swallow a cancel during connection set-up; read() must not."""
    from jupyter_secure_storage.bridge.mailboxes import RedisMailboxes

    async def body() -> None:
        for delay in (0, 0.0005, 0.001, 0.0015, 0.002, 0.005, 0.05):
            store = RedisMailboxes(redis_server.url, max_readers=4)
            await store.start()
            task = asyncio.create_task(store.read("b" * 43, "0-0", count=1, timeout=10))
            await asyncio.sleep(delay)
            started = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert time.monotonic() - started < 1, f"cancel after {delay} s took too long"
            await store.close()

    run(body())


# --- pure functions: parsing, fuzzing, the token bucket ------------------------------------


def test_parse_frame_valid_operations() -> None:
    cap = new_cap()
    box = box_of(cap)
    assert parse_frame('{"op":"ping","id":"1"}') == Ping("1")
    assert parse_frame(json.dumps({"op": "sub", "id": "a", "cap": cap})) == Sub("a", box)
    assert parse_frame(json.dumps({"op": "unsub", "id": "a", "cap": cap})) == Unsub("a", box)
    post = parse_frame(json.dumps({"op": "post", "id": "i" * 32, "cap": cap, "data": "AQI"}))
    assert post == Post("i" * 32, box, b"\1\2", 3600)
    assert "AQI" not in repr(post), "a Post's repr shows data"
    ack = parse_frame(json.dumps({"op": "ack", "id": "é", "cap": cap, "seq": "1795843200000-3"}))
    assert ack == Ack("é", box, "1795843200000-3")
    assert cap not in repr(post) + repr(ack), "an operation keeps the capability"
    with pytest.raises(FrameError) as large:
        parse_frame(json.dumps({"op": "post", "id": "x", "cap": cap, "data": "A" * 87_468}))
    assert large.value.code == "too_large"
    assert large.value.request_id == "x"


def test_limits_may_only_be_stricter() -> None:
    assert Limits(max_data=10).max_data == 10
    for name in ("max_data", "max_messages", "max_ttl", "max_frame", "ops_per_second"):
        with pytest.raises(ValueError, match=name):
            Limits(**{name: getattr(Limits(), name) + 1})
        with pytest.raises(ValueError, match=name):
            Limits(**{name: 0})


def test_token_bucket() -> None:
    now = [100.0]
    bucket = TokenBucket(rate=200, burst=200, clock=lambda: now[0])
    assert sum(bucket.take() for _ in range(300)) == 200
    now[0] += 0.5
    assert sum(bucket.take() for _ in range(300)) == 100
    now[0] += 10
    assert sum(bucket.take() for _ in range(300)) == 200


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)
_b64ish = st.one_of(
    st.binary(max_size=40).map(b64u),
    st.binary(min_size=32, max_size=32).map(b64u),
    st.text(alphabet="ABCDEFabcdef0123456789-_+/=", max_size=48),
    st.text(max_size=48),
)
_field = st.one_of(_json, _b64ish, st.integers(min_value=-(2**70), max_value=2**70))
_frames = st.one_of(
    _json.map(json.dumps),
    st.text(max_size=300),
    st.binary(max_size=100),
    st.fixed_dictionaries(
        {"op": st.sampled_from(["sub", "unsub", "post", "ack", "ping", "nope", 3])},
        optional={
            "id": st.one_of(st.text(max_size=40), _json),
            "cap": _field,
            "data": _field,
            "ttl": _field,
            "seq": st.one_of(st.from_regex(r"\A[0-9]{1,22}-[0-9]{1,22}\Z"), _field),
            "extra": _json,
        },
    ).map(json.dumps),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=_frames)
def test_fuzz_parse_frame_raises_only_frame_errors(frame: str | bytes) -> None:
    try:
        operation = parse_frame(frame)
    except FrameError as error:
        refused: FrameError | None = error
    else:
        refused = None
    if refused is not None:
        assert refused.code in ERROR_CODES
        assert refused.request_id is None or 1 <= len(refused.request_id) <= 32
        return
    assert isinstance(operation, (Sub, Unsub, Post, Ack, Ping))
    assert 1 <= len(operation.id) <= 32
    if isinstance(operation, Post):
        assert len(operation.data) <= MAX_DATA
        assert 1 <= operation.ttl <= 86_400
