"""Keeping the fingerprint records beside the values: the storage side of :mod:`.known`.

``SecureStorage`` calls :meth:`FingerprintIndex.update` after each write and
:meth:`FingerprintIndex.remove` after each delete. Records live in the namespace
``jss-fingerprints`` of the same backend -- for the device backend, of the host's own
store, since the phone's values pass through the host when written. Read-modify-write
of a namespace's record is serialised across processes by a lock file.
"""

from __future__ import annotations

import base64
import secrets
from typing import Any

from ..backends.base import Backend
from ..interprocess_lock import InterProcessLock
from ..paths import data_dir
from .known import (
    FINGERPRINT_NAMESPACE,
    MASTER_KEY,
    RECORD_PREFIX,
    FormRecord,
    KnownValues,
    dumps_records,
    fingerprint,
    loads_records,
    pack_forms,
    unpack_forms,
)


class FingerprintIndex:
    """The fingerprint records of one backend."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    @classmethod
    def for_store(cls, store: Any = None) -> FingerprintIndex:
        from ..storage import SecureStorage

        store = store if store is not None else SecureStorage()
        backend = store.backend_object
        if backend.name == "device":
            from ..bridge.host import HostKeystore

            backend = HostKeystore().store.backend_object
        return cls(backend)

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

    def known_values(self) -> KnownValues:
        """A detector for every stored value of every namespace (names as ``ns/key``)."""
        master = self._master(create=False)
        if master is None:
            return KnownValues({}, secrets.token_bytes(32))
        records: dict[str, list[FormRecord]] = {}
        for name in self.backend.list_names(FINGERPRINT_NAMESPACE):
            if not name.startswith(RECORD_PREFIX):
                continue
            namespace = name[len(RECORD_PREFIX) :]
            for key, packed in self._records(namespace).items():
                label = key if namespace == "default" else f"{namespace}/{key}"
                records.setdefault(label, []).extend(unpack_forms(packed))
        return KnownValues(records, master)
