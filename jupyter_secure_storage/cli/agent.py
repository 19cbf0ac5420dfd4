"""The unlock agent's commands: ``agent`` (run it), ``unlock`` and ``lock`` (docs/agent.md).

Jupyter Server runs the agent itself; ``jupyter-secure-storage agent`` is for machines
and sessions without one (a terminal, cron, a CI job). The passphrase is typed once, into
``unlock`` or the JupyterLab dialog, and never given as an argument.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any, TextIO

from ..agent_client import AgentClient, AgentNotRunning
from ..errors import AgentUnavailableError, VaultLockedError
from ..paths import ENV_PASSPHRASE, env_value
from .base import PROG, Command, UsageProblem


def _seconds_or_zero(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a number of seconds") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 (never) or more")
    return value


def _add_agent(commands: Any, common: argparse.ArgumentParser) -> None:
    agent = commands.add_parser(
        "agent",
        help="run the unlock agent: type the vault passphrase once for every kernel and command",
        description="Hold the vault's key for this user until stopped (SIGINT/SIGTERM), so "
        "kernels and commands ask this process instead of a passphrase. Jupyter Server runs "
        "one itself. With $JUPYTER_SECURE_STORAGE_PASSPHRASE set, the vault is unlocked at "
        "start; otherwise run `unlock`. See docs/agent.md.",
    )
    agent.add_argument(
        "--lock-after",
        type=_seconds_or_zero,
        default=None,
        metavar="SECONDS",
        help="forget the key after this long without a request (default: "
        "c.UnlockAgent.lock_after, else never)",
    )


def _add_unlock(commands: Any, common: argparse.ArgumentParser) -> None:
    unlock = commands.add_parser(
        "unlock",
        help="unlock the vault in the running agent (prompts for the passphrase)",
        description="Ask for the vault's passphrase here (or take one line of stdin with "
        "--stdin) and hand it to this user's unlock agent. A new vault is created when "
        "there is none yet (the passphrase is asked twice).",
    )
    unlock.add_argument(
        "--stdin", action="store_true", help="read the passphrase from the first line of stdin"
    )


def _add_lock(commands: Any, common: argparse.ArgumentParser) -> None:
    commands.add_parser("lock", help="make the running agent forget every vault key")


def _vault() -> Any:
    from ..backends.vault import VaultBackend
    from ..config_file import load_config_files

    return VaultBackend(config=load_config_files())


def cmd_agent(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from ..agent import AgentAlreadyRunning, UnlockAgent
    from ..config_file import load_config_files

    config = load_config_files()
    if args.lock_after is not None:
        config.UnlockAgent.lock_after = args.lock_after
    agent = UnlockAgent(config=config)
    passphrase = env_value(ENV_PASSPHRASE)
    if passphrase is not None:
        # Read once, then gone from this process's environment and its children's.
        os.environ.pop(ENV_PASSPHRASE, None)
    vault = _vault()

    def ready() -> None:
        if passphrase is not None:
            # Through the socket, as any client: the same checks, in the same order.
            AgentClient(agent.path).call(
                "unlock", str(vault.file), passphrase=passphrase, create=not vault.exists
            )
            state = "unlocked from the environment"
        else:
            state = f"locked: run `{PROG} unlock`"
        out.write(f"unlock agent listening at {agent.path} (vault {vault.file}: {state})\n")
        out.flush()

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())

    def announce() -> None:
        # Unlock through the socket, as any client would, from another thread: this one
        # is about to serve.
        def unlock_then_say() -> None:
            try:
                ready()
            except Exception as error:
                cause = getattr(error, "cause", type(error).__name__)
                err.write(f"{PROG}: could not unlock the vault at start: {cause}\n")
                stop.set()

        threading.Thread(target=unlock_then_say, name="jss-agent-start", daemon=True).start()

    try:
        agent.serve(stop, ready=announce)
    except AgentAlreadyRunning:
        err.write(f"{PROG}: an unlock agent already runs at {agent.path}; nothing started\n")
        return 1
    err.write("unlock agent stopped; every key it held is forgotten\n")
    return 0


def cmd_unlock(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    vault = _vault()
    if args.stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise UsageProblem("stdin held no passphrase (an empty first line).")
        vault.prompt_function = lambda _prompt: line  # asked twice for a new vault: same line
    try:
        created = vault.unlock_agent()
    except AgentNotRunning:
        raise AgentUnavailableError(
            "No unlock agent runs for this user.",
            f"Start one (`{PROG} agent &`), or open JupyterLab: Jupyter Server runs it.",
        ) from None
    except VaultLockedError as error:
        if args.stdin or env_value(ENV_PASSPHRASE):
            raise
        raise UsageProblem(
            "stdin is not a terminal, so the passphrase cannot be prompted for; "
            "pass --stdin to read it from the first line of stdin."
        ) from error
    verb = "created and unlocked" if created else "unlocked"
    err.write(f"{verb} the vault {vault.file} in the unlock agent\n")
    return 0


def cmd_lock(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        AgentClient().call("lock")
    except AgentNotRunning:
        err.write("no unlock agent runs for this user; nothing to lock\n")
        return 0
    err.write("locked: the unlock agent forgot every vault key\n")
    return 0


def _add_grant_parser(commands: Any, common: argparse.ArgumentParser, name: str, verb: str) -> None:
    parser = commands.add_parser(
        name, parents=[common], help=f"{verb} (notebook access; docs/notebook-access.md)"
    )
    parser.add_argument("notebook", metavar="NOTEBOOK", help="the notebook's path")
    parser.add_argument("key", metavar="KEY")


def _add_grant(commands: Any, common: argparse.ArgumentParser) -> None:
    _add_grant_parser(commands, common, "grant", "let NOTEBOOK read KEY")


def _add_revoke(commands: Any, common: argparse.ArgumentParser) -> None:
    _add_grant_parser(commands, common, "revoke", "take KEY back from NOTEBOOK")


def _add_grants(commands: Any, common: argparse.ArgumentParser) -> None:
    grants = commands.add_parser(
        "grants", help="list notebook access grants (and, with --log, the latest requests)"
    )
    grants.add_argument("notebook", nargs="?", metavar="NOTEBOOK", help="only this notebook")
    grants.add_argument("--log", action="store_true", help="the latest requests instead")
    grants.add_argument("--format", choices=["table", "json"], default="table")


def _agent_for_grants() -> AgentClient:
    client = AgentClient()
    if not client.running():
        raise AgentUnavailableError(
            "No unlock agent runs for this user, and notebook access grants live with it.",
            f"Start one (`{PROG} agent &`), or open JupyterLab: Jupyter Server runs it.",
        )
    return client


def _notebook(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def cmd_grant(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from ..storage import validate_key

    key = validate_key(args.key)
    namespace = getattr(args, "namespace", None) or "default"
    notebook = _notebook(args.notebook)
    _agent_for_grants().call(args.command, "", notebook=notebook, namespace=namespace, key=key)
    done = "granted to" if args.command == "grant" else "revoked from"
    err.write(f"{namespace}/{key} {done} {notebook}\n")
    return 0


def cmd_grants(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import json
    from datetime import datetime

    client = _agent_for_grants()
    if args.log:
        rows = client.call("access_log", "", limit=100)
    else:
        wanted = _notebook(args.notebook) if args.notebook else None
        rows = client.call("grants", "", notebook=wanted)
    if args.format == "json":
        json.dump(rows, out, indent=2)
        out.write("\n")
        return 0
    for row in rows:
        when = datetime.fromtimestamp(row.get("time", row.get("granted", 0))).isoformat(
            " ", "seconds"
        )
        verdict = ("allowed " if row["allowed"] else "REFUSED ") if args.log else ""
        out.write(f"{when}  {verdict}{row['namespace']}/{row['key']}  {row['notebook']}\n")
    if not rows:
        err.write("nothing yet\n")
    return 0


COMMANDS = {
    "agent": Command(_add_agent, cmd_agent),
    "unlock": Command(_add_unlock, cmd_unlock),
    "lock": Command(_add_lock, cmd_lock),
    "grant": Command(_add_grant, cmd_grant),
    "revoke": Command(_add_revoke, cmd_grant),
    "grants": Command(_add_grants, cmd_grants),
}
