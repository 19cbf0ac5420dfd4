"""The Noise core against every public cacophony vector for its suite, and its refusals.

Each vector runs an initiator and a responder with the vector's keys, prologues and PSKs
and checks every handshake and transport message byte for byte, and the handshake hash.
The other tests cover what vectors do not: tampering, low-order keys, nonce exhaustion,
message lengths, turn order and missing keys. Asserts compare bytes and carry their own
messages, so a failure never shows a key or a payload.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from jupyter_secure_storage import SecureStorageError
from jupyter_secure_storage.bridge.noise import (
    MAX_MESSAGE_LEN,
    MAX_NONCE,
    CipherState,
    HandshakeState,
    NoiseDecryptError,
    NoiseError,
    NoiseHandshakeError,
    NoiseInvalidPublicKeyError,
    NoiseKeyError,
    NoiseMessageLengthError,
    NoiseNonceError,
    NoiseProtocolNameError,
    dh,
    generate_keypair,
    hkdf,
    parse_protocol_name,
    public_key_bytes,
)

VECTOR_NAME = "noise-cacophony-25519-chachapoly-sha256.json"
VECTOR_FILE = Path(__file__).parent / "vectors" / VECTOR_NAME
SHARED_VECTOR_FILE = Path(__file__).resolve().parents[1].parent / "shared" / "vectors" / VECTOR_NAME
SUITE_SUFFIX = "_25519_ChaChaPoly_SHA256"

# Every vector for the suite in the cacophony file; a vector that disappears or appears
# must be noticed, not silently run or skipped.
EXPECTED_VECTOR_COUNT = 36
# Protocol name -> why it is not run. Empty: the file has no fallback, hfs or deferred
# patterns for this suite, and everything in it is implemented.
UNSUPPORTED: dict[str, str] = {}

VECTORS: list[dict[str, Any]] = json.loads(VECTOR_FILE.read_text())["vectors"]
RUN = [(index, v) for index, v in enumerate(VECTORS) if v["protocol_name"] not in UNSUPPORTED]

PROLOGUE = b"jupyter-secure-storage test prologue"
PSK = bytes(range(32))

# X25519 public keys of small order (and their non-canonical encodings p, p+1, p-1),
# each of which makes the shared secret all zeros whatever the private key.
LOW_ORDER_POINTS = {
    "zero": bytes(32),
    "one": bytes([1]) + bytes(31),
    "order-8-a": bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    "order-8-b": bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    "p-minus-1": bytes([0xEC]) + b"\xff" * 30 + bytes([0x7F]),
    "p": bytes([0xED]) + b"\xff" * 30 + bytes([0x7F]),
    "p-plus-1": bytes([0xEE]) + b"\xff" * 30 + bytes([0x7F]),
}


def _optional(vector: dict[str, Any], field: str) -> bytes | None:
    return bytes.fromhex(vector[field]) if field in vector else None


def _party(vector: dict[str, Any], side: str) -> HandshakeState:
    return HandshakeState.initialize(
        vector["protocol_name"],
        initiator=side == "init",
        prologue=bytes.fromhex(vector[f"{side}_prologue"]),
        s=_optional(vector, f"{side}_static"),
        e=_optional(vector, f"{side}_ephemeral"),
        rs=_optional(vector, f"{side}_remote_static"),
        psks=[bytes.fromhex(psk) for psk in vector.get(f"{side}_psks", [])],
    )


def _handshake(
    protocol_name: str,
    initiator_keys: dict[str, Any],
    responder_keys: dict[str, Any],
) -> tuple[HandshakeState, HandshakeState]:
    """Run a whole handshake with empty payloads; returns (initiator, responder)."""
    initiator = HandshakeState.initialize(protocol_name, initiator=True, **initiator_keys)
    responder = HandshakeState.initialize(protocol_name, initiator=False, **responder_keys)
    sender, receiver = initiator, responder
    while not initiator.is_complete:
        receiver.read_message(sender.write_message(b""))
        sender, receiver = receiver, sender
    return initiator, responder


# --- the cacophony vectors -------------------------------------------------------------


def test_every_cacophony_vector_for_the_suite_is_run() -> None:
    assert len(VECTORS) == EXPECTED_VECTOR_COUNT, "the vector file changed size"
    assert all(v["protocol_name"].endswith(SUITE_SUFFIX) for v in VECTORS)
    skipped = {v["protocol_name"] for v in VECTORS if v["protocol_name"] in UNSUPPORTED}
    assert skipped == set(UNSUPPORTED), "UNSUPPORTED names a protocol the file lacks"
    assert len(RUN) + len(skipped) == EXPECTED_VECTOR_COUNT
    for _, vector in RUN:
        parse_protocol_name(vector["protocol_name"])  # raises if a pattern were unsupported


def test_the_bundled_vectors_are_the_shared_copy() -> None:
    if not SHARED_VECTOR_FILE.exists():
        pytest.skip("../shared/vectors is not beside this clone")
    assert VECTOR_FILE.read_bytes() == SHARED_VECTOR_FILE.read_bytes()


@pytest.mark.parametrize(
    "vector", [v for _, v in RUN], ids=[f"{v['protocol_name']}#{i}" for i, v in RUN]
)
def test_cacophony_vector(vector: dict[str, Any]) -> None:
    initiator, responder = _party(vector, "init"), _party(vector, "resp")
    pattern = parse_protocol_name(vector["protocol_name"])
    handshake_messages = len(pattern.messages)
    assert len(vector["messages"]) > handshake_messages, "the vector has no transport messages"

    for index, message in enumerate(vector["messages"]):
        payload = bytes.fromhex(message["payload"])
        expected = bytes.fromhex(message["ciphertext"])
        # One-way patterns only ever send from the initiator; the others alternate.
        initiator_sends = pattern.one_way or index % 2 == 0
        sender, receiver = (initiator, responder) if initiator_sends else (responder, initiator)
        if index < handshake_messages:
            ciphertext = sender.write_message(payload)
            assert ciphertext == expected, f"handshake message {index} differs from the vector"
            assert receiver.read_message(ciphertext) == payload, f"message {index} payload"
        else:
            ciphertext = sender.transport().send.encrypt_with_ad(b"", payload)
            assert ciphertext == expected, f"transport message {index} differs from the vector"
            assert receiver.transport().receive.decrypt_with_ad(b"", ciphertext) == payload, (
                f"transport message {index} payload"
            )
        if index == handshake_messages - 1:
            assert initiator.is_complete, "the initiator did not finish the handshake"
            assert responder.is_complete, "the responder did not finish the handshake"
            if "handshake_hash" in vector:
                expected_hash = bytes.fromhex(vector["handshake_hash"])
                assert initiator.handshake_hash == expected_hash, "initiator handshake hash"
                assert responder.handshake_hash == expected_hash, "responder handshake hash"


# --- the primitives as Noise defines them ----------------------------------------------


def test_noise_hkdf_is_rfc_5869_with_the_chaining_key_as_salt_and_no_info() -> None:
    # RFC 5869 test case 3 (SHA-256, empty salt, empty info). An empty HMAC key and 32
    # zero bytes are the same key, so a zero chaining key stands for the empty salt.
    ikm = b"\x0b" * 22
    okm = bytes.fromhex(
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    )
    first, second = hkdf(bytes(32), ikm, 2)
    assert (first + second)[:42] == okm
    chaining_key = bytes(range(100, 132))
    three = hkdf(chaining_key, ikm, 3)
    reference = HKDF(algorithm=hashes.SHA256(), length=96, salt=chaining_key, info=b"").derive(ikm)
    assert b"".join(three) == reference
    assert hkdf(chaining_key, ikm, 2) == three[:2]


def test_chachapoly_nonce_is_four_zero_bytes_then_the_little_endian_counter() -> None:
    key = bytes(range(32))
    cipher = CipherState(key)
    cipher.set_nonce(0x0102030405060708)
    ciphertext = cipher.encrypt_with_ad(b"ad", b"plaintext")
    nonce = bytes(4) + bytes.fromhex("0807060504030201")
    assert ciphertext == ChaCha20Poly1305(key).encrypt(nonce, b"plaintext", b"ad")
    assert cipher.nonce == 0x0102030405060709


def test_rekey_is_the_specification_default_and_keeps_the_nonce() -> None:
    key = bytes(range(32))
    cipher = CipherState(key)
    cipher.set_nonce(5)
    cipher.rekey()
    assert cipher.nonce == 5
    max_nonce = bytes(4) + b"\xff" * 8
    new_key = ChaCha20Poly1305(key).encrypt(max_nonce, bytes(32), b"")[:32]
    expected = ChaCha20Poly1305(new_key).encrypt(bytes(4) + (5).to_bytes(8, "little"), b"x", b"")
    assert cipher.encrypt_with_ad(b"", b"x") == expected


def test_a_cipher_state_without_a_key_passes_data_through() -> None:
    cipher = CipherState()
    assert not cipher.has_key()
    assert cipher.encrypt_with_ad(b"ad", b"clear") == b"clear"
    assert cipher.decrypt_with_ad(b"ad", b"clear") == b"clear"
    with pytest.raises(NoiseKeyError):
        cipher.rekey()


# --- tampering -------------------------------------------------------------------------


def test_a_tampered_handshake_message_is_refused_and_the_genuine_one_still_reads() -> None:
    initiator = HandshakeState.initialize(
        "Noise_XX" + SUITE_SUFFIX, initiator=True, s=generate_keypair()
    )
    responder = HandshakeState.initialize(
        "Noise_XX" + SUITE_SUFFIX, initiator=False, s=generate_keypair()
    )
    responder.read_message(initiator.write_message(b""))
    genuine = responder.write_message(b"hello")
    for position in (40, len(genuine) - 1):  # inside the encrypted static key, then the tag
        forged = bytearray(genuine)
        forged[position] ^= 0x01
        with pytest.raises(NoiseDecryptError):
            initiator.read_message(bytes(forged))
    assert initiator.read_message(genuine) == b"hello"
    responder.read_message(initiator.write_message(b""))
    assert initiator.handshake_hash == responder.handshake_hash


def test_a_tampered_transport_message_is_refused_without_using_up_its_nonce() -> None:
    host, device = _handshake(
        "Noise_NN" + SUITE_SUFFIX, {"prologue": PROLOGUE}, {"prologue": PROLOGUE}
    )
    genuine = host.transport().encrypt(b"request")
    forged = genuine[:-1] + bytes([genuine[-1] ^ 0x80])
    with pytest.raises(NoiseDecryptError):
        device.transport().decrypt(forged)
    assert device.transport().receive.nonce == 0
    assert device.transport().decrypt(genuine) == b"request"
    with pytest.raises(NoiseDecryptError):
        device.transport().decrypt(genuine)  # a replay: the nonce has moved on


def test_a_message_reflected_back_to_its_sender_does_not_decrypt() -> None:
    initiator, _ = _handshake("Noise_NN" + SUITE_SUFFIX, {}, {})
    sent = initiator.transport().encrypt(b"to the responder")
    with pytest.raises(NoiseDecryptError):
        initiator.transport().decrypt(sent)


def test_the_wrong_psk_fails_at_the_first_encrypted_payload() -> None:
    host = generate_keypair()
    device = HandshakeState.initialize(
        "Noise_IKpsk1" + SUITE_SUFFIX,
        initiator=True,
        s=generate_keypair(),
        rs=public_key_bytes(host),
        psks=[PSK],
    )
    wrong = HandshakeState.initialize(
        "Noise_IKpsk1" + SUITE_SUFFIX, initiator=False, s=host, psks=[bytes(32)]
    )
    with pytest.raises(NoiseDecryptError):
        wrong.read_message(device.write_message(b"pair"))


def test_a_different_prologue_fails_the_handshake() -> None:
    initiator = HandshakeState.initialize("Noise_NN" + SUITE_SUFFIX, initiator=True, prologue=b"a")
    responder = HandshakeState.initialize("Noise_NN" + SUITE_SUFFIX, initiator=False, prologue=b"b")
    responder.read_message(initiator.write_message(b""))  # nothing is encrypted yet
    with pytest.raises(NoiseDecryptError):
        initiator.read_message(responder.write_message(b""))


# --- low-order public keys -------------------------------------------------------------


@pytest.mark.parametrize("point", LOW_ORDER_POINTS.values(), ids=LOW_ORDER_POINTS.keys())
def test_dh_refuses_a_low_order_public_key(point: bytes) -> None:
    with pytest.raises(NoiseInvalidPublicKeyError):
        dh(X25519PrivateKey.generate(), point)


@pytest.mark.parametrize("point", LOW_ORDER_POINTS.values(), ids=LOW_ORDER_POINTS.keys())
def test_a_low_order_ephemeral_key_in_a_message_is_refused_and_changes_nothing(
    point: bytes,
) -> None:
    server = generate_keypair()
    responder = HandshakeState.initialize("Noise_NK" + SUITE_SUFFIX, initiator=False, s=server)
    initiator = HandshakeState.initialize(
        "Noise_NK" + SUITE_SUFFIX, initiator=True, rs=public_key_bytes(server)
    )
    genuine = initiator.write_message(b"")
    with pytest.raises(NoiseInvalidPublicKeyError):
        responder.read_message(point + genuine[32:])
    responder.read_message(genuine)
    initiator.read_message(responder.write_message(b""))
    assert initiator.handshake_hash == responder.handshake_hash


@pytest.mark.parametrize("point", LOW_ORDER_POINTS.values(), ids=LOW_ORDER_POINTS.keys())
def test_a_low_order_static_key_given_in_advance_ends_the_handshake(point: bytes) -> None:
    initiator = HandshakeState.initialize("Noise_NK" + SUITE_SUFFIX, initiator=True, rs=point)
    with pytest.raises(NoiseInvalidPublicKeyError):
        initiator.write_message(b"")
    with pytest.raises(NoiseHandshakeError):
        initiator.write_message(b"")


# --- nonces and lengths ----------------------------------------------------------------


def test_the_last_nonce_is_reserved_so_a_cipher_state_runs_out() -> None:
    sender, receiver = CipherState(bytes(32)), CipherState(bytes(32))
    sender.set_nonce(MAX_NONCE - 1)
    receiver.set_nonce(MAX_NONCE - 1)
    assert receiver.decrypt_with_ad(b"", sender.encrypt_with_ad(b"", b"last")) == b"last"
    with pytest.raises(NoiseNonceError):
        sender.encrypt_with_ad(b"", b"one more")
    with pytest.raises(NoiseNonceError):
        receiver.decrypt_with_ad(b"", bytes(16))
    for nonce in (-1, MAX_NONCE + 1):
        with pytest.raises(NoiseNonceError):
            sender.set_nonce(nonce)


def test_noise_messages_are_at_most_65535_bytes() -> None:
    initiator = HandshakeState.initialize("Noise_NN" + SUITE_SUFFIX, initiator=True)
    assert initiator.max_payload_length == MAX_MESSAGE_LEN - 32
    with pytest.raises(NoiseMessageLengthError):
        initiator.write_message(bytes(MAX_MESSAGE_LEN - 31))
    message = initiator.write_message(bytes(MAX_MESSAGE_LEN - 32))  # unchanged by the refusal
    assert len(message) == MAX_MESSAGE_LEN

    responder = HandshakeState.initialize("Noise_NN" + SUITE_SUFFIX, initiator=False)
    with pytest.raises(NoiseMessageLengthError):
        responder.read_message(message + b"\x00")
    responder.read_message(message)

    send, receive = CipherState(bytes(32)), CipherState(bytes(32))
    with pytest.raises(NoiseMessageLengthError):
        send.encrypt_with_ad(b"", bytes(MAX_MESSAGE_LEN - 15))
    largest = send.encrypt_with_ad(b"", bytes(MAX_MESSAGE_LEN - 16))
    assert len(largest) == MAX_MESSAGE_LEN
    with pytest.raises(NoiseMessageLengthError):
        receive.decrypt_with_ad(b"", largest + b"\x00")
    assert receive.decrypt_with_ad(b"", largest) == bytes(MAX_MESSAGE_LEN - 16)


def test_a_message_too_short_for_its_pattern_is_refused_and_changes_nothing() -> None:
    initiator = HandshakeState.initialize(
        "Noise_XX" + SUITE_SUFFIX, initiator=True, s=generate_keypair()
    )
    responder = HandshakeState.initialize(
        "Noise_XX" + SUITE_SUFFIX, initiator=False, s=generate_keypair()
    )
    first = initiator.write_message(b"")
    with pytest.raises(NoiseMessageLengthError):
        responder.read_message(first[:31])
    responder.read_message(first)
    second = responder.write_message(b"")
    assert len(second) == 32 + 48 + 16  # e, encrypted s, encrypted empty payload
    with pytest.raises(NoiseMessageLengthError):
        initiator.read_message(second[:-1])
    initiator.read_message(second)
    responder.read_message(initiator.write_message(b""))
    with pytest.raises(NoiseMessageLengthError):
        responder.transport().decrypt(bytes(15))


# --- turns and keys --------------------------------------------------------------------


def test_writing_or_reading_out_of_turn_is_refused() -> None:
    initiator = HandshakeState.initialize("Noise_NN" + SUITE_SUFFIX, initiator=True)
    responder = HandshakeState.initialize("Noise_NN" + SUITE_SUFFIX, initiator=False)
    with pytest.raises(NoiseHandshakeError):
        responder.write_message(b"")
    with pytest.raises(NoiseHandshakeError):
        initiator.read_message(bytes(48))
    with pytest.raises(NoiseHandshakeError):
        initiator.transport()
    with pytest.raises(NoiseHandshakeError):
        _ = initiator.handshake_hash
    first = initiator.write_message(b"")
    with pytest.raises(NoiseHandshakeError):
        initiator.write_message(b"")
    responder.read_message(first)
    initiator.read_message(responder.write_message(b""))
    for party in (initiator, responder):
        with pytest.raises(NoiseHandshakeError):
            party.write_message(b"")
        with pytest.raises(NoiseHandshakeError):
            party.read_message(bytes(48))


def test_a_one_way_pattern_has_no_way_back() -> None:
    recipient = generate_keypair()
    sender, receiver = _handshake(
        "Noise_N" + SUITE_SUFFIX, {"rs": public_key_bytes(recipient)}, {"s": recipient}
    )
    assert receiver.transport().decrypt(sender.transport().encrypt(b"record")) == b"record"
    with pytest.raises(NoiseHandshakeError):
        receiver.transport().encrypt(b"reply")
    with pytest.raises(NoiseHandshakeError):
        sender.transport().decrypt(bytes(16))


KEY_MISTAKES = {
    "NK without the responder's key": ("NK", True, {}),
    "KK without a static key": ("KK", True, {"rs": bytes(32)}),
    "IKpsk1 without the PSK": ("IKpsk1", True, {"s": bytes(32), "rs": bytes(32)}),
    "IKpsk1 with two PSKs": ("IKpsk1", False, {"s": bytes(32), "psks": [PSK, PSK]}),
    "a 31-byte PSK": ("NNpsk0", True, {"psks": [PSK[:31]]}),
    "a 31-byte static key": ("XX", True, {"s": bytes(31)}),
    "a 33-byte remote key": ("NK", True, {"rs": bytes(33)}),
    "XX given the key it will receive": ("XX", True, {"s": bytes(32), "rs": bytes(32)}),
    "NN given a static key": ("NN", False, {"s": bytes(32)}),
    "N responder given an ephemeral": ("N", False, {"s": bytes(32), "e": bytes(32)}),
    "a peer ephemeral in advance": ("NN", True, {"re": bytes(32)}),
    "a PSK for a pattern without one": ("NN", True, {"psks": [PSK]}),
}


@pytest.mark.parametrize("mistake", KEY_MISTAKES.values(), ids=KEY_MISTAKES.keys())
def test_keys_a_pattern_lacks_or_has_no_use_for_are_refused(
    mistake: tuple[str, bool, dict[str, Any]],
) -> None:
    pattern, initiator, keys = mistake
    with pytest.raises(NoiseKeyError):
        HandshakeState.initialize(f"Noise_{pattern}{SUITE_SUFFIX}", initiator=initiator, **keys)


UNSUPPORTED_NAMES = [
    "Noise_XXfallback_25519_ChaChaPoly_SHA256",
    "Noise_XXfallback+psk0_25519_ChaChaPoly_SHA256",
    "Noise_NK1_25519_ChaChaPoly_SHA256",
    "Noise_XX_25519_AESGCM_SHA256",
    "Noise_XX_448_ChaChaPoly_SHA256",
    "Noise_XX_25519_ChaChaPoly_BLAKE2s",
    "Noise_NNpsk3_25519_ChaChaPoly_SHA256",
    "Noise_Npsk2_25519_ChaChaPoly_SHA256",
    "Noise_NNpsk2+psk0_25519_ChaChaPoly_SHA256",
    "Noise_NNpsk0+psk0_25519_ChaChaPoly_SHA256",
    "Noise_NNpsk01_25519_ChaChaPoly_SHA256",
    "Noise_NNhfs_25519_ChaChaPoly_SHA256",
    "Noise_ZZ_25519_ChaChaPoly_SHA256",
    "Noise__25519_ChaChaPoly_SHA256",
    "NoiseXX_25519_ChaChaPoly_SHA256",
    "Noise_X_X_25519_ChaChaPoly_SHA256",
]


@pytest.mark.parametrize("name", UNSUPPORTED_NAMES)
def test_unsupported_or_malformed_protocol_names_are_refused(name: str) -> None:
    with pytest.raises(NoiseProtocolNameError):
        HandshakeState.initialize(name, initiator=True)


def test_psk_modifiers_place_the_token_as_section_9_says() -> None:
    assert parse_protocol_name("Noise_IKpsk1" + SUITE_SUFFIX).messages == (
        ("e", "es", "s", "ss", "psk"),
        ("e", "ee", "se"),
    )
    assert parse_protocol_name("Noise_XXpsk0+psk3" + SUITE_SUFFIX).messages == (
        ("psk", "e"),
        ("e", "ee", "s", "es"),
        ("s", "se", "psk"),
    )
    kk = parse_protocol_name("Noise_KK" + SUITE_SUFFIX)
    assert kk.initiator_premessage == ("s",)
    assert kk.responder_premessage == ("s",)
    assert kk.psk_count == 0


def test_psk_modifiers_beyond_the_vectors_interoperate() -> None:
    initiator_static, responder_static = generate_keypair(), generate_keypair()
    for pattern in ("IKpsk0", "KKpsk1", "XXpsk0+psk3", "NXpsk0+psk1+psk2"):
        name = f"Noise_{pattern}{SUITE_SUFFIX}"
        count = parse_protocol_name(name).psk_count
        keys: list[dict[str, Any]] = [
            {"psks": [PSK] * count, "prologue": PROLOGUE},
            {"psks": [PSK] * count, "prologue": PROLOGUE},
        ]
        if pattern.startswith(("IK", "KK", "XX")):
            keys[0]["s"] = initiator_static
        if pattern.startswith("KK"):
            keys[1]["rs"] = public_key_bytes(initiator_static)
        if pattern.startswith(("IK", "KK", "XX", "NX")):
            keys[1]["s"] = responder_static
        if pattern.startswith(("IK", "KK")):
            keys[0]["rs"] = public_key_bytes(responder_static)
        initiator, responder = _handshake(name, keys[0], keys[1])
        assert initiator.handshake_hash == responder.handshake_hash, pattern
        assert responder.transport().decrypt(initiator.transport().encrypt(b"x")) == b"x"


# --- the bridge's two handshakes -------------------------------------------------------


def test_ikpsk1_pairing_lets_the_host_learn_the_device_key() -> None:
    host_static, device_static = generate_keypair(), generate_keypair()
    name = "Noise_IKpsk1" + SUITE_SUFFIX
    device = HandshakeState.initialize(
        name,
        initiator=True,
        prologue=PROLOGUE,
        s=device_static,
        rs=public_key_bytes(host_static),
        psks=[PSK],
    )
    host = HandshakeState.initialize(
        name, initiator=False, prologue=PROLOGUE, s=host_static, psks=[PSK]
    )
    known_before = host.remote_static
    assert host.read_message(device.write_message(b"pair")) == b"pair"
    assert known_before is None
    assert host.remote_static == public_key_bytes(device_static)
    assert device.read_message(host.write_message(b"paired")) == b"paired"
    assert device.handshake_hash == host.handshake_hash
    assert host.transport().remote_static == public_key_bytes(device_static)
    assert device.transport().decrypt(host.transport().encrypt(b"confirmed")) == b"confirmed"
    assert host.transport().decrypt(device.transport().encrypt(b"ok")) == b"ok"


def test_each_kk_session_has_fresh_keys() -> None:
    host_static, device_static = generate_keypair(), generate_keypair()
    host_keys = {"s": host_static, "rs": public_key_bytes(device_static), "prologue": PROLOGUE}
    device_keys = {"s": device_static, "rs": public_key_bytes(host_static), "prologue": PROLOGUE}
    first_host, first_device = _handshake("Noise_KK" + SUITE_SUFFIX, host_keys, device_keys)
    second_host, _ = _handshake("Noise_KK" + SUITE_SUFFIX, host_keys, device_keys)
    assert first_host.handshake_hash == first_device.handshake_hash
    assert first_host.handshake_hash != second_host.handshake_hash
    request = first_host.transport().encrypt(b"read OPENAI_API_KEY")
    assert request != second_host.transport().encrypt(b"read OPENAI_API_KEY")


def test_noise_errors_are_secure_storage_errors() -> None:
    assert issubclass(NoiseError, SecureStorageError)
    for error in (
        NoiseDecryptError,
        NoiseHandshakeError,
        NoiseInvalidPublicKeyError,
        NoiseKeyError,
        NoiseMessageLengthError,
        NoiseNonceError,
        NoiseProtocolNameError,
    ):
        assert issubclass(error, NoiseError)
