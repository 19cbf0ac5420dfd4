"""The vault's primitives against published vectors, and its format against its own document.

The last test decodes a vault with a decoder written from docs/vault-format.md
alone (struct, json and cryptography; nothing from the package), so the
document stays precise enough to read a vault without this package.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from jupyter_secure_storage.backends.vault import derive_passphrase_key

FIXTURE = Path(__file__).parent / "fixtures" / "vault-v1.jssv"


def test_argon2id_matches_rfc_9106_section_5_3() -> None:
    tag = Argon2id(
        salt=b"\x02" * 16,
        length=32,
        iterations=3,
        lanes=4,
        memory_cost=32,
        ad=b"\x04" * 12,
        secret=b"\x03" * 8,
    ).derive(b"\x01" * 32)
    assert tag.hex() == "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659"


def test_aes_256_gcm_matches_the_gcm_specification_test_case_16() -> None:
    # McGrew & Viega, "The Galois/Counter Mode of Operation", test case 16.
    key = bytes.fromhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
    plaintext = bytes.fromhex(
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
        "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
    )
    aad = bytes.fromhex("feedfacedeadbeeffeedfacedeadbeefabaddad2")
    nonce = bytes.fromhex("cafebabefacedbaddecaf888")
    expected = (
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
        "76fc6ece0f4e1768cddf8853bb2d551b"
    )
    assert AESGCM(key).encrypt(nonce, plaintext, aad).hex() == expected


def test_the_vault_kdf_is_plain_argon2id_with_the_slot_parameters() -> None:
    salt = bytes(range(16))
    params = {
        "salt": base64.b64encode(salt).decode(),
        "iterations": 2,
        "lanes": 1,
        "memory_kib": 256,
    }
    expected = Argon2id(salt=salt, length=32, iterations=2, lanes=1, memory_cost=256).derive(
        "pässphrase".encode()
    )
    assert derive_passphrase_key("pässphrase", params) == expected


def decode_vault_from_the_document(raw: bytes, passphrase: str) -> dict[str, object]:
    """An independent reader of docs/vault-format.md, version 1."""
    magic, version, header_length = struct.unpack(">8sHI", raw[:14])
    assert magic == b"JSSVAULT"
    assert version == 1
    prefix = raw[: 14 + header_length]
    checksum = raw[14 + header_length : 14 + header_length + 32]
    assert hashlib.sha256(prefix).digest() == checksum
    header = json.loads(prefix[14:])
    body = raw[14 + header_length + 32 :]
    assert len(body) == header["body_length"]
    slot = next(s for s in header["slots"] if s["type"] == "passphrase")
    kek = Argon2id(
        salt=base64.b64decode(slot["salt"]),
        length=32,
        iterations=slot["iterations"],
        lanes=slot["lanes"],
        memory_cost=slot["memory_kib"],
    ).derive(passphrase.encode("utf-8"))
    slot_aad = (
        b"jupyter-secure-storage vault slot v1\x00"
        + header["vault_id"].encode("ascii")
        + b"\x00passphrase"
    )
    data_key = AESGCM(kek).decrypt(
        base64.b64decode(slot["nonce"]), base64.b64decode(slot["wrapped_key"]), slot_aad
    )
    plain = AESGCM(data_key).decrypt(base64.b64decode(header["body_nonce"]), body, prefix)
    document: dict[str, object] = json.loads(plain)
    return document


def test_the_format_document_is_enough_to_read_a_vault() -> None:
    document = decode_vault_from_the_document(FIXTURE.read_bytes(), "fixture passphrase v1")
    namespaces = document["namespaces"]
    assert isinstance(namespaces, dict)
    assert namespaces["default"]["FIXTURE_TOKEN"]["value"] == "fixture-value-not-a-real-token"
    assert isinstance(namespaces["default"]["FIXTURE_TOKEN"]["modified"], float)
    assert set(namespaces) == {"default", "other"}
