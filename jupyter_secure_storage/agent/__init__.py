"""The unlock agent: one process per user holds the vault's data key (docs/agent.md).

Jupyter Server runs it inside its own process; ``jupyter-secure-storage agent`` runs it
where no server does. Clients reach it through :mod:`jupyter_secure_storage.agent_client`.
"""

from .server import AgentAlreadyRunning, UnlockAgent

__all__ = ["AgentAlreadyRunning", "UnlockAgent"]
