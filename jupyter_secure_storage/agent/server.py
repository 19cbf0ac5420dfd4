"""The unlock agent's server: a Unix socket, a same-user check, the vault operations, an
idle lock.

Every request runs on one worker thread, in order, against a ``VaultBackend`` of this
process (which never goes through an agent itself). The socket's folder is the user's
own (mode 0700) and the socket is 0600; on Linux each connection's peer uid
(``SO_PEERCRED``) must also be this process's, so a socket made reachable by mistake
still answers nobody else.
"""

from __future__ import annotations

import asyncio
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
    PROTOCOL_VERSION,
    AgentClient,
    AgentNotRunning,
    agent_socket_path,
    check_private_folder,
    decode_length,
    encode_message,
    error_reply,
)
from ..backends.vault import VaultBackend
from ..errors import AgentRefusedError, SecureStorageError

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

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = Path(self.socket_path) if self.socket_path else agent_socket_path()
        self._vaults: dict[str, VaultBackend] = {}
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jss-agent")
        self._last_request = time.monotonic()
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self._stop_event: asyncio.Event | None = None

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

    # --- the socket ---------------------------------------------------------------------

    def _prepare_socket(self) -> socket.socket:
        folder = self.path.parent
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        check_private_folder(folder)
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
        listener.setblocking(False)
        return listener

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            raw_socket = writer.get_extra_info("socket")
            uid = peer_uid(raw_socket) if raw_socket is not None else None
            if not peer_allowed(uid, os.getuid()):
                self.log.warning("Unlock agent: refused a connection from uid %s.", uid)
                refusal = AgentRefusedError("The unlock agent answers its own user only.")
                # Take (and drop) what was sent, so the refusal arrives instead of a reset.
                with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
                    await asyncio.wait_for(reader.read(1 << 16), 2)
                writer.write(encode_message(error_reply(refusal)))
                await writer.drain()
                return
            while True:
                try:
                    header = await reader.readexactly(4)
                except asyncio.IncompleteReadError:
                    return
                body = await reader.readexactly(decode_length(header))
                request = json.loads(body.decode("utf-8"))
                loop = asyncio.get_running_loop()
                reply = await loop.run_in_executor(self._worker, self.handle, request)
                writer.write(encode_message(reply))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _idle_watch(self) -> None:
        while True:
            await asyncio.sleep(max(0.5, min(self.lock_after / 4, 30.0)) if self.lock_after else 30)
            if self.lock_after > 0:
                await asyncio.get_running_loop().run_in_executor(self._worker, self._lock_if_idle)

    async def serve(
        self, stop: asyncio.Event | None = None, ready: Callable[[], None] | None = None
    ) -> None:
        """Serve until ``stop`` is set (forever without one); ``ready`` is called once the
        socket listens. Raises :class:`AgentAlreadyRunning` when this user's agent
        already answers."""
        listener = self._prepare_socket()
        self._server = await asyncio.start_unix_server(self._serve_connection, sock=listener)
        watch = asyncio.ensure_future(self._idle_watch())
        self.log.info("Unlock agent listening at %s", self.path)
        try:
            if ready is not None:
                ready()
            await (stop or asyncio.Event()).wait()
        finally:
            watch.cancel()
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            await asyncio.get_running_loop().run_in_executor(self._worker, self.lock_all)

    # --- in a thread of another program (Jupyter Server) ----------------------------------

    def start_in_thread(self) -> None:
        """Serve from a daemon thread with its own event loop, so the host program's own
        synchronous calls through the socket (the save guard's) never wait on themselves.
        Raises :class:`AgentAlreadyRunning` as :meth:`serve` does."""
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.serve(stop, ready=lambda: ready.set_result(None)))
            except BaseException as error:
                if not ready.done():
                    ready.set_exception(error)
            finally:
                loop.close()
                self._stopped.set()

        self._loop, self._stop_event = loop, stop
        self._thread = threading.Thread(target=run, name="jss-unlock-agent", daemon=True)
        self._thread.start()
        ready.result(timeout=30)

    def stop(self) -> None:
        """Stop serving (started with :meth:`start_in_thread`) and forget every key."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._stop_event.set)  # type: ignore[union-attr]
            self._stopped.wait(10)
        self._worker.shutdown(wait=False)


def running_agent() -> AgentClient | None:
    """A client of this user's agent if one answers, else None."""
    client = AgentClient()
    try:
        client.call("ping")
    except (AgentNotRunning, SecureStorageError, OSError):
        return None
    return client
