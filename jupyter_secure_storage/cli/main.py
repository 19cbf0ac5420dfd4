"""Parse the command line and dispatch to the command group that runs it.

Each group lives in its own module (``store``, ``doctor``, ``bridge``, ``scan``, ``agent``) and
gives its subcommands as :class:`~.base.Command` entries; this module only builds the
parser from them and turns what a command raises into a message and an exit code.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .._version import __version__
from ..errors import InvalidKeyError, SecureStorageError
from . import agent, bridge, doctor, scan, store
from .base import PROG, Command, UsageProblem, common_options

COMMANDS: dict[str, Command] = {
    **store.COMMANDS,
    **doctor.COMMANDS,
    **bridge.COMMANDS,
    **scan.COMMANDS,
    **agent.COMMANDS,
}
# The order `--help` lists them in.
HELP_ORDER = (
    "write",
    "read",
    "delete",
    "list",
    "delete-all",
    "doctor",
    "relay",
    "migrate",
    "pair",
    "devices",
    "device",
    "scan",
    "agent",
    "unlock",
    "lock",
)


def build_parser() -> argparse.ArgumentParser:
    common = common_options()
    parser = argparse.ArgumentParser(
        prog=PROG,
        parents=[common],
        description="Keep API keys and tokens in the OS keystore or an encrypted vault.",
        epilog="Values are never taken from or shown in arguments.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in HELP_ORDER:
        COMMANDS[name].add_parser(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["relay"]:
        # The relay has its own flags and logging (docs/relay.md).
        return bridge.relay_command(arguments[1:])
    logging.basicConfig(format=f"{PROG}: %(message)s", level=logging.WARNING)
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
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
        return COMMANDS[args.command].run(args, out, err)
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
