"""Finding stored values in text by their keyed fingerprints, without holding the values.

The records come from the core (:mod:`jupyter_secure_storage.known_values`: one record per
form of each stored value, keyed by a master key kept in the store); this module only
reads them, through :meth:`KnownValues.from_store`, and scans:

1. the *anchor* of a form is its first 16 bytes (shorter forms: all of them). For every
   position of the text at once (numpy), the two little-endian 64-bit words starting
   there and 8 bytes later are masked to the anchor length and mixed by the keyed
   multiply-xor hash of :func:`~jupyter_secure_storage.known_values.anchor_hash` to 32
   bits -- one pass of a handful of vector operations per distinct anchor length (one,
   when every form has 16 bytes or more), however many values are stored;
2. a 2^22-bit table of the anchors' hashes drops almost every position;
3. the few positions left are looked up by full hash and confirmed by the HMAC of the
   whole form there. A finding is therefore exact: no false positive survives the HMAC.
"""

from __future__ import annotations

import bisect
import hmac
import secrets
import threading
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..known_values import (
    ANCHOR,
    FINGERPRINT_NAMESPACE,
    MASTER_KEY,
    RECORD_PREFIX,
    FormRecord,
    LoadedRecords,
    anchor_keys,
    derive_key,
    fingerprint,
    form_digest,
)
from .findings import STORED, Finding

_FILTER_BITS = 22
_CHUNK = 1 << 20  # bytes hashed at once: buffers that stay in cache and are reused
_U64 = np.dtype("<u8")
_local = threading.local()


def _keys(master: bytes) -> tuple[np.uint64, np.uint64, np.uint64]:
    k1, k2, k3 = anchor_keys(master)
    return np.uint64(k1), np.uint64(k2), np.uint64(k3)


class _Workspace:
    """Buffers reused from chunk to chunk: fresh large arrays cost more in page faults
    than the arithmetic done in them."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.words = np.empty(size + 8, dtype=_U64)
        self.mixed = np.empty(size, dtype=_U64)
        self.upper = np.empty(size, dtype=_U64)
        self.shifted = np.empty(size, dtype=_U64)
        self.hit = np.empty(size, dtype=np.bool_)

    def load(self, data: bytes, count: int) -> tuple[np.ndarray, np.ndarray]:
        """For positions 0..count-1: the little-endian u64 at i and at i + 8 (zero past
        the end of ``data``)."""
        padded = data[: count + 16] + bytes(24)
        words = self.words[: count + 8]
        for shift in range(8):
            lane = words[shift::8]
            lane[:] = np.frombuffer(padded, dtype=_U64, count=len(lane), offset=shift)
        return words[:count], words[8 : count + 8]

    def hash(
        self, low: np.ndarray, high: np.ndarray, length: int, keys: tuple[np.uint64, ...]
    ) -> np.ndarray:
        """32-bit keyed hashes of the ``length``-byte anchors at each position."""
        count = len(low)
        mixed, upper = self.mixed[:count], self.upper[:count]
        mask_low, mask_high = _mask(length)
        k1, k2, k3 = keys
        np.bitwise_and(low, mask_low, out=mixed)
        np.multiply(mixed, k1, out=mixed)
        if length > 8:
            np.bitwise_and(high, mask_high, out=upper)
            np.multiply(upper, k2, out=upper)
            np.add(mixed, upper, out=mixed)
        np.right_shift(mixed, np.uint64(29), out=upper)
        np.bitwise_xor(mixed, upper, out=mixed)
        np.multiply(mixed, k3, out=mixed)
        np.right_shift(mixed, np.uint64(32), out=mixed)
        return mixed

    def candidates(self, hashes: np.ndarray, bits: np.ndarray) -> np.ndarray:
        count = len(hashes)
        index, hit = self.shifted[:count], self.hit[:count]
        np.right_shift(hashes, np.uint64(32 - _FILTER_BITS), out=index)
        np.take(bits, index, out=hit)
        return np.flatnonzero(hit)


def _mask(length: int) -> tuple[np.uint64, np.uint64]:
    low = min(length, 8)
    high = max(length - 8, 0)
    return np.uint64((1 << (8 * low)) - 1), np.uint64((1 << (8 * high)) - 1)


# --- the matcher -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    length: int
    digest: bytes
    name: str
    encoding: str


class KnownValues:
    """A detector of stored values from their fingerprints (``find(text)``)."""

    exact = True  # every finding is confirmed by HMAC: safe to apply inside base64 media

    def __init__(self, records: dict[str, list[FormRecord]], master: bytes) -> None:
        self._mac_key = derive_key(master, b"hmac")
        self._keys = _keys(master)
        # anchor length -> anchor hash -> the forms that start so
        self._targets: dict[int, dict[int, list[_Target]]] = {}
        for name, forms in records.items():
            for form in forms:
                self._targets.setdefault(form.anchor_length, {}).setdefault(
                    form.anchor_hash, []
                ).append(_Target(form.length, form.digest, name, form.encoding))
        self._filters = {}
        for length, table in self._targets.items():
            bits = np.zeros(1 << _FILTER_BITS, dtype=np.bool_)
            bits[np.array(sorted(table), dtype=np.uint64) >> np.uint64(32 - _FILTER_BITS)] = True
            self._filters[length] = bits
        self.names = sorted(records)
        self.minimum = min(self._targets, default=0)

    def __len__(self) -> int:
        return len(self.names)

    # --- building -------------------------------------------------------------------------

    @classmethod
    def from_values(
        cls, names_by_value: dict[str, str], master: bytes | None = None
    ) -> KnownValues:
        """Fingerprints computed here (tests; processes that hold the values anyway)."""
        master = master or secrets.token_bytes(32)
        records: dict[str, list[FormRecord]] = {}
        for value, name in names_by_value.items():
            records.setdefault(name, []).extend(fingerprint(value, master))
        return cls(records, master)

    @classmethod
    def from_records(cls, loaded: LoadedRecords | None) -> KnownValues:
        """A detector from the records the core loaded (None: nothing stored yet)."""
        if loaded is None:
            return cls({}, secrets.token_bytes(32))
        return cls(loaded.records, loaded.master)

    @classmethod
    def from_store(cls, store: Any = None) -> KnownValues:
        """Every namespace's fingerprints from the configured store; no value is read."""
        from ..storage import SecureStorage

        store = store if store is not None else SecureStorage()
        return cls.from_records(store.fingerprint_index().load())

    # --- scanning ---------------------------------------------------------------------------

    def find_many(self, texts: list[str]) -> list[list[Finding]]:
        """``find`` over many texts in one pass: they are joined by NUL characters, which
        no fingerprinted form contains, so a match never spans two texts."""
        results: list[list[Finding]] = [[] for _ in texts]
        if not self._targets:
            return results
        starts, position = [], 0
        for text in texts:
            starts.append(position)
            position += len(text) + 1
        for finding in self.find("\0".join(texts)):
            index = bisect.bisect_right(starts, finding.start) - 1
            base = starts[index]
            if finding.end <= base + len(texts[index]):
                results[index].append(
                    replace(finding, start=finding.start - base, end=finding.end - base)
                )
        return results

    def find(self, text: str) -> list[Finding]:
        if not self._targets or 4 * len(text) < self.minimum:
            return []
        data = text.encode("utf-8", "surrogatepass")
        if len(data) < self.minimum:
            return []
        found: list[tuple[int, int, _Target]] = []
        workspace = getattr(_local, "workspace", None)
        if workspace is None:
            workspace = _local.workspace = _Workspace(_CHUNK)
        # Each chunk hashes the anchors *starting* in it (reading up to 15 bytes past its
        # end); the HMAC check then reads the whole text.
        for offset in range(0, len(data), _CHUNK):
            count = min(_CHUNK, len(data) - offset)
            low, high = workspace.load(data[offset : offset + count + ANCHOR], count)
            for length, bits in self._filters.items():
                hashes = workspace.hash(low, high, length, self._keys)
                candidates = workspace.candidates(hashes, bits)
                if len(candidates):
                    self._confirm(
                        data,
                        offset=offset,
                        hashes=hashes,
                        candidates=candidates,
                        length=length,
                        found=found,
                    )
        return self._to_findings(text, data, found)

    def _confirm(
        self,
        data: bytes,
        *,
        offset: int,
        hashes: np.ndarray,
        candidates: np.ndarray,
        length: int,
        found: list[tuple[int, int, _Target]],
    ) -> None:
        table = self._targets[length]
        for position in candidates.tolist():
            targets = table.get(int(hashes[position]))
            if not targets:
                continue
            start = offset + position
            for target in targets:
                end = start + target.length
                if end <= len(data) and hmac.compare_digest(
                    form_digest(self._mac_key, data[start:end]), target.digest
                ):
                    found.append((start, end, target))

    @staticmethod
    def _to_findings(
        text: str, data: bytes, found: list[tuple[int, int, _Target]]
    ) -> list[Finding]:
        if not found:
            return []
        # Forms of one value overlap (base64 at each alignment, padded or not): keep the
        # longest of each run of overlapping matches.
        found.sort(key=lambda item: (item[0], -item[1]))
        kept: list[tuple[int, int, _Target]] = []
        for start, end, target in found:
            if kept and start < kept[-1][1]:
                if end > kept[-1][1]:
                    kept[-1] = (kept[-1][0], end, kept[-1][2])
                continue
            kept.append((start, end, target))
        found = kept
        ascii_only = len(data) == len(text)

        def chars(offset: int) -> int:
            return offset if ascii_only else len(data[:offset].decode("utf-8", "surrogatepass"))

        return [
            Finding(STORED, chars(start), chars(end), name=target.name, encoding=target.encoding)
            for start, end, target in found
        ]


# FINGERPRINT_NAMESPACE, MASTER_KEY and RECORD_PREFIX are the core's; named here too for
# the code that imported them from the scanner before the records moved to the core.
__all__ = [
    "FINGERPRINT_NAMESPACE",
    "MASTER_KEY",
    "RECORD_PREFIX",
    "FormRecord",
    "KnownValues",
    "fingerprint",
]
