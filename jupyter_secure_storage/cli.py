"""``jupyter-secure-storage`` (also ``jupyter secure-storage``): the command line front end.

Values never travel in argv: ``write`` prompts without echo (twice) or reads one
line from stdin with ``--stdin``; ``read`` prints only to a pipe unless
``--reveal`` is given. Exit codes: 0 success, 1 failure or not found, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from . import passphrase as prompting
from ._version import __version__
from .doctor import examine, render
from .errors import InvalidKeyError, SecureStorageError
from .storage import SecureStorage

PROG = "jupyter-secure-storage"


class UsageProblem(Exception):
    """A mistake in how the command was called (exit code 2)."""


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS lets the options appear before or after the subcommand.
    common.add_argument(
        "--backend",
        default=argparse.SUPPRESS,
        help="auto, keyring, vault, memory, or a plugin (default: config, "
        "$JUPYTER_SECURE_STORAGE_BACKEND, else auto)",
    )
    common.add_argument(
        "--namespace", default=argparse.SUPPRESS, help="the namespace (default: 'default')"
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog=PROG,
        parents=[common],
        description="Keep API keys and tokens in the OS keystore or an encrypted vault.",
        epilog="Values are never taken from or shown in arguments.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    write = commands.add_parser(
        "write", parents=[common], help="store a value (prompted, or one line from --stdin)"
    )
    write.add_argument("key")
    write.add_argument(
        "--stdin", action="store_true", help="read the value from the first line of stdin"
    )

    read = commands.add_parser(
        "read", parents=[common], help="print a value to a pipe (or to a terminal with --reveal)"
    )
    read.add_argument("key")
    read.add_argument(
        "--reveal", action="store_true", help="allow printing the value to a terminal"
    )

    delete = commands.add_parser("delete", parents=[common], help="delete a key")
    delete.add_argument("key")

    listing = commands.add_parser("list", parents=[common], help="list names (never values)")
    listing.add_argument("--format", choices=["table", "json"], default="table")
    listing.add_argument(
        "--all-namespaces", action="store_true", help="list every namespace of the backend"
    )

    delete_all = commands.add_parser(
        "delete-all", parents=[common], help="delete every key of the namespace"
    )
    delete_all.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    doctor = commands.add_parser(
        "doctor", parents=[common], help="show every backend's state and how to fix it"
    )
    doctor.add_argument("--format", choices=["text", "json"], default="text")

    commands.add_parser(
        "relay", add_help=False, help="run the paired-device relay (docs/relay.md)"
    )

    migrate = commands.add_parser(
        "migrate", parents=[common], help="copy every key from one backend to another"
    )
    migrate.add_argument("--from", dest="source", required=True, metavar="BACKEND")
    migrate.add_argument("--to", dest="target", required=True, metavar="BACKEND")
    migrate.add_argument(
        "--all-namespaces", action="store_true", help="copy every namespace of the source"
    )
    migrate.add_argument(
        "--overwrite",
        action="store_true",
        help="replace keys the target already holds with a different value",
    )
    migrate.add_argument("--dry-run", action="store_true", help="say what would be copied")
    return parser


def _store(args: argparse.Namespace, backend: str | None = None) -> SecureStorage:
    options: dict[str, Any] = {}
    chosen = backend if backend is not None else getattr(args, "backend", None)
    if chosen is not None:
        options["backend"] = chosen
    if getattr(args, "namespace", None) is not None:
        options["namespace"] = args.namespace
    return SecureStorage(**options)


def _where(store: SecureStorage) -> str:
    return f"namespace {store.namespace!r}, {store.backend_name} ({store.backend_object.location})"


# --- commands --------------------------------------------------------------------------------


def cmd_write(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    store = _store(args)
    key = args.key
    store.contains_key(key)  # validates the key and unlocks the store before asking for a value
    if args.stdin:
        line = sys.stdin.readline()
        value = line[:-1] if line.endswith("\n") else line
        value = value[:-1] if value.endswith("\r") else value
        if not value:
            raise UsageProblem("stdin held no value (an empty first line); nothing was stored.")
    else:
        if not prompting.can_prompt():
            raise UsageProblem(
                "stdin is not a terminal, so the value cannot be prompted for; "
                "pass --stdin to read it from the first line of stdin."
            )
        try:
            entered = prompting.ask_new(f"Value for {key}: ", f"Repeat the value for {key}: ")
        except prompting.NoPrompt:
            err.write(f"{PROG}: cancelled; nothing was stored.\n")
            return 1
        if entered is None:
            err.write(f"{PROG}: the two entries differ; nothing was stored.\n")
            return 1
        if not entered:
            err.write(f"{PROG}: the value is empty; nothing was stored.\n")
            return 1
        value = entered
    replaced = store.contains_key(key)
    store.write(key, value)
    verb = "replaced" if replaced else "stored"
    err.write(f"{verb} {key} ({len(value)} characters) in {_where(store)}\n")
    return 0


def cmd_read(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if out.isatty() and not args.reveal:
        raise UsageProblem(
            "refusing to print a secret to a terminal; pipe it "
            f"(`{PROG} read {args.key} | ...`) or pass --reveal."
        )
    store = _store(args)
    secret = store.read(args.key)
    if secret is None:
        err.write(f"{PROG}: no key named {args.key!r} in {_where(store)}\n")
        return 1
    out.write(secret.reveal())
    if out.isatty():
        out.write("\n")
    out.flush()
    return 0


def cmd_delete(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    store = _store(args)
    existed = store.contains_key(args.key)
    store.delete(args.key)
    if existed:
        err.write(f"deleted {args.key} from {_where(store)}\n")
    else:
        err.write(f"no key named {args.key!r} in {_where(store)}; nothing to delete\n")
    return 0


def cmd_list(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    store = _store(args)
    namespaces = store.namespaces() if args.all_namespaces else [store.namespace]
    rows: list[dict[str, str]] = []
    for namespace in namespaces:
        scoped = SecureStorage(backend=store.backend_object, namespace=namespace)
        rows.extend(
            {"name": name, "namespace": namespace, "backend": store.backend_name}
            for name in scoped.keys()
        )
    if args.format == "json":
        json.dump(rows, out, indent=2)
        out.write("\n")
        return 0
    if not rows:
        err.write(f"no keys in {_where(store)}\n")
        return 0
    width = max(len("NAME"), *(len(r["name"]) for r in rows))
    ns_width = max(len("NAMESPACE"), *(len(r["namespace"]) for r in rows))
    out.write(f"{'NAME':<{width}}  {'NAMESPACE':<{ns_width}}  BACKEND\n")
    for row in rows:
        out.write(f"{row['name']:<{width}}  {row['namespace']:<{ns_width}}  {row['backend']}\n")
    err.write(f"{len(rows)} key(s); backend location: {store.backend_object.location}\n")
    return 0


def cmd_delete_all(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    store = _store(args)
    names = store.keys()
    if not names:
        err.write(f"no keys in {_where(store)}; nothing to delete\n")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageProblem(
                f"this would delete {len(names)} key(s) in {_where(store)}; "
                "pass --yes to confirm when not at a terminal."
            )
        err.write(f"Delete all {len(names)} key(s) in {_where(store)}? [y/N] ")
        err.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            err.write("nothing deleted\n")
            return 1
    store.delete_all()
    err.write(f"deleted {len(names)} key(s) from {_where(store)}\n")
    return 0


def cmd_doctor(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    report = examine(_store(args))
    if args.format == "json":
        json.dump(report.as_json(), out, indent=2)
        out.write("\n")
    else:
        render(report, out)
    return 0 if report.chosen_usable else 1


def cmd_migrate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.source == args.target:
        raise UsageProblem("--from and --to name the same backend.")
    source = _store(args, backend=args.source)
    target = _store(args, backend=args.target)
    if source.backend_object.identity == target.backend_object.identity:
        raise UsageProblem("--from and --to reach the same store.")
    namespaces = source.namespaces() if args.all_namespaces else [source.namespace]
    plan: list[tuple[str, dict[str, str]]] = []
    conflicts: list[str] = []
    identical = 0
    for namespace in namespaces:
        from_store = SecureStorage(backend=source.backend_object, namespace=namespace)
        to_store = SecureStorage(backend=target.backend_object, namespace=namespace)
        values = {k: s.reveal() for k, s in from_store.read_all().items()}
        existing = to_store.read_all()
        copy = {}
        for key, value in values.items():
            if key in existing and existing[key] == value:
                identical += 1
            elif key in existing and not args.overwrite:
                conflicts.append(f"{namespace}/{key}")
            else:
                copy[key] = value
        plan.append((namespace, copy))
    if conflicts:
        err.write(
            f"{PROG}: the target already holds different values for: {', '.join(conflicts)}. "
            "Nothing was copied. Pass --overwrite to replace them.\n"
        )
        return 1
    total = sum(len(copy) for _, copy in plan)
    if args.dry_run:
        for namespace, copy in plan:
            for key in sorted(copy):
                out.write(f"would copy {namespace}/{key}\n")
        err.write(f"{total} key(s) to copy, {identical} already identical (dry run)\n")
        return 0
    for namespace, copy in plan:
        to_store = SecureStorage(backend=target.backend_object, namespace=namespace)
        for key, value in copy.items():
            to_store.write(key, value)
            if to_store.read(key) != value:
                err.write(
                    f"{PROG}: {namespace}/{key} did not read back the same from the target; "
                    "stopping. The source is unchanged.\n"
                )
                return 1
    err.write(
        f"copied {total} key(s) from {source.backend_name} to {target.backend_name}"
        f" ({identical} already identical); the source is unchanged\n"
    )
    return 0


COMMANDS = {
    "write": cmd_write,
    "read": cmd_read,
    "delete": cmd_delete,
    "list": cmd_list,
    "delete-all": cmd_delete_all,
    "doctor": cmd_doctor,
    "migrate": cmd_migrate,
}


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["relay"]:
        # The relay has its own flags and logging (docs/relay.md).
        from .bridge.relay import relay_command

        return relay_command(arguments[1:])
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
        return COMMANDS[args.command](args, out, err)
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
