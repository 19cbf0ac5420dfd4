"""Parse the command line and dispatch to the command group that runs it.

Each group lives in its own module (``store``, ``doctor``, ``bridge``, ``scan``, ``agent``)
and gives its subcommands as :class:`~.base.Command` entries; this module only builds the
parser from them (importing just the group of the command run) and turns what a command
raises into a message and an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from .._version import __version__
from ..errors import InvalidKeyError, SecureStorageError
from .base import PROG, Command, UsageProblem, common_options

# Each command, in the order `--help` lists them, with the module of its group. A group is
# imported only when one of its commands runs (or for --help): `read` in a script should not
# pay for the scanner, the bridge or asyncio.
GROUP_OF = {
    "write": "store",
    "read": "store",
    "delete": "store",
    "list": "store",
    "delete-all": "store",
    "doctor": "doctor",
    "relay": "bridge",
    "migrate": "store",
    "pair": "bridge",
    "devices": "bridge",
    "device": "bridge",
    "scan": "scan",
    "agent": "agent",
    "unlock": "agent",
    "lock": "agent",
    "grant": "agent",
    "revoke": "agent",
    "grants": "agent",
}
_OPTIONS_WITH_VALUE = ("--backend", "--namespace")


def commands(names: Sequence[str]) -> dict[str, Command]:
    """The :class:`Command` entries of ``names`` (importing only their groups)."""
    found: dict[str, Command] = {}
    for group in dict.fromkeys(GROUP_OF[name] for name in names):
        module = importlib.import_module(f"{__package__}.{group}")
        found.update(module.COMMANDS)
    return {name: found[name] for name in names}


def chosen_command(arguments: Sequence[str]) -> str | None:
    """The command named in ``arguments``, if it can be told without parsing (None: help,
    version, or no known command -- the whole parser is built then)."""
    words = iter(arguments)
    for word in words:
        if word in _OPTIONS_WITH_VALUE:
            next(words, None)
        elif word.startswith("-"):
            if word in ("-h", "--help", "--version") or "=" not in word:
                return None
        else:
            return word if word in GROUP_OF else None
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser, with every command (for help and mistakes) or ``only`` one."""
    common = common_options()
    parser = argparse.ArgumentParser(
        prog=PROG,
        parents=[common],
        description="Keep API keys and tokens in the OS keystore or an encrypted vault.",
        epilog="Values are never taken from or shown in arguments.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    names = list(GROUP_OF) if only is None else [only]
    for command in commands(names).values():
        command.add_parser(subparsers, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["relay"]:
        # The relay has its own flags and logging (docs/relay.md).
        from .bridge import relay_command

        return relay_command(arguments[1:])
    logging.basicConfig(format=f"{PROG}: %(message)s", level=logging.WARNING)
    only = chosen_command(arguments)
    parser = build_parser(only)
    args, extras = parser.parse_known_args(arguments)
    out, err = sys.stdout, sys.stderr
    if extras:
        # Never echo them: a stray argument is often a value typed where it must not be.
        err.write(
            f"{PROG}: {len(extras)} unexpected argument(s), not shown. Values are never "
            f"given on the command line (they stay in shell history and process lists): "
            f"run `{PROG} write KEY` to be prompted, or pipe the value with --stdin. "
            "If a real secret was typed, rotate it and remove it from your shell history.\n"
        )
        return 2
    try:
        return commands([args.command])[args.command].run(args, out, err)
    except (UsageProblem, InvalidKeyError) as error:
        err.write(f"{PROG}: {error}\n")
        return 2
    except SecureStorageError as error:
        err.write(f"{PROG}: error: {error.cause}\n")
        if error.remedy:
            err.write(f"  fix: {error.remedy}\n")
        return 1
    except KeyboardInterrupt:
        err.write("\ninterrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
