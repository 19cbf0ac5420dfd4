"""The bridge protocol's published vectors (tests/vectors/bridge-v1.json), three ways.

1. The committed file equals what ``tests/vectors/make_bridge_vectors.py`` builds now, so
   any change to the wire format (envelopes, padding, payload fields, prologues, key
   derivations, Noise) shows up here and needs a deliberate regeneration.
2. Each side is replayed from its own inputs alone with the package's decoders
   (``decode_offer``, ``decode_envelope``, ``unpad``, ``decode_request``,
   ``check_response``, a fresh ``HandshakeState``): the host reads every device message
   and writes its own byte for byte, the device likewise; a message with one byte
   changed fails and changes nothing. The document's derivations (mailbox capabilities,
   boxes, the confirmation code, padding) are recomputed independently with
   ``cryptography``, ``hashlib`` and ``struct``.
3. The reference implementation itself -- ``PairingAttempt``, ``DeviceClient`` and
   ``ReferenceDevice`` against an in-memory relay stand-in, with their randomness and
   clock pinned to the vectors' inputs -- sends exactly the vectors' messages.

Asserts name what differs, never the bytes (pytest runs with ``--assert=plain``).
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import struct
import time
import types
from pathlib import Path
from typing import Any, ClassVar

import pytest
from conftest import fast_kdf_config
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from jupyter_secure_storage.bridge import device as device_module
from jupyter_secure_storage.bridge import host as host_module
from jupyter_secure_storage.bridge import noise as noise_module
from jupyter_secure_storage.bridge import protocol
from jupyter_secure_storage.bridge.noise import HandshakeState, NoiseError, NoiseTransport
from jupyter_secure_storage.bridge.protocol import (
    ProtocolError,
    b64u,
    check_response,
    decode_envelope,
    decode_offer,
    decode_request,
    unb64u,
    unpad,
)
from jupyter_secure_storage.bridge.relay_client import Delivery

VECTOR_DIR = Path(__file__).parent / "vectors"
VECTOR_FILE = VECTOR_DIR / "bridge-v1.json"
GENERATOR_FILE = VECTOR_DIR / "make_bridge_vectors.py"
REGENERATE = ".venv/bin/python tests/vectors/make_bridge_vectors.py"


def load_generator() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("make_bridge_vectors", GENERATOR_FILE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATOR = load_generator()
VECTORS: dict[str, Any] = json.loads(VECTOR_FILE.read_text(encoding="utf-8"))
INPUTS: dict[str, Any] = VECTORS["inputs"]


def messages(section: str) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in VECTORS[section]["messages"]}


PAIRING = messages("pairing")
SESSION = messages("session")


def raw(hex_text: str) -> bytes:
    return bytes.fromhex(hex_text)


def private(pair: dict[str, str]) -> bytes:
    return raw(pair["private"])


def public(pair: dict[str, str]) -> bytes:
    return raw(pair["public"])


def tampered(data: bytes) -> bytes:
    changed = bytearray(data)
    changed[len(changed) // 2] ^= 0x01
    return bytes(changed)


# --- 1. the file is what the generator builds ----------------------------------------------


def test_the_committed_vectors_are_what_the_generator_builds() -> None:
    built = GENERATOR.render(GENERATOR.build_vectors())
    assert built == VECTOR_FILE.read_text(encoding="utf-8"), (
        "tests/vectors/bridge-v1.json differs from what the generator builds: the wire "
        f"format changed. If that is intended, run `{REGENERATE}` and say so in the spec."
    )


def test_the_generator_is_deterministic() -> None:
    assert GENERATOR.build_vectors() == GENERATOR.build_vectors()


def test_the_format_description_covers_the_file() -> None:
    fmt = VECTORS["format"]
    assert fmt["name"] == "jss-bridge-vectors"
    assert fmt["version"] == 1
    assert fmt["spec"].startswith("docs/bridge-protocol.md")
    assert set(fmt["sections"]) | {"format", "protocol"} == set(VECTORS), (
        "every top-level section is described, and nothing else"
    )
    for section in ("pairing", "session"):
        for message in VECTORS[section]["messages"]:
            assert set(message) == set(fmt["message_fields"]), (
                f"{message['name']}: its fields are exactly the described ones"
            )
            assert message["mailbox"] in VECTORS[section]["mailboxes"]
    assert [m["name"] for m in VECTORS["pairing"]["messages"]] == [
        "pair-init",
        "pair-resp",
        "pair-final",
    ]
    assert [m["name"] for m in VECTORS["session"]["messages"]] == [
        "open",
        "accept",
        "read-request",
        "read-response",
        "write-request",
        "write-response",
        "close",
        "unknown-host-notice",
    ]
    assert VECTORS["protocol"] == {
        "version": 1,
        "magic": "JSB1",
        "pairing_protocol": "Noise_IKpsk1_25519_ChaChaPoly_SHA256",
        "session_protocol": "Noise_KK_25519_ChaChaPoly_SHA256",
        "hkdf_salt": "jss-bridge/1",
        "buckets": [256, 1024, 4096, 16384, 65519],
    }


# --- 2. derivations recomputed from the document ------------------------------------------


def rfc5869(ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=b"jss-bridge/1", info=info).derive(
        ikm
    )


def box_of(cap: bytes) -> str:
    return b64u(hashlib.sha256(b"jss-mailbox/1" + cap).digest())


def test_keys_and_mailboxes_follow_the_document() -> None:
    for pair in (
        INPUTS["host_static"],
        INPUTS["device_static"],
        INPUTS["pairing"]["device_ephemeral"],
        INPUTS["pairing"]["host_ephemeral"],
        INPUTS["session"]["host_ephemeral"],
        INPUTS["session"]["device_ephemeral"],
    ):
        key = X25519PrivateKey.from_private_bytes(private(pair))
        assert key.public_key().public_bytes_raw() == public(pair)
    secret = raw(INPUTS["offer"]["secret"])
    expected = {
        "pair_h2d": rfc5869(secret, b"pairing host-to-device", 32),
        "pair_d2h": rfc5869(secret, b"pairing device-to-host", 32),
    }
    pairing = INPUTS["pairing"]
    session_caps = {
        "h2d": raw(pairing["h2d"]),
        "d2h": raw(pairing["d2h"]),
        "reply": raw(INPUTS["session"]["reply"]),
    }
    for section, caps in (("pairing", expected), ("session", session_caps)):
        for name, cap in caps.items():
            published = VECTORS[section]["mailboxes"][name]
            assert published["cap_b64u"] == b64u(cap), f"{name}: capability"
            assert published["box"] == box_of(cap), f"{name}: box"


def test_the_confirmation_code_follows_the_document() -> None:
    digest = rfc5869(raw(VECTORS["pairing"]["handshake_hash"]), b"confirmation code", 4)
    number = struct.unpack(">I", digest)[0] % 1_000_000
    code = VECTORS["pairing"]["confirmation_code"]
    assert code == f"{number:06d}"[:3] + " " + f"{number:06d}"[3:]
    assert code == protocol.confirmation_code(raw(VECTORS["pairing"]["handshake_hash"]))


def test_payloads_and_envelopes_follow_the_document() -> None:
    for message in [*PAIRING.values(), *SESSION.values()]:
        envelope = raw(message["envelope"])
        assert envelope[:4] == b"JSB1"
        assert envelope[4] == message["kind"]
        assert envelope[5:21] == raw(message["conversation"])
        assert envelope[21:] == raw(message["noise_message"])
        assert unb64u(message["data_b64u"]) == envelope
        if message["padded_payload"] is None:  # the notice: cleartext JSON
            assert json.loads(envelope[21:]) == message["payload"]
            continue
        padded = raw(message["padded_payload"])
        (length,) = struct.unpack(">I", padded[:4])
        body = padded[4 : 4 + length]
        assert json.loads(body.decode("utf-8")) == message["payload"], message["name"]
        assert not any(padded[4 + length :]), f"{message['name']}: zero padding"
        assert len(padded) == min(b for b in (256, 1024, 4096, 16384, 65519) if b >= 4 + length)
        # A Noise message is its keys (if any) plus the encrypted payload and its tag.
        assert len(raw(message["noise_message"])) >= len(padded) + 16
    assert len(raw(SESSION["write-request"]["padded_payload"])) == 1024  # a second bucket


# --- 2. each side replayed from its own inputs ----------------------------------------------


def open_envelope(message: dict[str, Any], conversation: bytes | None = None) -> bytes:
    """What a receiver does first: decode the envelope, check kind and conversation."""
    envelope = decode_envelope(raw(message["envelope"]))
    assert envelope.kind == message["kind"], f"{message['name']}: kind"
    if conversation is not None:
        assert envelope.conversation == conversation, f"{message['name']}: conversation"
    return envelope.body


def read_handshake(state: HandshakeState, message: dict[str, Any], body: bytes) -> dict[str, Any]:
    """All or nothing: a changed byte fails and leaves ``state`` able to read the original."""
    with pytest.raises(NoiseError):
        state.read_message(tampered(body))
    payload = unpad(state.read_message(body), message["name"])
    assert payload == message["payload"], f"{message['name']}: payload"
    return payload


def read_transport(
    transport: NoiseTransport, message: dict[str, Any], body: bytes
) -> dict[str, Any]:
    with pytest.raises(NoiseError):
        transport.decrypt(tampered(body))
    payload = unpad(transport.decrypt(body), message["name"])
    assert payload == message["payload"], f"{message['name']}: payload"
    return payload


def expect_sent(message: dict[str, Any], conversation: bytes, body: bytes) -> None:
    envelope = protocol.encode_envelope(message["kind"], conversation, body)
    assert envelope.hex() == message["envelope"], f"{message['name']}: envelope bytes"


def test_the_host_side_reproduces_its_messages_and_reads_the_devices() -> None:
    host_static = private(INPUTS["host_static"])
    # Pairing (§8): the host made the offer, so it knows the secret; it is the responder.
    offer, offer_string = decode_offer(VECTORS["offer"]["string"])
    assert offer.encode() == offer_string == VECTORS["offer"]["string"]
    assert offer.host_key == public(INPUTS["host_static"])
    handshake = HandshakeState.initialize(
        protocol.PAIRING_PROTOCOL,
        initiator=False,
        prologue=protocol.PAIRING_PROLOGUE + offer_string.encode("ascii"),
        s=host_static,
        e=private(INPUTS["pairing"]["host_ephemeral"]),
        psks=[offer.secret],
    )
    assert (protocol.PAIRING_PROLOGUE + offer_string.encode()).hex() == VECTORS["pairing"][
        "prologue"
    ]
    init = PAIRING["pair-init"]
    body = open_envelope(init)
    conversation = decode_envelope(raw(init["envelope"])).conversation
    hello = read_handshake(handshake, init, body)
    assert hello["t"] == "pair"
    assert handshake.remote_static == public(INPUTS["device_static"])
    resp = PAIRING["pair-resp"]
    expect_sent(resp, conversation, handshake.write_message(raw(resp["padded_payload"])))
    assert handshake.handshake_hash.hex() == VECTORS["pairing"]["handshake_hash"]
    assert (
        protocol.confirmation_code(handshake.handshake_hash)
        == (VECTORS["pairing"]["confirmation_code"])
    )
    final = PAIRING["pair-final"]
    expect_sent(final, conversation, handshake.transport().encrypt(raw(final["padded_payload"])))

    # A session (§9): the host is the initiator and knows the device key from pairing.
    paired = resp["payload"]
    session = HandshakeState.initialize(
        protocol.SESSION_PROTOCOL,
        initiator=True,
        prologue=protocol.SESSION_PROLOGUE + unb64u(paired["pairing"], 16),
        s=host_static,
        e=private(INPUTS["session"]["host_ephemeral"]),
        rs=handshake.remote_static,
    )
    conversation = raw(INPUTS["session"]["conversation"])
    opening = SESSION["open"]
    assert opening["payload"] == {
        "t": "open",
        "v": 1,
        "reply": b64u(raw(INPUTS["session"]["reply"])),
    }
    expect_sent(opening, conversation, session.write_message(raw(opening["padded_payload"])))
    accept = SESSION["accept"]
    read_handshake(session, accept, open_envelope(accept, conversation))
    assert session.handshake_hash.hex() == VECTORS["session"]["handshake_hash"]
    transport = session.transport()
    for request_name, response_name in (
        ("read-request", "read-response"),
        ("write-request", "write-response"),
    ):
        request_message = SESSION[request_name]
        request = decode_request(request_message["payload"])
        expect_sent(
            request_message, conversation, transport.encrypt(raw(request_message["padded_payload"]))
        )
        response_message = SESSION[response_name]
        answer = read_transport(
            transport, response_message, open_envelope(response_message, conversation)
        )
        assert check_response(answer, request) is answer
        assert answer["ok"] is True
    assert (
        SESSION["read-response"]["payload"]["value"] == INPUTS["requests"]["read"]["answer_value"]
    )
    close = SESSION["close"]
    expect_sent(close, conversation, transport.encrypt(raw(close["padded_payload"])))
    # The notice is unauthenticated cleartext, for the conversation the host opened.
    notice = decode_envelope(raw(SESSION["unknown-host-notice"]["envelope"]))
    assert notice.kind == protocol.KIND_NOTICE
    assert notice.conversation == conversation
    assert protocol.parse_json_object(notice.body, "notice") == {"error": "unknown-host"}


def test_the_device_side_reproduces_its_messages_and_reads_the_hosts() -> None:
    device_static = private(INPUTS["device_static"])
    # Pairing: the device knows only the offer (as scanned) and its own keys.
    for form in ("string", "uri", "web_link"):
        _, text = decode_offer(VECTORS["offer"][form])
        assert text == VECTORS["offer"]["string"], f"the offer {form}"
    offer, offer_string = decode_offer(VECTORS["offer"]["uri"])
    assert json.loads(unb64u(offer_string)) == VECTORS["offer"]["object"]
    assert unb64u(offer_string).decode() == VECTORS["offer"]["json"]
    assert list(VECTORS["offer"]["object"]) == ["v", "k", "s", "r", "x", "l", "i"]
    assert offer.expires == INPUTS["offer"]["expires"]
    assert not offer.expired(INPUTS["offer"]["created"])
    assert offer.expired(offer.expires + 61)
    pair_h2d, pair_d2h = offer.mailbox_caps()
    assert b64u(pair_d2h) == VECTORS["pairing"]["mailboxes"]["pair_d2h"]["cap_b64u"]
    assert b64u(pair_h2d) == VECTORS["pairing"]["mailboxes"]["pair_h2d"]["cap_b64u"]
    handshake = HandshakeState.initialize(
        protocol.PAIRING_PROTOCOL,
        initiator=True,
        prologue=offer.prologue(offer_string),
        s=device_static,
        e=private(INPUTS["pairing"]["device_ephemeral"]),
        rs=offer.host_key,
        psks=[offer.secret],
    )
    conversation = raw(INPUTS["pairing"]["conversation"])
    init = PAIRING["pair-init"]
    expect_sent(init, conversation, handshake.write_message(raw(init["padded_payload"])))
    resp = PAIRING["pair-resp"]
    paired = read_handshake(handshake, resp, open_envelope(resp, conversation))
    assert paired["t"] == "paired"
    assert unb64u(paired["pairing"], 16).hex() == INPUTS["pairing"]["pairing_id"]
    assert unb64u(paired["h2d"], 32).hex() == INPUTS["pairing"]["h2d"]
    assert unb64u(paired["d2h"], 32).hex() == INPUTS["pairing"]["d2h"]
    assert (
        protocol.confirmation_code(handshake.handshake_hash)
        == (VECTORS["pairing"]["confirmation_code"])
    )
    final = PAIRING["pair-final"]
    verdict = read_transport(handshake.transport(), final, open_envelope(final, conversation))
    assert verdict == {"t": "confirmed"}

    # The session: the device is the responder; the open's payload names the reply box.
    session = HandshakeState.initialize(
        protocol.SESSION_PROTOCOL,
        initiator=False,
        prologue=protocol.SESSION_PROLOGUE + unb64u(paired["pairing"], 16),
        s=device_static,
        e=private(INPUTS["session"]["device_ephemeral"]),
        rs=offer.host_key,
    )
    assert (protocol.SESSION_PROLOGUE + unb64u(paired["pairing"])).hex() == VECTORS["session"][
        "prologue"
    ]
    opening = SESSION["open"]
    body = open_envelope(opening)
    conversation = decode_envelope(raw(opening["envelope"])).conversation
    payload = read_handshake(session, opening, body)
    assert unb64u(payload["reply"], 32).hex() == INPUTS["session"]["reply"]
    accept = SESSION["accept"]
    expect_sent(accept, conversation, session.write_message(raw(accept["padded_payload"])))
    transport = session.transport()
    for request_name, response_name, op in (
        ("read-request", "read-response", "read"),
        ("write-request", "write-response", "write"),
    ):
        request_message = SESSION[request_name]
        message = read_transport(
            transport, request_message, open_envelope(request_message, conversation)
        )
        request = decode_request(message)
        wanted = INPUTS["requests"][op]
        assert (request.id.hex(), request.op, request.namespace, request.key) == (
            wanted["id"],
            wanted["op"],
            wanted["ns"],
            wanted["key"],
        )
        assert (request.issued, request.expires) == (wanted["iat"], wanted["exp"])
        assert request.value == wanted.get("value")
        assert not request.expired(INPUTS["session"]["time"])
        assert request.expired(wanted["exp"] + 61)
        response_message = SESSION[response_name]
        expect_sent(
            response_message,
            conversation,
            transport.encrypt(raw(response_message["padded_payload"])),
        )
    close = SESSION["close"]
    assert read_transport(transport, close, open_envelope(close, conversation)) == {"t": "close"}


def test_a_reflected_or_replayed_message_does_not_decrypt() -> None:
    """§9 step 3: after Split each side decrypts only the other's messages, in order."""
    device = HandshakeState.initialize(
        protocol.SESSION_PROTOCOL,
        initiator=False,
        prologue=raw(VECTORS["session"]["prologue"]),
        s=private(INPUTS["device_static"]),
        e=private(INPUTS["session"]["device_ephemeral"]),
        rs=public(INPUTS["host_static"]),
    )
    device.read_message(open_envelope(SESSION["open"]))
    device.write_message(raw(SESSION["accept"]["padded_payload"]))
    transport = device.transport()
    with pytest.raises(NoiseError):  # the device's own response, reflected back to it
        transport.decrypt(open_envelope(SESSION["read-response"]))
    with pytest.raises(NoiseError):  # the write before the read: out of order
        transport.decrypt(open_envelope(SESSION["write-request"]))
    transport.decrypt(open_envelope(SESSION["read-request"]))
    with pytest.raises(NoiseError):  # the read again: a replay
        transport.decrypt(open_envelope(SESSION["read-request"]))


def test_the_decoders_refuse_a_changed_envelope_header() -> None:
    envelope = raw(SESSION["open"]["envelope"])
    for bad in (b"JSB2" + envelope[4:], envelope[:4] + b"\x08" + envelope[5:], envelope[:20]):
        with pytest.raises(ProtocolError):
            decode_envelope(bad)


# --- 3. the reference implementation sends exactly these messages ---------------------------


class PinnedRandomness:
    """Stands in for host.py's / device.py's ``secrets``: the vectors' values, in order."""

    def __init__(self, values: list[bytes]) -> None:
        self.values = list(values)

    def token_bytes(self, size: int) -> bytes:
        assert self.values, "the reference code drew more randomness than the vectors model"
        value = self.values.pop(0)
        assert len(value) == size, "the reference code drew randomness in another order"
        return value


class PinnedClock:
    """Stands in for the ``time`` module: a fixed wall clock, the real monotonic one."""

    monotonic = staticmethod(time.monotonic)

    def __init__(self, now: int) -> None:
        self.now = now

    def time(self) -> float:
        return float(self.now)


class PinnedEphemerals:
    """Stands in for ``noise.generate_keypair``: the vectors' ephemerals, in order."""

    def __init__(self, privates: list[bytes]) -> None:
        self.privates = list(privates)

    def __call__(self) -> X25519PrivateKey:
        assert self.privates, "the reference code generated more key pairs than expected"
        return X25519PrivateKey.from_private_bytes(self.privates.pop(0))


class FakeRelay:
    """An in-memory stand-in for ``RelayConnection``: records posts, delivers a script.

    ``script`` maps a mailbox id to the envelopes the peer "posts" there; they become
    deliverable once that mailbox is subscribed. Every instance is kept in ``opened``.
    """

    script: ClassVar[dict[str, list[bytes]]] = {}
    opened: ClassVar[list[FakeRelay]] = []

    def __init__(self, url: str, connect_timeout: float = 10.0) -> None:
        self.url = url
        self.posts: list[tuple[str, bytes]] = []
        self._queues: dict[str, asyncio.Queue[Delivery]] = {}
        self.closed = False
        FakeRelay.opened.append(self)

    async def __aenter__(self) -> FakeRelay:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        self.closed = True

    async def subscribe(self, cap: bytes) -> str:
        box = protocol.mailbox_id(cap)
        queue = self._queues.setdefault(box, asyncio.Queue())
        for number, data in enumerate(FakeRelay.script.get(box, []), 1):
            queue.put_nowait(Delivery(box, f"{number}-0", data))
        return box

    async def post(self, cap: bytes, data: bytes, ttl: int = 3600) -> str:
        self.posts.append((protocol.mailbox_id(cap), data))
        return f"{len(self.posts)}-0"

    def messages(self, cap: bytes) -> asyncio.Queue[Delivery]:
        return self._queues[protocol.mailbox_id(cap)]

    async def receive(self, cap: bytes, timeout: float | None) -> Delivery:
        return await asyncio.wait_for(self._queues[protocol.mailbox_id(cap)].get(), timeout)

    @classmethod
    def sent(cls) -> list[tuple[str, bytes]]:
        return [post for relay in cls.opened for post in relay.posts]


def box(section: str, name: str) -> str:
    return str(VECTORS[section]["mailboxes"][name]["box"])


def expected_post(section: str, message: dict[str, Any]) -> tuple[str, bytes]:
    return box(section, message["mailbox"]), raw(message["envelope"])


@pytest.fixture
def fake_relay(monkeypatch: pytest.MonkeyPatch) -> type[FakeRelay]:
    FakeRelay.script = {}
    FakeRelay.opened = []
    monkeypatch.setattr(host_module, "RelayConnection", FakeRelay)
    monkeypatch.setattr(device_module, "RelayConnection", FakeRelay)
    return FakeRelay


class VectorKeystore:
    """What ``PairingAttempt`` needs of a ``HostKeystore``: the vectors' host key."""

    def __init__(self) -> None:
        self.saved: list[host_module.DeviceRecord] = []

    def host_key(self) -> X25519PrivateKey:
        return X25519PrivateKey.from_private_bytes(private(INPUTS["host_static"]))

    def unique_name(self, wanted: str) -> str:
        return wanted

    def save(self, record: host_module.DeviceRecord) -> None:
        self.saved.append(record)


def test_the_reference_host_sends_the_vectors(
    fake_relay: type[FakeRelay], monkeypatch: pytest.MonkeyPatch
) -> None:
    pairing_inputs, session_inputs = INPUTS["pairing"], INPUTS["session"]
    clock = PinnedClock(INPUTS["offer"]["created"])
    monkeypatch.setattr(host_module, "time", clock)
    monkeypatch.setattr(protocol, "time", clock)  # the offer's expiry check
    monkeypatch.setattr(
        noise_module,
        "generate_keypair",
        PinnedEphemerals(
            [private(pairing_inputs["host_ephemeral"]), private(session_inputs["host_ephemeral"])]
        ),
    )
    monkeypatch.setattr(
        host_module,
        "secrets",
        PinnedRandomness(
            [
                raw(INPUTS["offer"]["secret"]),
                raw(INPUTS["offer"]["offer_id"]),
                raw(pairing_inputs["pairing_id"]),
                raw(pairing_inputs["h2d"]),
                raw(pairing_inputs["d2h"]),
                raw(session_inputs["reply"]),
                raw(session_inputs["conversation"]),
            ]
        ),
    )
    fake_relay.script = {
        box("pairing", "pair_d2h"): [raw(PAIRING["pair-init"]["envelope"])],
        box("session", "reply"): [
            raw(SESSION["accept"]["envelope"]),
            raw(SESSION["read-response"]["envelope"]),
        ],
    }
    keystore = VectorKeystore()

    async def pair_then_read() -> dict[str, Any]:
        attempt = host_module.PairingAttempt(
            INPUTS["offer"]["relay"],
            INPUTS["offer"]["label"],
            keystore=keystore,  # type: ignore[arg-type]
            lifetime=INPUTS["offer"]["expires"] - INPUTS["offer"]["created"],
        )
        assert attempt.offer_string == VECTORS["offer"]["string"], "the offer string"
        assert attempt.offer.uri == VECTORS["offer"]["uri"]
        pending = await attempt.wait_for_device(5)
        assert pending.code == VECTORS["pairing"]["confirmation_code"]
        assert pending.device_name == pairing_inputs["device_name"]
        record = await attempt.finish(True)
        assert record is not None
        assert keystore.saved == [record]
        assert record.pairing == b64u(raw(pairing_inputs["pairing_id"]))
        assert record.device_key == b64u(public(INPUTS["device_static"]))
        wanted = INPUTS["requests"]["read"]
        request = protocol.new_request(
            "read",
            namespace=wanted["ns"],
            key=wanted["key"],
            lifetime=wanted["exp"] - wanted["iat"],
            request_id=raw(wanted["id"]),
            now=wanted["iat"],
        )
        client = host_module.DeviceClient(record, keystore.host_key())
        return await client.request(request, 5)

    answer = asyncio.run(pair_then_read())
    assert answer == SESSION["read-response"]["payload"]
    sent = fake_relay.sent()
    assert sent[:5] == [
        expected_post("pairing", PAIRING["pair-resp"]),
        expected_post("pairing", PAIRING["pair-final"]),
        expected_post("session", SESSION["open"]),
        expected_post("session", SESSION["read-request"]),
        # One request per session: the host's close goes out at nonce 1, not the vectors' 2.
        (box("session", "h2d"), sent[4][1]),
    ], "the reference host's messages differ from the vectors"
    assert len(sent) == 5
    # That close is still the host's close for this session (the device can read it).
    device = HandshakeState.initialize(
        protocol.SESSION_PROTOCOL,
        initiator=False,
        prologue=raw(VECTORS["session"]["prologue"]),
        s=private(INPUTS["device_static"]),
        e=private(session_inputs["device_ephemeral"]),
        rs=public(INPUTS["host_static"]),
    )
    device.read_message(open_envelope(SESSION["open"]))
    device.write_message(raw(SESSION["accept"]["padded_payload"]))
    transport = device.transport()
    transport.decrypt(open_envelope(SESSION["read-request"]))
    assert unpad(transport.decrypt(decode_envelope(sent[4][1]).body)) == {"t": "close"}


def test_the_reference_device_sends_the_vectors(
    fake_relay: type[FakeRelay], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pairing_inputs, session_inputs = INPUTS["pairing"], INPUTS["session"]
    monkeypatch.setenv(device_module.ENV_DEVICE_PASSPHRASE, "vector device passphrase")
    clock = PinnedClock(INPUTS["offer"]["created"])
    monkeypatch.setattr(device_module, "time", clock)
    monkeypatch.setattr(protocol, "time", clock)  # offer and request expiry checks
    monkeypatch.setattr(device_module, "__version__", "vectors")  # jss-device/vectors
    monkeypatch.setattr(
        noise_module,
        "generate_keypair",
        PinnedEphemerals(
            [
                private(pairing_inputs["device_ephemeral"]),
                private(session_inputs["device_ephemeral"]),
            ]
        ),
    )
    monkeypatch.setattr(
        device_module, "secrets", PinnedRandomness([raw(pairing_inputs["conversation"])])
    )
    state = device_module.DeviceState(tmp_path / "device", fast_kdf_config())
    state.vault.set(device_module.INTERNAL, "device-key", b64u(private(INPUTS["device_static"])))
    read = INPUTS["requests"]["read"]
    state.vault.set(read["ns"], read["key"], read["answer_value"])
    said: list[str] = []
    reference = device_module.ReferenceDevice(
        state, device_module.AutoApprover(), name=pairing_inputs["device_name"], say=said.append
    )
    fake_relay.script = {
        box("pairing", "pair_h2d"): [
            raw(PAIRING["pair-resp"]["envelope"]),
            raw(PAIRING["pair-final"]["envelope"]),
        ],
    }

    async def pair_then_serve() -> None:
        pairing = await reference.pair(VECTORS["offer"]["uri"], timeout=5)
        assert pairing.pairing.hex() == pairing_inputs["pairing_id"]
        assert [p.pairing for p in state.pairings()] == [pairing.pairing]
        clock.now = session_inputs["time"]
        connection = FakeRelay(INPUTS["offer"]["relay"])
        for name in ("open", "read-request", "write-request", "close"):
            data = raw(SESSION[name]["envelope"])
            await reference._handle(connection, pairing, data)  # type: ignore[arg-type]
        assert not reference._sessions, "close ends the session"

    asyncio.run(pair_then_serve())
    assert any(VECTORS["pairing"]["confirmation_code"] in line for line in said)
    write = INPUTS["requests"]["write"]
    assert state.vault.get(write["ns"], write["key"]) == write["value"]
    assert fake_relay.sent() == [
        expected_post("pairing", PAIRING["pair-init"]),
        expected_post("session", SESSION["accept"]),
        expected_post("session", SESSION["read-response"]),
        expected_post("session", SESSION["write-response"]),
    ], "the reference device's messages differ from the vectors"
