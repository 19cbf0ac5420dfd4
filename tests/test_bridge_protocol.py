"""The bridge's wire formats: round trips, strict decoding, and a fuzzed frame parser."""

from __future__ import annotations

import contextlib
import json
import secrets
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_secure_storage.bridge import protocol
from jupyter_secure_storage.bridge.protocol import (
    BUCKETS,
    Offer,
    ProtocolError,
    b64u,
    confirmation_code,
    decode_envelope,
    decode_offer,
    decode_request,
    encode_envelope,
    new_request,
    pad,
    unb64u,
    unpad,
)


def make_offer(**changes: object) -> Offer:
    fields: dict[str, object] = {
        "host_key": secrets.token_bytes(32),
        "secret": secrets.token_bytes(32),
        "relay": "ws://127.0.0.1:8765/relay",
        "expires": int(time.time()) + 600,
        "label": "alice @ laptop",
        "offer_id": secrets.token_bytes(16),
    }
    fields.update(changes)
    return Offer(**fields)  # type: ignore[arg-type]


# --- offers ------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["string", "uri", "web"])
def test_an_offer_round_trips_in_every_form(form: str) -> None:
    offer = make_offer()
    text = {
        "string": offer.encode(),
        "uri": offer.uri,
        "web": offer.web_link("https://relay.example.org"),
    }[form]
    decoded, offer_string = decode_offer(text)
    assert decoded == offer
    assert offer_string == offer.encode()


@pytest.mark.parametrize(
    ("relay", "page"),
    [
        ("ws://127.0.0.1:8765/relay", "http://127.0.0.1:8765/device/"),
        ("wss://relay.example.org/relay", "https://relay.example.org/device/"),
        ("wss://h/base/secure-storage/relay", "https://h/base/secure-storage/device/"),
        ("wss://hub/services/jss/relay", "https://hub/services/jss/device/"),
        ("ws://localhost:9", "http://localhost:9/device/"),
    ],
)
def test_the_companion_link_is_the_page_beside_the_relay(relay: str, page: str) -> None:
    offer = make_offer(relay=relay)
    assert protocol.companion_url(relay) == page
    link = offer.companion_link()
    assert link == page + "#" + offer.encode()
    assert decode_offer(link) == (offer, offer.encode())  # the reference device takes it too
    with pytest.raises(ProtocolError):
        protocol.companion_url("https://not-a-relay/relay")


@pytest.mark.parametrize(
    ("relay", "problem"),
    [
        ("wss://relay.example.org/relay", None),
        ("ws://localhost:8765/relay", None),
        ("ws://jupyter.localhost/base/secure-storage/relay", None),
        ("ws://127.0.0.1:8765/relay", "IP"),
        ("wss://192.168.1.20/relay", "IP"),
        ("wss://[::1]:8765/relay", "IP"),
        ("ws://relay.example.org/relay", "HTTPS"),
    ],
)
def test_the_host_says_when_a_phone_could_not_use_a_passkey(
    relay: str, problem: str | None
) -> None:
    said = protocol.passkey_problem(relay)
    if problem is None:
        assert said is None
    else:
        assert said is not None
        assert problem in said


def test_the_offer_string_is_compact_json_in_the_spec_order() -> None:
    offer = make_offer()
    body = unb64u(offer.encode())
    assert list(json.loads(body)) == ["v", "k", "s", "r", "x", "l", "i"]
    assert b" " not in body.replace(b"alice @ laptop", b"")


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("v", 2),
        ("k", b64u(b"short")),
        ("s", b64u(bytes(31))),
        ("i", "not base64!"),
        ("r", "http://relay.example.org"),
        ("x", "soon"),
        ("l", "x" * 65),
    ],
)
def test_malformed_offers_are_refused(field: str, bad: object) -> None:
    body = json.loads(unb64u(make_offer().encode()))
    body[field] = bad
    with pytest.raises(ProtocolError):
        decode_offer(b64u(json.dumps(body).encode()))


def test_expired_offers_are_expired_after_the_skew() -> None:
    now = 1_800_000_000
    offer = make_offer(expires=now)
    assert not offer.expired(now + 59)
    assert offer.expired(now + 61)


def test_mailbox_capabilities_are_derived_from_the_secret() -> None:
    offer = make_offer()
    h2d, d2h = offer.mailbox_caps()
    assert len(h2d) == len(d2h) == 32
    assert h2d != d2h
    assert (h2d, d2h) == make_offer(secret=offer.secret).mailbox_caps()
    assert protocol.mailbox_id(h2d) != protocol.mailbox_id(d2h)


def test_hkdf_matches_rfc_5869_test_case_1() -> None:
    okm = protocol.hkdf(
        bytes.fromhex("0b" * 22),
        bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        42,
        salt=bytes.fromhex("000102030405060708090a0b0c"),
    )
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


@pytest.mark.parametrize("text", ["", "A", "AA=", "A+B/", "QQ", "QR"])
def test_b64u_is_strict(text: str) -> None:
    if text in ("", "QQ"):
        assert b64u(unb64u(text)) == text
    else:
        with pytest.raises(ProtocolError):
            unb64u(text)


# --- envelopes and payloads -----------------------------------------------------------------


def test_envelopes_round_trip() -> None:
    conversation = secrets.token_bytes(16)
    data = encode_envelope(protocol.KIND_OPEN, conversation, b"noise bytes")
    envelope = decode_envelope(data)
    assert (envelope.kind, envelope.conversation, envelope.body) == (
        4,
        conversation,
        b"noise bytes",
    )


@pytest.mark.parametrize(
    "data",
    [b"", b"JSB1", b"JSB2" + bytes(30), b"JSB1\x00" + bytes(16), b"JSB1\x08" + bytes(16)],
    ids=["empty", "magic-only", "other-version", "kind-0", "kind-8"],
)
def test_bad_envelopes_are_refused(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_envelope(data)


@pytest.mark.parametrize("size", [0, 10, 251, 252, 253, 1019, 1020, 5000, 60000])
def test_payloads_pad_to_the_smallest_bucket(size: int) -> None:
    message = {"t": "x", "v": "a" * size}
    padded = pad(message)
    assert len(padded) in BUCKETS
    assert len(padded) == min(b for b in BUCKETS if b >= len(protocol.compact_json(message)) + 4)
    assert unpad(padded) == message


def test_too_large_payloads_are_refused() -> None:
    with pytest.raises(ProtocolError):
        pad({"v": "a" * 70000})


def test_nonzero_padding_and_bad_lengths_are_refused() -> None:
    padded = bytearray(pad({"t": "x"}))
    padded[-1] = 1
    with pytest.raises(ProtocolError):
        unpad(bytes(padded))
    with pytest.raises(ProtocolError):
        unpad(pad({"t": "x"})[:-1])
    with pytest.raises(ProtocolError):
        unpad(b"\xff\xff\xff\xff" + bytes(252))


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=400))
def test_the_frame_parsers_raise_only_protocol_errors(data: bytes) -> None:
    for parse in (decode_envelope, unpad):
        with contextlib.suppress(ProtocolError):
            parse(data)
    with contextlib.suppress(ProtocolError):
        decode_offer(data.decode("latin-1"))


@settings(max_examples=300, deadline=None)
@given(
    message=st.dictionaries(
        st.sampled_from(["t", "id", "op", "ns", "key", "value", "iat", "exp"]),
        st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=40)),
    )
)
def test_request_decoding_raises_only_protocol_errors(message: dict[str, object]) -> None:
    with contextlib.suppress(ProtocolError):
        decode_request(message)


# --- the confirmation code and requests ----------------------------------------------------


def test_confirmation_code_is_six_digits_from_the_handshake_hash() -> None:
    code = confirmation_code(bytes(32))
    assert len(code) == 7
    assert code[3] == " "
    assert code.replace(" ", "").isdigit()
    assert confirmation_code(bytes(32)) == code
    assert confirmation_code(b"\x01" + bytes(31)) != code


def test_requests_round_trip_and_expire() -> None:
    request = new_request("write", namespace="team-a", key="K", value="v", now=1_800_000_000)
    assert decode_request(request.to_message()) == request
    assert not request.expired(1_800_000_000 + 60)
    assert request.expired(1_800_000_000 + 60 + 61)
    assert request.expired(1_800_000_000 - 61)


@pytest.mark.parametrize(
    "change",
    [
        {"op": "steal"},
        {"ns": "bad ns"},
        {"key": ""},
        {"key": "line\nbreak"},
        {"exp": 1_800_001_000},
        {"value": "x" * 60_001},
        {"id": "short"},
    ],
)
def test_invalid_requests_are_refused(change: dict[str, object]) -> None:
    message = new_request("write", key="K", value="v", now=1_800_000_000).to_message()
    message.update(change)
    with pytest.raises(ProtocolError):
        decode_request(message)


def test_responses_are_checked_against_their_request() -> None:
    request = new_request("read", key="K")
    good = protocol.response(request.id, found=True, value="v")
    assert protocol.check_response(good, request) is good
    with pytest.raises(ProtocolError):
        protocol.check_response(protocol.response(secrets.token_bytes(16), found=False), request)
    with pytest.raises(ProtocolError):
        protocol.check_response(protocol.response(request.id, found="yes"), request)
