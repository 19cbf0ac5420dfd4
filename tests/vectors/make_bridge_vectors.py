"""Deterministic messages of the bridge protocol, version 1 (docs/bridge-protocol.md §3-§9).

Builds ``bridge-v1.json``: one complete pairing (the offer, ``pair-init``, ``pair-resp``,
the confirmation code, ``pair-final``) and one session (``open``, ``accept``, a ``read``
request and its response, a ``write`` request and its response, ``close``, plus the
``unknown-host`` notice a device would send instead of ``accept``), each as the envelope
bytes that travel in a relay message's ``data``, together with every input: static and
ephemeral private keys, the offer secret (the PSK), conversation ids, request ids, times,
mailbox capabilities and mailbox ids, the reply capability and each padded payload.

Only the wire-format building blocks are used -- ``protocol.py`` (offer, HKDF, mailbox
ids, envelopes, padding, the confirmation code, requests and responses) and ``noise.py``
(``HandshakeState`` with fixed ephemerals) -- following the document step by step, never
``host.py`` or ``device.py`` (they draw fresh randomness). Every secret here is a fixed,
public test value derived from a label, so the output is the same on every run.

    .venv/bin/python tests/vectors/make_bridge_vectors.py           # rewrite bridge-v1.json
    .venv/bin/python tests/vectors/make_bridge_vectors.py --check   # exit 1 if it differs

``tests/test_bridge_vectors.py`` regenerates the vectors and compares them with the file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from jupyter_secure_storage.bridge import protocol
from jupyter_secure_storage.bridge.noise import (
    HandshakeState,
    NoiseTransport,
    parse_protocol_name,
    public_key_bytes,
)
from jupyter_secure_storage.bridge.protocol import Offer, Request, b64u

VECTOR_FILE = Path(__file__).resolve().parent / "bridge-v1.json"
FORMAT_NAME = "jss-bridge-vectors"
FORMAT_VERSION = 1

# --- the fixed inputs -----------------------------------------------------------------------


def fixed(label: str, size: int = 32) -> bytes:
    """A public test value: the first ``size`` bytes of SHA-256("jss-bridge/1 vector: " label)."""
    return hashlib.sha256(b"jss-bridge/1 vector: " + label.encode("ascii")).digest()[:size]


def public_of(private: bytes) -> bytes:
    return public_key_bytes(X25519PrivateKey.from_private_bytes(private))


T0 = 1_795_843_200  # when the host makes the offer (the document's example time)
OFFER_LIFETIME = 600
SESSION_TIME = T0 + 120  # when the session runs (after pairing)
REQUEST_LIFETIME = 60

HOST_STATIC = fixed("host static private key")
DEVICE_STATIC = fixed("device static private key")
OFFER_SECRET = fixed("offer secret s")
OFFER_ID = fixed("offer id i", 16)
RELAY_URL = "wss://relay.example.org/relay"
HOST_LABEL = "alice @ hub.example.org"
DEVICE_NAME = "reference device"
SOFTWARE = "jss-device/vectors"

PAIRING_CONVERSATION = fixed("pairing conversation id", 16)
PAIRING_DEVICE_EPHEMERAL = fixed("pairing device ephemeral private key")
PAIRING_HOST_EPHEMERAL = fixed("pairing host ephemeral private key")
PAIRING_ID = fixed("pairing id", 16)
H2D = fixed("h2d capability")
D2H = fixed("d2h capability")

SESSION_CONVERSATION = fixed("session conversation id", 16)
SESSION_HOST_EPHEMERAL = fixed("session host ephemeral private key")
SESSION_DEVICE_EPHEMERAL = fixed("session device ephemeral private key")
REPLY = fixed("session reply capability")

NAMESPACE = "default"
READ_ID = fixed("read request id", 16)
READ_KEY = "OPENAI_API_KEY"
READ_VALUE = "sk-vector-0000-not-a-secret"  # public test data
WRITE_ID = fixed("write request id", 16)
WRITE_KEY = "DATABASE_URL"
# Non-ASCII (UTF-8 on the wire) and long enough for the 1024-byte bucket.
WRITE_VALUE = "postgres://vector:not-a-secret@db.example.org/é " + "0123456789abcdef" * 20

# --- what the file says about itself ---------------------------------------------------------

FORMAT: dict[str, Any] = {
    "name": FORMAT_NAME,
    "version": FORMAT_VERSION,
    "spec": "docs/bridge-protocol.md, protocol version 1",
    "generator": "tests/vectors/make_bridge_vectors.py",
    "encoding": (
        "Byte strings are lowercase hex unless a field name ends in _b64u (base64url without "
        "padding, as on the wire) or is an offer string. Times are Unix seconds. Private "
        "keys are raw 32-byte X25519 scalars (before clamping); public keys raw 32 bytes."
    ),
    "reproducing": (
        "The document does not fix a JSON serialization, so payload bytes are given: "
        "encrypting padded_payload with the listed keys and ephemerals reproduces "
        "noise_message and envelope byte for byte. A decoder must accept the payloads as "
        "given; an encoder may serialize JSON differently."
    ),
    "sections": {
        "inputs": "every key, secret, id, time and plaintext the messages are built from",
        "offer": "§3: the offer object, its JSON, the offer string, URI and web link",
        "pairing": (
            "§4, §8: the prologue, the pairing mailboxes (cap_b64u as sent in relay frames, "
            "box as the relay stores it), the Noise_IKpsk1 messages, the handshake hash h "
            "and the confirmation code"
        ),
        "session": (
            "§9: the prologue, the h2d/d2h/reply mailboxes, the Noise_KK messages, the "
            "handshake hash, and the notice a device sends instead of accept (§9 step 2)"
        ),
    },
    "message_fields": {
        "name": "pair-init, pair-resp, pair-final, open, accept, read-request, ...",
        "kind": "the envelope kind byte (§6)",
        "kind_name": "its name in §6's table",
        "sender": "host or device",
        "mailbox": "the mailbox it is posted to (a key of the section's mailboxes)",
        "conversation": "the envelope's 16-byte conversation id",
        "noise": (
            "handshake message N of the pattern, or transport message with the sender's "
            "key at nonce N, or none (a notice)"
        ),
        "payload": "the JSON object the payload holds (for a notice: the cleartext body)",
        "padded_payload": "§7: u32be length || JSON || zeros, the Noise plaintext",
        "noise_message": "the Noise message: the envelope body",
        "envelope": "§6: JSB1 || kind || conversation id || body; what the relay carries",
        "data_b64u": "the envelope as the data field of a relay post / msg frame",
    },
}


# --- building ----------------------------------------------------------------------------------


def handshake_step(protocol_name: str, index: int) -> str:
    """``handshake message N (-> e, es, ...)`` from the pattern itself."""
    tokens = parse_protocol_name(protocol_name).messages[index]
    arrow = "->" if index % 2 == 0 else "<-"
    return f"handshake message {index + 1} ({arrow} {', '.join(tokens)})"


def mailbox(cap: bytes) -> dict[str, str]:
    return {"cap_b64u": b64u(cap), "box": protocol.mailbox_id(cap)}


def message_entry(
    name: str,
    kind: int,
    sender: str,
    mailbox_name: str,
    conversation: bytes,
    *,
    noise: str,
    payload: dict[str, Any],
    padded: bytes | None,
    body: bytes,
) -> dict[str, Any]:
    envelope = protocol.encode_envelope(kind, conversation, body)
    return {
        "name": name,
        "kind": kind,
        "kind_name": protocol.KINDS[kind],
        "sender": sender,
        "mailbox": mailbox_name,
        "conversation": conversation.hex(),
        "noise": noise,
        "payload": payload,
        "padded_payload": None if padded is None else padded.hex(),
        "noise_message": body.hex(),
        "envelope": envelope.hex(),
        "data_b64u": b64u(envelope),
    }


def the_offer() -> Offer:
    return Offer(
        host_key=public_of(HOST_STATIC),
        secret=OFFER_SECRET,
        relay=RELAY_URL,
        expires=T0 + OFFER_LIFETIME,
        label=HOST_LABEL,
        offer_id=OFFER_ID,
    )


def read_request() -> Request:
    return protocol.new_request(
        "read",
        namespace=NAMESPACE,
        key=READ_KEY,
        lifetime=REQUEST_LIFETIME,
        request_id=READ_ID,
        now=SESSION_TIME,
    )


def write_request() -> Request:
    return protocol.new_request(
        "write",
        namespace=NAMESPACE,
        key=WRITE_KEY,
        value=WRITE_VALUE,
        lifetime=REQUEST_LIFETIME,
        request_id=WRITE_ID,
        now=SESSION_TIME,
    )


def build_pairing(offer: Offer, offer_string: str) -> tuple[list[dict[str, Any]], bytes, str]:
    """§8, both sides: the messages, the handshake hash and the confirmation code."""
    prologue = offer.prologue(offer_string)
    device = HandshakeState.initialize(
        protocol.PAIRING_PROTOCOL,
        initiator=True,
        prologue=prologue,
        s=DEVICE_STATIC,
        e=PAIRING_DEVICE_EPHEMERAL,
        rs=offer.host_key,
        psks=[offer.secret],
    )
    host = HandshakeState.initialize(
        protocol.PAIRING_PROTOCOL,
        initiator=False,
        prologue=prologue,
        s=HOST_STATIC,
        e=PAIRING_HOST_EPHEMERAL,
        psks=[offer.secret],
    )
    messages = []
    conversation = PAIRING_CONVERSATION

    hello = {"t": "pair", "device": DEVICE_NAME, "software": SOFTWARE}
    padded = protocol.pad(hello)
    body = device.write_message(padded)
    if host.read_message(body) != padded:
        raise AssertionError("the host does not read pair-init back")
    messages.append(
        message_entry(
            "pair-init",
            protocol.KIND_PAIR_INIT,
            "device",
            "pair_d2h",
            conversation,
            noise=handshake_step(protocol.PAIRING_PROTOCOL, 0),
            payload=hello,
            padded=padded,
            body=body,
        )
    )

    paired = {
        "t": "paired",
        "pairing": b64u(PAIRING_ID),
        "h2d": b64u(H2D),
        "d2h": b64u(D2H),
        "host": HOST_LABEL,
    }
    padded = protocol.pad(paired)
    body = host.write_message(padded)
    if device.read_message(body) != padded:
        raise AssertionError("the device does not read pair-resp back")
    messages.append(
        message_entry(
            "pair-resp",
            protocol.KIND_PAIR_RESP,
            "host",
            "pair_h2d",
            conversation,
            noise=handshake_step(protocol.PAIRING_PROTOCOL, 1),
            payload=paired,
            padded=padded,
            body=body,
        )
    )

    handshake_hash = host.handshake_hash
    if device.handshake_hash != handshake_hash:
        raise AssertionError("the two sides' handshake hashes differ")
    code = protocol.confirmation_code(handshake_hash)

    verdict = {"t": "confirmed"}
    padded = protocol.pad(verdict)
    body = host.transport().encrypt(padded)
    if device.transport().decrypt(body) != padded:
        raise AssertionError("the device does not read pair-final back")
    messages.append(
        message_entry(
            "pair-final",
            protocol.KIND_PAIR_FINAL,
            "host",
            "pair_h2d",
            conversation,
            noise="transport message, host's sending key, nonce 0",
            payload=verdict,
            padded=padded,
            body=body,
        )
    )
    return messages, handshake_hash, code


def _transport(sender: NoiseTransport, receiver: NoiseTransport, padded: bytes) -> bytes:
    body = sender.encrypt(padded)
    if receiver.decrypt(body) != padded:
        raise AssertionError("a transport message does not decrypt on the other side")
    return body


def build_session() -> tuple[list[dict[str, Any]], bytes]:
    """§9, both sides: open, accept, read, its response, write, its response, close."""
    prologue = protocol.SESSION_PROLOGUE + PAIRING_ID
    host = HandshakeState.initialize(
        protocol.SESSION_PROTOCOL,
        initiator=True,
        prologue=prologue,
        s=HOST_STATIC,
        e=SESSION_HOST_EPHEMERAL,
        rs=public_of(DEVICE_STATIC),
    )
    device = HandshakeState.initialize(
        protocol.SESSION_PROTOCOL,
        initiator=False,
        prologue=prologue,
        s=DEVICE_STATIC,
        e=SESSION_DEVICE_EPHEMERAL,
        rs=public_of(HOST_STATIC),
    )
    conversation = SESSION_CONVERSATION
    messages = []

    opening = {"t": "open", "v": 1, "reply": b64u(REPLY)}
    padded = protocol.pad(opening)
    body = host.write_message(padded)
    if device.read_message(body) != padded:
        raise AssertionError("the device does not read open back")
    messages.append(
        message_entry(
            "open",
            protocol.KIND_OPEN,
            "host",
            "h2d",
            conversation,
            noise=handshake_step(protocol.SESSION_PROTOCOL, 0),
            payload=opening,
            padded=padded,
            body=body,
        )
    )

    accept = {"t": "accept"}
    padded = protocol.pad(accept)
    body = device.write_message(padded)
    if host.read_message(body) != padded:
        raise AssertionError("the host does not read accept back")
    messages.append(
        message_entry(
            "accept",
            protocol.KIND_ACCEPT,
            "device",
            "reply",
            conversation,
            noise=handshake_step(protocol.SESSION_PROTOCOL, 1),
            payload=accept,
            padded=padded,
            body=body,
        )
    )
    handshake_hash = host.handshake_hash
    if device.handshake_hash != handshake_hash:
        raise AssertionError("the two sides' handshake hashes differ")
    to_device, to_host = host.transport(), device.transport()

    exchanges = [
        ("read-request", "host", read_request().to_message()),
        ("read-response", "device", protocol.response(READ_ID, found=True, value=READ_VALUE)),
        ("write-request", "host", write_request().to_message()),
        ("write-response", "device", protocol.response(WRITE_ID)),
        ("close", "host", {"t": "close"}),
    ]
    nonces = {"host": 0, "device": 0}
    for name, sender, payload in exchanges:
        padded = protocol.pad(payload)
        if sender == "host":
            body = _transport(to_device, to_host, padded)
        else:
            body = _transport(to_host, to_device, padded)
        messages.append(
            message_entry(
                name,
                protocol.KIND_DATA,
                sender,
                "h2d" if sender == "host" else "reply",
                conversation,
                noise=f"transport message, {sender}'s sending key, nonce {nonces[sender]}",
                payload=payload,
                padded=padded,
                body=body,
            )
        )
        nonces[sender] += 1

    notice_body = {"error": "unknown-host"}
    notice = protocol.notice(conversation, "unknown-host")
    entry = message_entry(
        "unknown-host-notice",
        protocol.KIND_NOTICE,
        "device",
        "d2h",
        conversation,
        noise="none: cleartext JSON, sent instead of accept by a device that cannot read open",
        payload=notice_body,
        padded=None,
        body=protocol.decode_envelope(notice).body,
    )
    if entry["envelope"] != notice.hex():
        raise AssertionError("the notice does not round-trip")
    messages.append(entry)
    return messages, handshake_hash


def key_pair(private: bytes) -> dict[str, str]:
    return {"private": private.hex(), "public": public_of(private).hex()}


def build_vectors() -> dict[str, Any]:
    offer = the_offer()
    offer_string = offer.encode()
    pair_h2d, pair_d2h = offer.mailbox_caps()
    pairing_messages, pairing_hash, code = build_pairing(offer, offer_string)
    session_messages, session_hash = build_session()
    read, write = read_request(), write_request()
    return {
        "format": FORMAT,
        "protocol": {
            "version": protocol.VERSION,
            "magic": protocol.MAGIC.decode("ascii"),
            "pairing_protocol": protocol.PAIRING_PROTOCOL,
            "session_protocol": protocol.SESSION_PROTOCOL,
            "hkdf_salt": protocol.HKDF_SALT.decode("ascii"),
            "buckets": list(protocol.BUCKETS),
        },
        "inputs": {
            "host_static": key_pair(HOST_STATIC),
            "device_static": key_pair(DEVICE_STATIC),
            "offer": {
                "secret": OFFER_SECRET.hex(),
                "offer_id": OFFER_ID.hex(),
                "relay": RELAY_URL,
                "created": T0,
                "expires": T0 + OFFER_LIFETIME,
                "label": HOST_LABEL,
            },
            "pairing": {
                "conversation": PAIRING_CONVERSATION.hex(),
                "device_ephemeral": key_pair(PAIRING_DEVICE_EPHEMERAL),
                "host_ephemeral": key_pair(PAIRING_HOST_EPHEMERAL),
                "psk": OFFER_SECRET.hex(),
                "device_name": DEVICE_NAME,
                "software": SOFTWARE,
                "pairing_id": PAIRING_ID.hex(),
                "h2d": H2D.hex(),
                "d2h": D2H.hex(),
                "verdict": "confirmed",
            },
            "session": {
                "time": SESSION_TIME,
                "conversation": SESSION_CONVERSATION.hex(),
                "host_ephemeral": key_pair(SESSION_HOST_EPHEMERAL),
                "device_ephemeral": key_pair(SESSION_DEVICE_EPHEMERAL),
                "reply": REPLY.hex(),
            },
            "requests": {
                "read": {
                    "id": read.id.hex(),
                    "op": read.op,
                    "ns": read.namespace,
                    "key": read.key,
                    "iat": read.issued,
                    "exp": read.expires,
                    "answer_value": READ_VALUE,
                },
                "write": {
                    "id": write.id.hex(),
                    "op": write.op,
                    "ns": write.namespace,
                    "key": write.key,
                    "value": write.value,
                    "iat": write.issued,
                    "exp": write.expires,
                },
            },
        },
        "offer": {
            "object": json.loads(protocol.unb64u(offer_string)),
            "json": protocol.unb64u(offer_string).decode("utf-8"),
            "string": offer_string,
            "uri": offer.uri,
            "web_link": offer.web_link("https://relay.example.org"),
        },
        "pairing": {
            "protocol": protocol.PAIRING_PROTOCOL,
            "initiator": "device",
            "prologue": offer.prologue(offer_string).hex(),
            "mailboxes": {"pair_h2d": mailbox(pair_h2d), "pair_d2h": mailbox(pair_d2h)},
            "messages": pairing_messages,
            "handshake_hash": pairing_hash.hex(),
            "confirmation_code": code,
        },
        "session": {
            "protocol": protocol.SESSION_PROTOCOL,
            "initiator": "host",
            "prologue": (protocol.SESSION_PROLOGUE + PAIRING_ID).hex(),
            "mailboxes": {"h2d": mailbox(H2D), "d2h": mailbox(D2H), "reply": mailbox(REPLY)},
            "messages": session_messages,
            "handshake_hash": session_hash.hex(),
        },
    }


def render(vectors: dict[str, Any]) -> str:
    return json.dumps(vectors, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="compare with the file; no writing")
    parser.add_argument("--output", type=Path, default=VECTOR_FILE)
    args = parser.parse_args(argv)
    text = render(build_vectors())
    if args.check:
        same = args.output.exists() and args.output.read_text(encoding="utf-8") == text
        print(f"{args.output}: {'up to date' if same else 'DIFFERS from the generator'}")
        return 0 if same else 1
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
