"""Reading ``jupyter_secure_storage_config.{py,json}`` from Jupyter's config path.

The same file configures the Python API, the CLI and (merged under the kernel's
own config) the IPython extension, e.g.::

    # ~/.jupyter/jupyter_secure_storage_config.py
    c.SecureStorage.backend = "vault"
    c.VaultBackend.path = "~/secrets/team.jssv"
"""

from __future__ import annotations

from jupyter_core.paths import jupyter_config_path
from traitlets.config import Config
from traitlets.config.loader import ConfigFileNotFound, JSONFileConfigLoader, PyFileConfigLoader

from .errors import SecureStorageError

CONFIG_FILE_STEM = "jupyter_secure_storage_config"


def load_config_files(over: Config | None = None) -> Config:
    """Merge the config files, lowest-priority directory first (as Jupyter does), then
    ``over`` (a server's or kernel's own config, which wins) when given."""
    merged = Config()
    for directory in reversed(jupyter_config_path()):
        for loader_class, suffix in ((JSONFileConfigLoader, ".json"), (PyFileConfigLoader, ".py")):
            loader = loader_class(CONFIG_FILE_STEM + suffix, path=directory)
            try:
                merged.merge(loader.load_config())
            except ConfigFileNotFound:
                continue
            except Exception as error:
                raise SecureStorageError(
                    f"The config file {directory}/{CONFIG_FILE_STEM}{suffix} could not be "
                    f"read ({type(error).__name__}: {error}).",
                    "Fix or remove that file.",
                ) from error
    if over:
        merged.merge(over)
    return merged
