"""Known values: keyed fingerprints of every stored value, kept beside the values.

For every stored value the storage layer keeps, in the namespace ``jss-fingerprints`` of
the store that holds it, one record per *form* of the value (the forms of
:func:`jupyter_secure_storage.value_forms.encoded_forms`: the literal, its base64 at each
alignment, URL-quoted, JSON-, HTML- and repr-escaped)::

    (length in UTF-8 bytes, anchor length, anchor hash, first 16 bytes of HMAC-SHA256)

Both hashes are keyed by a random master key kept in the same store, so the records say
nothing about the values to whoever lacks the store. A process that may not hold
plaintext -- the Jupyter server's save guard, a pre-commit hook -- reads the records
through :meth:`FingerprintIndex.load` and scans text with them (the matcher lives in
:mod:`jupyter_secure_storage.scan.known`); nothing here reads a value.

This module is part of the core: ``SecureStorage`` writes and removes records through
:class:`FingerprintIndex`; readers only load them. A backend names the backend its
fingerprints live in (:meth:`jupyter_secure_storage.backends.base.Backend.fingerprint_backend`;
the paired-device backend names the host's own store, since a phone's values pass through
the host when written). Read-modify-write of a namespace's record is serialised across
processes by a lock file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import struct
from dataclasses import dataclass

from .backends.base import Backend
from .interprocess_lock import InterProcessLock
from .paths import data_dir
from .value_forms import encoded_forms

FINGERPRINT_NAMESPACE = "jss-fingerprints"
MASTER_KEY = "master-key"
RECORD_PREFIX = "ns:"
ANCHOR = 16  # bytes: the anchor of forms at least this long
MIN_LENGTH = 6  # forms shorter than this are not fingerprinted (too many false hits)
ENCODINGS = ("literal", "base64", "base64url", "url-quoted", "escaped")
_FORMAT = 1
_DIGEST = 16  # bytes of HMAC-SHA256 kept: a 2^-128 chance that a wrong match passes
_PACKED = struct.Struct("<IBIB16s")
_U64 = (1 << 64) - 1


# --- the keyed hashes ----------------------------------------------------------------------


def derive_key(master: bytes, label: bytes) -> bytes:
    """A key for one purpose (``b"hmac"``, ``b"anchor hash"``) from the master key."""
    return hmac.new(master, b"jss-fingerprints/1 " + label, hashlib.sha256).digest()


def anchor_keys(master: bytes) -> tuple[int, int, int]:
    """The three odd 64-bit multipliers of the anchor hash."""
    raw = derive_key(master, b"anchor hash")
    k1, k2, k3 = (int.from_bytes(raw[i : i + 8], "little") | 1 for i in (0, 8, 16))
    return k1, k2, k3


def anchor_hash(anchor: bytes, keys: tuple[int, int, int]) -> int:
    """The keyed 32-bit hash of an anchor of 1-16 bytes.

    The two little-endian 64-bit words of the anchor (zero-padded) are multiplied by
    ``k1`` and ``k2`` and added, then mixed by a shift-xor and a multiply by ``k3``, all
    modulo 2**64; the top 32 bits are the hash. The scanner computes the same function
    at every position of a text at once (numpy); the two must agree bit for bit.
    """
    length = len(anchor)
    padded = anchor + bytes(16 - length)
    low = int.from_bytes(padded[:8], "little")
    high = int.from_bytes(padded[8:16], "little")
    k1, k2, k3 = keys
    mixed = (low * k1) & _U64
    if length > 8:
        mixed = (mixed + high * k2) & _U64
    mixed ^= mixed >> 29
    mixed = (mixed * k3) & _U64
    return mixed >> 32


def form_digest(mac_key: bytes, data: bytes) -> bytes:
    """The part of HMAC-SHA256 of a form's UTF-8 bytes a record keeps."""
    return hmac.new(mac_key, data, hashlib.sha256).digest()[:_DIGEST]


# --- records ----------------------------------------------------------------------------------


def encoding_of(value: str, form: str) -> str:
    """Which of :data:`ENCODINGS` ``form`` is of ``value`` (as findings report it)."""
    if form == value:
        return "literal"
    if set(form) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="):
        return "base64"
    if set(form) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_="):
        return "base64url"
    if "%" in form:
        return "url-quoted"
    return "escaped"


@dataclass(frozen=True)
class FormRecord:
    """The fingerprint of one form of one stored value."""

    length: int  # UTF-8 bytes
    anchor_length: int
    anchor_hash: int
    digest: bytes  # the first 16 bytes of HMAC-SHA256 of the whole form
    encoding: str


def fingerprint(value: str, master: bytes) -> list[FormRecord]:
    """The records for every form of ``value``."""
    mac_key, keys = derive_key(master, b"hmac"), anchor_keys(master)
    records = []
    for form in sorted(encoded_forms(value, MIN_LENGTH)):
        data = form.encode("utf-8", "surrogatepass")
        anchor = data[: min(ANCHOR, len(data))]
        records.append(
            FormRecord(
                len(data),
                len(anchor),
                anchor_hash(anchor, keys),
                form_digest(mac_key, data),
                encoding_of(value, form),
            )
        )
    return records


def pack_forms(forms: list[FormRecord]) -> str:
    """A key's records as one compact string (26 bytes per form, base64)."""
    return base64.b64encode(
        b"".join(
            _PACKED.pack(
                f.length, f.anchor_length, f.anchor_hash, ENCODINGS.index(f.encoding), f.digest
            )
            for f in forms
        )
    ).decode("ascii")


def unpack_forms(packed: str) -> list[FormRecord]:
    raw = base64.b64decode(packed)
    forms = []
    for length, anchor_length, hashed, encoding, digest in _PACKED.iter_unpack(raw):
        forms.append(FormRecord(length, anchor_length, hashed, digest, ENCODINGS[encoding]))
    return forms


def dumps_records(records: dict[str, str]) -> str:
    """A namespace's records (key -> :func:`pack_forms`) as stored."""
    return json.dumps({"v": _FORMAT, "keys": records}, separators=(",", ":"), sort_keys=True)


def loads_records(text: str) -> dict[str, str]:
    raw = json.loads(text)
    if (
        not isinstance(raw, dict)
        or raw.get("v") != _FORMAT
        or not isinstance(raw.get("keys"), dict)
    ):
        return {}
    return {str(k): str(v) for k, v in raw["keys"].items()}


@dataclass(frozen=True)
class LoadedRecords:
    """Every namespace's records, by label (``KEY``, or ``namespace/KEY`` outside
    ``default``), with the master key that keys them; what a scanner is built from."""

    records: dict[str, list[FormRecord]]
    master: bytes


# --- the index: keeping records in step with the values -------------------------------------


class FingerprintIndex:
    """The fingerprint records kept in one backend."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    # --- the master key ----------------------------------------------------------------

    def _master(self, create: bool) -> bytes | None:
        stored = self.backend.get(FINGERPRINT_NAMESPACE, MASTER_KEY)
        if stored is not None:
            return base64.b64decode(stored)
        if not create:
            return None
        with self._lock():
            stored = self.backend.get(FINGERPRINT_NAMESPACE, MASTER_KEY)
            if stored is not None:
                return base64.b64decode(stored)
            master = secrets.token_bytes(32)
            self.backend.set(FINGERPRINT_NAMESPACE, MASTER_KEY, base64.b64encode(master).decode())
            return master

    def _lock(self) -> InterProcessLock:
        safe = "".join(c if c.isalnum() else "_" for c in self.backend.identity)[-80:]
        return InterProcessLock(data_dir() / f"fingerprints-{safe}.lock", timeout=30)

    # --- records -------------------------------------------------------------------------

    def _records(self, namespace: str) -> dict[str, str]:
        raw = self.backend.get(FINGERPRINT_NAMESPACE, RECORD_PREFIX + namespace)
        return loads_records(raw) if raw else {}

    def _record_change(
        self, namespace: str, records: dict[str, str]
    ) -> tuple[str, str, str | None]:
        return (
            FINGERPRINT_NAMESPACE,
            RECORD_PREFIX + namespace,
            dumps_records(records) if records else None,
        )

    def _packed(self, value: str) -> str:
        master = self._master(create=True)
        assert master is not None  # noqa: S101 -- created above
        return pack_forms(fingerprint(value, master))

    def write(self, namespace: str, key: str, value: str) -> None:
        """Store ``value`` and its fingerprints in one durable write (backends with atomic
        batches: the vault). Errors are the write's own: nothing is half done."""
        packed = self._packed(value)
        with self._lock():
            records = self._records(namespace)
            records[key] = packed
            self.backend.set_many(
                [(namespace, key, value), self._record_change(namespace, records)]
            )

    def update(self, namespace: str, key: str, value: str) -> None:
        packed = self._packed(value)
        with self._lock():
            records = self._records(namespace)
            if records.get(key) != packed:
                records[key] = packed
                self.backend.set_many([self._record_change(namespace, records)])

    def remove(self, namespace: str, key: str) -> None:
        with self._lock():
            records = self._records(namespace)
            if records.pop(key, None) is not None:
                self.backend.set_many([self._record_change(namespace, records)])

    def remove_namespace(self, namespace: str) -> None:
        with self._lock():
            if self._records(namespace):
                self.backend.set_many([self._record_change(namespace, {})])

    def load(self) -> LoadedRecords | None:
        """Every namespace's records (None: nothing was ever fingerprinted here)."""
        master = self._master(create=False)
        if master is None:
            return None
        records: dict[str, list[FormRecord]] = {}
        for name in self.backend.list_names(FINGERPRINT_NAMESPACE):
            if not name.startswith(RECORD_PREFIX):
                continue
            namespace = name[len(RECORD_PREFIX) :]
            for key, packed in self._records(namespace).items():
                label = key if namespace == "default" else f"{namespace}/{key}"
                records.setdefault(label, []).extend(unpack_forms(packed))
        return LoadedRecords(records, master)


__all__ = [
    "ANCHOR",
    "ENCODINGS",
    "FINGERPRINT_NAMESPACE",
    "MASTER_KEY",
    "MIN_LENGTH",
    "RECORD_PREFIX",
    "FingerprintIndex",
    "FormRecord",
    "LoadedRecords",
    "anchor_hash",
    "anchor_keys",
    "derive_key",
    "dumps_records",
    "encoding_of",
    "fingerprint",
    "form_digest",
    "loads_records",
    "pack_forms",
    "unpack_forms",
]
