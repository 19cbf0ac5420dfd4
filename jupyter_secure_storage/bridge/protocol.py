"""The bridge's wire formats (docs/bridge-protocol.md, version 1), with nothing else in them.

Offers, mailbox capabilities, envelopes, padded payloads, the confirmation code,
requests and responses: encoding and strict decoding. Every decoder raises
:class:`ProtocolError` (never anything else) on malformed input, so the frame parser
can be fuzzed and a hostile relay can only ever cause a typed, dropped message.
Nothing here does I/O or keeps state.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import struct
import time
from dataclasses import dataclass
from typing import Any

VERSION = 1
MAGIC = b"JSB1"
ENVELOPE_HEADER = 21  # magic 4 + kind 1 + conversation id 16
MAX_NOISE_MESSAGE = 65535
BUCKETS = (256, 1024, 4096, 16384, 65519)
HKDF_SALT = b"jss-bridge/1"
PAIRING_PROLOGUE = b"jss-bridge/1 pairing\n"
SESSION_PROLOGUE = b"jss-bridge/1 session\n"
PAIRING_PROTOCOL = "Noise_IKpsk1_25519_ChaChaPoly_SHA256"
SESSION_PROTOCOL = "Noise_KK_25519_ChaChaPoly_SHA256"
OFFER_URI_PREFIX = "jss-pair:"
CLOCK_SKEW = 60
MAX_REQUEST_LIFETIME = 300
MAX_VALUE_BYTES = 60_000
OPS = ("read", "write", "delete", "list", "unpair")


class ProtocolError(ValueError):
    """A message or offer that does not follow docs/bridge-protocol.md."""


# --- encodings -------------------------------------------------------------------------

_B64U = re.compile(r"[A-Za-z0-9_-]*")


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64u(text: object, size: int | None = None, what: str = "field") -> bytes:
    """Strict base64url-without-padding decoding (canonical only)."""
    if not isinstance(text, str) or not _B64U.fullmatch(text) or len(text) % 4 == 1:
        raise ProtocolError(f"{what} is not base64url without padding")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as error:
        raise ProtocolError(f"{what} is not base64url") from error
    if b64u(data) != text:
        raise ProtocolError(f"{what} is not canonical base64url")
    if size is not None and len(data) != size:
        raise ProtocolError(f"{what} must be {size} bytes")
    return data


def hkdf(ikm: bytes, info: bytes, length: int = 32, salt: bytes = HKDF_SALT) -> bytes:
    """RFC 5869 HKDF-SHA256."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    output, block = b"", b""
    counter = 1
    while len(output) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        output += block
        counter += 1
    return output[:length]


def compact_json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def parse_json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ProtocolError(f"{what} is not UTF-8 JSON") from error
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} is not a JSON object")
    return value


def _text(value: object, what: str, limit: int) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise ProtocolError(f"{what} must be a string of at most {limit} characters")
    return value


def _int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(f"{what} must be an integer")
    return value


# --- the offer ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Offer:
    """What the host shows to pair (§3)."""

    host_key: bytes
    secret: bytes
    relay: str
    expires: int
    label: str
    offer_id: bytes
    version: int = VERSION

    def encode(self) -> str:
        """The offer string: b64u of the JSON object, keys in the spec's order."""
        body = {
            "v": self.version,
            "k": b64u(self.host_key),
            "s": b64u(self.secret),
            "r": self.relay,
            "x": self.expires,
            "l": self.label,
            "i": b64u(self.offer_id),
        }
        return b64u(compact_json(body))

    @property
    def uri(self) -> str:
        return OFFER_URI_PREFIX + self.encode()

    def web_link(self, http_origin: str) -> str:
        return http_origin.rstrip("/") + "/device/#" + self.encode()

    def companion_link(self) -> str:
        """The web companion's page for this offer's relay, with the offer in the fragment."""
        return companion_url(self.relay) + "#" + self.encode()

    def prologue(self, offer_string: str | None = None) -> bytes:
        return PAIRING_PROLOGUE + (offer_string or self.encode()).encode("ascii")

    def mailbox_caps(self) -> tuple[bytes, bytes]:
        """``(pair_h2d, pair_d2h)`` derived from the secret (§4)."""
        return (
            hkdf(self.secret, b"pairing host-to-device"),
            hkdf(self.secret, b"pairing device-to-host"),
        )

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) > self.expires + CLOCK_SKEW


def companion_url(relay_url: str) -> str:
    """Where the relay serves the web companion (§3): ``ws``/``wss`` become ``http``/``https``
    and the last path segment becomes ``device/``, so ``wss://h/relay`` gives
    ``https://h/device/`` and ``ws://h/base/secure-storage/relay`` (the Jupyter Server
    route) gives ``http://h/base/secure-storage/device/``."""
    scheme, separator, rest = relay_url.partition("://")
    if not separator or scheme not in ("ws", "wss"):
        raise ProtocolError("the relay URL must be a ws:// or wss:// URL")
    authority, slash, path = rest.partition("/")
    parent = ("/" + path).rsplit("/", 1)[0] if slash else ""
    return f"{'https' if scheme == 'wss' else 'http'}://{authority}{parent}/device/"


def passkey_problem(relay_url: str) -> str | None:
    """Why a phone could not use a passkey on the web companion served beside this relay,
    or None. WebAuthn needs a secure context (HTTPS, or ``localhost`` on the same device)
    and a host *name*: a page opened from an IP address can never create a passkey."""
    import ipaddress
    import urllib.parse

    try:
        parsed = urllib.parse.urlsplit(relay_url)
        host = parsed.hostname or ""
    except ValueError:
        return None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return (
            f"the relay is addressed by IP ({host}): a phone's browser refuses passkeys "
            "on such a page, so the web companion cannot pair from this code. Use a relay "
            "URL with a host name over wss:// (the reference device is not affected)."
        )
    local = host == "localhost" or host.endswith(".localhost")
    if parsed.scheme == "ws" and not local:
        return (
            f"the relay URL is ws:// (not encrypted) on {host}: a phone's browser allows "
            "passkeys only over HTTPS, so the web companion cannot pair from this code. "
            "Put the relay behind HTTPS and use its wss:// URL."
        )
    return None


def decode_offer(text: str) -> tuple[Offer, str]:
    """Parse an offer string, URI or web link; return the offer and its exact offer string."""
    if not isinstance(text, str):
        raise ProtocolError("an offer is text")
    text = text.strip()
    if text.startswith(OFFER_URI_PREFIX):
        text = text[len(OFFER_URI_PREFIX) :]
    elif "#" in text:
        text = text.rsplit("#", 1)[1]
    if len(text) > 2048:
        raise ProtocolError("the offer is too long")
    body = parse_json_object(unb64u(text, what="the offer"), "the offer")
    version = _int(body.get("v"), "v")
    if version != VERSION:
        raise ProtocolError(f"offer version {version} is not supported (this is version 1)")
    relay = _text(body.get("r"), "r", 256)
    if not relay.startswith(("ws://", "wss://")):
        raise ProtocolError("r must be a ws:// or wss:// URL")
    offer = Offer(
        host_key=unb64u(body.get("k"), 32, "k"),
        secret=unb64u(body.get("s"), 32, "s"),
        relay=relay,
        expires=_int(body.get("x"), "x"),
        label=_text(body.get("l"), "l", 64),
        offer_id=unb64u(body.get("i"), 16, "i"),
    )
    return offer, text


# --- mailboxes ----------------------------------------------------------------------------


def mailbox_id(cap: bytes) -> str:
    """What the relay stores a mailbox under: it never needs the capability itself."""
    return b64u(hashlib.sha256(b"jss-mailbox/1" + cap).digest())


# --- envelopes ----------------------------------------------------------------------------

KIND_PAIR_INIT = 1
KIND_PAIR_RESP = 2
KIND_PAIR_FINAL = 3
KIND_OPEN = 4
KIND_ACCEPT = 5
KIND_DATA = 6
KIND_NOTICE = 7
KINDS = {
    1: "pair-init",
    2: "pair-resp",
    3: "pair-final",
    4: "open",
    5: "accept",
    6: "data",
    7: "notice",
}


@dataclass(frozen=True)
class Envelope:
    kind: int
    conversation: bytes
    body: bytes

    def encode(self) -> bytes:
        return MAGIC + bytes([self.kind]) + self.conversation + self.body


def encode_envelope(kind: int, conversation: bytes, body: bytes) -> bytes:
    if kind not in KINDS or len(conversation) != 16 or len(body) > MAX_NOISE_MESSAGE:
        raise ProtocolError("not a valid envelope")
    return Envelope(kind, conversation, body).encode()


def decode_envelope(data: bytes) -> Envelope:
    if not isinstance(data, bytes | bytearray):
        raise ProtocolError("an envelope is bytes")
    if len(data) < ENVELOPE_HEADER:
        raise ProtocolError("the envelope is shorter than its header")
    if data[:4] != MAGIC:
        raise ProtocolError("the envelope's magic is not JSB1 (another version or not ours)")
    kind = data[4]
    if kind not in KINDS:
        raise ProtocolError(f"unknown envelope kind {kind}")
    body = bytes(data[ENVELOPE_HEADER:])
    if len(body) > MAX_NOISE_MESSAGE:
        raise ProtocolError("the envelope body is larger than a Noise message")
    return Envelope(kind, bytes(data[5:21]), body)


def body_for(data: bytes, conversation: bytes, kind: int) -> bytes | None:
    """The body of ``data`` if it is a well-formed envelope of ``kind`` in
    ``conversation``; None for anything else (other conversations, noise, junk)."""
    try:
        envelope = decode_envelope(data)
    except ProtocolError:
        return None
    if envelope.conversation != conversation or envelope.kind != kind:
        return None
    return envelope.body


def notice(conversation: bytes, error: str) -> bytes:
    return encode_envelope(KIND_NOTICE, conversation, compact_json({"error": error}))


# --- padded payloads ---------------------------------------------------------------------


def pad(message: dict[str, Any]) -> bytes:
    """``u32 length || JSON || zeros`` to the smallest bucket that fits (§7)."""
    body = compact_json(message)
    size = 4 + len(body)
    for bucket in BUCKETS:
        if size <= bucket:
            return struct.pack(">I", len(body)) + body + bytes(bucket - size)
    raise ProtocolError("the message is too large for one payload")


def unpad(payload: bytes, what: str = "payload") -> dict[str, Any]:
    if len(payload) not in BUCKETS:
        raise ProtocolError(f"the {what} is not one of the padded sizes")
    (length,) = struct.unpack(">I", payload[:4])
    if 4 + length > len(payload):
        raise ProtocolError(f"the {what}'s length field exceeds it")
    if any(payload[4 + length :]):
        raise ProtocolError(f"the {what}'s padding is not zero")
    return parse_json_object(payload[4 : 4 + length], what)


# --- the confirmation code --------------------------------------------------------------


def confirmation_code(handshake_hash: bytes) -> str:
    number = struct.unpack(">I", hkdf(handshake_hash, b"confirmation code", 4))[0] % 1_000_000
    digits = f"{number:06d}"
    return f"{digits[:3]} {digits[3:]}"


# --- requests and responses ---------------------------------------------------------------

_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class Request:
    id: bytes
    op: str
    namespace: str
    key: str | None
    value: str | None
    issued: int
    expires: int

    def to_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "t": "req",
            "id": b64u(self.id),
            "op": self.op,
            "iat": self.issued,
            "exp": self.expires,
        }
        if self.op != "unpair":
            message["ns"] = self.namespace
        if self.key is not None:
            message["key"] = self.key
        if self.value is not None:
            message["value"] = self.value
        return message

    def expired(self, now: float | None = None) -> bool:
        moment = time.time() if now is None else now
        return self.expires < moment - CLOCK_SKEW or self.issued > moment + CLOCK_SKEW


def new_request(
    op: str,
    *,
    namespace: str = "default",
    key: str | None = None,
    value: str | None = None,
    lifetime: int = 60,
    request_id: bytes | None = None,
    now: int | None = None,
) -> Request:
    import secrets

    issued = int(time.time()) if now is None else now
    request = Request(
        request_id or secrets.token_bytes(16),
        op,
        namespace,
        key,
        value,
        issued,
        issued + min(lifetime, MAX_REQUEST_LIFETIME),
    )
    return decode_request(request.to_message())  # the same checks a device applies


def decode_request(message: dict[str, Any]) -> Request:
    if message.get("t") != "req":
        raise ProtocolError("not a request")
    op = message.get("op")
    if op not in OPS:
        raise ProtocolError("unknown request op")
    issued = _int(message.get("iat"), "iat")
    expires = _int(message.get("exp"), "exp")
    if expires < issued or expires - issued > MAX_REQUEST_LIFETIME:
        raise ProtocolError("a request lives at most 300 seconds")
    namespace = "default"
    if op != "unpair":
        namespace = _text(message.get("ns"), "ns", 64)
        if not _NAMESPACE.fullmatch(namespace):
            raise ProtocolError("ns is not a valid namespace")
    key = None
    if op in ("read", "write", "delete"):
        key = _text(message.get("key"), "key", 255)
        if not key or key != key.strip() or any(ord(c) < 32 or ord(c) == 127 for c in key):
            raise ProtocolError("key is not a valid key name")
    value = None
    if op == "write":
        value = _text(message.get("value"), "value", MAX_VALUE_BYTES)
        if len(value.encode("utf-8", "surrogatepass")) > MAX_VALUE_BYTES:
            raise ProtocolError("value is larger than 60,000 bytes")
    return Request(unb64u(message.get("id"), 16, "id"), op, namespace, key, value, issued, expires)


def response(request_id: bytes, **fields: Any) -> dict[str, Any]:
    return {"t": "res", "id": b64u(request_id), "ok": True, **fields}


def error_response(request_id: bytes, error: str, message: str) -> dict[str, Any]:
    return {"t": "res", "id": b64u(request_id), "ok": False, "error": error, "message": message}


def check_response(message: dict[str, Any], request: Request) -> dict[str, Any]:
    """Validate a response to ``request`` (types per op); return it."""
    if message.get("t") != "res" or message.get("id") != b64u(request.id):
        raise ProtocolError("not the response to this request")
    if message.get("ok") is not True:
        _text(message.get("error"), "error", 64)
        _text(message.get("message", ""), "message", 512)
        return message
    if request.op == "read":
        if not isinstance(message.get("found"), bool):
            raise ProtocolError("a read response says whether the key was found")
        if message["found"]:
            _text(message.get("value"), "value", MAX_VALUE_BYTES)
    elif request.op == "list":
        names = message.get("names")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ProtocolError("a list response has names")
    return message
