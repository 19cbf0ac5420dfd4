"""Per-notebook access: which notebook may read which key, and a log of who asked.

As in Google Colab's key panel, a notebook's kernel reads a key only once the person
granted that key to that notebook (the Secrets sidebar, or ``jupyter-secure-storage
grant``): a notebook someone shared with you cannot read your keys on its own. Grants
live with the unlock agent, in ``<jupyter data dir>/secure_storage/notebook-access.json``
(mode 0600), keyed by the notebook's absolute path; never in the ``.ipynb``. The log of
the latest requests (allowed or refused) is kept in memory.

This is consent, not a sandbox: code running as you can read the vault file or ask the
agent under another notebook's name (docs/threat-model.md).
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidKeyError

_FORMAT = 1
LOG_LENGTH = 500


@dataclass(frozen=True)
class Grant:
    notebook: str
    namespace: str
    key: str
    granted: float


@dataclass(frozen=True)
class Access:
    time: float
    notebook: str
    namespace: str
    key: str
    allowed: bool


def notebook_path(notebook: object) -> str:
    """The notebook's identity: its absolute, normalised path."""
    if not isinstance(notebook, str) or not notebook or "\0" in notebook:
        raise InvalidKeyError(
            "A grant names no notebook.", "Give the notebook's path (as Jupyter shows it)."
        )
    if not os.path.isabs(notebook):
        raise InvalidKeyError(
            "A grant's notebook path is relative.",
            "Give the absolute path (the server joins its root directory to the path).",
        )
    return os.path.normpath(notebook)


class NotebookAccess:
    """The grants file and the access log (thread-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._log: deque[Access] = deque(maxlen=LOG_LENGTH)

    # --- the file -----------------------------------------------------------------------

    def _load(self) -> list[Grant]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError):
            # A damaged grants file grants nothing (and is kept, for the person to look at).
            return []
        if not isinstance(raw, dict) or raw.get("v") != _FORMAT:
            return []
        grants = []
        for item in raw.get("grants", []):
            try:
                grants.append(
                    Grant(
                        str(item["notebook"]),
                        str(item["namespace"]),
                        str(item["key"]),
                        float(item["granted"]),
                    )
                )
            except (KeyError, TypeError, ValueError):
                continue
        return grants

    def _save(self, grants: list[Grant]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = json.dumps({"v": _FORMAT, "grants": [asdict(g) for g in grants]}, indent=1)
        temporary = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)

    # --- grants -------------------------------------------------------------------------

    def grants(self, notebook: str | None = None) -> list[Grant]:
        wanted = None if notebook is None else notebook_path(notebook)
        with self._lock:
            return [g for g in self._load() if wanted is None or g.notebook == wanted]

    def grant(self, notebook: str, namespace: str, key: str) -> None:
        notebook = notebook_path(notebook)
        with self._lock:
            grants = self._load()
            if not any(g[:3] == (notebook, namespace, key) for g in map(_fields, grants)):
                grants.append(Grant(notebook, namespace, key, time.time()))
                self._save(grants)

    def revoke(self, notebook: str, namespace: str, key: str) -> None:
        notebook = notebook_path(notebook)
        with self._lock:
            grants = self._load()
            kept = [g for g in grants if _fields(g)[:3] != (notebook, namespace, key)]
            if len(kept) != len(grants):
                self._save(kept)

    # --- asking -------------------------------------------------------------------------

    def allowed(self, notebook: str, namespace: str, key: str) -> bool:
        """Whether ``notebook`` may use ``key``; the answer is logged either way."""
        notebook = notebook_path(notebook)
        with self._lock:
            granted = any(_fields(g)[:3] == (notebook, namespace, key) for g in self._load())
            self._log.appendleft(Access(time.time(), notebook, namespace, key, granted))
        return granted

    def log(self, limit: int = 100) -> list[Access]:
        with self._lock:
            return list(self._log)[: max(0, limit)]


def _fields(grant: Grant) -> tuple[str, str, str, float]:
    return (grant.notebook, grant.namespace, grant.key, grant.granted)


def as_json(items: list[Any]) -> list[dict[str, Any]]:
    return [asdict(item) for item in items]
