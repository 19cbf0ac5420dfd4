"""The relay inside a Jupyter Server, at ``<base_url>secure-storage/relay``, and the web
companion's page beside it at ``<base_url>secure-storage/device/``.

Enable it with ``jupyter server extension enable jupyter_secure_storage.bridge.server_extension``
and configure it with ``c.SecureStorageRelay`` (below). The WebSocket does **not** use the
server's authentication: relay clients (a phone, the web companion) have no Jupyter token
and prove themselves with mailbox capabilities instead, so the route is declared
``@allow_unauthenticated``. It reaches nothing else of the server: no kernels, no files,
no cookies. See docs/relay.md for what that means on JupyterHub.
"""

from __future__ import annotations

from typing import Any

import tornado.web
from traitlets import Int, Unicode
from traitlets.config import Configurable

from .relay import (
    DEFAULT_LIMITS,
    CompanionHandler,
    Limits,
    Relay,
    RelayHandler,
    companion_handlers,
    make_store,
    relay_handlers,
)

MODULE = "jupyter_secure_storage.bridge.server_extension"


class SecureStorageRelay(Configurable):
    """The relay mounted in Jupyter Server (``c.SecureStorageRelay.*``)."""

    path = Unicode(
        "secure-storage/relay", help="Route under the server's base_url for the WebSocket."
    ).tag(config=True)
    redis_url = Unicode(
        "",
        help="Keep mailboxes in Redis Streams at this URL (shared by several servers). "
        "Empty: in this server's memory, lost when it stops.",
    ).tag(config=True)
    redis_prefix = Unicode("jss:", help="Redis key prefix.").tag(config=True)
    max_connections = Int(1000, help="Open relay WebSockets at most.").tag(config=True)
    memory_limit = Int(64 * 1024 * 1024, help="Bytes the in-memory store may hold in all.").tag(
        config=True
    )
    max_ttl = Int(DEFAULT_LIMITS.max_ttl, help="Seconds a message may be held (≤ 86400).").tag(
        config=True
    )


def _allow_unauthenticated(method: Any) -> Any:
    """jupyter_server's marker (2.13+) that this route does its own access control."""
    try:
        from jupyter_server.auth.decorator import allow_unauthenticated
    except ImportError:  # older servers do not check extension routes at all
        return method
    return allow_unauthenticated(method)


class JupyterRelayHandler(RelayHandler):
    """:class:`RelayHandler`, marked as deliberately outside Jupyter's authentication."""

    @_allow_unauthenticated
    async def get(self, *args: Any, **kwargs: Any) -> None:
        await super().get(*args, **kwargs)


class JupyterCompanionHandler(CompanionHandler):
    """The web companion's page beside the relay route: public, like the relay (the phone
    has no Jupyter token); it is static files and reaches nothing of the server."""

    @_allow_unauthenticated
    def get(self, path: str, include_body: bool = True) -> Any:
        return super().get(path, include_body)

    @_allow_unauthenticated
    def head(self, path: str) -> Any:
        return super().head(path)


class JupyterCompanionRedirect(tornado.web.RedirectHandler):
    """``.../device`` -> ``.../device/``, public like the page."""

    @_allow_unauthenticated
    def get(self, *args: Any, **kwargs: Any) -> None:
        super().get(*args, **kwargs)


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": MODULE}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from jupyter_server.utils import url_path_join

    settings = SecureStorageRelay(parent=serverapp)
    limits = Limits(max_ttl=settings.max_ttl)
    store = make_store(
        settings.redis_url or None,
        limits,
        memory_limit=settings.memory_limit,
        redis_prefix=settings.redis_prefix,
    )
    relay = Relay(store, limits, max_connections=settings.max_connections)
    route = url_path_join(serverapp.base_url, settings.path.strip("/"))
    serverapp.web_app.add_handlers(
        ".*$",
        [
            *relay_handlers(relay, route, JupyterRelayHandler),
            *companion_handlers(route, JupyterCompanionHandler, JupyterCompanionRedirect),
        ],
    )
    serverapp.web_app.settings["secure_storage_relay"] = relay
    serverapp.log.info("jupyter_secure_storage relay at %s (storage: %s)", route, store.describe())


# The name jupyter_server looks for in older releases.
load_jupyter_server_extension = _load_jupyter_server_extension
