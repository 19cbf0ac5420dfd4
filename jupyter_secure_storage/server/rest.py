"""REST handlers for the JupyterLab side: the Secrets sidebar, its status bar item, and a
jupyter-secrets-manager connector, all mounted under ``{base_url}secure-storage/api/``.

Every route is JSON, needs the server's authentication (token or login cookie) and its
XSRF check like any other Jupyter API, and is authorized on the resource
``secure-storage``. Every route goes through the :class:`SecureStorage` facade, never a
backend, and runs the store's blocking I/O (keystore calls, vault decryption) on a worker
thread so the server's event loop keeps serving.

Routes (see docs/jupyterlab.md):

- ``GET status`` -- the backend in use, where it keeps values, and why it was chosen;
- ``GET keys`` -- names, namespaces and modification times of every visible key (no values);
- ``POST keys`` -- store ``{"namespace"?, "name", "value"}`` (201); the value is written
  once and forgotten;
- ``DELETE keys/<namespace>/<name>`` -- 204, also when the key is missing (as the facade);
- ``GET|PUT|DELETE connector/<ns>/<id>`` and ``GET connector/<ns>`` -- the storage behind
  jupyter-secrets-manager. Its GET of one secret is the only route that answers with a
  value: that connector interface exists to hand values back to the page.

Errors are ``{"message": cause, "remedy": remedy}``: 400 for bad input, 404 for a missing
connector secret, 503 when the store cannot be opened here (a vault whose passphrase the
server does not have, a locked keystore). No answer, and no log line, holds a value:
request bodies are never logged, and an unexpected failure is reported by its type only.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, TypeVar

import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from traitlets.config import Config

from ..config_file import load_config_files
from ..errors import SecureStorageError
from ..storage import SecureStorage, StoredKey

API_ROUTE = "secure-storage/api"
AUTH_RESOURCE = "secure-storage"
#: Where the connector keeps jupyter-secrets-manager's secrets (their namespaces are
#: plugin ids such as ``@jupyterlite/ai:providers``, which are not storage namespaces).
CONNECTOR_NAMESPACE = "jupyterlab-secrets"
SETTINGS_KEY = "secure_storage_api"

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
    store that kernels and the command line use."""

    def __init__(self, server_config: Config | None = None) -> None:
        self._server_config = server_config

    def config(self) -> Config:
        config = load_config_files()
        if self._server_config:
            config.merge(self._server_config)
        config.VaultBackend.prompt = False
        return config

    def open(self, namespace: str | None = None, config: Config | None = None) -> SecureStorage:
        config = config or self.config()
        if namespace is None:
            return SecureStorage(config=config)
        return SecureStorage(config=config, namespace=namespace)

    # --- what the handlers do, each run on a worker thread ---------------------------------

    def status(self) -> dict[str, str]:
        store = self.open()
        choice = store.backend_choice
        return {
            "backend": choice.name,
            "location": str(store.backend_object.location),
            "reason": choice.reason,
        }

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
        """``operation(*args)`` on a worker thread; a package error becomes its JSON reply."""
        try:
            return await asyncio.to_thread(operation, *args)
        except SecureStorageError as error:
            raise self.refusal(error) from None

    def refusal(self, error: SecureStorageError) -> tornado.web.Finish:
        status = 400 if isinstance(error, (ValueError, TypeError)) else 503
        self.reply(status, {"message": error.cause, "remedy": error.remedy})
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
        (f"{route}/keys", KeysHandler),
        (f"{route}/keys/{segment}/{segment}", KeyHandler),
        (f"{route}/connector/{segment}", ConnectorListHandler),
        (f"{route}/connector/{segment}/{segment}", ConnectorSecretHandler),
    ]


def load_rest_api(serverapp: Any) -> None:
    """Mount the handlers in ``serverapp`` (called by the server extension's loader)."""
    serverapp.web_app.settings[SETTINGS_KEY] = StoreAccess(serverapp.config)
    serverapp.web_app.add_handlers(".*$", rest_handlers(serverapp.base_url))
    serverapp.log.info(
        "jupyter-secure-storage: REST API for JupyterLab at %s",
        url_path_join(serverapp.base_url, API_ROUTE),
    )
