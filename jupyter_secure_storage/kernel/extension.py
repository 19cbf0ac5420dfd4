"""Loading and unloading the IPython extension: ``%load_ext jupyter_secure_storage``.

Loading registers the magics, wraps the kernel session's ``send`` (output
redaction) and the history manager (history guard), then fills the environment
from ``c.SecureStorageMagics.inject_env``. Unloading undoes each of those.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any

from .fd_echo_guard import FdEchoGuard
from .history_guard import HistoryGuard
from .magics import SecureStorageMagics
from .redaction import OutputRedactor
from .session_guard import SessionGuard

logger = logging.getLogger("jupyter_secure_storage")

MAGIC_NAMES = {
    "line": [
        "secure_write",
        "secure_read",
        "secure_env",
        "secure_delete",
        "secure_list",
        "secure_status",
        "secure_redaction",
        "secure_pair",
    ],
    "cell": ["secure_unredacted"],
}


@dataclass
class _Loaded:
    magics: SecureStorageMagics
    redactor: OutputRedactor
    session_guard: SessionGuard | None
    echo_guard: FdEchoGuard | None
    history_guard: HistoryGuard


_LOADED: dict[int, _Loaded] = {}


def loaded_state(shell: Any) -> _Loaded | None:
    """What the extension installed in ``shell`` (None when not loaded)."""
    return _LOADED.get(id(shell))


def load_ipython_extension(shell: Any) -> None:
    if id(shell) in _LOADED:
        return
    redactor = OutputRedactor(parent=shell)
    magics = SecureStorageMagics(shell=shell, redactor=redactor)
    shell.register_magics(magics)
    shell.configurables.extend([magics, redactor])

    session_guard = echo_guard = None
    session = getattr(getattr(shell, "kernel", None), "session", None)
    if session is not None:
        session_guard = SessionGuard(session, redactor.engine, redactor.is_enabled)
        session_guard.install()
        echo_guard = FdEchoGuard([sys.stdout, sys.stderr], redactor.engine)
        echo_guard.install()
        magics.redaction_installed = True
    history_guard = HistoryGuard(getattr(shell, "history_manager", None), redactor.engine)
    history_guard.install()
    _LOADED[id(shell)] = _Loaded(magics, redactor, session_guard, echo_guard, history_guard)

    for problem in magics.inject_environment():
        logger.warning("jupyter-secure-storage inject_env: %s", problem)


def unload_ipython_extension(shell: Any) -> None:
    state = _LOADED.pop(id(shell), None)
    if state is None:
        return
    if state.session_guard is not None:
        state.session_guard.uninstall()
    if state.echo_guard is not None:
        state.echo_guard.uninstall()
    state.history_guard.uninstall()
    registered = shell.magics_manager.magics
    for kind, names in MAGIC_NAMES.items():
        for name in names:
            registered[kind].pop(name, None)
    for configurable in (state.magics, state.redactor):
        if configurable in shell.configurables:
            shell.configurables.remove(configurable)
