"""REST handlers for the JupyterLab side: the Secrets sidebar, its status bar item, and a
jupyter-secrets-manager connector, all mounted under ``{base_url}secure-storage/api/``.

Every route is JSON, needs the server's authentication (token or login cookie) and its
XSRF check like any other Jupyter API, and is authorized on the resource
``secure-storage``. Every route goes through the :class:`SecureStorage` facade, never a
backend, and runs the store's blocking I/O (keystore calls, vault decryption) on a worker
thread so the server's event loop keeps serving.

Routes (see docs/jupyterlab.md):

- ``GET status`` -- the backend in use, where it keeps values, why it was chosen, and
  whether the vault is locked in the unlock agent (asking does not count as a use, so a
  status bar polling it never keeps the agent unlocked);
- ``POST unlock`` -- ``{"passphrase"}``: unlock the vault in the unlock agent (create it
  when there is none yet); ``POST lock`` -- the agent forgets every key;
- ``GET keys`` -- names, namespaces and modification times of every visible key (no values);
- ``POST keys`` -- store ``{"namespace"?, "name", "value"}`` (201); the value is written
  once and forgotten;
- ``DELETE keys/<namespace>/<name>`` -- 204, also when the key is missing (as the facade);
- ``GET|PUT|DELETE connector/<ns>/<id>`` and ``GET connector/<ns>`` -- the storage behind
  jupyter-secrets-manager. Its GET of one secret is the only route that answers with a
  value: that connector interface exists to hand values back to the page.
- ``GET grants?notebook=PATH``, ``PUT grants`` and ``DELETE grants`` (``{"notebook",
  "namespace", "key"}``), ``GET access-log?limit=N`` -- notebook access grants and the
  log of kernels' requests, kept by the unlock agent. ``PATH`` is the notebook's path
  relative to the server's root, as Jupyter's sessions API gives it; the agent gets the
  absolute path, as a kernel's ``JPY_SESSION_NAME`` holds it.

The unlock, lock and grant routes go through the unlock agent the server extension hosts
(``web_app.settings["jupyter_secure_storage"]["agent"]``), never through a backend. The
passphrase is read from the request body, handed to the agent, and neither logged nor
answered.

Errors are ``{"message": cause, "remedy": remedy}``: 400 for bad input, 404 for a missing
connector secret, 403 for a passphrase that does not open the vault, 503 when the store
cannot be opened here (a locked vault, a locked keystore, no unlock agent). A 503 for a
vault locked in the agent adds ``"locked": true``, so the page knows a passphrase in its
unlock dialog is the remedy. No answer, and no log line, holds a value:
request bodies are never logged, and an unexpected failure is reported by its type only.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from traitlets.config import Config

from ..agent_client import AgentNotRunning
from ..backends.vault import VaultBackend
from ..config_file import load_config_files
from ..errors import (
    AgentUnavailableError,
    SecureStorageError,
    VaultLockedError,
    WrongPassphraseError,
)
from ..storage import SecureStorage, StoredKey

if TYPE_CHECKING:
    from .agent_host import HostedAgent
    from .save_guard import SaveGuard

API_ROUTE = "secure-storage/api"
AUTH_RESOURCE = "secure-storage"
#: Where the connector keeps jupyter-secrets-manager's secrets (their namespaces are
#: plugin ids such as ``@jupyterlite/ai:providers``, which are not storage namespaces).
CONNECTOR_NAMESPACE = "jupyterlab-secrets"
SETTINGS_KEY = "secure_storage_api"
#: Where the server extension keeps its unlock agent and save guard (server/__init__.py).
EXTENSION_SETTINGS = "jupyter_secure_storage"
#: The most access-log entries one request may ask for (the agent keeps 500).
ACCESS_LOG_LIMIT = 500

Result = TypeVar("Result")


class RequestError(SecureStorageError, ValueError):
    """A request this API cannot act on (malformed body, missing field). Answered as 400;
    it never leaves this module as an exception."""


def connector_prefix(namespace: str) -> str:
    """What every storage key of a secrets-manager namespace starts with."""
    if not namespace:
        raise RequestError(
            "The secrets-manager namespace is empty.",
            "Call the connector with the plugin's namespace (its plugin id).",
        )
    return f"{namespace}:"


def connector_key(namespace: str, secret_id: str) -> str:
    """The storage key of a jupyter-secrets-manager secret: the manager's own id for it,
    ``<namespace>:<id>`` (``SecretsManager``'s ``buildConnectorId``).

    Using the manager's id means the connector's ``fetch(id)`` and ``remove(id)``, which
    get only that joined id, reach the same key whichever colon they split it at.
    """
    if not secret_id:
        raise RequestError("The secret's id is empty.", "Call the connector with the id.")
    return connector_prefix(namespace) + secret_id


class StoreAccess:
    """Opens :class:`SecureStorage` for a request: never prompting, as the save guard does
    (a prompt in a server would hang a request on a terminal nobody watches), from the
    package's config files with the server's config over them, so the sidebar shows the
    store that kernels and the command line use. Unlocking, locking and grants go to the
    unlock agent the server hosts (``hosted``)."""

    def __init__(
        self,
        server_config: Config | None = None,
        hosted: HostedAgent | None = None,
        guard: SaveGuard | None = None,
        root_dir: str | None = None,
    ) -> None:
        self._server_config = server_config
        self.hosted = hosted
        self.guard = guard
        self.root_dir = os.path.abspath(root_dir or os.getcwd())

    def config(self) -> Config:
        config = load_config_files(self._server_config)
        config.VaultBackend.prompt = False
        return config

    def open(self, namespace: str | None = None, config: Config | None = None) -> SecureStorage:
        config = config or self.config()
        if namespace is None:
            return SecureStorage(config=config)
        return SecureStorage(config=config, namespace=namespace)

    def vault(self, store: SecureStorage | None = None) -> VaultBackend:
        """The vault the agent holds for this server: the store's own when it is the
        vault, else the one the same config names (as agent_host opens it)."""
        if store is not None and isinstance(store.backend_object, VaultBackend):
            return store.backend_object
        return VaultBackend(config=self.config(), prompt=False)

    def _client_call(self, op: str, vault: str = "", **args: Any) -> Any:
        """``op`` in the hosted agent; no agent is a 503 that says how to get one."""
        if self.hosted is None:
            raise AgentUnavailableError(
                "This Jupyter server runs no unlock agent (the server extension did not "
                "start one).",
                "Check the server's log for jupyter-secure-storage lines, and that the "
                "server extension is enabled (`jupyter server extension list`).",
            )
        try:
            return self.hosted.client.call(op, vault, **args)
        except AgentNotRunning:
            raise AgentUnavailableError(
                f"No unlock agent answers at {self.hosted.client.path}.",
                "Restart Jupyter Server (it starts the agent), or run "
                "`jupyter-secure-storage agent`.",
            ) from None

    # --- what the handlers do, each run on a worker thread ---------------------------------

    def status(self) -> dict[str, Any]:
        store = self.open()
        choice = store.backend_choice
        vault = self.vault(store)
        if self.hosted is not None:
            state = self.hosted.state(vault)  # "status": not a use, so never keeps it unlocked
        else:
            state = {"agent": False, "exists": vault.exists, "unlocked": False}
        locked = choice.name == "vault" and vault.use_agent and not state["unlocked"]
        check = self.guard.stored_value_check if self.guard is not None else "off"
        if check == "on" and locked and state["agent"]:
            check = "locked"  # what the guard does at the next save (docs/agent.md)
        return {
            "backend": choice.name,
            "location": str(store.backend_object.location),
            "reason": choice.reason,
            "locked": locked,
            "vault_exists": bool(state["exists"]),
            "agent": bool(state["agent"]),
            "stored_value_check": check,
            # Each kernel keeps its own registry of values to redact; the server sees none.
            "redaction_values": None,
        }

    def locked_in_agent(self) -> bool:
        """Whether a passphrase given to the agent is what the store needs now."""
        vault = self.vault()
        if not vault.use_agent or self.hosted is None:
            return False
        return not self.hosted.state(vault)["unlocked"]

    def unlock(self, passphrase: str) -> None:
        store = self.open()
        if store.backend_choice.name != "vault":
            raise RequestError(
                f"The store is the {store.backend_choice.name} backend, which has no "
                "passphrase to unlock here.",
                "Nothing to do: only the vault backend is unlocked with a passphrase.",
            )
        vault = self.vault(store)
        if not vault.use_agent:
            raise AgentUnavailableError(
                "The vault is configured not to use the unlock agent "
                "(c.VaultBackend.use_agent = False), so there is none to unlock.",
                "Give the server JUPYTER_SECURE_STORAGE_PASSPHRASE, or turn "
                "c.VaultBackend.use_agent back on.",
            )
        self._client_call("unlock", str(vault.file), passphrase=passphrase, create=not vault.exists)

    def lock(self) -> None:
        self._client_call("lock")

    def entries(self) -> list[StoredKey]:
        config = self.config()
        store = self.open(config=config)
        namespaces = sorted({*store.namespaces(), store.namespace})
        listed: list[StoredKey] = []
        for namespace in namespaces:
            listed += self.open(namespace, config).entries()
        return listed

    def write(self, namespace: str, name: str, value: str) -> None:
        self.open(namespace).write(name, value)

    def delete(self, namespace: str, name: str) -> None:
        self.open(namespace).delete(name)

    def connector_read(self, namespace: str, secret_id: str) -> str | None:
        secret = self.open(CONNECTOR_NAMESPACE).read(connector_key(namespace, secret_id))
        return None if secret is None else secret.reveal()

    def connector_write(self, namespace: str, secret_id: str, value: str) -> None:
        self.open(CONNECTOR_NAMESPACE).write(connector_key(namespace, secret_id), value)

    def connector_delete(self, namespace: str, secret_id: str) -> None:
        self.open(CONNECTOR_NAMESPACE).delete(connector_key(namespace, secret_id))

    def connector_ids(self, namespace: str) -> list[str]:
        """The ids saved under ``namespace``: every key that starts ``<namespace>:``."""
        prefix = connector_prefix(namespace)
        names = self.open(CONNECTOR_NAMESPACE).keys()
        return [name[len(prefix) :] for name in names if name.startswith(prefix)]

    # --- notebook access (kept by the agent) -----------------------------------------------

    def notebook_file(self, api_path: str) -> str:
        """The absolute path of the notebook at ``api_path`` (relative to the server's
        root, as the sessions API gives it): what a kernel's ``JPY_SESSION_NAME`` holds."""
        relative = api_path.strip("/")
        if not relative or "\0" in relative:
            raise RequestError(
                "The request names no notebook.",
                "Send the notebook's path relative to the server's root (session.path).",
            )
        absolute = os.path.normpath(os.path.join(self.root_dir, relative))
        if os.path.commonpath([absolute, self.root_dir]) != self.root_dir:
            raise RequestError(
                "The notebook path leaves the server's root directory.",
                "Send the notebook's path relative to the server's root (session.path).",
            )
        return absolute

    def api_path(self, notebook: str) -> str:
        """A notebook the agent names by absolute path, as the page names it."""
        if os.path.isabs(notebook):
            absolute = os.path.normpath(notebook)
            if os.path.commonpath([absolute, self.root_dir]) == self.root_dir:
                return os.path.relpath(absolute, self.root_dir).replace(os.sep, "/")
        return notebook

    def _with_api_path(self, items: Any) -> list[dict[str, Any]]:
        if not isinstance(items, list):
            raise AgentUnavailableError("The unlock agent sent an unreadable answer.")
        return [
            {**item, "notebook": self.api_path(str(item.get("notebook", "")))}
            for item in items
            if isinstance(item, dict)
        ]

    def grants(self, notebook: str | None) -> list[dict[str, Any]]:
        wanted = None if notebook is None else self.notebook_file(notebook)
        return self._with_api_path(self._client_call("grants", "", notebook=wanted))

    def grant(self, notebook: str, namespace: str, key: str) -> None:
        file = self.notebook_file(notebook)
        self._client_call("grant", "", notebook=file, namespace=namespace, key=key)

    def revoke(self, notebook: str, namespace: str, key: str) -> None:
        file = self.notebook_file(notebook)
        self._client_call("revoke", "", notebook=file, namespace=namespace, key=key)

    def access_log(self, limit: int) -> list[dict[str, Any]]:
        return self._with_api_path(self._client_call("access_log", "", limit=limit))


def stored_key_json(entry: StoredKey) -> dict[str, Any]:
    return {
        "name": entry.name,
        "namespace": entry.namespace,
        "backend": entry.backend,
        "modified": None if entry.modified is None else entry.modified.isoformat(),
    }


class SecureStorageHandler(APIHandler):
    """What every route shares: the store, worker threads, and value-free JSON errors."""

    auth_resource = AUTH_RESOURCE

    @property
    def stores(self) -> StoreAccess:
        access: StoreAccess = self.settings[SETTINGS_KEY]
        return access

    def set_default_headers(self) -> None:
        super().set_default_headers()
        # Names, and for the connector values: no cache may keep a copy.
        self.set_header("Cache-Control", "no-store")

    async def run(self, operation: Callable[..., Result], *args: Any) -> Result:
        """``operation(*args)`` on a worker thread; a package error becomes its JSON reply
        (a vault locked in the agent adds ``"locked": true``: the page then asks for the
        passphrase)."""
        try:
            return await asyncio.to_thread(operation, *args)
        except SecureStorageError as error:
            locked = isinstance(error, VaultLockedError) and await asyncio.to_thread(
                self.stores.locked_in_agent
            )
            raise self.refusal(error, locked=locked) from None

    def refusal(
        self, error: SecureStorageError, status: int | None = None, locked: bool = False
    ) -> tornado.web.Finish:
        if status is None:
            status = 400 if isinstance(error, (ValueError, TypeError)) else 503
        body: dict[str, Any] = {"message": error.cause, "remedy": error.remedy}
        if locked:
            body["locked"] = True
        self.reply(status, body)
        return tornado.web.Finish()

    def reply(self, status: int, body: dict[str, Any] | None = None) -> None:
        self.set_status(status)
        if body is None:
            self.finish(set_content_type="application/json")
        else:
            self.finish(json.dumps(body))

    def body_fields(self, *required: str) -> dict[str, Any]:
        """The request's JSON object, with ``required`` fields present. The body is never
        logged, and errors name fields, never their content."""
        try:
            body = json.loads(self.request.body or b"null")
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            raise self.refusal(
                RequestError("The request body is not a JSON object.", "Send a JSON object.")
            )
        missing = [name for name in required if name not in body]
        if missing:
            raise self.refusal(
                RequestError(
                    f"The request body lacks {', '.join(missing)}.",
                    f"Send a JSON object with {', '.join(required)}.",
                )
            )
        if "value" in body and not isinstance(body["value"], str):
            # The facade's write(key, None) deletes: a null here must not.
            raise self.refusal(
                RequestError(
                    f"The value is JSON {type(body['value']).__name__}, not a string.",
                    "Send the value as a JSON string; to delete a key, use DELETE.",
                )
            )
        return body

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # APIHandler would add the exception's text and traceback, which could quote
        # a value; an HTTPError's log message is the server's own words (no request data).
        error = (kwargs.get("exc_info") or (None, None, None))[1]
        message = f"{status_code} {self._reason}"
        remedy = "See the Jupyter server's log."
        if isinstance(error, tornado.web.HTTPError):
            message += f": {error.log_message}" if error.log_message else ""
            if status_code == 403:
                remedy = (
                    "Send the Jupyter token (Authorization: token ...), or the login cookie "
                    "with its _xsrf value in the X-XSRFToken header, as JupyterLab does."
                )
        elif error is not None:
            message += f" ({type(error).__name__})"
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": message, "remedy": remedy}))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, tornado.web.HTTPError):
            super().log_exception(typ, value, tb)
            return
        # An unexpected failure's text could quote a value: log its type, not its text.
        self.log.error(
            "jupyter-secure-storage: %s %s failed (%s)",
            self.request.method,
            self.request.path,
            typ.__name__ if typ else "unknown error",
        )


class StatusHandler(SecureStorageHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        self.reply(200, await self.run(self.stores.status))


class UnlockHandler(SecureStorageHandler):
    """Hand a passphrase to the unlock agent. The body is read here and nowhere else; the
    passphrase is never logged and never answered."""

    @tornado.web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.body_fields("passphrase")
        passphrase = body.pop("passphrase")
        if not isinstance(passphrase, str):
            raise self.refusal(
                RequestError(
                    "The passphrase is not a JSON string.", "Send the passphrase as a string."
                )
            )
        try:
            await asyncio.to_thread(self.stores.unlock, passphrase)
        except WrongPassphraseError as error:
            raise self.refusal(
                WrongPassphraseError(
                    error.cause,
                    "Type the vault's passphrase again; the vault was not changed and "
                    "stays locked.",
                ),
                status=403,
            ) from None
        except SecureStorageError as error:
            raise self.refusal(error) from None
        finally:
            del passphrase
        self.reply(204)


class LockHandler(SecureStorageHandler):
    @tornado.web.authenticated
    @authorized
    async def post(self) -> None:
        await self.run(self.stores.lock)
        self.reply(204)


class GrantsHandler(SecureStorageHandler):
    """Notebook access grants, kept by the unlock agent (names only, never values)."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        notebook = self.get_query_argument("notebook", None)
        grants = await self.run(self.stores.grants, notebook)
        self.reply(200, {"grants": grants})

    def grant_fields(self) -> tuple[str, str, str]:
        body = self.body_fields("notebook", "namespace", "key")
        fields = (body["notebook"], body["namespace"], body["key"])
        if not all(isinstance(field, str) and field for field in fields):
            raise self.refusal(
                RequestError(
                    "The notebook, namespace and key must be non-empty strings.",
                    'Send {"notebook": path, "namespace": ..., "key": ...}.',
                )
            )
        return fields

    @tornado.web.authenticated
    @authorized
    async def put(self) -> None:
        await self.run(self.stores.grant, *self.grant_fields())
        self.reply(204)

    @tornado.web.authenticated
    @authorized
    async def delete(self) -> None:
        await self.run(self.stores.revoke, *self.grant_fields())
        self.reply(204)


class AccessLogHandler(SecureStorageHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        raw = self.get_query_argument("limit", "50")
        if not raw.isdigit() or not 1 <= int(raw) <= ACCESS_LOG_LIMIT:
            raise self.refusal(
                RequestError(
                    f"The limit must be a whole number from 1 to {ACCESS_LOG_LIMIT}.",
                    "Ask for fewer entries, e.g. access-log?limit=50.",
                )
            )
        entries = await self.run(self.stores.access_log, int(raw))
        self.reply(200, {"entries": entries})


class KeysHandler(SecureStorageHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        entries = await self.run(self.stores.entries)
        self.reply(200, {"keys": [stored_key_json(entry) for entry in entries]})

    @tornado.web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.body_fields("name", "value")
        namespace = body.get("namespace") or "default"
        name = body["name"]
        await self.run(self.stores.write, namespace, name, body["value"])
        self.reply(201, {"name": name, "namespace": namespace})


class KeyHandler(SecureStorageHandler):
    @tornado.web.authenticated
    @authorized
    async def delete(self, namespace: str, name: str) -> None:
        await self.run(self.stores.delete, namespace, name)
        self.reply(204)


class ConnectorSecretHandler(SecureStorageHandler):
    """One jupyter-secrets-manager secret. GET is the one route that returns a value."""

    @tornado.web.authenticated
    @authorized
    async def get(self, namespace: str, secret_id: str) -> None:
        value = await self.run(self.stores.connector_read, namespace, secret_id)
        if value is None:
            self.reply(
                404,
                {
                    "message": "No secret is stored under that namespace and id.",
                    "remedy": "Save it first (PUT), or list the namespace's ids (GET).",
                },
            )
            return
        self.reply(200, {"namespace": namespace, "id": secret_id, "value": value})

    @tornado.web.authenticated
    @authorized
    async def put(self, namespace: str, secret_id: str) -> None:
        body = self.body_fields("value")
        await self.run(self.stores.connector_write, namespace, secret_id, body["value"])
        self.reply(204)

    @tornado.web.authenticated
    @authorized
    async def delete(self, namespace: str, secret_id: str) -> None:
        await self.run(self.stores.connector_delete, namespace, secret_id)
        self.reply(204)


class ConnectorListHandler(SecureStorageHandler):
    @tornado.web.authenticated
    @authorized
    async def get(self, namespace: str) -> None:
        self.reply(200, {"ids": await self.run(self.stores.connector_ids, namespace)})


def rest_handlers(base_url: str) -> list[tuple[str, type[SecureStorageHandler]]]:
    # Path segments arrive URL-quoted (a secrets-manager namespace holds "/" as %2F);
    # tornado matches the quoted path and unquotes each captured segment.
    route = url_path_join(base_url, API_ROUTE)
    segment = r"([^/]+)"
    return [
        (f"{route}/status", StatusHandler),
        (f"{route}/unlock", UnlockHandler),
        (f"{route}/lock", LockHandler),
        (f"{route}/grants", GrantsHandler),
        (f"{route}/access-log", AccessLogHandler),
        (f"{route}/keys", KeysHandler),
        (f"{route}/keys/{segment}/{segment}", KeyHandler),
        (f"{route}/connector/{segment}", ConnectorListHandler),
        (f"{route}/connector/{segment}/{segment}", ConnectorSecretHandler),
    ]


def load_rest_api(serverapp: Any) -> None:
    """Mount the handlers in ``serverapp`` (called by the server extension's loader)."""
    hosted = serverapp.web_app.settings.get(EXTENSION_SETTINGS, {})
    contents = getattr(serverapp, "contents_manager", None)
    serverapp.web_app.settings[SETTINGS_KEY] = StoreAccess(
        serverapp.config,
        hosted=hosted.get("agent"),
        guard=hosted.get("save_guard"),
        root_dir=getattr(contents, "root_dir", None) or serverapp.root_dir,
    )
    serverapp.web_app.add_handlers(".*$", rest_handlers(serverapp.base_url))
    serverapp.log.info(
        "jupyter-secure-storage: REST API for JupyterLab at %s",
        url_path_join(serverapp.base_url, API_ROUTE),
    )
