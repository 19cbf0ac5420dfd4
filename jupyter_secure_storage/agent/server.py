"""The unlock agent's server: a Unix socket, a same-user check, the vault operations, an
idle lock.

Every request runs on one worker thread, in order, against a ``VaultBackend`` of this
process (which never goes through an agent itself). The socket's folder is the user's
own (mode 0700) and the socket is 0600; on Linux each connection's peer uid
(``SO_PEERCRED``) must also be this process's, so a socket made reachable by mistake
still answers nobody else.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from traitlets import Float, Unicode
from traitlets.config import LoggingConfigurable

from .._version import __version__
from ..agent_client import (
    ENV_AGENT_SOCKET,
    PROTOCOL_VERSION,
    AgentClient,
    agent_socket_path,
    check_private_folder,
    decode_length,
    encode_message,
    error_reply,
    receive_exactly,
)
from ..backends.vault import VaultBackend
from ..errors import AgentRefusedError, AgentUnavailableError, SecureStorageError
from ..paths import data_dir
from .access import NotebookAccess, as_json

_MAX_SOCKET_PATH = 104  # bytes: the smallest sun_path among the systems we run on (macOS)
_CLIENT_TIMEOUT = 10.0  # seconds a connected client may take to send its request

_ACCESS_OPERATIONS = ("access", "grants", "grant", "revoke", "access_log")

_VAULT_OPERATIONS = {
    "get": ("namespace", "key"),
    "set": ("namespace", "key", "value"),
    "set_many": ("changes",),
    "delete": ("namespace", "key"),
    "list_names": ("namespace",),
    "list_namespaces": (),
    "get_all": ("namespace",),
    "delete_all": ("namespace",),
    "modified_times": ("namespace",),
}


class AgentAlreadyRunning(Exception):
    """Another agent of this user already answers at the socket."""


def peer_uid(connection: socket.socket) -> int | None:
    """The uid of the process at the other end (None where the OS cannot tell)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    raw = connection.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", raw)
    return int(uid)


def peer_allowed(uid: int | None, own_uid: int) -> bool:
    """Only this user's processes may ask (an unknown uid: the folder's mode decides)."""
    return uid is None or uid == own_uid


class UnlockAgent(LoggingConfigurable):
    """Holds unlocked vaults for this user and answers their operations over a socket."""

    lock_after = Float(
        0.0,
        help=(
            "Seconds without a request after which the agent forgets every vault key "
            "(the next request then needs the passphrase again). 0: never."
        ),
    ).tag(config=True)

    socket_path = Unicode(
        "",
        help=(
            "The agent's socket. Default: $JUPYTER_SECURE_STORAGE_AGENT_SOCKET, else "
            "$XDG_RUNTIME_DIR/jupyter-secure-storage/agent.sock, else "
            "<tmp>/jupyter-secure-storage-<uid>/agent.sock."
        ),
    ).tag(config=True)

    access_file = Unicode(
        "",
        help=(
            "Where notebook access grants are kept. Default: "
            "<jupyter data dir>/secure_storage/notebook-access.json."
        ),
    ).tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = Path(self.socket_path) if self.socket_path else agent_socket_path()
        self._vaults: dict[str, VaultBackend] = {}
        self.access = NotebookAccess(
            Path(self.access_file) if self.access_file else data_dir() / "notebook-access.json"
        )
        self._last_request = time.monotonic()
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()

    # --- the operations (on the worker thread) ------------------------------------------

    def _vault(self, path: str) -> VaultBackend:
        if not path or not os.path.isabs(path):
            raise AgentRefusedError(
                "A request named no vault, or a relative path.",
                "Upgrade the client: it must send the vault's absolute path.",
            )
        vault = self._vaults.get(path)
        if vault is None:
            vault = VaultBackend(path=path, prompt=False, use_agent=False, parent=self)
            vault.passphrase_variable = ""  # only what a client sends unlocks a vault here
            self._vaults[path] = vault
        return vault

    def lock_all(self) -> None:
        """Forget every vault key held (``lock``, and the idle lock)."""
        for vault in self._vaults.values():
            vault.lock()

    def _lock_if_idle(self) -> None:
        if self.lock_after > 0 and time.monotonic() - self._last_request > self.lock_after:
            if any(vault.is_unlocked for vault in self._vaults.values()):
                self.log.info("Unlock agent: idle for %g s, vault keys forgotten.", self.lock_after)
            self.lock_all()

    def handle(self, request: Any) -> dict[str, Any]:
        """One request's reply. Never raises; the reply never holds a passphrase."""
        try:
            if not isinstance(request, dict) or request.get("v") != PROTOCOL_VERSION:
                raise AgentRefusedError(
                    f"The request is not in this agent's protocol (version {PROTOCOL_VERSION}).",
                    "Use the same version of jupyter-secure-storage for the agent and "
                    "its clients (restart Jupyter Server or the agent after upgrading).",
                )
            op = str(request.get("op", ""))
            self._lock_if_idle()
            if op in _VAULT_OPERATIONS or op == "unlock":
                # Only a use of a vault counts: a status bar polling the state must not
                # keep the agent unlocked for ever.
                self._last_request = time.monotonic()
            result = self._run(op, str(request.get("vault", "")), request.get("args") or {})
        except SecureStorageError as error:
            return error_reply(error)
        except Exception as error:  # never let one request take the agent down
            self.log.warning("Unlock agent: a request failed with %s.", type(error).__name__)
            return error_reply(
                AgentRefusedError(f"The request failed in the agent ({type(error).__name__}).")
            )
        return {"ok": True, "result": result}

    def _run(self, op: str, path: str, args: dict[str, Any]) -> Any:
        if op == "ping":
            return {"version": __version__, "pid": os.getpid()}
        if op == "lock":
            if path:
                self._vault(path).lock()
            else:
                self.lock_all()
            return None
        if op == "status":
            vault = self._vault(path)
            return {
                "exists": vault.exists,
                "unlocked": vault.is_unlocked,
                "lock_after": self.lock_after,
            }
        if op in _ACCESS_OPERATIONS:
            return self._access_operation(op, args)
        if op == "unlock":
            self._vault(path).unlock(str(args["passphrase"]), create=bool(args.get("create")))
            return None
        names = _VAULT_OPERATIONS.get(op)
        if names is None:
            raise AgentRefusedError(f"The unlock agent does not know the operation {op!r}.")
        values = [args[name] for name in names]
        if op == "set_many":
            values = [
                [(str(ns), str(key), None if v is None else str(v)) for ns, key, v in values[0]]
            ]
        return getattr(self._vault(path), op)(*values)

    def _access_operation(self, op: str, args: dict[str, Any]) -> Any:
        def text(name: str) -> str:
            value = args.get(name)
            if not isinstance(value, str):
                raise AgentRefusedError(f"The {op!r} request needs {name!r} as a string.")
            return value

        if op == "access":
            notebook, namespace, key = text("notebook"), text("namespace"), text("key")
            return {"allowed": self.access.allowed(notebook, namespace, key)}
        if op == "grants":
            wanted = args.get("notebook")
            return as_json(self.access.grants(wanted if isinstance(wanted, str) else None))
        if op == "grant":
            self.access.grant(text("notebook"), text("namespace"), text("key"))
            return None
        if op == "revoke":
            self.access.revoke(text("notebook"), text("namespace"), text("key"))
            return None
        limit = args.get("limit", 100)
        return as_json(self.access.log(limit if isinstance(limit, int) else 100))

    # --- the socket ---------------------------------------------------------------------

    def _prepare_socket(self) -> socket.socket:
        folder = self.path.parent
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        check_private_folder(folder)
        if len(os.fsencode(self.path)) >= _MAX_SOCKET_PATH:
            raise AgentUnavailableError(
                f"The unlock agent's socket path {self.path} is too long for a Unix socket "
                f"({len(os.fsencode(self.path))} bytes; at most {_MAX_SOCKET_PATH - 1}).",
                f"Set {ENV_AGENT_SOCKET} to a shorter path, e.g. under /tmp.",
            )
        if self.path.exists() or self.path.is_symlink():
            if AgentClient(self.path, timeout=5).running():
                raise AgentAlreadyRunning(str(self.path))
            self.path.unlink()  # a socket left by an agent that died
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            listener.bind(str(self.path))
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        listener.listen(64)
        return listener

    def _serve_connection(self, connection: socket.socket) -> None:
        """Answer one client's requests until it closes the connection."""
        connection.settimeout(_CLIENT_TIMEOUT)  # a client that stalls holds nobody up long
        uid = peer_uid(connection)
        if not peer_allowed(uid, os.getuid()):
            self.log.warning("Unlock agent: refused a connection from uid %s.", uid)
            refusal = AgentRefusedError("The unlock agent answers its own user only.")
            # Take (and drop) what was sent, so the refusal arrives instead of a reset.
            with contextlib.suppress(OSError):
                connection.settimeout(2)
                connection.recv(1 << 16)
            connection.sendall(encode_message(error_reply(refusal)))
            return
        while True:
            try:
                header = receive_exactly(connection, 4)
            except ConnectionResetError:
                return  # the client is done
            body = receive_exactly(connection, decode_length(header))
            connection.sendall(encode_message(self.handle(json.loads(body.decode("utf-8")))))

    def serve(
        self,
        stop: threading.Event | None = None,
        ready: Callable[[], None] | None = None,
    ) -> None:
        """Serve until ``stop`` is set (forever without one); ``ready`` is called once the
        socket listens. Raises :class:`AgentAlreadyRunning` when this user's agent
        already answers.

        One thread does everything, one connection at a time: requests are served in
        order (the vault needs no more), and a request costs a tenth of what an event
        loop with a worker thread made of it (bench/agent.py).
        """
        listener = self._prepare_socket()
        stop = stop if stop is not None else threading.Event()
        tick = max(0.1, min(self.lock_after / 4, 0.5)) if self.lock_after else 0.5
        listener.settimeout(tick)  # wake up to see `stop` and the idle lock
        self.log.info("Unlock agent listening at %s", self.path)
        try:
            if ready is not None:
                ready()
            while not stop.is_set():
                try:
                    connection, _ = listener.accept()
                except TimeoutError:
                    self._lock_if_idle()
                    continue
                with connection:
                    try:
                        self._serve_connection(connection)
                    except (OSError, ValueError) as error:
                        self.log.debug("Unlock agent: a connection ended: %s", error)
        finally:
            listener.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.lock_all()

    # --- in a thread of another program (Jupyter Server) ----------------------------------

    def start_in_thread(self) -> None:
        """Serve from a daemon thread, so the host program's own synchronous calls through
        the socket (the save guard's) are answered while it waits for them. Raises
        :class:`AgentAlreadyRunning` as :meth:`serve` does."""
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            try:
                self.serve(self._stop_event, ready=lambda: ready.set_result(None))
            except BaseException as error:
                if not ready.done():
                    ready.set_exception(error)

        self._thread = threading.Thread(target=run, name="jss-unlock-agent", daemon=True)
        self._thread.start()
        ready.result(timeout=30)

    def stop(self) -> None:
        """Stop serving (started with :meth:`start_in_thread`) and forget every key."""
        self._stop_event.set()
        if self._thread is not None:
            self._thread.join(10)
