"""``Secret``: a stored value that hides itself, and the registry that redaction reads.

A ``Secret`` is deliberately *not* a ``str``. Everything that turns an object into
text for a person -- ``repr``, ``str``, f-strings, IPython's display, logging,
``%xmode Verbose`` locals -- shows a mask. The value comes out only through
``reveal()``, at the point of use::

    client = OpenAI(api_key=store.read("OPENAI_API_KEY").reveal())

Passing a ``Secret`` where a library calls ``str()`` on it gives that library the
mask, not the value (the same rule as pydantic's ``SecretStr``). That is the safe
failure: the call is refused by the server, and nothing leaks.

Every ``Secret`` created, and every value written through ``SecureStorage``, is
announced to :data:`secret_registry`. The kernel's redaction (a later layer) reads
the registry to know which values must never leave the kernel. Announcing costs a
dict lookup when the value is already known.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable
from typing import Any, NoReturn

from .errors import InvalidValueTypeError, SecretSerializationError

MASK = "********"

AnnounceCallback = Callable[[str, str], None]


class SecretRegistry:
    """The values this process must never show, each with the first name it was seen under.

    ``version`` grows by one for every new value, so a consumer can rebuild its
    matcher lazily (compare the version it built from with the current one) instead
    of being called on the hot path. Subscribers are called once per new value with
    ``(name, value)``; they must be quick and must not raise.
    """

    def __init__(self) -> None:
        self._names_by_value: dict[str, str] = {}
        self._subscribers: list[AnnounceCallback] = []
        self._lock = threading.Lock()
        self.version = 0

    def announce(self, value: str, name: str = "") -> None:
        # The common case -- a value already known -- takes no lock.
        if value in self._names_by_value:
            return
        with self._lock:
            if value in self._names_by_value:
                return
            self._names_by_value[value] = name
            self.version += 1
            subscribers = list(self._subscribers)
        for callback in subscribers:
            callback(name, value)

    def subscribe(self, callback: AnnounceCallback) -> None:
        with self._lock:
            self._subscribers.append(callback)

    def unsubscribe(self, callback: AnnounceCallback) -> None:
        with self._lock:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

    def values(self) -> dict[str, str]:
        """A snapshot ``{value: name}``; the caller must treat it as secret."""
        with self._lock:
            return dict(self._names_by_value)

    def names(self) -> list[str]:
        """The names values were announced under (no values), for status displays."""
        with self._lock:
            return sorted(set(self._names_by_value.values()))

    def __len__(self) -> int:
        return len(self._names_by_value)

    def __contains__(self, value: object) -> bool:
        return value in self._names_by_value

    def __repr__(self) -> str:
        return f"<SecretRegistry: {len(self)} values>"


#: The process-wide registry. The kernel extension subscribes to it.
secret_registry = SecretRegistry()


class Secret:
    """A secret value that does not show itself. ``reveal()`` returns the plain ``str``.

    - ``repr``, ``str``, ``format`` and IPython's display give a mask with the name.
    - ``==`` compares in constant time with another ``Secret`` or a ``str``.
    - ``len()`` and ``bool()`` work (the length is not considered secret).
    - Pickling (and so ``%store``, ``multiprocessing`` arguments, ``shelve``) raises
      :class:`SecretSerializationError`; ``copy``/``deepcopy`` return the same object.
    - Immutable.
    """

    __slots__ = ("_name", "_value")

    _name: str
    _value: str

    def __init__(self, value: str, name: str = "") -> None:
        if not isinstance(value, str):
            raise InvalidValueTypeError(
                f"A Secret holds a str, not {type(value).__name__}.",
                "Decode bytes first (value.decode()) or convert numbers with str().",
            )
        if not isinstance(name, str):
            raise InvalidValueTypeError(
                f"A Secret's name is a str, not {type(name).__name__}.",
                "Pass the key name as a str.",
            )
        object.__setattr__(self, "_value", value)
        object.__setattr__(self, "_name", name)
        secret_registry.announce(value, name)

    @property
    def name(self) -> str:
        """The key this value was stored under ('' when made by hand)."""
        return self._name

    def reveal(self) -> str:
        """The plain value. Call it at the point of use and do not keep the result around."""
        return self._value

    # --- showing ---------------------------------------------------------------------

    def __repr__(self) -> str:
        if self._name:
            return f"Secret({self._name!r}, {MASK!r})"
        return f"Secret({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, format_spec: str) -> str:
        return format(MASK, format_spec)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    def _repr_html_(self) -> str:
        import html

        label = html.escape(self._name) if self._name else "secret"
        return f"<code>&#128274; {label}: {MASK}</code>"

    # --- comparing -------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            other_value = other._value
        elif isinstance(other, str):
            other_value = other
        else:
            return NotImplemented
        return hmac.compare_digest(self._value.encode("utf-8"), other_value.encode("utf-8"))

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __hash__(self) -> int:
        # Equal to a str with the same value, so the hash must be that str's.
        return hash(self._value)

    def __len__(self) -> int:
        return len(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    # --- refusing to be copied to disk -----------------------------------------------

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise SecretSerializationError(
            f"{self!r} cannot be pickled or saved (pickle, %store, shelve, multiprocessing)."
        )

    def __reduce__(self) -> NoReturn:
        raise SecretSerializationError(
            f"{self!r} cannot be pickled or saved (pickle, %store, shelve, multiprocessing)."
        )

    def __getstate__(self) -> NoReturn:
        raise SecretSerializationError(f"{self!r} cannot be serialized.")

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("Secret is immutable")
