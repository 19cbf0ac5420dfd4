"""``memory``: values in this process only, gone when it exits. For tests and throwaway work.

Every ``MemoryBackend`` with the same ``store_name`` in a process shares one
store, so the magics, widgets and code of one kernel see the same values.
"""

from __future__ import annotations

import threading
import time
from typing import ClassVar

from traitlets import Unicode

from .base import Backend

_STORES: dict[str, dict[str, dict[str, str]]] = {}
_MODIFIED: dict[tuple[str, str, str], float] = {}
_LOCK = threading.Lock()


class MemoryBackend(Backend):
    """Values kept in this process's memory; nothing touches the disk."""

    name: ClassVar[str] = "memory"
    persistent: ClassVar[bool] = False

    store_name = Unicode(
        "default",
        help="Instances with the same store_name in one process share their values.",
    ).tag(config=True)

    @property
    def location(self) -> str:
        return f"process memory ({self.store_name})"

    def _namespace(self, namespace: str) -> dict[str, str]:
        return _STORES.setdefault(self.store_name, {}).setdefault(namespace, {})

    def get(self, namespace: str, key: str) -> str | None:
        with _LOCK:
            return self._namespace(namespace).get(key)

    def set(self, namespace: str, key: str, value: str) -> None:
        with _LOCK:
            self._namespace(namespace)[key] = value
            _MODIFIED[(self.store_name, namespace, key)] = time.time()

    def modified_times(self, namespace: str) -> dict[str, float | None]:
        with _LOCK:
            return {
                key: _MODIFIED.get((self.store_name, namespace, key))
                for key in self._namespace(namespace)
            }

    def delete(self, namespace: str, key: str) -> bool:
        with _LOCK:
            return self._namespace(namespace).pop(key, None) is not None

    def list_names(self, namespace: str) -> list[str]:
        with _LOCK:
            return sorted(self._namespace(namespace))

    def list_namespaces(self) -> list[str]:
        with _LOCK:
            return sorted(ns for ns, keys in _STORES.get(self.store_name, {}).items() if keys)

    def get_all(self, namespace: str) -> dict[str, str]:
        with _LOCK:
            return dict(self._namespace(namespace))

    def delete_all(self, namespace: str) -> list[str]:
        with _LOCK:
            names = sorted(self._namespace(namespace))
            self._namespace(namespace).clear()
            return names

    def clear(self) -> None:
        """Forget every namespace of this store (tests use it between cases)."""
        with _LOCK:
            _STORES.pop(self.store_name, None)
