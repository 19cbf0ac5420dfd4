"""The unlock agent inside Jupyter Server: started with the server, so the passphrase is
typed once (the JupyterLab dialog, ``jupyter-secure-storage unlock``) for every kernel.

A passphrase in the server's environment (``JUPYTER_SECURE_STORAGE_PASSPHRASE``, for
unattended servers) is read once, handed to the agent, and removed from the environment
before any kernel or terminal starts, so no kernel, ``!env`` or ``%env`` can show it; the
save guard also scrubs it from saved files like a stored value.

When another server of the same user (or ``jupyter-secure-storage agent``) already runs
the agent, this server uses that one.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any

from ..agent import AgentAlreadyRunning, UnlockAgent
from ..agent_client import AgentClient, AgentNotRunning
from ..backends.vault import VaultBackend
from ..config_file import load_config_files
from ..errors import SecureStorageError
from ..paths import ENV_PASSPHRASE


@dataclass
class HostedAgent:
    """What the server knows of the agent it uses."""

    agent: UnlockAgent | None  # None: another process runs it, or none could start
    client: AgentClient
    passphrase: str | None  # from the server's environment; for the save guard only

    config: Any = None  # to start a replacement agent with the same settings
    log: Any = None

    @property
    def running(self) -> bool:
        """Whether an agent answers -- after starting one here if the agent this server
        used (another server's) has gone away, so this server's saves keep working."""
        if self.client.running():
            return True
        if self.agent is not None or self.config is None:
            return False
        replacement = UnlockAgent(config=self.config, log=self.log)
        try:
            replacement.start_in_thread()
        except AgentAlreadyRunning:
            return True  # another server took over first
        except (SecureStorageError, OSError):
            return False
        atexit.register(replacement.stop)
        self.agent = replacement
        if self.log is not None:
            self.log.info(
                "jupyter-secure-storage: the unlock agent this server used has stopped; "
                "this server runs it now (locked until unlocked again)."
            )
        return True

    def state(self, vault: VaultBackend) -> dict[str, Any]:
        """Whether the agent runs and holds ``vault`` unlocked (never a value)."""
        try:
            status = self.client.call("status", str(vault.file))
        except (AgentNotRunning, SecureStorageError):
            return {"agent": False, "exists": vault.exists, "unlocked": False}
        return {"agent": True, "exists": status["exists"], "unlocked": status["unlocked"]}


def host_unlock_agent(serverapp: Any) -> HostedAgent:
    """Start (or join) this user's agent; unlock it with the environment's passphrase.
    Nothing happens when the vault is configured not to use an agent."""
    log = serverapp.log
    # The package's own config files, then the server's (as SecureStorage merges them).
    config = load_config_files(serverapp.config)
    if not VaultBackend(config=config).use_agent:
        # Switched off (c.VaultBackend.use_agent = False): kernels unlock on their own,
        # with the passphrase from the environment they inherit, as before the agent.
        return HostedAgent(None, AgentClient(), None)
    # First, before anything can start a kernel: the passphrase leaves the environment.
    passphrase = os.environ.pop(ENV_PASSPHRASE, None) or None
    agent: UnlockAgent | None = UnlockAgent(config=config, log=log)
    assert agent is not None  # noqa: S101 -- for the type checker
    client = AgentClient(agent.path)
    try:
        agent.start_in_thread()
        atexit.register(agent.stop)
        log.info("jupyter-secure-storage: unlock agent at %s", agent.path)
    except AgentAlreadyRunning:
        log.info("jupyter-secure-storage: using the unlock agent already running at %s", agent.path)
        agent = None
    except (SecureStorageError, OSError) as error:
        log.warning(
            "jupyter-secure-storage: could not start the unlock agent (%s); kernels will "
            "ask for the vault passphrase themselves.",
            getattr(error, "cause", type(error).__name__),
        )
        agent = None
    hosted = HostedAgent(agent, client, passphrase, config=config, log=log)
    if passphrase is not None:
        vault = VaultBackend(config=config, prompt=False)
        try:
            client.call("unlock", str(vault.file), passphrase=passphrase, create=not vault.exists)
            log.info(
                "jupyter-secure-storage: vault %s unlocked from the server's environment; "
                "%s is no longer in the environment kernels get.",
                vault.file,
                ENV_PASSPHRASE,
            )
        except (AgentNotRunning, SecureStorageError) as error:
            log.warning(
                "jupyter-secure-storage: the passphrase in %s did not unlock %s (%s).",
                ENV_PASSPHRASE,
                vault.file,
                getattr(error, "cause", type(error).__name__),
            )
    return hosted
