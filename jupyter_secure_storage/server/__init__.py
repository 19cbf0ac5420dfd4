"""The Jupyter Server extension: a fail-closed check of every notebook before it is saved.

Enabled automatically on install (jupyter-config/jupyter_server_config.d); see
:mod:`jupyter_secure_storage.server.save_guard`.
"""

from __future__ import annotations

from typing import Any

from .save_guard import load_save_guard


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "jupyter_secure_storage.server"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    load_save_guard(serverapp)
