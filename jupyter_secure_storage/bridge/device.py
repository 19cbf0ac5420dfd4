"""The reference device: the phone side of docs/bridge-protocol.md, in Python.

It is the executable form of the spec (a phone app implements the same thing) and
what tests and notebooks pair with. It keeps everything -- its static key, its
pairings, per-key policies and the values -- in a vault of its own under ``--state
DIR`` (passphrase: ``JUPYTER_SECURE_STORAGE_DEVICE_PASSPHRASE`` or a prompt). Before
releasing a value it asks on its terminal: approve once, approve this key for N
minutes, or reject -- or approves everything with ``--auto-approve`` (tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from traitlets.config import Config

from .._version import __version__
from ..backends.vault import VaultBackend
from ..errors import PairingError, RelayUnreachableError, SecureStorageError
from . import protocol
from .noise import HandshakeState, NoiseError, generate_keypair
from .protocol import ProtocolError, Request, b64u, unb64u
from .relay_client import Delivery, RelayConnection, RelayError

ENV_DEVICE_PASSPHRASE = "JUPYTER_SECURE_STORAGE_DEVICE_PASSPHRASE"  # noqa: S105 -- a name
INTERNAL = "jss-device-internal"  # the device's own namespace in its vault
POLICIES = ("ask", "session", "never")
SESSION_IDLE = 600.0


# --- approvals ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Approval:
    granted: bool
    minutes: int = 0  # > 0: do not ask again for this key for that long


class Approver(Protocol):
    async def approve(self, host: str, op: str, namespace: str, key: str | None) -> Approval: ...


class AutoApprover:
    """Approves everything (tests, demos)."""

    async def approve(self, host: str, op: str, namespace: str, key: str | None) -> Approval:
        return Approval(True)


class TerminalApprover:
    """Asks on the device's terminal: [o]nce, [m]inutes N, [r]eject."""

    def __init__(self, minutes: int = 15) -> None:
        self.minutes = minutes
        self._lock = asyncio.Lock()

    async def approve(self, host: str, op: str, namespace: str, key: str | None) -> Approval:
        what = f"{op.upper()} {namespace}/{key}" if key else f"{op.upper()} {namespace}"
        question = (
            f"\n{host!r} asks to {what}.\n"
            f"  [o] approve once   [m] approve this key for {self.minutes} minutes   "
            "[r] reject\n> "
        )
        async with self._lock:
            answer = await asyncio.get_running_loop().run_in_executor(None, _ask_line, question)
        answer = answer.strip().lower()
        if answer in ("o", "once", "y", "yes"):
            return Approval(True)
        if answer in ("m", "minutes"):
            return Approval(True, self.minutes)
        return Approval(False)


def _ask_line(question: str) -> str:
    sys.stdout.write(question)
    sys.stdout.flush()
    return sys.stdin.readline()


# --- what the device keeps ---------------------------------------------------------------


@dataclass
class Pairing:
    pairing: bytes
    host_key: bytes
    h2d: bytes
    d2h: bytes
    relay: str
    host_label: str

    def to_json(self) -> str:
        return json.dumps(
            {
                "pairing": b64u(self.pairing),
                "host_key": b64u(self.host_key),
                "h2d": b64u(self.h2d),
                "d2h": b64u(self.d2h),
                "relay": self.relay,
                "host_label": self.host_label,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Pairing:
        raw = json.loads(text)
        return cls(
            unb64u(raw["pairing"], 16),
            unb64u(raw["host_key"], 32),
            unb64u(raw["h2d"], 32),
            unb64u(raw["d2h"], 32),
            raw["relay"],
            raw["host_label"],
        )


class DeviceState:
    """The device's vault: its key, its pairings, its policies and the values."""

    def __init__(self, directory: Path, config: Config | None = None) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory = directory
        self.vault = VaultBackend(
            path=str(directory / "device.jssv"),
            passphrase_variable=ENV_DEVICE_PASSPHRASE,
            config=config or Config(),
        )

    def device_key(self) -> X25519PrivateKey:
        stored = self.vault.get(INTERNAL, "device-key")
        if stored is not None:
            return X25519PrivateKey.from_private_bytes(unb64u(stored, 32, "device key"))
        key = generate_keypair()
        raw = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        self.vault.set(INTERNAL, "device-key", b64u(raw))
        return key

    def pairings(self) -> list[Pairing]:
        names = [n for n in self.vault.list_names(INTERNAL) if n.startswith("pairing:")]
        found = []
        for name in names:
            text = self.vault.get(INTERNAL, name)
            if text is not None:
                found.append(Pairing.from_json(text))
        return found

    def save_pairing(self, pairing: Pairing) -> None:
        self.vault.set(INTERNAL, "pairing:" + b64u(pairing.pairing), pairing.to_json())

    def forget_pairing(self, pairing: Pairing) -> None:
        self.vault.delete(INTERNAL, "pairing:" + b64u(pairing.pairing))

    def policy(self, namespace: str, key: str) -> str:
        stored = self.vault.get(INTERNAL, f"policy:{namespace}/{key}")
        return stored if stored in POLICIES else "ask"

    def set_policy(self, namespace: str, key: str, policy: str) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}")
        self.vault.set(INTERNAL, f"policy:{namespace}/{key}", policy)


# --- the device ------------------------------------------------------------------------------


@dataclass
class _Session:
    transport: Any
    reply: bytes
    pairing: Pairing
    last_used: float = field(default_factory=time.monotonic)


class ReferenceDevice:
    """Pairs with hosts and answers their requests through the relay."""

    def __init__(
        self,
        state: DeviceState,
        approver: Approver,
        name: str = "reference device",
        say: Any = print,
    ) -> None:
        self.state = state
        self.approver = approver
        self.name = name
        self.say = say
        self._key = state.device_key()
        self._sessions: dict[bytes, _Session] = {}
        self._answered: dict[
            tuple[bytes, bytes], tuple[dict[str, Any], float, tuple[Any, ...]]
        ] = {}
        self._approved_until: dict[tuple[bytes, str, str], float] = {}
        self._last_expiry = 0.0
        self._in_flight: dict[tuple[bytes, bytes], tuple[tuple[Any, ...], asyncio.Future[Any]]] = {}

    # --- pairing -----------------------------------------------------------------------

    async def pair(self, offer_text: str, timeout: float = 600) -> Pairing:
        offer, offer_string = protocol.decode_offer(offer_text)
        if offer.expired():
            raise PairingError("The offer has expired.", "Ask the computer for a new one.")
        conversation = secrets.token_bytes(16)
        handshake = HandshakeState.initialize(
            protocol.PAIRING_PROTOCOL,
            initiator=True,
            prologue=offer.prologue(offer_string),
            s=self._key,
            rs=offer.host_key,
            psks=[offer.secret],
        )
        deadline = time.monotonic() + timeout
        try:
            return await self._pair(offer, offer_string, handshake, conversation, deadline)
        except RelayError as error:
            raise RelayUnreachableError(
                f"The relay at {offer.relay} failed during pairing ({error})."
            ) from error

    async def _pair(
        self,
        offer: protocol.Offer,
        offer_string: str,
        handshake: HandshakeState,
        conversation: bytes,
        deadline: float,
    ) -> Pairing:
        pair_h2d, pair_d2h = offer.mailbox_caps()
        async with RelayConnection(offer.relay) as connection:
            await connection.subscribe(pair_h2d)
            hello = protocol.pad(
                {"t": "pair", "device": self.name, "software": f"jss-device/{__version__}"}
            )
            await connection.post(
                pair_d2h,
                protocol.encode_envelope(
                    protocol.KIND_PAIR_INIT, conversation, handshake.write_message(hello)
                ),
                ttl=600,
            )
            while True:
                body = await self._await(
                    connection, pair_h2d, conversation, protocol.KIND_PAIR_RESP, deadline
                )
                try:
                    # A forged or damaged answer changes nothing (§6): wait for the real one.
                    paired = protocol.unpad(handshake.read_message(body), "pair-resp payload")
                    break
                except (NoiseError, ProtocolError):
                    continue
            if paired.get("t") != "paired":
                raise PairingError("The computer's answer is not a pairing.", "Pair again.")
            self.say(f"Confirmation code: {protocol.confirmation_code(handshake.handshake_hash)}")
            self.say("Check that the computer shows the same code.")
            transport = handshake.transport()
            while True:
                final = await self._await(
                    connection, pair_h2d, conversation, protocol.KIND_PAIR_FINAL, deadline
                )
                try:
                    verdict = protocol.unpad(transport.decrypt(final), "pair-final payload")
                    break
                except (NoiseError, ProtocolError):
                    continue
        if verdict.get("t") != "confirmed":
            raise PairingError("The computer's user rejected the pairing.", "Pair again.")
        pairing = Pairing(
            unb64u(paired.get("pairing"), 16, "pairing"),
            offer.host_key,
            unb64u(paired.get("h2d"), 32, "h2d"),
            unb64u(paired.get("d2h"), 32, "d2h"),
            offer.relay,
            str(paired.get("host", offer.label))[:64],
        )
        self.state.save_pairing(pairing)
        self.say(f"Paired with {pairing.host_label!r}.")
        return pairing

    async def _await(
        self,
        connection: RelayConnection,
        cap: bytes,
        conversation: bytes,
        kind: int,
        deadline: float,
    ) -> bytes:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PairingError("The computer did not answer in time.", "Pair again.")
            try:
                delivery = await connection.receive(cap, remaining)
            except TimeoutError:
                continue
            body = protocol.body_for(delivery.data, conversation, kind)
            if body is not None:
                return body

    # --- serving -----------------------------------------------------------------------------

    async def serve(self, stop: asyncio.Event | None = None, ready: Any = None) -> None:
        """Answer every paired host until ``stop`` is set; reconnect when a relay fails."""
        stop = stop or asyncio.Event()
        announced = False
        while not stop.is_set():
            pairings = self.state.pairings()
            relays = sorted({p.relay for p in pairings})
            if not relays:
                self.say("No pairings yet; nothing to serve.")
                return
            try:
                await self._serve_relays(relays, pairings, stop, None if announced else ready)
                announced = True
            except RelayError as error:
                self.say(f"relay connection lost ({error}); reconnecting")
                await asyncio.sleep(0.5)

    async def _serve_relays(
        self, relays: list[str], pairings: list[Pairing], stop: asyncio.Event, ready: Any
    ) -> None:
        async with contextlib.AsyncExitStack() as stack:
            connections: dict[str, RelayConnection] = {}
            for relay in relays:
                connections[relay] = await stack.enter_async_context(RelayConnection(relay))
            inboxes: list[tuple[RelayConnection, Pairing]] = []
            for pairing in pairings:
                connection = connections[pairing.relay]
                await connection.subscribe(pairing.h2d)
                inboxes.append((connection, pairing))
            self.say(f"serving {len(pairings)} pairing(s) via {', '.join(relays)}")
            if ready is not None:
                ready()
            waiting: dict[asyncio.Task[Delivery], tuple[RelayConnection, Pairing]] = {}
            handlers: set[asyncio.Task[None]] = set()
            stopping = asyncio.create_task(stop.wait())
            try:
                while not stop.is_set():
                    for connection, pairing in inboxes:
                        if connection.closed:
                            raise RelayError("the relay closed the connection")
                        if not any(v == (connection, pairing) for v in waiting.values()):
                            task = asyncio.create_task(connection.receive(pairing.h2d, None))
                            waiting[task] = (connection, pairing)
                    done, _ = await asyncio.wait(
                        {*waiting, stopping}, timeout=5, return_when=asyncio.FIRST_COMPLETED
                    )
                    for finished in [t for t in waiting if t in done]:
                        connection, pairing = waiting.pop(finished)
                        # Each message in a task of its own: a question waiting for the
                        # owner's answer must not hold up other keys, hosts or `list`.
                        handling = asyncio.create_task(
                            self._handle(connection, pairing, finished.result().data)
                        )
                        handlers.add(handling)
                        handling.add_done_callback(handlers.discard)
                    self._expire()
            finally:
                stopping.cancel()
                for receiving in waiting:
                    receiving.cancel()
                for handling in handlers:
                    handling.cancel()

    def _expire(self) -> None:
        now = time.monotonic()
        if now - self._last_expiry < 1.0:  # at most once a second, whatever the request rate
            return
        self._last_expiry = now
        for conversation in [
            c for c, s in self._sessions.items() if now - s.last_used > SESSION_IDLE
        ]:
            del self._sessions[conversation]
        wall = time.time()
        for cache_key in [k for k, (_, until, _) in self._answered.items() if until < wall]:
            del self._answered[cache_key]

    async def _handle(self, connection: RelayConnection, pairing: Pairing, data: bytes) -> None:
        try:
            envelope = protocol.decode_envelope(data)
        except ProtocolError:
            return
        if not any(p.pairing == pairing.pairing for p in self.state.pairings()):
            # Unpaired since this connection subscribed: that host is unknown now.
            if envelope.kind == protocol.KIND_OPEN:
                await connection.post(
                    pairing.d2h, protocol.notice(envelope.conversation, "unknown-host"), ttl=120
                )
            self._sessions.pop(envelope.conversation, None)
            return
        if envelope.kind == protocol.KIND_OPEN:
            await self._open(connection, pairing, envelope)
        elif envelope.kind == protocol.KIND_DATA:
            await self._data(connection, envelope)

    async def _open(
        self, connection: RelayConnection, pairing: Pairing, envelope: protocol.Envelope
    ) -> None:
        if envelope.conversation in self._sessions:
            return  # a duplicate: that session is already open
        handshake = HandshakeState.initialize(
            protocol.SESSION_PROTOCOL,
            initiator=False,
            prologue=protocol.SESSION_PROLOGUE + pairing.pairing,
            s=self._key,
            rs=pairing.host_key,
        )
        try:
            opening = protocol.unpad(handshake.read_message(envelope.body), "open payload")
            reply = unb64u(opening.get("reply"), 32, "reply")
        except (NoiseError, ProtocolError):
            await connection.post(
                pairing.d2h, protocol.notice(envelope.conversation, "unknown-host"), ttl=120
            )
            return
        accept = handshake.write_message(protocol.pad({"t": "accept"}))
        self._sessions[envelope.conversation] = _Session(handshake.transport(), reply, pairing)
        await connection.post(
            reply,
            protocol.encode_envelope(protocol.KIND_ACCEPT, envelope.conversation, accept),
            ttl=300,
        )

    async def _data(self, connection: RelayConnection, envelope: protocol.Envelope) -> None:
        session = self._sessions.get(envelope.conversation)
        if session is None:
            return
        try:
            message = protocol.unpad(session.transport.decrypt(envelope.body), "request")
        except (NoiseError, ProtocolError):
            # Replayed, reordered, forged or damaged: the session cannot be trusted now.
            del self._sessions[envelope.conversation]
            return
        session.last_used = time.monotonic()
        if message.get("t") == "close":
            del self._sessions[envelope.conversation]
            return
        if message.get("t") != "req":
            return
        answer = await self._answer(message, session.pairing)
        if answer is None:
            return
        body = session.transport.encrypt(protocol.pad(answer))
        await connection.post(
            session.reply,
            protocol.encode_envelope(protocol.KIND_DATA, envelope.conversation, body),
            ttl=300,
        )

    # --- answering requests ----------------------------------------------------------

    async def _answer(self, message: dict[str, Any], pairing: Pairing) -> dict[str, Any] | None:
        try:
            request_id = unb64u(message.get("id"), 16, "id")
        except ProtocolError:
            return None
        try:
            request = protocol.decode_request(message)
        except ProtocolError as error:
            return protocol.error_response(request_id, "bad-request", str(error))
        # The cache answers a repeated request from the same host; an id reused by another
        # host, or for another operation, is not that request.
        cache_key = (pairing.pairing, request_id)
        cached = self._answered.get(cache_key)
        if cached is not None:
            answer, _, asked = cached
            if asked == _same_request(request):
                return answer  # a repeated id: the same answer, without asking again
            return protocol.error_response(request_id, "bad-request", "request id reused")
        running = self._in_flight.get(cache_key)
        if running is not None:
            # A retry while the owner is still deciding: wait for that answer, do not ask
            # again or run the operation twice.
            asked, pending = running
            if asked != _same_request(request):
                return protocol.error_response(request_id, "bad-request", "request id reused")
            return await asyncio.shield(pending)
        pending = asyncio.get_running_loop().create_future()
        self._in_flight[cache_key] = (_same_request(request), pending)
        try:
            answer = await self._answer_once(request, pairing, request_id)
            self._answered[cache_key] = (
                answer,
                request.expires + protocol.CLOCK_SKEW,
                _same_request(request),
            )
            pending.set_result(answer)
            return answer
        except BaseException as error:
            pending.set_exception(error)
            pending.exception()  # retrieved: no "never retrieved" warning if nobody waits
            raise
        finally:
            del self._in_flight[cache_key]

    async def _answer_once(
        self, request: Request, pairing: Pairing, request_id: bytes
    ) -> dict[str, Any]:
        if request.expired():
            return protocol.error_response(request_id, "expired", "the request expired")
        if request.namespace == INTERNAL:
            return protocol.error_response(
                request_id, "denied", "that namespace is the device's own"
            )
        try:
            return await self._execute(request, pairing)
        except SecureStorageError as error:
            return protocol.error_response(request_id, "internal", error.cause[:200])

    async def _approved(self, request: Request, pairing: Pairing) -> bool:
        key = request.key or ""
        remembered = self._approved_until.get((pairing.pairing, request.namespace, key), 0.0)
        if request.op == "read" and remembered > time.monotonic():
            return True
        approval = await self.approver.approve(
            pairing.host_label, request.op, request.namespace, request.key
        )
        if not approval.granted:
            return False
        minutes = approval.minutes
        if request.op == "read" and self.state.policy(request.namespace, key) == "session":
            minutes = max(minutes, 15)
        if minutes and request.op == "read":
            self._approved_until[(pairing.pairing, request.namespace, key)] = (
                time.monotonic() + minutes * 60
            )
        return True

    async def _execute(self, request: Request, pairing: Pairing) -> dict[str, Any]:
        vault, ns = self.state.vault, request.namespace
        if request.op == "list":
            return protocol.response(request.id, names=sorted(vault.list_names(ns)))
        if request.op == "read":
            assert request.key is not None  # noqa: S101 -- decode_request guarantees it
            if self.state.policy(ns, request.key) == "never":
                return protocol.error_response(
                    request.id, "denied", "this key never leaves the device"
                )
            value = vault.get(ns, request.key)
            if value is None:
                return protocol.response(request.id, found=False)
            if not await self._approved(request, pairing):
                return protocol.error_response(request.id, "denied", "rejected on the device")
            return protocol.response(request.id, found=True, value=value)
        if not await self._approved(request, pairing):
            return protocol.error_response(request.id, "denied", "rejected on the device")
        if request.op == "write":
            assert request.key is not None  # noqa: S101
            assert request.value is not None  # noqa: S101
            vault.set(ns, request.key, request.value)
            return protocol.response(request.id)
        if request.op == "delete":
            assert request.key is not None  # noqa: S101
            return protocol.response(request.id, existed=vault.delete(ns, request.key))
        # unpair
        self.state.forget_pairing(pairing)
        self.say(f"Unpaired from {pairing.host_label!r}.")
        return protocol.response(request.id)


def _same_request(request: Request) -> tuple[Any, ...]:
    """What must match for a repeated id to be the same request (a digest, not the value)."""
    import hashlib

    value_digest = (
        hashlib.sha256(request.value.encode("utf-8", "surrogatepass")).digest()
        if request.value is not None
        else None
    )
    return (request.op, request.namespace, request.key, value_digest, request.expires)
