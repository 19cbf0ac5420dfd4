"""jupyter-secure-storage: keep API keys out of notebooks.

The public API::

    from jupyter_secure_storage import SecureStorage, Secret
    store = SecureStorage()                 # OS keystore when usable, else the encrypted vault
    store.write("OPENAI_API_KEY", value)    # value from a prompt, never typed into a cell
    key = store.read("OPENAI_API_KEY")      # -> Secret | None; key.reveal() at the point of use
"""

from ._version import __version__
from .errors import SecureStorageError
from .secret import Secret, secret_registry
from .storage import SecureStorage


def load_ipython_extension(shell: object) -> None:
    """``%load_ext jupyter_secure_storage``: magics, output redaction, history guard."""
    from .kernel.extension import load_ipython_extension as load

    load(shell)


def unload_ipython_extension(shell: object) -> None:
    """Undo everything ``load_ipython_extension`` installed."""
    from .kernel.extension import unload_ipython_extension as unload

    unload(shell)


__all__ = [
    "Secret",
    "SecureStorage",
    "SecureStorageError",
    "__version__",
    "load_ipython_extension",
    "secret_registry",
    "unload_ipython_extension",
]
