"""The backend protocol, its diagnosis record, and the registry of backends by name.

A backend stores ``str`` values under ``(namespace, key)``. It does four things --
get, set, delete, list names -- and may override the bulk operations when it can
do them faster than one by one. Keys and values arrive already validated by
``SecureStorage``; backends add only the limits of their own store.

Backends are traitlets ``LoggingConfigurable`` objects so their options are set
the Jupyter way (``c.VaultBackend.path = ...``). Creating one does no I/O; the
first operation or :meth:`Backend.diagnose` finds out whether it can work here.

Third-party backends subclass :class:`Backend` and register under the
entry-point group ``jupyter_secure_storage.backends``::

    [project.entry-points."jupyter_secure_storage.backends"]
    mystore = "my_package.store:MyStoreBackend"
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, ClassVar

from traitlets.config import LoggingConfigurable

from ..errors import BackendUnavailableError, UnknownBackendError

ENTRY_POINT_GROUP = "jupyter_secure_storage.backends"

# Built-ins resolve without package metadata, so a source checkout works too.
BUILTIN_BACKENDS: dict[str, str] = {
    "memory": "jupyter_secure_storage.backends.memory:MemoryBackend",
    "vault": "jupyter_secure_storage.backends.vault:VaultBackend",
    "keyring": "jupyter_secure_storage.backends.keyring:KeyringBackend",
    "device": "jupyter_secure_storage.bridge.backend:DeviceBackend",
}


@dataclass(frozen=True)
class Diagnosis:
    """Whether a backend can work here, why, and what to do about it."""

    backend: str
    usable: bool
    summary: str
    remedy: str = ""
    details: tuple[str, ...] = ()


class Backend(LoggingConfigurable):
    """Base class of every backend. Subclasses set ``name`` and implement the four operations."""

    #: The name the backend is chosen by (``SecureStorage(backend=name)``).
    name: ClassVar[str] = ""
    #: False for stores that keep values readable by anyone with the file; such
    #: backends are never chosen by ``auto`` and ``doctor`` flags them.
    secure: ClassVar[bool] = True
    #: False when values vanish with the process.
    persistent: ClassVar[bool] = True

    # --- identity, for messages and for sharing listeners between instances ----------

    @property
    def location(self) -> str:
        """Where values live, in words (shown by ``list``, ``doctor``, ``%secure_status``)."""
        return self.name

    @property
    def identity(self) -> str:
        """A string equal for two instances that reach the same stored values."""
        return f"{self.name}:{self.location}"

    # --- the protocol ----------------------------------------------------------------

    def get(self, namespace: str, key: str) -> str | None:
        raise NotImplementedError

    def set(self, namespace: str, key: str, value: str) -> None:
        raise NotImplementedError

    def delete(self, namespace: str, key: str) -> bool:
        """Remove ``key``; return whether it existed. A missing key is not an error."""
        raise NotImplementedError

    def list_names(self, namespace: str) -> list[str]:
        raise NotImplementedError

    # --- optional: override when the store can do better than one at a time --------

    def list_namespaces(self) -> list[str]:
        """Namespaces holding at least one key. Backends that cannot tell raise."""
        raise NotImplementedError(f"the {self.name} backend cannot list namespaces")

    def get_all(self, namespace: str) -> dict[str, str]:
        values: dict[str, str] = {}
        for key in self.list_names(namespace):
            value = self.get(namespace, key)
            if value is not None:
                values[key] = value
        return values

    #: ``set_many`` applies all its changes or none (one durable write).
    atomic_batches = False

    def set_many(self, changes: list[tuple[str, str, str | None]]) -> None:
        """Apply ``(namespace, key, value)`` changes in order; ``None`` deletes."""
        for namespace, key, value in changes:
            if value is None:
                self.delete(namespace, key)
            else:
                self.set(namespace, key, value)

    def delete_all(self, namespace: str) -> list[str]:
        """Remove every key in the namespace; return the names removed."""
        removed = []
        for key in self.list_names(namespace):
            if self.delete(namespace, key):
                removed.append(key)
        return removed

    def modified_times(self, namespace: str) -> dict[str, float | None]:
        """Each name with when it was last written (seconds since the epoch; None: unknown)."""
        return dict.fromkeys(self.list_names(namespace))

    def contains(self, namespace: str, key: str) -> bool:
        return self.get(namespace, key) is not None

    def fingerprint_backend(self) -> Backend:
        """The backend that keeps the keyed fingerprints of this backend's values
        (:mod:`jupyter_secure_storage.known_values`): itself, unless its values cannot
        sit beside them (a paired phone's fingerprints live in the host's own store)."""
        return self

    def max_value_length(self) -> int | None:
        """The longest value (in characters) this store accepts, or None for no own limit."""
        return None

    # --- can it work here? -------------------------------------------------------------

    def diagnose(self) -> Diagnosis:
        """Find out whether this backend works here. Never raises."""
        return Diagnosis(self.name, True, f"ready ({self.location})")

    def ensure_usable(self) -> None:
        """Raise the typed error that says why this backend cannot work here, if it cannot.

        Called when a backend is chosen by name, so a missing keystore is reported at
        once rather than at the first read. The default does nothing: the first
        operation raises its own typed error.
        """

    def close(self) -> None:
        """Release what the backend holds (connections, unlocked keys)."""


def available_backends() -> dict[str, str]:
    """Every backend name this installation knows, mapped to ``module:Class``."""
    # Read package metadata only when asked for more than the built-ins: it costs about
    # 20 ms, which every short-lived command would pay.
    from importlib.metadata import entry_points

    found = dict(BUILTIN_BACKENDS)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(entry.name, entry.value)
    return found


def load_backend_class(name: str) -> type[Backend]:
    """The class registered under ``name``; :class:`UnknownBackendError` if there is none."""
    # Built-ins win over plugins of the same name (available_backends), so they need no
    # look at package metadata.
    known = BUILTIN_BACKENDS if name in BUILTIN_BACKENDS else available_backends()
    if name not in known:
        raise UnknownBackendError(
            f"No storage backend is named {name!r}.",
            f"Use one of: auto, {', '.join(sorted(known))}; or install the package "
            f"that provides {name!r} (it registers under the entry-point group "
            f"{ENTRY_POINT_GROUP!r}).",
        )
    target = known[name]
    module_name, _, attribute = target.partition(":")
    try:
        loaded: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            loaded = getattr(loaded, part)
    except (ImportError, AttributeError) as error:
        raise BackendUnavailableError(
            f"The {name!r} backend is registered as {target!r} but could not be imported "
            f"({type(error).__name__}: {error}).",
            "Reinstall the package that provides it, or choose another backend.",
        ) from error
    if not (isinstance(loaded, type) and issubclass(loaded, Backend)):
        raise BackendUnavailableError(
            f"The {name!r} backend ({target!r}) is not a subclass of "
            "jupyter_secure_storage.backends.base.Backend.",
            "Report this to the package that registered it.",
        )
    return loaded
