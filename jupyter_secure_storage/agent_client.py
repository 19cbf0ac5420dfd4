"""Asking the unlock agent: where its socket is, the wire format, and a client.

The unlock agent (:mod:`jupyter_secure_storage.agent`) holds the vault's data key for one
user, as ssh-agent holds SSH keys: the passphrase is typed once, and kernels, the CLI and
the Jupyter server ask the agent instead of deriving the key themselves.

The socket is ``$JUPYTER_SECURE_STORAGE_AGENT_SOCKET`` when set, else
``agent.sock`` in ``$XDG_RUNTIME_DIR/jupyter-secure-storage/``, else in
``<tmp>/jupyter-secure-storage-<uid>/``; its folder is the user's own, mode 0700, and the
agent also checks each peer's uid.

Wire format: each message is a 4-byte big-endian length and that many bytes of UTF-8
JSON. A request is ``{"v": 1, "op": ..., "vault": <absolute path>, "args": {...}}``; the
reply is ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": {"type", "cause",
"remedy"}}``, where ``type`` names a class of :mod:`jupyter_secure_storage.errors`.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
from pathlib import Path
from typing import Any

from . import errors
from .errors import AgentUnavailableError, SecureStorageError

ENV_AGENT_SOCKET = "JUPYTER_SECURE_STORAGE_AGENT_SOCKET"
PROTOCOL_VERSION = 1
MAX_MESSAGE = 64 << 20  # bytes: a vault's whole contents fit many times over
_LENGTH = struct.Struct(">I")


def agent_socket_path() -> Path:
    """Where this user's agent listens (whether or not one runs)."""
    explicit = os.environ.get(ENV_AGENT_SOCKET)
    if explicit:
        return Path(explicit)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "jupyter-secure-storage" / "agent.sock"
    import tempfile  # only here: it imports more than the rest of this module

    return Path(tempfile.gettempdir()) / f"jupyter-secure-storage-{os.getuid()}" / "agent.sock"


def check_private_folder(folder: Path) -> None:
    """Refuse a socket folder another user owns or can enter (someone could stand in
    for the agent there and collect passphrases)."""
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise AgentUnavailableError(
            f"The unlock agent's folder {folder} is not a private folder of this user "
            f"(owner uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):04o}).",
            f"Remove it (it is recreated with mode 0700), or set {ENV_AGENT_SOCKET} to a "
            "socket path inside a folder only you can enter.",
        )


# --- framing -----------------------------------------------------------------------------------


def encode_message(message: dict[str, Any]) -> bytes:
    data = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return _LENGTH.pack(len(data)) + data


def decode_length(header: bytes) -> int:
    length = int(_LENGTH.unpack(header)[0])
    if length > MAX_MESSAGE:
        raise ValueError(f"a message of {length} bytes is larger than {MAX_MESSAGE}")
    return length


def receive_exactly(connection: socket.socket, count: int) -> bytes:
    chunks = []
    while count:
        chunk = connection.recv(min(count, 1 << 20))
        if not chunk:
            raise ConnectionResetError("the other end closed the connection")
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def error_reply(error: SecureStorageError) -> dict[str, Any]:
    """The reply that carries ``error`` (its message never holds a value)."""
    return {
        "ok": False,
        "error": {"type": type(error).__name__, "cause": error.cause, "remedy": error.remedy},
    }


def raise_reply_error(raw: Any) -> None:
    """Raise the typed error a reply carries, as the class the agent raised."""
    cause = str(raw.get("cause", "the unlock agent failed")) if isinstance(raw, dict) else ""
    remedy = raw.get("remedy") if isinstance(raw, dict) else None
    kind = getattr(errors, str(raw.get("type", "")), None) if isinstance(raw, dict) else None
    if isinstance(kind, type) and issubclass(kind, SecureStorageError):
        raise kind(cause, remedy if isinstance(remedy, str) else None)
    raise AgentUnavailableError(cause or "The unlock agent sent an unreadable error.")


# --- the client --------------------------------------------------------------------------------


class AgentNotRunning(Exception):
    """No agent answers at the socket (none started, or it has gone): work without it."""


class AgentClient:
    """One request per connection to the agent at ``path``."""

    def __init__(self, path: Path | None = None, timeout: float = 120.0) -> None:
        self.path = path if path is not None else agent_socket_path()
        self.timeout = timeout

    def _connect(self) -> socket.socket:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.settimeout(self.timeout)
        try:
            connection.connect(str(self.path))
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError) as error:
            connection.close()
            raise AgentNotRunning(str(self.path)) from error
        except OSError:
            connection.close()
            raise
        return connection

    def call(self, op: str, vault: str = "", **args: Any) -> Any:
        """Run ``op`` in the agent and return its result, or raise its typed error.

        :class:`AgentNotRunning` when no agent listens; :class:`AgentUnavailableError`
        when one was reached and stopped answering (nothing is lost: the agent's writes
        are atomic, so a request cut short either happened whole or not at all).
        """
        if self.path.parent.exists():
            check_private_folder(self.path.parent)
        connection = self._connect()
        try:
            connection.sendall(
                encode_message({"v": PROTOCOL_VERSION, "op": op, "vault": vault, "args": args})
            )
            length = decode_length(receive_exactly(connection, _LENGTH.size))
            reply = json.loads(receive_exactly(connection, length).decode("utf-8"))
        except (OSError, ValueError) as error:
            raise AgentUnavailableError(
                f"The unlock agent at {self.path} stopped answering during {op!r} "
                f"({type(error).__name__}).",
                "Start it again (restart Jupyter Server, or run `jupyter-secure-storage "
                "agent`) and retry: a write cut short was either done whole or not at all.",
            ) from None
        finally:
            connection.close()
        if not isinstance(reply, dict):
            raise AgentUnavailableError("The unlock agent sent an unreadable reply.")
        if not reply.get("ok"):
            raise_reply_error(reply.get("error"))
        return reply.get("result")

    def running(self) -> bool:
        """Whether an agent answers at the socket."""
        try:
            self.call("ping")
        except (AgentNotRunning, SecureStorageError, OSError):
            return False
        return True


__all__ = [
    "ENV_AGENT_SOCKET",
    "AgentClient",
    "AgentNotRunning",
    "agent_socket_path",
    "check_private_folder",
    "decode_length",
    "encode_message",
    "error_reply",
    "raise_reply_error",
    "receive_exactly",
]
