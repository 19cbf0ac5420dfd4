"""Scrub every message a kernel sends, at the one place they all pass: ``Session.send``.

Stream output (``print``, ``sys.stderr``, subprocesses and C code captured from the
file descriptors), displays and their updates, results, errors and tracebacks,
comm messages (widget state) and shell replies all leave through the kernel's
``Session.send``. :class:`SessionGuard` replaces that method on the kernel's session
object with one that redacts message content first (field-notes.md: hooks on
``sys.stdout`` from the main thread see nothing; this sees everything).

Streams need more than a per-message scrub: front ends join consecutive stream
messages of the same name into one output, so a secret written a character at a
time would be whole again on screen and in the saved notebook. The guard keeps,
per stream and cell, the end of the text that could still grow into a secret and
sends it only once the next chunk shows it cannot (or redacts the whole), or when
another message for that cell, or the cell's end (``status: idle``), comes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .redaction import RedactionEngine

IsEnabled = Callable[[str | None], bool]


@dataclass
class _Held:
    """Stream text kept back because it might be the start of a secret."""

    text: str
    stream: Any  # the socket / IOPubThread the stream message was sent on
    parent_header: dict[str, Any]
    ident: Any


def _parent_id(parent_header: dict[str, Any] | None) -> str | None:
    if not parent_header:
        return None
    header = parent_header.get("header", parent_header)
    value = header.get("msg_id") if isinstance(header, dict) else None
    return value if isinstance(value, str) else None


class SessionGuard:
    """Wraps one ``jupyter_client.session.Session`` instance's ``send``."""

    def __init__(self, session: Any, engine: RedactionEngine, is_enabled: IsEnabled) -> None:
        self.session = session
        self.engine = engine
        self.is_enabled = is_enabled
        self._original: Callable[..., Any] | None = None
        self._held: dict[tuple[str, str | None], _Held] = {}
        self._lock = threading.RLock()
        self.messages_scrubbed = 0

    # --- installing -------------------------------------------------------------------

    @property
    def installed(self) -> bool:
        return self._original is not None

    def install(self) -> None:
        if self._original is not None:
            return
        self._original = self.session.send
        self.session.send = self._send

    def uninstall(self) -> None:
        if self._original is None:
            return
        self.flush_all()
        # Only undo our own wrapper: if someone wrapped us since, leave theirs in place.
        if self.session.__dict__.get("send") == self._send:
            del self.session.send
            if self.session.send != self._original:
                self.session.send = self._original
        self._original = None

    # --- sending ----------------------------------------------------------------------

    def _send(  # noqa: PLR0917 -- the signature of Session.send, which callers use positionally
        self,
        stream: Any,
        msg_or_type: Any,
        content: dict[str, Any] | None = None,
        parent: dict[str, Any] | None = None,
        ident: Any = None,
        buffers: Any = None,
        track: bool = False,
        header: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Any:
        original = self._original
        assert original is not None  # noqa: S101 -- only reachable while installed
        if isinstance(msg_or_type, dict):
            message = msg_or_type
        else:
            message = self.session.msg(
                msg_or_type, content=content, parent=parent, header=header, metadata=metadata
            )
        msg_type = message.get("header", {}).get("msg_type")
        parent_id = _parent_id(message.get("parent_header"))

        if msg_type == "stream":
            streamed = self._stream(stream, message, parent_id, ident)
            if streamed is None:
                return None
            message = streamed
        else:
            if parent_id is not None or msg_type == "status":
                self._release(parent_id, everything=msg_type == "status")
            if self.is_enabled(parent_id):
                message = dict(message)
                message["content"] = self.engine.scrub(message.get("content", {}))
                if message.get("metadata"):
                    message["metadata"] = self.engine.scrub(message["metadata"])
        self.messages_scrubbed += 1
        return original(stream, message, ident=ident, buffers=buffers, track=track)

    def _stream(
        self, stream: Any, message: dict[str, Any], parent_id: str | None, ident: Any
    ) -> dict[str, Any] | None:
        content = message.get("content", {})
        name = str(content.get("name", "stdout"))
        key = (name, parent_id)
        with self._lock:
            held = self._held.pop(key, None)
            text = (held.text if held else "") + str(content.get("text", ""))
            if self.is_enabled(parent_id):
                matcher = self.engine.matcher
                text = matcher.redact(text)
                keep = matcher.partial_tail(text)
                if keep:
                    self._held[key] = _Held(
                        text[-keep:], stream, message.get("parent_header", {}), ident
                    )
                    text = text[:-keep]
        if not text:
            return None
        out = dict(message)
        out["content"] = {**content, "text": text}
        return out

    # --- releasing held text ------------------------------------------------------------

    def _release(self, parent_id: str | None, everything: bool = False) -> None:
        with self._lock:
            keys = [k for k in self._held if everything or k[1] == parent_id]
            released = [(k, self._held.pop(k)) for k in keys]
        for (name, _), held in released:
            self._send_held(name, held)

    def _send_held(self, name: str, held: _Held) -> None:
        original = self._original
        if original is None or not held.text:
            return
        message = self.session.msg("stream", content={"name": name, "text": held.text})
        message["parent_header"] = held.parent_header
        original(held.stream, message, ident=held.ident)

    def flush_all(self) -> None:
        """Send every held piece of stream text now (at unload)."""
        self._release(None, everything=True)
