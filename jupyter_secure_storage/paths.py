"""Where the package keeps its files by default (all under Jupyter's data directory)."""

from __future__ import annotations

import os
from pathlib import Path

from jupyter_core.paths import jupyter_data_dir

ENV_BACKEND = "JUPYTER_SECURE_STORAGE_BACKEND"
ENV_VAULT = "JUPYTER_SECURE_STORAGE_VAULT"
ENV_PASSPHRASE = "JUPYTER_SECURE_STORAGE_PASSPHRASE"  # noqa: S105 -- a variable name, not a value


def data_dir() -> Path:
    """``<jupyter data dir>/secure_storage``: the vault, lock files, the keyring index lock."""
    return Path(jupyter_data_dir()) / "secure_storage"


def default_vault_path() -> Path:
    """The vault file used when neither config nor ``JUPYTER_SECURE_STORAGE_VAULT`` names one."""
    return data_dir() / "vault.jssv"


def env_value(name: str) -> str | None:
    """An environment variable, or None when unset or empty."""
    value = os.environ.get(name)
    return value if value else None
