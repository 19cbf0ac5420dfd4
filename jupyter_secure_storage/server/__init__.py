"""The Jupyter Server extension: the unlock agent, a check of every file before it is
saved, and the REST API the JupyterLab extension (labextension/) talks to.

Enabled automatically on install (jupyter-config/jupyter_server_config.d); see
:mod:`jupyter_secure_storage.server.agent_host`,
:mod:`jupyter_secure_storage.server.save_guard` and :mod:`jupyter_secure_storage.server.rest`.
"""

from __future__ import annotations

from typing import Any

from .agent_host import host_unlock_agent
from .rest import load_rest_api
from .save_guard import load_save_guard


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "jupyter_secure_storage.server"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    hosted = host_unlock_agent(serverapp)
    guard = load_save_guard(serverapp, hosted)
    serverapp.web_app.settings["jupyter_secure_storage"] = {"agent": hosted, "save_guard": guard}
    load_rest_api(serverapp)
