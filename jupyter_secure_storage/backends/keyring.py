"""``keyring``: the OS keystore (macOS Keychain, Windows Credential Manager, Secret Service,
KWallet) through the ``keyring`` library.

Each value is one keystore item: service ``jupyter-secure-storage/<namespace>``,
account ``<key>``, so people find their keys in Keychain Access or Seahorse under
names they recognise.

keyring cannot list items, so this backend keeps an index of names per namespace
(and a list of namespaces) as items of its own. Every change to an index happens
under an inter-process lock, so two kernels writing at once keep each other's
names. Reading a value never touches the index or the lock: one keystore call.

Stores with a size cap (Windows: 2560 bytes per credential) get long values split
into chunks stored beside the main item and checked with a SHA-256 prefix when
joined; nothing is ever truncated.

keyring's plaintext, null and failing backends, and everything from
``keyrings.alt``, are refused: this backend never stores plaintext silently.
"""

from __future__ import annotations

import hashlib
import json
import platform
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, NoReturn, TypeVar

from traitlets import Float, Int, Unicode

from ..errors import (
    BackendOperationError,
    BackendUnavailableError,
    InsecureBackendError,
    KeystoreLockedError,
    SecureStorageError,
)
from ..interprocess_lock import InterProcessLock, LockTimeout
from ..paths import data_dir
from .base import Backend, Diagnosis

# keyring backends that must never hold a secret: they keep plaintext, keep
# nothing, or fail. keyrings.alt describes itself as "alternate, less secure".
_REFUSED_MODULES = (
    "keyring.backends.fail",
    "keyring.backends.null",
    "keyrings.alt",
    # The paired device through keyring: the device is its own backend here, and the
    # bridge keeps its pairing keys in the OS keystore -- it must not depend on itself.
    "jupyter_secure_storage.bridge.keyring_backend",
)

_MARK = "\x1bjss:"  # starts every item this backend encodes; ESC never starts a real token
_CHUNKED = _MARK + "chunks:v1:"
_ESCAPED = _MARK + "raw:"
_WINDOWS_CAP_BYTES = 2400  # CRED_MAX_CREDENTIAL_BLOB_SIZE is 2560 bytes of UTF-16; keep a margin

_TRANSIENT_RETRIES = 4
T = TypeVar("T")


def _keyring_name(backend: Any) -> str:
    return f"{type(backend).__module__}.{type(backend).__qualname__}"


def _is_refused(backend: Any) -> bool:
    module = type(backend).__module__
    return any(module == m or module.startswith(m + ".") for m in _REFUSED_MODULES)


def _priority(backend: Any) -> float | None:
    try:
        return float(backend.priority)
    except Exception:
        return None


def _no_keystore_remedy() -> str:
    if platform.system() == "Linux":
        return (
            "Install and start a Secret Service (Debian/Ubuntu: apt install gnome-keyring "
            "dbus; in a headless session run `dbus-run-session -- bash`, then "
            "`echo -n PASSWORD | gnome-keyring-daemon --unlock --components=secrets`), "
            "or use the encrypted vault: JUPYTER_SECURE_STORAGE_BACKEND=vault."
        )
    return "Use the encrypted vault: JUPYTER_SECURE_STORAGE_BACKEND=vault."


def resolve_secure_keyring(keyring_backend: str = "") -> Any:
    """The keyring backend that would hold values here, refusing insecure ones.

    ``keyring_backend`` names a keyring class (``keyring.backends.SecretService.Keyring``);
    empty means keyring's own choice (``PYTHON_KEYRING_BACKEND``, ``keyringrc.cfg``,
    else the highest-priority viable backend). When keyring chains several backends
    the first secure one is used directly, so a failing keystore can never fall
    through to a plaintext one.
    """
    import keyring
    import keyring.core
    from keyring.backends import chainer

    if keyring_backend:
        try:
            chosen = keyring.core.load_keyring(keyring_backend)
        except Exception as error:
            raise BackendUnavailableError(
                f"keyring cannot load the backend {keyring_backend!r} "
                f"({type(error).__name__}: {error}).",
                "Check c.KeyringBackend.keyring_backend; `keyring --list-backends` "
                "shows what is installed.",
            ) from error
    else:
        chosen = keyring.get_keyring()
    candidates = list(chosen.backends) if isinstance(chosen, chainer.ChainerBackend) else [chosen]
    refused = []
    for candidate in candidates:
        if _is_refused(candidate):
            refused.append(_keyring_name(candidate))
            continue
        priority = _priority(candidate)
        if priority is None:
            continue
        if priority < 1:  # keyring's own line for "not recommended"
            refused.append(_keyring_name(candidate))
            continue
        return candidate
    if any(name.startswith("jupyter_secure_storage.bridge.") for name in refused):
        raise BackendUnavailableError(
            "keyring is set to the paired device's keyring backend.",
            "Use the device directly (JUPYTER_SECURE_STORAGE_BACKEND=device) and keep an OS "
            "keystore or the vault for jupyter-secure-storage itself.",
        )
    plaintext = [
        name
        for name in refused
        if not name.startswith(("keyring.backends.fail", "keyring.backends.null"))
    ]
    if plaintext:
        raise InsecureBackendError(
            "keyring offers only backends that do not protect values: "
            f"{', '.join(plaintext)}. jupyter-secure-storage refuses to store secrets there.",
            "Remove that choice (PYTHON_KEYRING_BACKEND, or keyringrc.cfg shown by "
            "`keyring diagnose`), set up the OS keystore, or use the encrypted vault: "
            "JUPYTER_SECURE_STORAGE_BACKEND=vault.",
        )
    raise BackendUnavailableError(
        f"No OS keystore is reachable (keyring found {_keyring_name(chosen)}).",
        _no_keystore_remedy(),
    )


def _default_item_cap(keyring_backend: Any) -> int:
    if type(keyring_backend).__module__.startswith("keyring.backends.Windows"):
        return _WINDOWS_CAP_BYTES
    return 0


class KeyringBackend(Backend):
    """Values in the OS keystore via ``keyring``, with an index of names kept beside them."""

    name: ClassVar[str] = "keyring"

    service_prefix = Unicode(
        "jupyter-secure-storage",
        help="Keystore items are stored under the service '<service_prefix>/<namespace>'.",
    ).tag(config=True)

    keyring_backend = Unicode(
        "",
        help=(
            "A keyring backend class to use (e.g. 'keyring.backends.SecretService.Keyring'). "
            "Empty: keyring's own choice. Plaintext backends are refused either way."
        ),
    ).tag(config=True)

    max_item_bytes = Int(
        -1,
        help=(
            "Largest item the keystore accepts, in bytes of its encoding (UTF-16 on "
            "Windows, UTF-8 elsewhere). Longer values are split into chunks. "
            "-1: the known cap of the keystore (2400 on Windows, none elsewhere); 0: no cap."
        ),
    ).tag(config=True)

    lock_timeout = Float(
        10.0, help="Seconds to wait for another process updating the index of names."
    ).tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._keyring: Any = None
        self._keyring_guard = threading.Lock()

    # --- the keyring object -----------------------------------------------------------

    @property
    def keyring(self) -> Any:
        """The resolved keyring backend; raises a typed error when none is secure."""
        if self._keyring is None:
            with self._keyring_guard:
                if self._keyring is None:
                    self._keyring = resolve_secure_keyring(self.keyring_backend)
        return self._keyring

    @property
    def location(self) -> str:
        try:
            return _keyring_name(self.keyring)
        except SecureStorageError:
            return "OS keystore (not reachable)"

    @property
    def _item_cap(self) -> int:
        if self.max_item_bytes >= 0:
            return self.max_item_bytes
        return _default_item_cap(self.keyring)

    @property
    def _utf16(self) -> bool:
        return type(self.keyring).__module__.startswith("keyring.backends.Windows")

    def _service(self, namespace: str) -> str:
        return f"{self.service_prefix}/{namespace}"

    def _chunk_service(self, namespace: str) -> str:
        return f"{self.service_prefix}/{namespace}#chunks"

    @property
    def _index_service(self) -> str:
        return f"{self.service_prefix}#index"

    _NAMESPACES_ACCOUNT = "#namespaces"  # '#' is allowed in keys, so it lives in its own service

    @property
    def _namespaces_service(self) -> str:
        return f"{self.service_prefix}#namespaces"

    # --- one keystore call, with keyring's errors turned into ours -----------------------

    def _call(self, operation: str, function: Callable[[], T]) -> T:
        for attempt in range(_TRANSIENT_RETRIES + 1):
            try:
                return function()
            except SecureStorageError:
                raise
            except Exception as error:
                # Secret Service: an item another process replaced between our search and
                # our read of it. The operation is safe to repeat.
                if type(error).__name__ == "ItemNotFoundException" and attempt < _TRANSIENT_RETRIES:
                    time.sleep(0.01 * (attempt + 1))
                    continue
                self._raise_typed(operation, error)
        raise AssertionError("unreachable")  # pragma: no cover

    def _raise_typed(self, operation: str, error: Exception) -> NoReturn:
        kind = type(error).__name__
        if kind in ("KeyringLocked", "LockedException", "PromptDismissedException"):
            raise KeystoreLockedError(
                f"The OS keystore ({_keyring_name(self.keyring)}) is locked; {operation} failed."
            ) from error
        raise BackendOperationError(
            f"The OS keystore ({_keyring_name(self.keyring)}) failed to {operation} ({kind}).",
            "Run `jupyter-secure-storage doctor`; if the keystore needs unlocking, "
            "unlock it and retry.",
        ) from error

    def _raw_get(self, service: str, account: str) -> str | None:
        keyring_backend = self.keyring
        result: str | None = self._call(
            "read an item", lambda: keyring_backend.get_password(service, account)
        )
        return result

    def _raw_set(self, service: str, account: str, value: str) -> None:
        keyring_backend = self.keyring
        self._call("store an item", lambda: keyring_backend.set_password(service, account, value))

    def _raw_delete(self, service: str, account: str) -> bool:
        keyring_backend = self.keyring
        from keyring.errors import PasswordDeleteError

        def delete() -> bool:
            try:
                keyring_backend.delete_password(service, account)
            except PasswordDeleteError:
                return False
            return True

        return self._call("delete an item", delete)

    # --- items that may be chunked -------------------------------------------------------

    def _cost(self, text: str) -> int:
        return len(text.encode("utf-16-le" if self._utf16 else "utf-8"))

    def _split(self, value: str, cap: int) -> list[str]:
        """Cut ``value`` into pieces of at most ``cap`` bytes each, between characters."""
        chunks: list[str] = []
        start = size = 0
        for position, char in enumerate(value):
            char_cost = self._cost(char)
            if size + char_cost > cap and position > start:
                chunks.append(value[start:position])
                start, size = position, 0
            size += char_cost
        chunks.append(value[start:])
        return chunks

    def _store(self, service: str, chunk_service: str, account: str, value: str) -> None:
        """Store ``value``; split it into chunks when the keystore caps item size."""
        encoded = _ESCAPED + value if value.startswith(_MARK) else value
        cap = self._item_cap
        previous = self._chunk_count(self._raw_get(service, account))
        if cap and self._cost(encoded) > cap:
            chunks = self._split(value, max(cap, 64))
            for number, chunk in enumerate(chunks):
                self._raw_set(chunk_service, f"{account}#{number}", chunk)
            digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:32]
            self._raw_set(service, account, f"{_CHUNKED}{len(chunks)}:{digest}")
            count = len(chunks)
        else:
            self._raw_set(service, account, encoded)
            count = 0
        for number in range(count, previous):
            self._raw_delete(chunk_service, f"{account}#{number}")

    def _chunk_count(self, stored: str | None) -> int:
        if stored is None or not stored.startswith(_CHUNKED):
            return 0
        try:
            return int(stored[len(_CHUNKED) :].split(":", 1)[0])
        except ValueError:
            return 0

    def _load(self, service: str, chunk_service: str, account: str) -> str | None:
        stored = self._raw_get(service, account)
        if stored is None or not stored.startswith(_MARK):
            return stored
        if stored.startswith(_ESCAPED):
            return stored[len(_ESCAPED) :]
        if stored.startswith(_CHUNKED):
            value = self._join(stored, chunk_service, account)
            if value is None:
                # A writer may have been between chunks; its lock ends that.
                with self._index_lock():
                    stored = self._raw_get(service, account)
                    if stored is None:
                        return None
                    value = self._join(stored, chunk_service, account)
                if value is None:
                    raise BackendOperationError(
                        f"The keystore item {account!r} under {service!r} is incomplete: "
                        "some of its chunks are missing or changed.",
                        "Write the value again (jupyter-secure-storage write KEY).",
                    )
            return value
        return stored

    def _join(self, stored: str, chunk_service: str, account: str) -> str | None:
        count_text, _, digest = stored[len(_CHUNKED) :].partition(":")
        try:
            count = int(count_text)
        except ValueError:
            return None
        parts = []
        for number in range(count):
            part = self._raw_get(chunk_service, f"{account}#{number}")
            if part is None:
                return None
            parts.append(part)
        value = "".join(parts)
        actual = hashlib.sha256(value.encode("utf-8")).hexdigest()[:32]
        return value if actual == digest else None

    def _remove(self, service: str, chunk_service: str, account: str) -> bool:
        stored = self._raw_get(service, account)
        if stored is None:
            return False
        existed = self._raw_delete(service, account)
        for number in range(self._chunk_count(stored)):
            self._raw_delete(chunk_service, f"{account}#{number}")
        return existed

    # --- the index of names ---------------------------------------------------------------

    @contextmanager
    def _index_lock(self) -> Iterator[None]:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.service_prefix)
        lock = InterProcessLock(data_dir() / f"keyring-index-{safe}.lock", self.lock_timeout)
        try:
            lock.acquire()
        except LockTimeout as error:
            raise BackendOperationError(
                f"Another process held the keyring index lock for more than "
                f"{self.lock_timeout:g} s.",
                f"Retry; the lock file is {lock.path}.",
            ) from error
        try:
            yield
        finally:
            lock.release()

    def _read_index(self, service: str, account: str) -> dict[str, float | None]:
        """Names kept in the keystore, each with when it was last written (None: unknown).

        Format: a JSON object ``{name: seconds since the epoch}``; the JSON list of names
        written by 0.1.0 is read too.
        """
        raw = self._load(service, service + "#chunks", account)
        if raw is None:
            return {}
        try:
            index = json.loads(raw)
        except json.JSONDecodeError:
            index = None
        if isinstance(index, list) and all(isinstance(n, str) for n in index):
            return dict.fromkeys(index)
        if isinstance(index, dict) and all(
            isinstance(t, (int, float)) or t is None for t in index.values()
        ):
            return {str(name): (None if t is None else float(t)) for name, t in index.items()}
        raise BackendOperationError(
            f"The index of names kept in the OS keystore ({service!r}, {account!r}) "
            "is not valid; it was left as found.",
            "Delete that item with your keystore's tool (Seahorse, Keychain Access, "
            "`secret-tool clear service ...`); values stay, and writing a key again "
            "lists it again.",
        )

    def _write_index(self, service: str, account: str, index: dict[str, float | None]) -> None:
        if index:
            ordered = {name: index[name] for name in sorted(index)}
            self._store(service, service + "#chunks", account, json.dumps(ordered))
        else:
            self._remove(service, service + "#chunks", account)

    def _update_namespaces(self, namespace: str, present: bool) -> None:
        current = self._read_index(self._namespaces_service, self._NAMESPACES_ACCOUNT)
        if present and namespace not in current:
            current[namespace] = None
            self._write_index(self._namespaces_service, self._NAMESPACES_ACCOUNT, current)
        elif not present and namespace in current:
            del current[namespace]
            self._write_index(self._namespaces_service, self._NAMESPACES_ACCOUNT, current)

    # --- the protocol -----------------------------------------------------------------------

    def get(self, namespace: str, key: str) -> str | None:
        return self._load(self._service(namespace), self._chunk_service(namespace), key)

    def set(self, namespace: str, key: str, value: str) -> None:
        with self._index_lock():
            index = self._read_index(self._index_service, namespace)
            before = dict(index)
            index[key] = time.time()
            # The name goes in first: a crash between the two steps leaves a name
            # without a value (skipped when listing), never a value nobody can find.
            self._write_index(self._index_service, namespace, index)
            if not before:
                self._update_namespaces(namespace, present=True)
            try:
                self._store(self._service(namespace), self._chunk_service(namespace), key, value)
            except SecureStorageError:
                self._write_index(self._index_service, namespace, before)
                raise

    def delete(self, namespace: str, key: str) -> bool:
        with self._index_lock():
            existed = self._remove(self._service(namespace), self._chunk_service(namespace), key)
            index = self._read_index(self._index_service, namespace)
            if key in index:
                del index[key]
                self._write_index(self._index_service, namespace, index)
                if not index:
                    self._update_namespaces(namespace, present=False)
            return existed

    def list_names(self, namespace: str) -> list[str]:
        return sorted(self._read_index(self._index_service, namespace))

    def modified_times(self, namespace: str) -> dict[str, float | None]:
        return self._read_index(self._index_service, namespace)

    def list_namespaces(self) -> list[str]:
        return sorted(self._read_index(self._namespaces_service, self._NAMESPACES_ACCOUNT))

    def get_all(self, namespace: str) -> dict[str, str]:
        values = {}
        for key in self.list_names(namespace):
            value = self.get(namespace, key)
            if value is not None:
                values[key] = value
        return values

    def delete_all(self, namespace: str) -> list[str]:
        with self._index_lock():
            index = self._read_index(self._index_service, namespace)
            removed = [
                key
                for key in sorted(index)
                if self._remove(self._service(namespace), self._chunk_service(namespace), key)
            ]
            self._write_index(self._index_service, namespace, {})
            if index:
                self._update_namespaces(namespace, present=False)
            return removed

    # --- can it work here? -------------------------------------------------------------------

    def _probe(self) -> Any:
        """Resolve the keystore and read our own index item: proves it answers and is unlocked
        without creating anything. Raises the typed error that says why not."""
        keyring_backend = self.keyring
        self._raw_get(self._namespaces_service, self._NAMESPACES_ACCOUNT)
        return keyring_backend

    def ensure_usable(self) -> None:
        self._probe()

    def diagnose(self) -> Diagnosis:
        try:
            keyring_backend = self._probe()
        except SecureStorageError as error:
            details: tuple[str, ...] = ()
            if self._keyring is not None:
                details = (f"keyring backend: {_keyring_name(self._keyring)}",)
            return Diagnosis(self.name, False, error.cause, error.remedy, details)
        cap = self._item_cap
        return Diagnosis(
            self.name,
            True,
            f"ready ({_keyring_name(keyring_backend)})",
            "",
            (
                f"keyring backend: {_keyring_name(keyring_backend)}",
                f"item size cap: {cap} bytes (longer values are chunked)"
                if cap
                else "item size cap: none",
            ),
        )
