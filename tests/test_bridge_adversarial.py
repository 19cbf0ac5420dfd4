"""The bridge against a hostile relay: the real host and reference device, the real relay code.

The relay (tests/adversarial_relay.py) serves the real relay's handler and memory store, but
hands every ``post`` to an attack first: drop, duplicate, reorder, truncate, flip bits in
each envelope field, replay a recorded session, reflect the host's own messages, forge
notices, answer nothing (a tarpit), refuse, claim a delivered post failed, or hang up.
The offer is substituted on its way to the
device (key, version, any other field, a wrong secret), offers expire and are reused, a
second phone races the first, and low-order X25519 points are sent as keys.

For every attack: the operation completes correctly or fails with a typed
``SecureStorageError`` within its timeout -- never a wrong value, never a value stored that
the host did not send, never a crash of the device's serve loop (it answers the next
honest request), and both sides' stores hold exactly what honest operations produced.
Finally no value, pairing secret or private key appears in a log, on stdout/stderr, in
the relay's storage or in any file outside the encrypted vaults.

Every attack that succeeded while this suite was written was fixed in the bridge and
stays here as a regression test. No assertion message shows a value, a key or a secret.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from adversarial_relay import AdversarialRelay, Posted, Tamper
from conftest import fast_kdf_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jupyter_secure_storage import SecureStorage
from jupyter_secure_storage.bridge import protocol
from jupyter_secure_storage.bridge.device import (
    INTERNAL,
    Approval,
    AutoApprover,
    DeviceState,
    Pairing,
    ReferenceDevice,
)
from jupyter_secure_storage.bridge.host import (
    HOST_KEY,
    PAIRING_NAMESPACE,
    DeviceClient,
    DeviceRecord,
    HostKeystore,
    PairingAttempt,
    PendingPairing,
)
from jupyter_secure_storage.bridge.noise import HandshakeState, generate_keypair, public_key_bytes
from jupyter_secure_storage.bridge.protocol import b64u, mailbox_id, unb64u
from jupyter_secure_storage.errors import (
    DeviceDeniedError,
    PairingError,
    SecureStorageError,
)
from jupyter_secure_storage.testing import canary

DEVICE_PASSPHRASE = "device passphrase for adversarial tests"
TIMEOUT = 1.0  # seconds a request under attack may take
SLACK = 1.0  # seconds past its timeout a request may take to fail

# X25519 points of small order (and encodings of them with the ignored top bit set): every
# DH with one of them gives the all-zero secret (https://cr.yp.to/ecdh.html#validate).
LOW_ORDER_POINTS = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    bytes.fromhex("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    bytes.fromhex("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    bytes(31) + b"\x80",  # the same points with the bit X25519 ignores set
    (1).to_bytes(32, "little")[:31] + b"\x80",
]
LOW_ORDER_IDS = [f"point{i}" for i in range(len(LOW_ORDER_POINTS))]

pytestmark = pytest.mark.timeout(120)


def run(coroutine: Any, timeout: float = 90.0) -> Any:
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adversary() -> Iterator[AdversarialRelay]:
    relay = AdversarialRelay().start()
    yield relay
    relay.stop()


@pytest.fixture
def relay(adversary: AdversarialRelay) -> Iterator[AdversarialRelay]:
    adversary.reset()
    yield adversary
    adversary.reset()


@pytest.fixture
def env(vault_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_SECURE_STORAGE_DEVICE_PASSPHRASE", DEVICE_PASSPHRASE)
    monkeypatch.setenv("JUPYTER_SECURE_STORAGE_BACKEND", "vault")  # never a real keyring


@dataclass
class Phone:
    """A reference device that approves everything, and what it said."""

    device: ReferenceDevice
    said: list[str] = field(default_factory=list)

    @property
    def state(self) -> DeviceState:
        return self.device.state

    def code(self) -> str | None:
        codes = [s.split(": ", 1)[1] for s in self.said if s.startswith("Confirmation code: ")]
        return codes[-1] if codes else None

    def snapshot(self) -> dict[str, dict[str, str]]:
        vault = self.state.vault
        return {ns: vault.get_all(ns) for ns in vault.list_namespaces()}

    def values(self, namespace: str = "default") -> dict[str, str]:
        return self.state.vault.get_all(namespace)

    def public_key(self) -> bytes:
        return public_key_bytes(self.device._key)


@dataclass
class PairOutcome:
    attempt: PairingAttempt
    pending: PendingPairing | None
    host: DeviceRecord | BaseException | None
    devices: list[Pairing | BaseException]
    confirmed: bool


class Harness:
    """The host's keystore (a vault), phones, and pairing as a person would do it."""

    def __init__(self, relay: AdversarialRelay, directory: Path) -> None:
        self.relay = relay
        self.directory = directory
        self.keystore = HostKeystore(
            SecureStorage(backend="vault", namespace=PAIRING_NAMESPACE, config=fast_kdf_config())
        )
        self.phones: list[Phone] = []

    def phone(self, name: str = "phone", approver: Any = None) -> Phone:
        said: list[str] = []
        device = ReferenceDevice(
            DeviceState(self.directory / f"device-{len(self.phones)}", fast_kdf_config()),
            approver or AutoApprover(),
            name=name,
            say=said.append,
        )
        phone = Phone(device, said)
        self.phones.append(phone)
        return phone

    async def pair(
        self,
        *phones: Phone,
        offer_for: Callable[[PairingAttempt], str] | None = None,
        lifetime: int = 600,
        host_timeout: float = 5.0,
        device_timeout: float = 5.0,
        before: Callable[[PairingAttempt], Any] | None = None,
        person: Phone | None = None,
    ) -> PairOutcome:
        """Pair; the person holds ``person`` (default ``phones[0]``) and confirms only if it
        shows the host's code. The phones post in order."""
        holding = person or phones[0]
        attempt = PairingAttempt(
            self.relay.url, "lab host", keystore=self.keystore, lifetime=lifetime
        )
        if before is not None:
            await before(attempt)
        uri = offer_for(attempt) if offer_for else attempt.offer.uri
        tasks = []
        for index, phone in enumerate(phones):
            if index:  # the phones post in order: wait for the previous one's pair-init
                deadline = time.monotonic() + 5
                while self.pair_inits() < index and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
            tasks.append(asyncio.create_task(phone.device.pair(uri, timeout=device_timeout)))
        pending: PendingPairing | None = None
        confirmed = False
        host: DeviceRecord | BaseException | None
        try:
            pending = await attempt.wait_for_device(host_timeout)
        except Exception as error:  # the caller checks the outcome
            host = error
        else:
            # The person looks at their phone (until it shows a code or gives up).
            deadline = time.monotonic() + 2
            holding_task = tasks[phones.index(holding)]
            while holding.code() is None and not holding_task.done():
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.01)
            confirmed = holding.code() == pending.code
            try:
                host = await attempt.finish(confirmed)
            except Exception as error:
                host = error
        devices = list(await asyncio.gather(*tasks, return_exceptions=True))
        return PairOutcome(attempt, pending, host, devices, confirmed)

    def paired(self) -> tuple[Phone, DeviceRecord]:
        """A phone paired honestly (outside any test loop)."""
        phone = self.phone()
        outcome = run(self.pair(phone))
        assert isinstance(outcome.host, DeviceRecord), "honest pairing failed"
        assert isinstance(outcome.devices[0], Pairing), "honest pairing failed on the device"
        return phone, outcome.host

    def client(self, record: DeviceRecord) -> DeviceClient:
        return DeviceClient(record, self.keystore.host_key())

    def pair_inits(self) -> int:
        return sum(1 for p in self.relay.store.posts if p.kind == protocol.KIND_PAIR_INIT)

    async def second_host(self, phone: Phone, label: str) -> DeviceClient:
        """Another computer (a keystore of its own) pairs with ``phone``."""
        keystore = HostKeystore(
            SecureStorage(backend="memory", namespace=PAIRING_NAMESPACE, config=fast_kdf_config())
        )
        attempt = PairingAttempt(self.relay.url, label, keystore=keystore)
        task = asyncio.create_task(phone.device.pair(attempt.offer.uri, timeout=5))
        await attempt.wait_for_device(5)
        record = await attempt.finish(True)
        await task
        assert record is not None, "the second computer did not pair"
        return DeviceClient(record, keystore.host_key())

    def records(self) -> list[DeviceRecord]:
        return self.keystore.devices()


@pytest.fixture
def harness(env: None, relay: AdversarialRelay, tmp_path: Path) -> Harness:
    return Harness(relay, tmp_path / "phones")


@dataclass
class Bridge:
    harness: Harness
    phone: Phone
    record: DeviceRecord

    @property
    def relay(self) -> AdversarialRelay:
        return self.harness.relay

    @property
    def h2d_box(self) -> str:
        return mailbox_id(unb64u(self.record.h2d, 32))

    @property
    def d2h_box(self) -> str:
        return mailbox_id(unb64u(self.record.d2h, 32))

    def client(self) -> DeviceClient:
        return self.harness.client(self.record)

    async def request(self, op: str, timeout: float = TIMEOUT, **fields: Any) -> dict[str, Any]:
        return await self.client().request(protocol.new_request(op, **fields), timeout)


@pytest.fixture
def bridge(harness: Harness) -> Bridge:
    phone, record = harness.paired()
    harness.relay.reset()
    return Bridge(harness, phone, record)


@contextlib.asynccontextmanager
async def serving(phone: Phone) -> AsyncIterator[asyncio.Task[None]]:
    """The phone serves in this loop; leaving checks that nothing of it ever crashed.

    The device handles each message in a task of its own, whose exceptions nobody would
    see: a task factory watches those tasks, and any exception fails the test.
    """
    loop = asyncio.get_running_loop()
    failures: list[str] = []
    previous = loop.get_task_factory()

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        task = asyncio.Task(coro, loop=loop, **kwargs)
        if getattr(coro, "__qualname__", "").startswith("ReferenceDevice."):

            def done(finished: asyncio.Task[Any]) -> None:
                if not finished.cancelled() and finished.exception() is not None:
                    failures.append(type(finished.exception()).__name__)

            task.add_done_callback(done)
        return task

    loop.set_task_factory(factory)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(phone.device.serve(stop, ready=ready.set))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield task
    finally:
        crashed = task.done()
        stop.set()
        try:
            await asyncio.wait_for(task, 15)  # re-raises whatever ended the serve loop
        finally:
            loop.set_task_factory(previous)
        assert not crashed, "the device's serve loop ended on its own"
        assert not failures, f"the device's message handling raised {failures}"
        lost = [s for s in phone.said if s.startswith("relay connection lost")]
        assert not lost, f"the device lost its relay connection {len(lost)} time(s)"


async def honest(bridge: Bridge, op: str, **fields: Any) -> dict[str, Any]:
    """An honest request, with the relay honest again: it must succeed."""
    bridge.relay.store.tamper = None
    bridge.relay.operation_hook = None
    answer = await bridge.request(op, timeout=10, **fields)
    assert answer.get("ok") is True, "an honest request failed after the attack"
    return answer


# --- attacks: selectors and mutations ---------------------------------------------------------


class once:  # a tamper, called like a function: once(select, mutate)
    """A tamper: apply ``mutate`` to the first ``times`` posts ``select`` picks; pass the rest."""

    def __init__(
        self,
        select: Callable[[Posted], bool],
        mutate: Callable[[Posted], list[tuple[str, bytes]]],
        times: int = 1,
    ) -> None:
        self.select, self.mutate, self.left, self.fired = select, mutate, times, 0

    def __call__(self, posted: Posted) -> list[tuple[str, bytes]]:
        if self.left > 0 and self.select(posted):
            self.left -= 1
            self.fired += 1
            return self.mutate(posted)
        return [(posted.box, posted.data)]


def nth(select: Callable[[Posted], bool], n: int) -> Callable[[Posted], bool]:
    seen = [0]

    def pick(posted: Posted) -> bool:
        if select(posted):
            seen[0] += 1
            return seen[0] == n
        return False

    return pick


def flipped(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    changed = bytearray(data)
    changed[offset] ^= mask
    return bytes(changed)


def with_kind(data: bytes, kind: int) -> bytes:
    return data[:4] + bytes([kind]) + data[5:]


def with_conversation(data: bytes, conversation: bytes) -> bytes:
    return data[:5] + conversation + data[21:]


MUTATIONS: dict[str, Callable[[Posted], list[tuple[str, bytes]]]] = {
    "drop": lambda p: [],
    "duplicate": lambda p: [(p.box, p.data), (p.box, p.data)],
    "flip-magic": lambda p: [(p.box, flipped(p.data, 0))],
    "flip-magic-last": lambda p: [(p.box, flipped(p.data, 3, 0x02))],  # JSB1 -> JSB3
    "flip-kind": lambda p: [(p.box, flipped(p.data, 4))],
    "flip-kind-high": lambda p: [(p.box, flipped(p.data, 4, 0x80))],
    "flip-conversation-first": lambda p: [(p.box, flipped(p.data, 5))],
    "flip-conversation-last": lambda p: [(p.box, flipped(p.data, 20, 0x80))],
    "flip-body-first": lambda p: [(p.box, flipped(p.data, 21))],
    "flip-body-middle": lambda p: [(p.box, flipped(p.data, (21 + len(p.data)) // 2, 0x10))],
    "flip-tag": lambda p: [(p.box, flipped(p.data, -1, 0x80))],
    "truncate-empty": lambda p: [(p.box, b"")],
    "truncate-magic": lambda p: [(p.box, p.data[:4])],
    "truncate-header": lambda p: [(p.box, p.data[:20])],
    "truncate-to-header": lambda p: [(p.box, p.data[:21])],
    "truncate-short-body": lambda p: [(p.box, p.data[:37])],
    "truncate-tag": lambda p: [(p.box, p.data[:-16])],
    "truncate-last-byte": lambda p: [(p.box, p.data[:-1])],
    "extend": lambda p: [(p.box, p.data + b"\x00")],
    "random-body": lambda p: [(p.box, p.data[:21] + secrets.token_bytes(len(p.data) - 21))],
    "wrong-kind-all": lambda p: [(p.box, with_kind(p.data, k)) for k in (1, 2, 3, 4, 5, 6, 7)],
}


def session_targets(bridge: Bridge) -> dict[str, Callable[[Posted], bool]]:
    h2d = bridge.h2d_box
    host_data = lambda p: p.box == h2d and p.kind == protocol.KIND_DATA  # noqa: E731
    return {
        "open": lambda p: p.box == h2d and p.kind == protocol.KIND_OPEN,
        "accept": lambda p: p.kind == protocol.KIND_ACCEPT,
        "request": nth(host_data, 1),
        "response": lambda p: p.box != h2d and p.kind == protocol.KIND_DATA,
        "close": nth(host_data, 2),
    }


def is_typed(error: BaseException | None) -> bool:
    return error is None or isinstance(error, SecureStorageError)


async def settle(request: Any) -> tuple[dict[str, Any] | None, BaseException | None]:
    """``(answer, None)`` or ``(None, error)``: an attack may end either way."""
    try:
        return await request, None
    except Exception as error:  # checked by the caller: it must be a typed error
        return None, error


# --- sessions: every field of every envelope --------------------------------------------------

SESSION_CASES = [
    pytest.param(target, op, mutation, id=f"{target}-{op}-{mutation}")
    for target, op in (
        ("open", "write"),
        ("accept", "write"),
        ("request", "write"),
        ("response", "write"),
        ("response", "read"),
        ("close", "write"),
    )
    for mutation in sorted(MUTATIONS)
] + [
    pytest.param("request", "delete", mutation, id=f"request-delete-{mutation}")
    for mutation in ("drop", "duplicate", "flip-body-middle", "truncate-tag", "wrong-kind-all")
]


@pytest.mark.parametrize(("target", "op", "mutation"), SESSION_CASES)
def test_tampered_session_messages_never_give_a_wrong_result(
    bridge: Bridge, target: str, op: str, mutation: str
) -> None:
    old, new = canary(), canary()

    async def body() -> None:
        async with serving(bridge.phone):
            await honest(bridge, "write", key="K", value=old)
            await honest(bridge, "write", key="OTHER", value="untouched")
            before = bridge.phone.snapshot()
            tamper = once(session_targets(bridge)[target], MUTATIONS[mutation])
            bridge.relay.store.tamper = tamper
            fields: dict[str, Any] = {"key": "K"}
            if op == "write":
                fields["value"] = new
            started = time.monotonic()
            answer, error = await settle(bridge.request(op, **fields))
            assert is_typed(error), f"untyped {type(error).__name__}"
            elapsed = time.monotonic() - started
            assert elapsed <= TIMEOUT + SLACK, f"a {TIMEOUT} s request took {elapsed:.1f} s"
            assert tamper.fired, "the attack did not happen"
            await asyncio.sleep(0.1)  # let the device finish whatever reached it
            after = bridge.phone.snapshot()
            values = after.get("default", {})
            assert values.get("OTHER") == "untouched", "another key changed"
            if op == "write":
                assert values.get("K") in (old, new), "a value the host never sent was stored"
                if answer is not None:
                    assert answer.get("ok") is True, "a write under attack was refused"
                    assert values.get("K") == new, "a write reported done was not stored"
            elif op == "delete":
                assert values.get("K") in (old, None), "a value the host never sent was stored"
                if answer is not None:
                    assert answer.get("existed") is True, "delete answered wrongly"
                    assert "K" not in values, "a delete reported done did not happen"
            else:
                assert after == before, "a read changed the device's store"
                if answer is not None:
                    assert answer.get("found") is True, "a read under attack found nothing"
                    assert answer.get("value") == old, "a read under attack got a wrong value"
            assert {k: v for k, v in after.items() if k != "default"} == {
                k: v for k, v in before.items() if k != "default"
            }, "the device's own records changed"
            # The device keeps serving, with the right contents.
            read = await honest(bridge, "read", key="K")
            assert read.get("value") == values.get("K"), "the store and the answers disagree"
        assert len(bridge.harness.records()) == 1, "the host's pairing changed"

    run(body())


# --- replays ----------------------------------------------------------------------------------


def recorded(bridge: Bridge, since: int) -> list[Posted]:
    """The host's posts to h2d (open, request, close) since ``since``."""
    return [p for p in bridge.relay.store.posts[since:] if p.box == bridge.h2d_box]


@pytest.mark.parametrize("conversation", ["same", "new"])
@pytest.mark.parametrize("op", ["write", "delete"])
def test_a_replayed_session_does_not_run_again(bridge: Bridge, op: str, conversation: str) -> None:
    first, second = canary(), canary()

    async def body() -> None:
        async with serving(bridge.phone):
            await honest(bridge, "write", key="K", value=first)
            mark = len(bridge.relay.store.posts)
            if op == "write":
                await honest(bridge, "write", key="K", value=second)
            else:
                await honest(bridge, "delete", key="K")
            session = recorded(bridge, mark)
            assert [p.kind for p in session] == [4, 6, 6], "unexpected session shape"
            # Afterwards the owner writes again; then the relay replays the recorded session.
            await honest(bridge, "write", key="K", value=first)
            expected = bridge.phone.snapshot()
            fresh = secrets.token_bytes(16)
            for posted in session:
                data = (
                    posted.data if conversation == "same" else with_conversation(posted.data, fresh)
                )
                await bridge.relay.inject(bridge.h2d_box, data)
                await asyncio.sleep(0.05)
            for posted in session[:2]:  # and the open + request once more, back to back
                await bridge.relay.inject(bridge.h2d_box, posted.data)
            await asyncio.sleep(0.3)
            assert bridge.phone.snapshot() == expected, "a replayed request ran again"
            read = await honest(bridge, "read", key="K")
            assert read.get("value") == first, "the replay changed the value"

    run(body())


def test_a_replay_into_a_session_left_open_is_refused(bridge: Bridge) -> None:
    """The relay drops the host's close, so the session stays open; then replays the request."""
    value, later = canary(), canary()

    async def body() -> None:
        async with serving(bridge.phone):
            targets = session_targets(bridge)
            bridge.relay.store.tamper = once(targets["close"], MUTATIONS["drop"])
            mark = len(bridge.relay.store.posts)
            await bridge.request("write", key="K", value=value, timeout=10)
            session = recorded(bridge, mark)
            assert len(bridge.phone.device._sessions) == 1, "the session should be open"
            await honest(bridge, "write", key="K", value=later)
            expected = bridge.phone.snapshot()
            await bridge.relay.inject(bridge.h2d_box, session[1].data)  # the request again
            await asyncio.sleep(0.3)
            assert bridge.phone.snapshot() == expected, "the replayed request ran"
            assert not bridge.phone.device._sessions, "a failed decryption must end the session"

    run(body())


def test_a_retried_request_id_gets_the_cached_answer_and_does_not_run_again(
    bridge: Bridge,
) -> None:
    """§9: the host retries with the same id; the device answers from its cache."""
    first, second = canary(), canary()

    async def body() -> None:
        async with serving(bridge.phone):
            client = bridge.client()
            write_first = protocol.new_request("write", key="K", value=first)
            assert (await client.request(write_first, 10)).get("ok") is True
            await honest(bridge, "write", key="K", value=second)
            again = await client.request(write_first, 10)  # a retry, over a new session
            assert again.get("ok") is True, "the cached answer is not the first answer"
            assert bridge.phone.values().get("K") == second, "the retried write ran again"
            delete = protocol.new_request("delete", key="K")
            assert (await client.request(delete, 10)).get("existed") is True
            await honest(bridge, "write", key="K", value=first)
            repeated = await client.request(delete, 10)
            assert repeated.get("existed") is True, "the retried delete was not answered alike"
            assert bridge.phone.values().get("K") == first, "the retried delete ran again"

    run(body())


# --- reflection -------------------------------------------------------------------------------


def reply_boxes(bridge: Bridge) -> dict[bytes, str]:
    """conversation -> the session's reply box, learned from the device's accepts."""
    found = {}
    for posted in bridge.relay.store.posts:
        if posted.kind == protocol.KIND_ACCEPT and posted.conversation is not None:
            found[posted.conversation] = posted.box
    return found


def reflector(bridge: Bridge, what: str) -> Tamper:
    """Copy the host's messages back to the host (or the device's back to the device)."""
    h2d = bridge.h2d_box

    def tamper(posted: Posted) -> list[tuple[str, bytes]]:
        keep = [(posted.box, posted.data)]
        replies = reply_boxes(bridge)
        if what == "open-as-accept" and posted.box == h2d and posted.kind == protocol.KIND_OPEN:
            # The reply box is not known yet: send it when the device's accept shows it.
            pending.append(posted)
            return keep
        if what == "open-as-accept" and posted.kind == protocol.KIND_ACCEPT:
            opens = [p for p in pending if p.conversation == posted.conversation]
            forged = [(posted.box, with_kind(p.data, protocol.KIND_ACCEPT)) for p in opens]
            return forged + keep  # the reflected open arrives first
        if what == "request" and posted.box == h2d and posted.kind == protocol.KIND_DATA:
            box = replies.get(posted.conversation or b"")
            return keep + ([(box, posted.data)] if box else [])
        if what == "request-first" and posted.box == h2d and posted.kind == protocol.KIND_DATA:
            box = replies.get(posted.conversation or b"")
            return ([(box, posted.data)] if box else []) + keep
        if what == "response" and posted.box != h2d and posted.kind == protocol.KIND_DATA:
            return [*keep, (h2d, posted.data)]
        if what == "accept" and posted.kind == protocol.KIND_ACCEPT:
            return [*keep, (h2d, posted.data), (h2d, with_kind(posted.data, protocol.KIND_OPEN))]
        if what == "notices" and posted.box == h2d:
            return [*keep, (bridge.d2h_box, posted.data)]
        return keep

    pending: list[Posted] = []
    return tamper


@pytest.mark.parametrize(
    "what", ["open-as-accept", "request", "request-first", "response", "accept", "notices"]
)
@pytest.mark.parametrize("op", ["write", "read"])
def test_reflected_messages_are_never_accepted(bridge: Bridge, what: str, op: str) -> None:
    old, new = canary(), canary()

    async def body() -> None:
        async with serving(bridge.phone):
            await honest(bridge, "write", key="K", value=old)
            bridge.relay.store.tamper = reflector(bridge, what)
            fields: dict[str, Any] = {"key": "K"} | ({"value": new} if op == "write" else {})
            answer, error = await settle(bridge.request(op, **fields))
            assert is_typed(error), f"untyped {type(error).__name__}"
            await asyncio.sleep(0.1)
            value = bridge.phone.values().get("K")
            if op == "read":
                assert value == old, "a read changed the store"
                if answer is not None:
                    assert answer.get("value") == old, "a reflected message gave a wrong value"
            else:
                assert value in (old, new), "a value the host never sent was stored"
                if answer is not None:
                    assert value == new, "a write reported done was not stored"
            read = await honest(bridge, "read", key="K")
            assert read.get("value") == value, "the device answers wrongly after the attack"

    run(body())


# --- reordering: two sessions of one pairing (two kernels) ------------------------------------


def test_reordered_sessions_of_two_kernels_both_complete(bridge: Bridge) -> None:
    a, b = canary(), canary()

    async def body() -> None:
        async with serving(bridge.phone):
            h2d = bridge.h2d_box
            held: list[Posted] = []

            def tamper(posted: Posted) -> list[tuple[str, bytes]]:
                if posted.box == h2d and posted.kind == protocol.KIND_OPEN and not held:
                    held.append(posted)  # hold the first open back ...
                    return []
                if posted.box == h2d and posted.kind == protocol.KIND_OPEN:
                    # ... and deliver it after the second one
                    return [(posted.box, posted.data), (held[0].box, held[0].data)]
                return [(posted.box, posted.data)]

            bridge.relay.store.tamper = tamper
            first = asyncio.create_task(bridge.request("write", key="A", value=a, timeout=10))
            await asyncio.sleep(0.2)
            second = asyncio.create_task(bridge.request("write", key="B", value=b, timeout=10))
            answers = await asyncio.gather(first, second)
            assert all(answer.get("ok") is True for answer in answers), "a session failed"
            values = bridge.phone.values()
            assert values.get("A") == a, "A is wrong"
            assert values.get("B") == b, "B is wrong"

    run(body())


# --- messages moved to another pairing's mailbox ----------------------------------------------


class RecordingApprover:
    """Approves everything; remembers which host asked for what."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, str | None]] = []

    async def approve(self, host: str, op: str, namespace: str, key: str | None) -> Approval:
        self.asked.append((host, op, key))
        return Approval(True)


@pytest.mark.parametrize("moved", ["open", "request", "both"])
def test_a_message_moved_to_another_pairings_mailbox_is_not_taken_for_that_host(
    harness: Harness, moved: str
) -> None:
    value = canary()

    async def body() -> None:
        approver = RecordingApprover()
        phone = harness.phone(approver=approver)
        first = await harness.pair(phone)
        assert isinstance(first.host, DeviceRecord), "pairing failed"
        other = await harness.second_host(phone, "shared box")
        bridge = Bridge(harness, phone, first.host)
        other_h2d = mailbox_id(unb64u(other.record.h2d, 32))
        async with serving(phone):
            h2d = bridge.h2d_box
            kinds = {"open": {protocol.KIND_OPEN}, "request": {protocol.KIND_DATA}}
            kinds["both"] = kinds["open"] | kinds["request"]

            def move(posted: Posted) -> list[tuple[str, bytes]]:
                if posted.box == h2d and posted.kind in kinds[moved]:
                    return [(other_h2d, posted.data)]
                return [(posted.box, posted.data)]

            harness.relay.store.tamper = move
            answer, error = await settle(bridge.request("write", key="K", value=value))
            assert is_typed(error), f"untyped {type(error).__name__}"
            await asyncio.sleep(0.1)
            assert all(host == "lab host" for host, _, _ in approver.asked), (
                "a request was shown as coming from another host"
            )
            stored = phone.values().get("K")
            assert stored in (None, value), "a value the host never sent was stored"
            if answer is not None:
                assert stored == value, "a write reported done was not stored"
            for client in (bridge.client(), other):
                harness.relay.store.tamper = None
                read = await client.request(protocol.new_request("list"), 10)
                assert read.get("ok") is True, "a pairing stopped working"

    run(body())


# --- forged notices ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "notice", ["unknown-host", "other-conversation", "malformed", "not-json", "other-error"]
)
def test_a_forged_notice_never_removes_the_pairing(bridge: Bridge, notice: str) -> None:
    value = canary()

    async def body() -> None:
        async with serving(bridge.phone):
            await honest(bridge, "write", key="K", value=value)
            h2d = bridge.h2d_box

            def tamper(posted: Posted) -> list[tuple[str, bytes]]:
                keep = [(posted.box, posted.data)]
                if posted.box != h2d or posted.kind != protocol.KIND_OPEN:
                    return keep
                conversation = posted.conversation or bytes(16)
                body = {
                    "unknown-host": b'{"error":"unknown-host"}',
                    "other-conversation": b'{"error":"unknown-host"}',
                    "malformed": b'{"error":',
                    "not-json": b"\xff\xfe",
                    "other-error": b'{"error":["unknown-host"]}',
                }[notice]
                if notice == "other-conversation":
                    conversation = secrets.token_bytes(16)
                forged = protocol.MAGIC + bytes([protocol.KIND_NOTICE]) + conversation + body
                return [(bridge.d2h_box, forged), *keep]

            bridge.relay.store.tamper = tamper
            try:
                answer = await bridge.request("read", key="K", timeout=5)
            except DeviceDeniedError:
                assert notice == "unknown-host", "only an unknown-host notice is a refusal"
            else:
                assert notice != "unknown-host", "the unknown-host hint was ignored"
                assert answer.get("value") == value, "a wrong value"
            assert [r.name for r in bridge.harness.records()] == [bridge.record.name], (
                "a forged notice removed the host's pairing"
            )
            assert len(bridge.phone.state.pairings()) == 1, "the device lost its pairing"
            read = await honest(bridge, "read", key="K")
            assert read.get("value") == value, "wrong value after the forged notice"

    run(body())


# --- low-order public keys in sessions --------------------------------------------------------


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=LOW_ORDER_IDS)
@pytest.mark.parametrize("target", ["open", "accept"])
def test_low_order_ephemerals_in_a_session_are_refused(
    bridge: Bridge, target: str, point: bytes
) -> None:
    value = canary()

    async def body() -> None:
        async with serving(bridge.phone):
            await honest(bridge, "write", key="K", value=value)
            select = session_targets(bridge)[target]
            bridge.relay.store.tamper = once(
                select, lambda p: [(p.box, p.data[:21] + point + p.data[53:])]
            )
            with pytest.raises(SecureStorageError):
                await bridge.request("write", key="K", value=canary())
            await asyncio.sleep(0.1)
            assert bridge.phone.values().get("K") == value, "a write went through a bad key"
            read = await honest(bridge, "read", key="K")
            assert read.get("value") == value, "wrong value after the attack"

    run(body())


# --- the device's message handling, fuzzed ----------------------------------------------------


class RecordingConnection:
    """Stands in for the device's relay connection: records what it posts."""

    def __init__(self) -> None:
        self.posts: list[tuple[bytes, bytes]] = []
        self.closed = False

    async def post(self, cap: bytes, data: bytes, ttl: int = 3600) -> str:
        self.posts.append((cap, data))
        return "1-0"


@dataclass
class HostSession:
    conversation: bytes
    reply: bytes
    transport: Any


def open_session(bridge: Bridge, loop: asyncio.AbstractEventLoop) -> tuple[HostSession, bytes]:
    """The host's side of a session, opened directly on the device's handler."""
    record = bridge.record
    handshake = HandshakeState.initialize(
        protocol.SESSION_PROTOCOL,
        initiator=True,
        prologue=protocol.SESSION_PROLOGUE + unb64u(record.pairing, 16),
        s=bridge.harness.keystore.host_key(),
        rs=unb64u(record.device_key, 32),
    )
    reply, conversation = secrets.token_bytes(32), secrets.token_bytes(16)
    opening = handshake.write_message(protocol.pad({"t": "open", "v": 1, "reply": b64u(reply)}))
    connection = RecordingConnection()
    pairing = bridge.phone.state.pairings()[0]
    loop.run_until_complete(
        bridge.phone.device._handle(
            connection,  # type: ignore[arg-type]
            pairing,
            protocol.encode_envelope(protocol.KIND_OPEN, conversation, opening),
        )
    )
    ((cap, accept),) = connection.posts
    assert cap == reply, "the accept went elsewhere"
    handshake.read_message(protocol.decode_envelope(accept).body)
    session = HostSession(conversation, reply, handshake.transport())
    request = protocol.new_request("write", key="FUZZ", value=FUZZ_VALUE)
    data = protocol.encode_envelope(
        protocol.KIND_DATA,
        conversation,
        session.transport.encrypt(protocol.pad(request.to_message())),
    )
    return session, data


FUZZ_VALUE = "fuzz-value-never-stored"


def envelope_strategy() -> st.SearchStrategy[tuple[str, Any]]:
    raw = st.binary(max_size=600).map(lambda b: ("raw", b))
    shaped = st.tuples(
        st.sampled_from([protocol.MAGIC, b"JSB2", b"JSB0", b"\x00\x00\x00\x00"]),
        st.integers(0, 255),
        st.sampled_from(["live", "random"]),
        st.binary(max_size=700),
    ).map(lambda t: ("shaped", t))
    mutated = st.tuples(
        st.lists(st.integers(0, 10_000), min_size=1, max_size=4),
        st.integers(1, 255),
        st.one_of(st.none(), st.integers(0, 400)),
        st.booleans(),
    ).map(lambda t: ("mutated", t))
    opened = st.tuples(st.binary(min_size=32, max_size=32), st.binary(max_size=400)).map(
        lambda t: ("open", t)
    )
    return st.one_of(raw, shaped, mutated, opened)


def build_fuzz(case: tuple[str, Any], session: HostSession, genuine: bytes) -> bytes:
    kind, spec = case
    if kind == "raw":
        return spec
    if kind == "shaped":
        magic, envelope_kind, conversation, body = spec
        conv = session.conversation if conversation == "live" else secrets.token_bytes(16)
        return magic + bytes([envelope_kind]) + conv + body
    if kind == "mutated":
        offsets, mask, cut, as_open = spec
        data = bytearray(genuine)
        for offset in {offset % len(data) for offset in offsets}:
            data[offset] ^= mask
        if as_open:
            data[4] = protocol.KIND_OPEN
        return bytes(data if cut is None else data[:cut])
    ephemeral, body = spec
    return protocol.MAGIC + bytes([protocol.KIND_OPEN]) + secrets.token_bytes(16) + ephemeral + body


def test_fuzzed_envelopes_never_crash_the_device_nor_change_its_store(bridge: Bridge) -> None:
    loop = asyncio.new_event_loop()
    device = bridge.phone.device
    before = bridge.phone.snapshot()
    pairing = bridge.phone.state.pairings()[0]
    answered = dict(device._answered)
    examples = [0]

    @settings(
        max_examples=300,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(case=envelope_strategy())
    def check(case: tuple[str, Any]) -> None:
        examples[0] += 1
        session, genuine = open_session(bridge, loop)
        data = build_fuzz(case, session, genuine)
        connection = RecordingConnection()
        loop.run_until_complete(device._handle(connection, pairing, data))  # type: ignore[arg-type]
        for cap, posted in connection.posts:
            envelope = protocol.decode_envelope(posted)
            assert envelope.kind in (protocol.KIND_NOTICE, protocol.KIND_ACCEPT), "an answer"
            if envelope.kind == protocol.KIND_NOTICE:
                assert cap == pairing.d2h, "a notice went elsewhere"
        assert device._answered == answered, "a fuzzed message was answered as a request"
        device._sessions.pop(session.conversation, None)
        for conversation in list(device._sessions):  # sessions a fuzzed open made
            device._sessions.pop(conversation)

    try:
        check()
    finally:
        loop.close()
    assert examples[0] >= 100, "hypothesis ran too few examples"
    assert bridge.phone.snapshot() == before, "fuzzing changed the device's store"


def test_a_flood_of_garbage_through_the_relay_leaves_the_device_serving(bridge: Bridge) -> None:
    value = canary()

    async def body() -> None:
        async with serving(bridge.phone) as task:
            await honest(bridge, "write", key="K", value=value)
            before = bridge.phone.snapshot()
            for index in range(300):
                kind = [protocol.KIND_OPEN, protocol.KIND_DATA, index % 256][index % 3]
                data = (
                    protocol.MAGIC
                    + bytes([kind])
                    + secrets.token_bytes(16)
                    + secrets.token_bytes(index % 400)
                )
                await bridge.relay.inject(bridge.h2d_box, data if index % 7 else data[: index % 21])
            await asyncio.sleep(1.0)
            assert not task.done(), "the serve loop ended"
            read = await honest(bridge, "read", key="K")
            assert read.get("value") == value, "wrong value after the flood"
            assert bridge.phone.snapshot() == before, "the flood changed the store"

    run(body())


# --- pairing: the offer on its way to the device ----------------------------------------------


def offer_with(**changes: Any) -> Callable[[PairingAttempt], str]:
    """The host's offer with fields changed (what a person scanning a swapped QR code gets)."""

    def make(attempt: PairingAttempt) -> str:
        fields = json.loads(unb64u(attempt.offer_string))
        for name, value in changes.items():
            fields[name] = value(fields) if callable(value) else value
        return protocol.OFFER_URI_PREFIX + b64u(protocol.compact_json(fields))

    return make


def assert_nothing_paired(harness: Harness, *phones: Phone) -> None:
    assert harness.records() == [], "the host stored a pairing"
    for phone in phones:
        assert phone.state.pairings() == [], "a device stored a pairing"


OFFER_CHANGES: dict[str, dict[str, Any]] = {
    "other-host-key": {"k": lambda f: b64u(public_key_bytes(generate_keypair()))},
    "version-2": {"v": 2},
    "version-0": {"v": 0},
    "label": {"l": "mallory's laptop"},
    "offer-id": {"i": lambda f: b64u(secrets.token_bytes(16))},
    "later-expiry": {"x": lambda f: f["x"] + 1},
    "relay-query": {"r": lambda f: f["r"] + "?via=mallory"},
    "extra-field": {"z": 1},
}


@pytest.mark.parametrize("change", sorted(OFFER_CHANGES))
def test_a_substituted_offer_never_pairs(harness: Harness, change: str) -> None:
    async def body() -> None:
        phone = harness.phone()
        outcome = await harness.pair(
            phone, offer_for=offer_with(**OFFER_CHANGES[change]), host_timeout=1, device_timeout=1
        )
        assert isinstance(outcome.host, PairingError), "the host accepted a substituted offer"
        (device,) = outcome.devices
        assert isinstance(device, SecureStorageError | protocol.ProtocolError), (
            f"the device ended with {type(device).__name__}"
        )
        if change.startswith("version"):
            assert isinstance(device, protocol.ProtocolError), "another version was not refused"
            assert harness.relay.store.posts == [], "the device used an offer it cannot read"
        assert_nothing_paired(harness, phone)

    run(body())


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=LOW_ORDER_IDS)
def test_an_offer_with_a_low_order_host_key_never_pairs(harness: Harness, point: bytes) -> None:
    async def body() -> None:
        phone = harness.phone()
        outcome = await harness.pair(
            phone, offer_for=offer_with(k=b64u(point)), host_timeout=1, device_timeout=1
        )
        (device,) = outcome.devices
        assert isinstance(device, SecureStorageError | protocol.ProtocolError), (
            f"the device ended with {type(device).__name__}"
        )
        assert isinstance(outcome.host, PairingError), "the host paired"
        assert_nothing_paired(harness, phone)

    run(body())


def test_a_wrong_pairing_secret_never_pairs_even_when_the_relay_routes_it(harness: Harness) -> None:
    async def body() -> None:
        phone = harness.phone()
        real: dict[str, str] = {}

        async def learn(attempt: PairingAttempt) -> None:
            pair_h2d, pair_d2h = attempt.offer.mailbox_caps()
            real.update(h2d=mailbox_id(pair_h2d), d2h=mailbox_id(pair_d2h))

        def route(posted: Posted) -> list[tuple[str, bytes]]:
            if posted.kind == protocol.KIND_PAIR_INIT:  # into the host's real mailbox
                return [(real["d2h"], posted.data), (posted.box, posted.data)]
            return [(posted.box, posted.data)]

        harness.relay.store.tamper = route
        wrong = offer_with(s=b64u(secrets.token_bytes(32)))
        outcome = await harness.pair(
            phone, offer_for=wrong, before=learn, host_timeout=2, device_timeout=2
        )
        assert isinstance(outcome.host, PairingError), "the host paired with a wrong secret"
        assert isinstance(outcome.devices[0], PairingError), "the device did not give up"
        assert_nothing_paired(harness, phone)

    run(body())


def test_an_expired_offer_is_refused_by_both_sides(harness: Harness) -> None:
    async def body() -> None:
        phone = harness.phone()
        outcome = await harness.pair(phone, lifetime=-120, host_timeout=2, device_timeout=2)
        assert isinstance(outcome.host, PairingError), "the host listened on an expired offer"
        assert isinstance(outcome.devices[0], PairingError), "the device used an expired offer"
        assert harness.relay.store.posts == [], "the device posted for an expired offer"
        assert_nothing_paired(harness, phone)

    run(body())


def test_a_pair_init_after_the_offer_expired_is_refused(harness: Harness) -> None:
    """The device's clock is behind: it answers an offer the host already expired."""

    async def body() -> None:
        phone = harness.phone()
        attempt = PairingAttempt(
            harness.relay.url, "lab host", keystore=harness.keystore, lifetime=1
        )
        waiting = asyncio.create_task(attempt.wait_for_device(10))
        await asyncio.sleep(1.5)
        pairing = asyncio.create_task(phone.device.pair(attempt.offer.uri, timeout=2))
        with pytest.raises(PairingError):
            await waiting
        with pytest.raises(PairingError):
            await pairing
        posted = [p.kind for p in harness.relay.store.posts]
        assert protocol.KIND_PAIR_INIT in posted, "the device did not try"
        assert protocol.KIND_PAIR_RESP not in posted, "the host answered after expiry"
        assert_nothing_paired(harness, phone)

    run(body())


def test_a_reused_offer_is_refused(harness: Harness) -> None:
    async def body() -> None:
        first, second = harness.phone("first"), harness.phone("second")
        outcome = await harness.pair(first)
        assert isinstance(outcome.host, DeviceRecord), "the honest pairing failed"
        assert isinstance(outcome.devices[0], Pairing), "the honest pairing failed"
        with pytest.raises(PairingError):
            await second.device.pair(outcome.attempt.offer.uri, timeout=1.5)
        late = [p for p in harness.relay.store.posts if p.kind == protocol.KIND_PAIR_INIT][-1]
        assert outcome.attempt._accept(late.data) is None, "a consumed offer accepted again"
        assert [r.device_key for r in harness.records()] == [b64u(first.public_key())]
        assert second.state.pairings() == [], "the second device paired"

    run(body())


@pytest.mark.parametrize("winner", ["owner", "attacker"])
def test_a_second_phone_racing_the_first_gets_nothing(harness: Harness, winner: str) -> None:
    async def body() -> None:
        owner, attacker = harness.phone("owner"), harness.phone("attacker")
        order = (owner, attacker) if winner == "owner" else (attacker, owner)
        # Both phones pair with the same offer; the person holds the owner's phone.
        outcome = await harness.pair(*order, host_timeout=3, device_timeout=2, person=owner)
        records = harness.records()
        paired = [phone for phone in (owner, attacker) if phone.state.pairings()]
        assert len(records) <= 1, "the host stored two pairings for one offer"
        assert len(paired) <= 1, "two phones paired with one offer"
        if records:
            (phone,) = paired
            assert records[0].device_key == b64u(phone.public_key()), "keys do not match"
        if winner == "owner":
            assert paired == [owner], "the owner's phone did not pair"
        else:
            assert attacker.state.pairings() == [], "the attacker's phone paired"
            assert records == [], "the host stored the attacker's phone (the person refused)"
        loser = attacker if winner == "owner" else owner
        assert isinstance(outcome.devices[order.index(loser)], PairingError), "the loser paired"
        assert loser.state.pairings() == [], "the loser stored a pairing"

    run(body())


# --- pairing: the relay tampers with the pairing messages -------------------------------------

PAIRING_KINDS = {
    "pair-init": protocol.KIND_PAIR_INIT,
    "pair-resp": protocol.KIND_PAIR_RESP,
    "pair-final": protocol.KIND_PAIR_FINAL,
}


# One mutation of each envelope field and each kind of damage (the session tests run all).
PAIRING_MUTATIONS = [
    "drop",
    "duplicate",
    "flip-magic",
    "flip-kind",
    "flip-conversation-first",
    "flip-body-first",
    "flip-body-middle",
    "flip-tag",
    "truncate-header",
    "truncate-tag",
    "extend",
    "wrong-kind-all",
]


@pytest.mark.parametrize("mutation", PAIRING_MUTATIONS)
@pytest.mark.parametrize("message", sorted(PAIRING_KINDS))
def test_tampered_pairing_messages_never_pair_wrongly(
    harness: Harness, message: str, mutation: str
) -> None:
    async def body() -> None:
        phone = harness.phone()
        kind = PAIRING_KINDS[message]
        tamper = once(lambda p: p.kind == kind, MUTATIONS[mutation])
        harness.relay.store.tamper = tamper
        outcome = await harness.pair(phone, host_timeout=1, device_timeout=1)
        assert tamper.fired, "the attack did not happen"
        for result in (outcome.host, *outcome.devices):
            if isinstance(result, BaseException):
                assert is_typed(result), f"untyped {type(result).__name__}"
        records = harness.records()
        pairings = phone.state.pairings()
        assert len(records) <= 1, "more than one pairing stored"
        if records:
            assert outcome.confirmed, "stored without the person's confirmation"
            assert records[0].device_key == b64u(phone.public_key()), "a wrong device key stored"
        if pairings:
            assert records, "the device paired but the host did not"
            (pairing,) = pairings
            assert pairing.host_key == harness.keystore.host_key().public_key().public_bytes_raw()
            assert b64u(pairing.pairing) == records[0].pairing, "pairing ids differ"
            assert b64u(pairing.h2d) == records[0].h2d, "mailboxes differ"
        if mutation == "duplicate":
            assert records, "a duplicated message stopped the pairing"
            assert pairings, "a duplicated message stopped the pairing"

    run(body())


def test_a_rejection_cannot_be_turned_into_a_confirmation(harness: Harness) -> None:
    """The relay keeps an earlier pairing's ``confirmed`` and plays it instead of ``rejected``."""

    async def body() -> None:
        earlier = harness.phone("earlier")
        outcome = await harness.pair(earlier)
        assert isinstance(outcome.host, DeviceRecord), "the honest pairing failed"
        confirmed = [p for p in harness.relay.store.posts if p.kind == protocol.KIND_PAIR_FINAL][-1]
        harness.keystore.forget(outcome.host.name)
        victim = harness.phone("victim")
        attempt = PairingAttempt(harness.relay.url, "lab host", keystore=harness.keystore)

        def swap(posted: Posted) -> list[tuple[str, bytes]]:
            if posted.kind == protocol.KIND_PAIR_FINAL:
                forged = with_conversation(confirmed.data, posted.conversation or bytes(16))
                return [(posted.box, forged), (posted.box, posted.data)]
            return [(posted.box, posted.data)]

        harness.relay.store.tamper = swap
        task = asyncio.create_task(victim.device.pair(attempt.offer.uri, timeout=3))
        await attempt.wait_for_device(3)
        assert await attempt.finish(False) is None
        with pytest.raises(PairingError):
            await task
        assert victim.state.pairings() == [], "a rejected pairing was stored"
        assert harness.records() == [], "the host stored a rejected pairing"

    run(body())


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=LOW_ORDER_IDS)
@pytest.mark.parametrize("where", ["ephemeral", "static"])
def test_a_pair_init_with_a_low_order_key_is_refused(
    harness: Harness, where: str, point: bytes
) -> None:
    async def body() -> None:
        attempt = PairingAttempt(harness.relay.url, "lab host", keystore=harness.keystore)
        handshake = HandshakeState.initialize(
            protocol.PAIRING_PROTOCOL,
            initiator=True,
            prologue=attempt.offer.prologue(attempt.offer_string),
            s=generate_keypair(),
            rs=attempt.offer.host_key,
            psks=[attempt.offer.secret],
        )
        if where == "static":
            handshake._static_public = lambda: point  # type: ignore[method-assign]
        hello = protocol.pad({"t": "pair", "device": "mallory", "software": "x"})
        message = handshake.write_message(hello)
        if where == "ephemeral":
            message = point + message[32:]
        forged = protocol.encode_envelope(protocol.KIND_PAIR_INIT, secrets.token_bytes(16), message)
        assert attempt._accept(forged) is None, "a low-order key was accepted"
        assert not attempt.consumed, "a refused pair-init consumed the offer"
        # Through the relay, ahead of the real phone: the real phone still pairs.
        _, pair_d2h = attempt.offer.mailbox_caps()
        await harness.relay.inject(mailbox_id(pair_d2h), forged)
        phone = harness.phone()
        task = asyncio.create_task(phone.device.pair(attempt.offer.uri, timeout=5))
        pending = await attempt.wait_for_device(5)
        assert pending.device_name == "phone", "the forged pair-init was taken"
        record = await attempt.finish(True)
        await task
        assert record is not None
        assert record.device_key == b64u(phone.public_key()), "the wrong device paired"

    run(body())


@pytest.mark.parametrize("point", LOW_ORDER_POINTS[:4], ids=LOW_ORDER_IDS[:4])
def test_a_pair_resp_with_a_low_order_ephemeral_is_refused(harness: Harness, point: bytes) -> None:
    async def body() -> None:
        phone = harness.phone()
        harness.relay.store.tamper = once(
            lambda p: p.kind == protocol.KIND_PAIR_RESP,
            lambda p: [(p.box, p.data[:21] + point + p.data[53:])],
        )
        outcome = await harness.pair(phone, host_timeout=2, device_timeout=2)
        (device,) = outcome.devices
        assert isinstance(device, SecureStorageError), f"the device ended with {type(device)}"
        assert not outcome.confirmed, "the person saw matching codes"
        assert_nothing_paired(harness, phone)

    run(body())


def test_a_forged_pair_resp_ahead_of_the_real_one_is_dropped(harness: Harness) -> None:
    """Anyone who saw the QR code can read the conversation id in pair_d2h and post to
    pair_h2d: a forged pair-resp must be dropped (§6), not abort the pairing."""

    async def body() -> None:
        phone = harness.phone()

        def forge(posted: Posted) -> list[tuple[str, bytes]]:
            if posted.kind == protocol.KIND_PAIR_RESP:
                fake = posted.data[:21] + secrets.token_bytes(len(posted.data) - 21)
                return [(posted.box, fake), (posted.box, posted.data)]
            return [(posted.box, posted.data)]

        harness.relay.store.tamper = forge
        outcome = await harness.pair(phone, host_timeout=3, device_timeout=3)
        device = outcome.devices[0]
        assert isinstance(device, Pairing), f"pairing aborted with {type(device).__name__}"
        assert isinstance(outcome.host, DeviceRecord), "the host did not pair"

    run(body())


@pytest.mark.parametrize("refused", ["pair-resp", "pair-final"])
def test_a_relay_refusing_the_hosts_pairing_posts_gives_a_typed_error(
    harness: Harness, refused: str
) -> None:
    from jupyter_secure_storage.bridge.relay import Post

    async def body() -> None:
        phone = harness.phone()
        posts = {"count": 0}

        def refuse(operation: Any) -> str | None:
            if isinstance(operation, Post) and len(operation.data) > 4:
                kind = operation.data[4]
                if kind == PAIRING_KINDS[refused]:
                    posts["count"] += 1
                    return "unavailable"
            return None

        harness.relay.operation_hook = refuse
        outcome = await harness.pair(phone, host_timeout=2, device_timeout=2)
        assert posts["count"], "the attack did not happen"
        assert isinstance(outcome.host, SecureStorageError), (
            f"the host ended with {type(outcome.host).__name__}"
        )

    run(body())


# --- the relay stalls, refuses or hangs up; caches and retries --------------------------------


def test_a_silent_relay_fails_the_request_within_its_timeout(bridge: Bridge) -> None:
    """A relay that accepts the WebSocket and answers no operation (was: ~10 s per call)."""

    async def body() -> None:
        bridge.relay.operation_hook = lambda operation: "silent"
        started = time.monotonic()
        with pytest.raises(SecureStorageError):
            await bridge.request("read", key="K", timeout=TIMEOUT)
        elapsed = time.monotonic() - started
        assert elapsed <= TIMEOUT + SLACK, f"a {TIMEOUT} s request took {elapsed:.1f} s"

    run(body(), timeout=60)


def test_a_silent_relay_gives_the_device_backend_a_typed_error(bridge: Bridge) -> None:
    """Through SecureStorage(backend="device") (was: a bare TimeoutError from BridgeLoop)."""
    bridge.relay.operation_hook = lambda operation: "silent"
    config = fast_kdf_config()
    config.DeviceBackend.timeout = 1.0
    store = SecureStorage(backend="device", config=config)
    with pytest.raises(Exception) as raised:  # noqa: PT011 -- the type is the question
        store.read("K")
    assert is_typed(raised.value), f"untyped {type(raised.value).__name__} from the backend"


def test_a_relay_refusing_the_devices_pair_init_gives_a_typed_error(harness: Harness) -> None:
    """(was: relay_client.RelayError out of ReferenceDevice.pair)"""

    async def body() -> None:
        phone = harness.phone()
        harness.relay.operation_hook = lambda operation: (
            "unavailable" if type(operation).__name__ == "Post" else None
        )
        outcome = await harness.pair(phone, host_timeout=1, device_timeout=1)
        (device,) = outcome.devices
        assert isinstance(device, SecureStorageError), f"the device ended with {type(device)}"

    run(body())


def test_a_connection_dropped_before_the_answer_is_retried_with_the_same_id(
    bridge: Bridge,
) -> None:
    """§9: the relay loses the answer and hangs up; the host retries over a new session and
    the device answers from its cache (was: DeviceOfflineError after the whole timeout)."""
    value = canary()

    async def body() -> None:
        async with serving(bridge.phone):
            h2d = bridge.h2d_box

            hung_up: list[str] = []

            def hang_up(posted: Posted) -> list[tuple[str, bytes]]:
                if posted.box != h2d and posted.kind == protocol.KIND_DATA and not hung_up:
                    hung_up.append(posted.box)
                    loop = asyncio.get_running_loop()
                    loop.call_soon(bridge.relay.close_subscribers, posted.box)
                    return []  # the answer is lost with the connection
                return [(posted.box, posted.data)]

            bridge.relay.store.tamper = hang_up
            started = time.monotonic()
            answer = await bridge.request("write", key="K", value=value, timeout=5)
            assert answer.get("ok") is True
            assert time.monotonic() - started < 5, "the host waited for the whole timeout"
            assert bridge.phone.values().get("K") == value

    run(body())


class DenyingApprover:
    """Approves everything for one host label, nothing for the others."""

    def __init__(self, trusted: str) -> None:
        self.trusted = trusted
        self.asked: list[tuple[str, str]] = []

    async def approve(self, host: str, op: str, namespace: str, key: str | None) -> Approval:
        self.asked.append((host, op))
        return Approval(host == self.trusted)


def test_the_response_cache_is_per_pairing(harness: Harness) -> None:
    """(was: keyed by request id only -- another pairing got a value approved for this one)"""
    value = canary()

    async def body() -> None:
        approver = DenyingApprover("lab host")
        phone = harness.phone(approver=approver)
        first = await harness.pair(phone)
        assert isinstance(first.host, DeviceRecord)
        # A second computer pairs with the same phone; its owner trusts it less.
        untrusted = await harness.second_host(phone, "shared box")
        async with serving(phone):
            trusted = DeviceClient(first.host, harness.keystore.host_key())
            await trusted.request(protocol.new_request("write", key="K", value=value), 10)
            read = protocol.new_request("read", key="K")
            assert (await trusted.request(read, 10)).get("value") == value
            stolen = await untrusted.request(read, 10)  # the same id, from the other pairing
            assert stolen.get("ok") is not True, "another pairing got the cached value"
            assert stolen.get("value") != value, "another pairing got the cached value"

    run(body())


def test_a_request_held_back_past_its_expiry_is_refused(bridge: Bridge) -> None:
    """A relay may hold a request back and deliver it later; the device refuses it once it
    expired (this bounds how long after the host gave up a write can still happen)."""
    value = canary()

    async def body() -> None:
        async with serving(bridge.phone):
            await honest(bridge, "write", key="K", value=value)
            before = bridge.phone.snapshot()
            # As if held for 400 s: issued then, it expired 340 s ago.
            late = protocol.new_request(
                "write", key="K", value=canary(), lifetime=60, now=int(time.time()) - 400
            )
            answer = await bridge.client().request(late, 10)
            assert answer.get("ok") is False, "an expired request ran"
            assert answer.get("error") == "expired", "an expired request was not called so"
            assert bridge.phone.snapshot() == before, "an expired request changed the store"

    run(body())


def test_a_reused_request_id_for_another_request_is_refused(bridge: Bridge) -> None:
    """An id the device answered, reused for another op or value, is not that request."""
    value, other = canary(), canary()

    async def body() -> None:
        async with serving(bridge.phone):
            client = bridge.client()
            await honest(bridge, "write", key="K", value=value)
            read = protocol.new_request("read", key="K")
            assert (await client.request(read, 10)).get("value") == value
            before = bridge.phone.snapshot()
            for op, fields in (("write", {"key": "K", "value": other}), ("delete", {"key": "K"})):
                reused = protocol.new_request(op, request_id=read.id, **fields)
                answer = await client.request(reused, 10)
                assert answer.get("ok") is not True, f"a reused id ran a {op}"
                assert "value" not in answer, "a reused id returned the cached value"
            assert bridge.phone.snapshot() == before, "a reused id changed the store"

    run(body())


@pytest.mark.parametrize("side", ["host", "device"])
def test_a_relay_hanging_up_during_pairing_gives_a_typed_error(harness: Harness, side: str) -> None:
    """The relay closes the host's (or the device's) connection while it waits to pair."""

    async def body() -> None:
        phone = harness.phone()
        attempt = PairingAttempt(harness.relay.url, "lab host", keystore=harness.keystore)
        pair_h2d, pair_d2h = attempt.offer.mailbox_caps()
        waiting = asyncio.create_task(attempt.wait_for_device(3))
        if side == "host":
            await asyncio.sleep(0.3)  # subscribed by now
            await harness.relay.hang_up(mailbox_id(pair_d2h))
            _, error = await settle(waiting)
            assert isinstance(error, SecureStorageError), f"the host ended with {type(error)}"
        else:

            def drop_init(posted: Posted) -> list[tuple[str, bytes]]:
                return [] if posted.kind == protocol.KIND_PAIR_INIT else [(posted.box, posted.data)]

            harness.relay.store.tamper = drop_init
            pairing = asyncio.create_task(phone.device.pair(attempt.offer.uri, timeout=3))
            while harness.pair_inits() == 0:
                await asyncio.sleep(0.01)
            await harness.relay.hang_up(mailbox_id(pair_h2d))
            _, error = await settle(pairing)
            assert isinstance(error, SecureStorageError), f"the device ended with {type(error)}"
            waiting.cancel()
        assert_nothing_paired(harness, phone)

    run(body())


# --- attacks that currently succeed (documented bugs) -----------------------------------------


class SlowApprover:
    """The owner takes a moment to answer; approves; remembers each question."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str | None]] = []

    async def approve(self, host: str, op: str, namespace: str, key: str | None) -> Approval:
        self.asked.append((op, key))
        await asyncio.sleep(0.5)
        return Approval(True)


def test_a_retry_while_the_owner_decides_does_not_run_twice(bridge: Bridge) -> None:
    """The relay delivers the request but tells the host its post failed: the host retries."""
    from jupyter_secure_storage.bridge.relay import Post

    async def body() -> None:
        approver = SlowApprover()
        bridge.phone.device.approver = approver
        async with serving(bridge.phone):
            await honest(bridge, "write", key="K", value=canary())
            approver.asked.clear()
            lied: list[int] = []

            def lie(operation: Any) -> str | None:
                data = operation.data if isinstance(operation, Post) else b""
                if operation_is_request(data) and operation.box == bridge.h2d_box and not lied:
                    lied.append(1)
                    return "lie"
                return None

            bridge.relay.operation_hook = lie
            answer = await bridge.request("delete", key="K", timeout=10)
            await asyncio.sleep(1.0)  # both questions answered
            assert lied, "the attack did not happen"
            problems = []
            if approver.asked != [("delete", "K")]:
                problems.append(f"the owner was asked {len(approver.asked)} times")
            if answer.get("existed") is not True:
                problems.append("the host was told the key it deleted did not exist")
            assert not problems, "; ".join(problems)

    run(body())


def operation_is_request(data: bytes) -> bool:
    return len(data) > 4 and data[:4] == protocol.MAGIC and data[4] == protocol.KIND_DATA


# --- nothing secret outside the vaults --------------------------------------------------------


def forms(secret: bytes | str) -> list[bytes]:
    raw = secret.encode("utf-8") if isinstance(secret, str) else secret
    return [
        raw,
        b64u(raw).encode("ascii"),
        base64.b64encode(raw),
        raw.hex().encode("ascii"),
        raw.hex().upper().encode("ascii"),
    ]


def test_no_value_psk_or_private_key_outside_the_vaults(
    harness: Harness,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    values = [canary() for _ in range(3)]
    secrets_found: dict[str, list[bytes]] = {}
    errors: list[str] = []

    async def body() -> None:
        phone = harness.phone()
        outcome = await harness.pair(phone)
        assert isinstance(outcome.host, DeviceRecord), "pairing failed"
        record = outcome.host
        bridge = Bridge(harness, phone, record)
        secrets_found["offer secret (PSK)"] = forms(outcome.attempt.offer.secret)
        secrets_found["offer string"] = [outcome.attempt.offer_string.encode("ascii")]
        async with serving(phone):
            for index, value in enumerate(values):
                await honest(bridge, "write", key=f"K{index}", value=value)
                read = await honest(bridge, "read", key=f"K{index}")
                assert read.get("value") == value, "wrong value"
            await honest(bridge, "list")
            await honest(bridge, "delete", key="K0")
            # Some attacks too: their errors and logs must not show anything either.
            for target, mutation in (
                ("response", "flip-body-middle"),
                ("open", "flip-tag"),
                ("request", "drop"),
                ("accept", "truncate-tag"),
            ):
                bridge.relay.store.tamper = once(
                    session_targets(bridge)[target], MUTATIONS[mutation]
                )
                _, error = await settle(bridge.request("read", key="K1"))
                assert isinstance(error, SecureStorageError), "the attack did not fail typed"
                errors.append(f"{type(error).__name__}: {error} {error.__cause__!r}")
        host_key = harness.keystore.store.read(HOST_KEY)
        assert host_key is not None
        secrets_found["host private key"] = forms(unb64u(host_key.reveal(), 32))
        device_key = phone.state.vault.get(INTERNAL, "device-key")
        assert device_key is not None
        secrets_found["device private key"] = forms(unb64u(device_key, 32))
        for index, value in enumerate(values):
            secrets_found[f"value K{index}"] = forms(value)

    run(body())
    out, err = capfd.readouterr()
    said = "\n".join(s for phone in harness.phones for s in phone.said)
    places: dict[str, bytes] = {
        "logs": "\n".join(
            f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records
        ).encode("utf-8", "replace"),
        "stdout": out.encode("utf-8", "replace"),
        "stderr": err.encode("utf-8", "replace"),
        "device output": said.encode("utf-8"),
        "error messages": "\n".join(errors).encode("utf-8"),
    }
    store = harness.relay.store
    places["relay storage"] = b"\n".join(store.held())
    places["relay posts"] = b"\n".join(p.data for p in store.posts)
    for path in sorted(tmp_path.rglob("*")):
        if path.is_file():
            places[f"file {path.relative_to(tmp_path)}"] = path.read_bytes()
    assert any(name.endswith(".jssv") for name in places), "no vault files to check"
    leaks = [
        (where, what)
        for where, content in places.items()
        for what, encodings in secrets_found.items()
        if any(encoding in content for encoding in encodings)
    ]
    assert not leaks, f"secrets found outside the vaults: {leaks}"
