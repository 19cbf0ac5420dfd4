"""``SecureStorage``: the one facade every front end (magics, widgets, CLI, code) goes through.

The API is flutter_secure_storage's -- ``write``, ``read``, ``delete``,
``contains_key``, ``read_all``, ``delete_all`` -- plus ``keys()``, an ``a``-prefixed
async twin of each (``await store.aread(key)``), and listeners that fire on
write and delete.

Which backend: the ``backend`` argument, else ``JUPYTER_SECURE_STORAGE_BACKEND``,
else ``c.SecureStorage.backend`` from config, else ``auto`` -- the OS keystore
when a secure one answers here, otherwise the encrypted vault, with a warning
that says so. (The environment wins over config files so an unattended run can
pick its store without editing anyone's config.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from traitlets import Bool, Enum, Instance, Int, Unicode, Union, validate
from traitlets.config import Config, LoggingConfigurable

from .backends.base import Backend, Diagnosis, load_backend_class
from .config_file import load_config_files
from .errors import (
    InvalidKeyError,
    InvalidValueError,
    InvalidValueTypeError,
    NotebookAccessError,
    SecureStorageError,
    UnknownBackendError,
    ValueTooLargeError,
)
from .paths import ENV_BACKEND, env_value
from .secret import Secret

if TYPE_CHECKING:
    from .known_values import FingerprintIndex

logger = logging.getLogger("jupyter_secure_storage")

MAX_KEY_LENGTH = 255
_NAMESPACE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_FORBIDDEN_KEY_CATEGORIES = {"Cc", "Cs", "Zl", "Zp", "Co", "Cn"}

Listener = Callable[[Secret | None], None]


# --- validation ---------------------------------------------------------------------------
# Messages describe a rejected key without repeating it: a value pasted where a
# key belongs must not come back in an error.


def validate_key(key: object) -> str:
    """Return ``key`` if it can be stored; raise :class:`InvalidKeyError` saying why not."""
    if isinstance(key, Secret):
        raise InvalidKeyError(
            "A Secret was given where a key name belongs.",
            "Pass the key's name, e.g. store.read('OPENAI_API_KEY').",
        )
    if not isinstance(key, str):
        raise InvalidKeyError(
            f"A key is a str, not {type(key).__name__}.",
            "Pass the key's name as a str, e.g. 'OPENAI_API_KEY'.",
        )
    if not key:
        raise InvalidKeyError("The key is empty.", "Name the key, e.g. 'OPENAI_API_KEY'.")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKeyError(
            f"The key is {len(key)} characters long; keys are at most {MAX_KEY_LENGTH}.",
            "Use a shorter name. (If you pasted the value itself, store it with "
            "a name instead: jupyter-secure-storage write NAME.)",
        )
    for position, char in enumerate(key):
        category = unicodedata.category(char)
        if category in _FORBIDDEN_KEY_CATEGORIES:
            raise InvalidKeyError(
                f"The key holds a control or unassigned character "
                f"(U+{ord(char):04X}, category {category}) at position {position}.",
                "Use printable characters only.",
            )
    if key != key.strip():
        raise InvalidKeyError(
            "The key starts or ends with whitespace.", "Remove the surrounding spaces."
        )
    return key


def validate_namespace(namespace: object) -> str:
    if not isinstance(namespace, str) or not _NAMESPACE_PATTERN.fullmatch(namespace):
        raise InvalidKeyError(
            "A namespace is 1-64 characters from A-Z, a-z, 0-9, '.', '_' and '-', "
            "starting with a letter or digit.",
            "Choose a name such as 'default', 'team-a' or 'project.prod'.",
        )
    return namespace


def validate_value(value: object, max_length: int) -> str:
    if isinstance(value, Secret):
        value = value.reveal()
    if not isinstance(value, str):
        hint = (
            "Decode bytes first (value.decode()), or store base64 text."
            if isinstance(value, (bytes, bytearray, memoryview))
            else "Store text: convert with str(), or JSON-encode structured values."
        )
        raise InvalidValueTypeError(
            f"Values are str (or None to delete), not {type(value).__name__}.", hint
        )
    if len(value) > max_length:
        raise ValueTooLargeError(
            f"The value is {len(value)} characters; this store takes at most {max_length}.",
            "Store a reference (a path or URL) instead, or raise "
            "c.SecureStorage.max_value_length. Nothing was stored.",
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidValueError(
            f"The value holds a lone surrogate at position {error.start}, which no "
            "keystore can store.",
            "Check how the text was decoded; nothing was stored.",
        ) from None
    return value


# --- listeners ---------------------------------------------------------------------------


class _ListenerHub:
    """Listeners by store (backend identity + namespace) and key, shared in the process.

    A listener registered through one ``SecureStorage`` hears writes made through
    any other instance on the same store -- a widget panel sees ``%secure_write``.
    Unregistering through an instance removes only what that instance registered.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[tuple[int, str, str, Listener]] = []

    def add(self, owner: int, store: str, key: str, listener: Listener) -> None:
        with self._lock:
            self._entries.append((owner, store, key, listener))

    def remove(
        self,
        owner: int,
        key: str | None = None,
        listener: Listener | None = None,
    ) -> None:
        with self._lock:
            self._entries = [
                entry
                for entry in self._entries
                if not (
                    entry[0] == owner
                    and (key is None or entry[2] == key)
                    and (listener is None or entry[3] == listener)
                )
            ]

    def listeners(self, store: str, key: str) -> list[Listener]:
        with self._lock:
            return [entry[3] for entry in self._entries if entry[1] == store and entry[2] == key]

    def fire(self, store: str, key: str, value: Secret | None) -> None:
        for listener in self.listeners(store, key):
            try:
                listener(value)
            except Exception as error:
                # The exception's text could quote a value the listener revealed: log its type.
                logger.warning(
                    "A listener for %r (%s) raised %s; the write itself succeeded.",
                    key,
                    getattr(listener, "__qualname__", type(listener).__name__),
                    type(error).__name__,
                )


_hub = _ListenerHub()


# --- choosing the backend ----------------------------------------------------------------


@dataclass(frozen=True)
class BackendChoice:
    """Which backend is in use and why (shown by ``list``, ``doctor`` and ``%secure_status``)."""

    name: str
    reason: str


@dataclass(frozen=True)
class StoredKey:
    """A key's name and metadata, as listings show it (never its value)."""

    name: str
    namespace: str
    backend: str
    modified: datetime | None


# The package's own namespaces: fingerprints of stored values, and the bridge's pairing
# records (by name only: the core does not import the bridge).
# (The first is known_values.FINGERPRINT_NAMESPACE, spelled out so that reads never load it.)
INTERNAL_NAMESPACES = ("jss-fingerprints", "jss-bridge")

_auto_choice_lock = threading.Lock()
_auto_warned: set[str] = set()


def _choose_auto(parent: SecureStorage) -> tuple[Backend, BackendChoice]:
    keyring_backend = load_backend_class("keyring")(parent=parent)
    diagnosis = keyring_backend.diagnose()
    if diagnosis.usable:
        return keyring_backend, BackendChoice("keyring", f"auto: {diagnosis.summary}")
    vault = load_backend_class("vault")(parent=parent)
    reason = f"auto: no usable OS keystore ({diagnosis.summary}); using the encrypted vault"
    with _auto_choice_lock:
        if vault.location not in _auto_warned:
            _auto_warned.add(vault.location)
            logger.warning(
                "No usable OS keystore: using the encrypted vault at %s "
                "(`jupyter-secure-storage doctor` explains why).",
                vault.location,
            )
    return vault, BackendChoice("vault", reason)


_Result = TypeVar("_Result")


async def _off_the_loop(function: Callable[..., _Result], *args: Any) -> _Result:
    # asyncio is imported here: scripts and the CLI never pay for it (about 35 ms).
    import asyncio

    return await asyncio.to_thread(function, *args)


def notebook_identity() -> str | None:
    """The notebook this process runs for: the absolute path of ``$JPY_SESSION_NAME``,
    which Jupyter Server gives the kernels it starts for a notebook (and which every
    ``!command`` of that kernel inherits). None outside such a kernel."""
    name = os.environ.get("JPY_SESSION_NAME")
    if not name:
        return None
    if os.path.isabs(name):
        return os.path.normpath(name)
    # An API path relative to the server's root; the kernel started in its folder.
    folder = os.path.dirname(name)
    cwd = os.getcwd()
    root = cwd[: -len(folder)] if folder and cwd.endswith(folder) else cwd
    return os.path.normpath(os.path.join(root, name))


# --- the facade --------------------------------------------------------------------------


class SecureStorage(LoggingConfigurable):
    """Keep secrets in the OS keystore, an encrypted vault, or a paired phone.

    >>> store = SecureStorage(backend="memory")
    >>> store.write("OPENAI_API_KEY", "sk-example")
    >>> store.read("OPENAI_API_KEY")
    Secret('OPENAI_API_KEY', '********')
    """

    backend = Union(
        [Unicode(), Instance(Backend)],
        default_value="auto",
        help=(
            "Where values live: 'auto' (the OS keystore when one is usable, else the "
            "vault), 'keyring', 'vault', 'memory', or a plugin's name. "
            "JUPYTER_SECURE_STORAGE_BACKEND wins over this setting."
        ),
    ).tag(config=True)

    namespace = Unicode(
        "default",
        help="Keys live in a namespace; different namespaces never see each other's keys.",
    ).tag(config=True)

    max_value_length = Int(
        1_048_576, help="The longest value accepted, in characters. Longer ones are refused."
    ).tag(config=True)

    fingerprints = Bool(
        True,
        help=(
            "Keep keyed fingerprints of stored values (namespace jss-fingerprints) so the "
            "save hook and `jupyter-secure-storage scan` can find them in files without "
            "reading any value."
        ),
    ).tag(config=True)

    notebook_access = Enum(
        ["auto", "on", "off"],
        "auto",
        help=(
            "Per-notebook access (docs/notebook-access.md): a notebook's kernel reads, "
            "overwrites or deletes a key only once it is granted to that notebook in the "
            "Secrets sidebar. 'auto': on in kernels that Jupyter Server started for a "
            "notebook (and whose unlock agent answers), off elsewhere (scripts, the CLI "
            "in a terminal). 'on': refuse when it cannot be checked. 'off': never check."
        ),
    ).tag(config=True)

    @validate("namespace")
    def _validate_namespace(self, proposal: Any) -> str:
        return validate_namespace(proposal["value"])

    def __init__(self, **kwargs: Any) -> None:
        if "config" not in kwargs:
            kwargs["config"] = load_config_files(getattr(kwargs.get("parent"), "config", None))
        super().__init__(**kwargs)
        self._backend_source = "argument" if "backend" in kwargs else "config or default"
        if "backend" not in kwargs and env_value(ENV_BACKEND):
            self.backend = env_value(ENV_BACKEND)
            self._backend_source = ENV_BACKEND
        self._resolved: tuple[Backend, BackendChoice] | None = None
        self._resolve_lock = threading.Lock()

    # --- the backend in use ---------------------------------------------------------------

    def _resolve(self) -> tuple[Backend, BackendChoice]:
        if self._resolved is None:
            with self._resolve_lock:
                if self._resolved is None:
                    self._resolved = self._make_backend()
        return self._resolved

    def _make_backend(self) -> tuple[Backend, BackendChoice]:
        chosen = self.backend
        if isinstance(chosen, Backend):
            return chosen, BackendChoice(chosen.name, "given as an object")
        if chosen == "auto":
            return _choose_auto(self)
        try:
            backend_class = load_backend_class(chosen)
        except UnknownBackendError as error:
            if self._backend_source == ENV_BACKEND:
                raise UnknownBackendError(
                    f"{ENV_BACKEND}={chosen!r} names no storage backend.", error.remedy
                ) from None
            raise
        instance = backend_class(parent=self)
        instance.ensure_usable()
        return instance, BackendChoice(backend_class.name, f"chosen by {self._backend_source}")

    @property
    def backend_object(self) -> Backend:
        """The backend instance in use (resolving ``auto`` on first access)."""
        return self._resolve()[0]

    @property
    def backend_choice(self) -> BackendChoice:
        return self._resolve()[1]

    @property
    def backend_name(self) -> str:
        return self._resolve()[1].name

    def diagnose(self) -> Diagnosis:
        return self.backend_object.diagnose()

    @property
    def _store_id(self) -> str:
        return f"{self.backend_object.identity}|{self.namespace}"

    # --- the flutter_secure_storage API ----------------------------------------------------

    def write(self, key: str, value: str | Secret | None) -> None:
        """Store ``value`` under ``key``; ``None`` deletes it (as flutter_secure_storage does)."""
        key = validate_key(key)
        if value is None:
            self.delete(key)
            return
        plain = validate_value(value, self.max_value_length)
        secret = Secret(plain, key)  # announces the value before it goes anywhere
        backend = self.backend_object
        limit = backend.max_value_length()
        if limit is not None and len(plain) > limit:
            raise ValueTooLargeError(
                f"The value is {len(plain)} characters; the {backend.name} backend takes "
                f"at most {limit}.",
                "Choose another backend for large values (the vault takes up to "
                "c.SecureStorage.max_value_length). Nothing was stored.",
            )
        access = self._access()
        if access is not None and backend.contains(self.namespace, key):
            self._check_access(access, [key], "overwrite")  # a new key is this notebook's
        index = self._fingerprint_index()
        if index is not None and index.backend is backend and backend.atomic_batches:
            index.write(self.namespace, key, plain)  # value and fingerprints, one write
        else:
            backend.set(self.namespace, key, plain)
            self._fingerprint("update", key, plain)
        if access is not None:
            self._grant_written(access, key)
        _hub.fire(self._store_id, key, secret)

    def read(self, key: str) -> Secret | None:
        """The value stored under ``key`` as a :class:`Secret`, or ``None``."""
        key = validate_key(key)
        self._check_access(self._access(), [key], "read")
        value = self.backend_object.get(self.namespace, key)
        return None if value is None else Secret(value, key)

    def contains_key(self, key: str) -> bool:
        key = validate_key(key)
        return self.backend_object.contains(self.namespace, key)

    def delete(self, key: str) -> None:
        """Remove ``key``. A missing key is not an error."""
        key = validate_key(key)
        self._check_access(self._access(), [key], "delete")
        if self.backend_object.delete(self.namespace, key):
            self._fingerprint("remove", key)
            _hub.fire(self._store_id, key, None)

    def read_all(self) -> dict[str, Secret]:
        """Every key of the namespace with its value, as Secrets."""
        access = self._access()
        if access is not None:
            self._check_access(access, self.keys(), "read")
        values = self.backend_object.get_all(self.namespace)
        return {key: Secret(value, key) for key, value in sorted(values.items())}

    def delete_all(self) -> None:
        """Remove every key of the namespace (other namespaces are untouched)."""
        access = self._access()
        if access is not None:
            self._check_access(access, self.keys(), "delete")
        removed = self.backend_object.delete_all(self.namespace)
        if removed:
            self._fingerprint("remove_namespace")
        for key in removed:
            _hub.fire(self._store_id, key, None)

    def keys(self) -> list[str]:
        """The names in the namespace, sorted. Never values."""
        return sorted(self.backend_object.list_names(self.namespace))

    def entries(self) -> list[StoredKey]:
        """Names with when each was last written (None where the store cannot tell). No values."""
        times = self.backend_object.modified_times(self.namespace)
        listed = []
        for name in sorted(times):
            stamp = times[name]
            when = None if stamp is None else datetime.fromtimestamp(stamp, tz=timezone.utc)
            listed.append(StoredKey(name, self.namespace, self.backend_name, when))
        return listed

    def namespaces(self) -> list[str]:
        """Namespaces in this backend that hold at least one key (the package's own hidden)."""
        return [
            namespace
            for namespace in self.backend_object.list_namespaces()
            if namespace not in INTERNAL_NAMESPACES
        ]

    # --- per-notebook access (agent/access.py) ---------------------------------------------

    def _access(self) -> tuple[str, Any] | None:
        """``(notebook, agent client)`` when this store checks grants here, else None."""
        if self.notebook_access == "off":
            return None
        notebook = notebook_identity()
        if notebook is None:
            return None
        from .agent_client import AgentClient

        return notebook, AgentClient()

    def _check_access(self, access: tuple[str, Any] | None, keys: list[str], action: str) -> None:
        if access is None:
            return
        from .agent_client import AgentNotRunning

        notebook, client = access
        for key in keys:
            try:
                answer = client.call(
                    "access", "", notebook=notebook, namespace=self.namespace, key=key
                )
            except AgentNotRunning:
                if self.notebook_access == "on":
                    raise NotebookAccessError(
                        f"Notebook access cannot be checked for {os.path.basename(notebook)}: "
                        "no unlock agent runs for this user.",
                        "Run the notebook in Jupyter Server with jupyter-secure-storage "
                        "enabled, or set c.SecureStorage.notebook_access = 'auto'.",
                    ) from None
                return
            if not answer.get("allowed"):
                raise NotebookAccessError(
                    f"The notebook {os.path.basename(notebook)} may not {action} the key "
                    f"{key!r} (namespace {self.namespace!r}): it has not been granted to it.",
                    "Grant it in JupyterLab: open the Secrets sidebar (the key icon on the "
                    "left) and turn the key on under 'Notebook access' for this notebook.",
                )

    def _grant_written(self, access: tuple[str, Any], key: str) -> None:
        """A key a notebook wrote (typed in there) is that notebook's to read back."""
        from .agent_client import AgentNotRunning

        notebook, client = access
        with contextlib.suppress(AgentNotRunning, SecureStorageError):
            client.call("grant", "", notebook=notebook, namespace=self.namespace, key=key)

    def fingerprint_index(self) -> FingerprintIndex:
        """The fingerprint records of this store's values, where its backend keeps them
        (for a paired device: the host's own store). Scanners read them from here."""
        from .known_values import FingerprintIndex  # on first write: reads never need it

        return FingerprintIndex(self.backend_object.fingerprint_backend())

    def _fingerprint_index(self) -> FingerprintIndex | None:
        """Where this store's fingerprints are kept (None: not kept, or unreachable)."""
        if not self.fingerprints or self.namespace in INTERNAL_NAMESPACES:
            return None
        try:
            return self.fingerprint_index()
        except (SecureStorageError, OSError) as error:
            logger.warning(
                "Could not open the fingerprints scanners use (%s); files may not be "
                "checked for this value.",
                getattr(error, "cause", type(error).__name__),
            )
            return None

    def _fingerprint(self, action: str, *args: str) -> None:
        """Keep the fingerprint records in step; a failure never undoes the write."""
        index = self._fingerprint_index()
        if index is None:
            return
        try:
            if action == "update":
                index.update(self.namespace, *args)
            elif action == "remove":
                index.remove(self.namespace, *args)
            else:
                index.remove_namespace(self.namespace)
        except (SecureStorageError, OSError) as error:
            logger.warning(
                "Could not update the fingerprints file scanners use (%s); files may not "
                "be checked for this value.",
                getattr(error, "cause", type(error).__name__),
            )

    # --- async twins: the same operations off the event loop's thread ----------------------

    async def awrite(self, key: str, value: str | Secret | None) -> None:
        await _off_the_loop(self.write, key, value)

    async def aread(self, key: str) -> Secret | None:
        return await _off_the_loop(self.read, key)

    async def acontains_key(self, key: str) -> bool:
        return await _off_the_loop(self.contains_key, key)

    async def adelete(self, key: str) -> None:
        await _off_the_loop(self.delete, key)

    async def aread_all(self) -> dict[str, Secret]:
        return await _off_the_loop(self.read_all)

    async def adelete_all(self) -> None:
        await _off_the_loop(self.delete_all)

    async def akeys(self) -> list[str]:
        return await _off_the_loop(self.keys)

    # --- listeners -------------------------------------------------------------------------

    def register_listener(self, key: str, listener: Listener) -> None:
        """Call ``listener(secret)`` after each write of ``key``; ``listener(None)`` after a delete.

        Listeners hear changes made through any ``SecureStorage`` of this process on
        the same backend and namespace. They run in the thread that made the change.
        """
        key = validate_key(key)
        if not callable(listener):
            raise InvalidValueTypeError(
                f"A listener is a callable, not {type(listener).__name__}.",
                "Pass a function taking one argument (a Secret, or None after a delete).",
            )
        _hub.add(id(self), self._store_id, key, listener)

    def unregister_listener(self, key: str, listener: Listener) -> None:
        _hub.remove(id(self), validate_key(key), listener)

    def unregister_all_listeners_for_key(self, key: str) -> None:
        _hub.remove(id(self), validate_key(key))

    def unregister_all_listeners(self) -> None:
        _hub.remove(id(self))

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown
            _hub.remove(id(self))

    def __repr__(self) -> str:
        if self._resolved is None:
            return f"SecureStorage(backend={self.backend!r}, namespace={self.namespace!r})"
        backend, _ = self._resolved
        return (
            f"SecureStorage(backend={backend.name!r}, namespace={self.namespace!r}, "
            f"location={backend.location!r})"
        )


def config_for(**traits: Any) -> Config:
    """A ``Config`` from ``{"VaultBackend.path": ..., ...}`` pairs (handy in scripts and tests)."""
    config = Config()
    for dotted, value in traits.items():
        section, _, name = dotted.partition(".")
        config[section][name] = value
    return config


__all__ = [
    "BackendChoice",
    "Listener",
    "SecureStorage",
    "SecureStorageError",
    "StoredKey",
    "config_for",
    "validate_key",
    "validate_namespace",
    "validate_value",
]
