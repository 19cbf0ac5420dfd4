"""The host side of the bridge: pairing with a device, and requests over sessions.

What the host keeps (its static key and one record per paired device) lives in a
``SecureStorage`` namespace ``jss-bridge`` on the OS keystore when one is usable,
else on the vault -- never on the device backend itself.

Network work runs on one background event loop (:class:`BridgeLoop`), so the
synchronous ``SecureStorage`` API works the same in a script, a CLI and a Jupyter
kernel, whose own loop is busy running the cell.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import threading
import time
from collections.abc import Coroutine
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ..errors import (
    BridgeError,
    DeviceDeniedError,
    DeviceOfflineError,
    NoPairedDeviceError,
    PairingError,
    RelayUnreachableError,
    SecureStorageError,
)
from ..storage import SecureStorage
from . import protocol
from .noise import HandshakeState, NoiseError, generate_keypair, public_key_bytes
from .protocol import Offer, ProtocolError, Request, b64u, unb64u
from .relay_client import CLOSED, RelayConnection, RelayError

PAIRING_NAMESPACE = "jss-bridge"
HOST_KEY = "host-key"
DEVICE_PREFIX = "device:"
T = TypeVar("T")


# --- the background loop ---------------------------------------------------------------


class BridgeLoop:
    """One asyncio loop on a daemon thread, shared by every host-side operation."""

    _instance: BridgeLoop | None = None
    _guard = threading.Lock()

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="jss-bridge", daemon=True)
        self.thread.start()

    @classmethod
    def get(cls) -> BridgeLoop:
        with cls._guard:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout + 5)
        except BaseException:
            # A timeout, Ctrl-C or a kernel interrupt: stop the work too, so an abandoned
            # pairing cannot still answer a device and a request cannot still run.
            future.cancel()
            raise


# --- what the host keeps ----------------------------------------------------------------


@dataclass
class DeviceRecord:
    """One paired device, as the host stores it."""

    name: str
    device_key: str  # b64u of the device's static public key
    pairing: str  # b64u of the pairing id
    h2d: str  # b64u capabilities
    d2h: str
    relay: str
    host_label: str
    created: int

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> DeviceRecord:
        return cls(**json.loads(text))


class HostKeystore:
    """The host's static key and its device records, kept in a secure non-device store."""

    def __init__(self, store: SecureStorage | None = None) -> None:
        if store is None:
            # The package's own records, read for every notebook that uses the paired
            # device: not a key any notebook is granted (a cell asking for this namespace
            # itself needs a grant, which nobody gives).
            store = SecureStorage(namespace=PAIRING_NAMESPACE, notebook_access="off")
            if store.backend_name == "device":
                store = SecureStorage(
                    backend="auto", namespace=PAIRING_NAMESPACE, notebook_access="off"
                )
        self.store = store

    def host_key(self) -> X25519PrivateKey:
        stored = self.store.read(HOST_KEY)
        if stored is not None:
            return X25519PrivateKey.from_private_bytes(unb64u(stored.reveal(), 32, "host key"))
        key = generate_keypair()
        from cryptography.hazmat.primitives import serialization

        raw = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        self.store.write(HOST_KEY, b64u(raw))
        return key

    def devices(self) -> list[DeviceRecord]:
        records = []
        for name in self.store.keys():
            if name.startswith(DEVICE_PREFIX):
                secret = self.store.read(name)
                if secret is not None:
                    records.append(DeviceRecord.from_json(secret.reveal()))
        return sorted(records, key=lambda record: record.name)

    def device(self, name: str | None = None) -> DeviceRecord:
        records = self.devices()
        if name:
            for record in records:
                if record.name == name:
                    return record
            raise NoPairedDeviceError(f"No device named {name!r} is paired with this computer.")
        if not records:
            raise NoPairedDeviceError("No device is paired with this computer.")
        if len(records) > 1:
            raise NoPairedDeviceError(
                f"{len(records)} devices are paired; say which one.",
                "Set c.DeviceBackend.device = NAME "
                "(`jupyter-secure-storage devices list` shows the names).",
            )
        return records[0]

    def save(self, record: DeviceRecord) -> None:
        self.store.write(DEVICE_PREFIX + record.name, record.to_json())

    def forget(self, name: str) -> bool:
        existed = self.store.contains_key(DEVICE_PREFIX + name)
        self.store.delete(DEVICE_PREFIX + name)
        return existed

    def unique_name(self, wanted: str) -> str:
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", wanted).strip("-")[:48] or "device"
        taken = {record.name for record in self.devices()}
        name, number = base, 2
        while name in taken:
            name, number = f"{base}-{number}", number + 1
        return name


# --- pairing -------------------------------------------------------------------------------


@dataclass
class PendingPairing:
    """A device has answered the offer; the person must compare the code."""

    code: str
    device_name: str


class PairingAttempt:
    """One offer and the pairing that may follow (docs/bridge-protocol.md §8)."""

    def __init__(
        self,
        relay: str,
        label: str,
        keystore: HostKeystore | None = None,
        lifetime: int = 600,
    ) -> None:
        self.keystore = keystore or HostKeystore()
        self._host_key = self.keystore.host_key()
        self.offer = Offer(
            host_key=public_key_bytes(self._host_key),
            secret=secrets.token_bytes(32),
            relay=relay,
            expires=int(time.time()) + lifetime,
            label=label[:64],
            offer_id=secrets.token_bytes(16),
        )
        self.offer_string = self.offer.encode()
        self._connection: RelayConnection | None = None
        self._transport: Any = None
        self._conversation = b""
        self._record: DeviceRecord | None = None
        self.consumed = False

    async def wait_for_device(self, timeout: float) -> PendingPairing:
        """Listen for the device's first message; answer it; return the code to compare."""
        pair_h2d, pair_d2h = self.offer.mailbox_caps()
        connection = RelayConnection(self.offer.relay)
        try:
            await connection.connect()
            await connection.subscribe(pair_d2h)
        except RelayError as error:
            raise RelayUnreachableError(str(error)) from error
        self._connection = connection
        expiry = time.monotonic() + self.offer.expires - time.time()
        deadline = min(time.monotonic() + timeout, expiry)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                await connection.close()
                if deadline < expiry:
                    raise PairingError(
                        f"No device answered within {timeout:g} s.",
                        "Scan the code with the device sooner, or wait longer (--timeout).",
                    )
                raise PairingError(
                    "No device answered the offer before it expired.",
                    "Pair again, and scan the new code within its lifetime.",
                )
            if connection.closed:
                raise RelayUnreachableError(
                    f"The relay at {self.offer.relay} closed the connection while waiting "
                    "for the device."
                )
            try:
                delivery = await connection.receive(pair_d2h, min(remaining, 1.0))
            except TimeoutError:
                continue
            except RelayError as error:
                raise RelayUnreachableError(
                    f"The relay at {self.offer.relay} closed the connection while waiting "
                    "for the device."
                ) from error
            pending = self._accept(delivery.data)
            if pending is not None:
                try:
                    await connection.post(pair_h2d, pending[1], ttl=600)
                except RelayError as error:
                    raise RelayUnreachableError(str(error)) from error
                return pending[0]

    def _accept(self, data: bytes) -> tuple[PendingPairing, bytes] | None:
        """Process one pair-init; None when it is not a valid one (dropped, nothing changes)."""
        if self.consumed or self.offer.expired():
            return None
        try:
            envelope = protocol.decode_envelope(data)
            if envelope.kind != protocol.KIND_PAIR_INIT:
                return None
            handshake = HandshakeState.initialize(
                protocol.PAIRING_PROTOCOL,
                initiator=False,
                prologue=self.offer.prologue(self.offer_string),
                s=self._host_key,
                psks=[self.offer.secret],
            )
            hello = protocol.unpad(handshake.read_message(envelope.body), "pair-init payload")
            if hello.get("t") != "pair" or not isinstance(hello.get("device"), str):
                return None
        except (ProtocolError, NoiseError):
            return None
        self.consumed = True
        device_key = handshake.remote_static
        assert device_key is not None  # noqa: S101 -- IK always carries the initiator's static
        record = DeviceRecord(
            name=self.keystore.unique_name(str(hello["device"])[:64]),
            device_key=b64u(device_key),
            pairing=b64u(secrets.token_bytes(16)),
            h2d=b64u(secrets.token_bytes(32)),
            d2h=b64u(secrets.token_bytes(32)),
            relay=self.offer.relay,
            host_label=self.offer.label,
            created=int(time.time()),
        )
        answer = protocol.pad(
            {
                "t": "paired",
                "pairing": record.pairing,
                "h2d": record.h2d,
                "d2h": record.d2h,
                "host": self.offer.label,
            }
        )
        body = handshake.write_message(answer)
        self._transport = handshake.transport()
        self._conversation = envelope.conversation
        self._record = record
        code = protocol.confirmation_code(handshake.handshake_hash)
        reply = protocol.encode_envelope(protocol.KIND_PAIR_RESP, envelope.conversation, body)
        return PendingPairing(code, record.name), reply

    async def finish(self, confirmed: bool) -> DeviceRecord | None:
        """Tell the device the person's answer; store the pairing if confirmed."""
        if self._record is None or self._connection is None:
            raise PairingError("No device has answered this offer yet.", "")
        pair_h2d, _ = self.offer.mailbox_caps()
        verdict = {"t": "confirmed" if confirmed else "rejected"}
        body = self._transport.encrypt(protocol.pad(verdict))
        try:
            await self._connection.post(
                pair_h2d,
                protocol.encode_envelope(protocol.KIND_PAIR_FINAL, self._conversation, body),
                ttl=600,
            )
        except RelayError as error:
            raise RelayUnreachableError(
                f"The relay failed before the device heard the answer ({error}); pair again."
            ) from error
        finally:
            await self._connection.close()
        if not confirmed:
            return None
        self.keystore.save(self._record)
        return self._record


# --- sessions and requests -------------------------------------------------------------------


class DeviceClient:
    """Requests to one paired device (docs/bridge-protocol.md §9)."""

    def __init__(self, record: DeviceRecord, host_key: X25519PrivateKey) -> None:
        self.record = record
        self.host_key = host_key

    async def request(self, request: Request, timeout: float) -> dict[str, Any]:
        """Send ``request``; retry once with the same id over a new session if the relay fails."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        relay_answered: list[bool] = []  # set by _session once the relay answers
        for _attempt in range(2):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                # The whole session, relay operations included, within the deadline.
                return await asyncio.wait_for(
                    self._session(request, remaining, relay_answered), remaining
                )
            except RelayError as error:
                last_error = error
            except TimeoutError:
                if not relay_answered:
                    raise RelayUnreachableError(
                        f"The relay at {self.record.relay} did not answer within {timeout:g} s."
                    ) from None
                break
        if isinstance(last_error, RelayError):
            raise RelayUnreachableError(
                f"The relay at {self.record.relay} failed during the request ({last_error})."
            ) from last_error
        raise DeviceOfflineError(
            f"The device {self.record.name!r} did not answer within {timeout:g} s."
        )

    async def _session(
        self, request: Request, timeout: float, relay_answered: list[bool]
    ) -> dict[str, Any]:
        h2d, d2h = unb64u(self.record.h2d, 32), unb64u(self.record.d2h, 32)
        reply_cap = secrets.token_bytes(32)
        conversation = secrets.token_bytes(16)
        handshake = HandshakeState.initialize(
            protocol.SESSION_PROTOCOL,
            initiator=True,
            prologue=protocol.SESSION_PROLOGUE + unb64u(self.record.pairing, 16),
            s=self.host_key,
            rs=unb64u(self.record.device_key, 32),
        )
        deadline = time.monotonic() + timeout
        async with RelayConnection(self.record.relay, connect_timeout=timeout) as connection:
            await connection.subscribe(reply_cap)
            relay_answered.append(True)
            await connection.subscribe(d2h)  # unknown-host notices come here
            opening = handshake.write_message(
                protocol.pad({"t": "open", "v": 1, "reply": b64u(reply_cap)})
            )
            ttl = max(int(timeout) + 60, 120)
            await connection.post(
                h2d, protocol.encode_envelope(protocol.KIND_OPEN, conversation, opening), ttl
            )
            while True:
                accept = await self._next(
                    connection, reply_cap, d2h, conversation, deadline, protocol.KIND_ACCEPT
                )
                try:
                    # read_message changes nothing when it fails: a forged or damaged
                    # accept is dropped and the real one can still be read (§6).
                    protocol.unpad(handshake.read_message(accept), "accept payload")
                    break
                except (NoiseError, ProtocolError):
                    continue
            transport = handshake.transport()
            body = transport.encrypt(protocol.pad(request.to_message()))
            await connection.post(
                h2d, protocol.encode_envelope(protocol.KIND_DATA, conversation, body), ttl
            )
            answer = await self._next(
                connection, reply_cap, d2h, conversation, deadline, protocol.KIND_DATA
            )
            try:
                message = protocol.unpad(transport.decrypt(answer), "response")
                result = protocol.check_response(message, request)
            except (NoiseError, ProtocolError) as error:
                # §9: a transport message that fails ends the session.
                raise BridgeError(
                    f"The answer from the device {self.record.name!r} failed authentication "
                    "(changed or forged on the way); the request was abandoned.",
                    "Retry; if it keeps happening, the relay is tampering with messages.",
                ) from error
            closing = transport.encrypt(protocol.pad({"t": "close"}))
            await connection.post(
                h2d, protocol.encode_envelope(protocol.KIND_DATA, conversation, closing), ttl
            )
            return result

    async def _next(  # noqa: PLR0917 -- one call site, all needed
        self,
        connection: RelayConnection,
        reply_cap: bytes,
        d2h: bytes,
        conversation: bytes,
        deadline: float,
        kind: int,
    ) -> bytes:
        """The body of the next envelope of ``kind`` in this conversation; others are dropped."""
        reply_box = protocol.mailbox_id(reply_cap)
        notices = asyncio.create_task(self._watch_notices(connection, d2h, conversation))
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeviceOfflineError(
                        f"The device {self.record.name!r} did not answer in time; the relay "
                        "holds the request until it expires."
                    )
                receiving = asyncio.create_task(connection.receive(reply_cap, remaining))
                done, _ = await asyncio.wait(
                    {receiving, notices}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                if notices in done:
                    receiving.cancel()
                    notices.result()  # raises the device's refusal
                    raise RelayError("the relay closed the connection")  # it returned: closed
                if receiving not in done:
                    receiving.cancel()
                    continue
                delivery = receiving.result()
                if delivery.box != reply_box:
                    continue
                body = protocol.body_for(delivery.data, conversation, kind)
                if body is not None:
                    return body
        finally:
            notices.cancel()

    async def _watch_notices(
        self, connection: RelayConnection, d2h: bytes, conversation: bytes
    ) -> None:
        queue = connection.messages(d2h)
        while True:
            delivery = await queue.get()  # notices are hints: not acknowledged, they expire
            if delivery is CLOSED:
                queue.put_nowait(CLOSED)
                return
            body = protocol.body_for(delivery.data, conversation, protocol.KIND_NOTICE)
            if body is None:
                continue
            try:
                hint = protocol.parse_json_object(body, "notice").get("error")
            except ProtocolError:
                continue
            if hint == "unknown-host":
                raise DeviceDeniedError(
                    f"The device {self.record.name!r} does not recognise this computer "
                    "(it may have been unpaired on the device).",
                    f"Pair again, or remove the record: "
                    f"jupyter-secure-storage devices revoke {self.record.name}",
                )


def raise_for(message: dict[str, Any], device: str) -> None:
    """Turn an error response into the typed error a person can act on."""
    if message.get("ok") is True:
        return
    error, text = message.get("error"), str(message.get("message", ""))[:200]
    if error == "denied":
        raise DeviceDeniedError(
            f"The device {device!r} refused: {text or 'rejected by its owner'}.",
            "Approve the request on the device, or check the key's policy there.",
        )
    if error == "expired":
        raise DeviceOfflineError(f"The request expired before the device {device!r} saw it.")
    raise SecureStorageError(f"The device {device!r} answered {error}: {text}", "")
