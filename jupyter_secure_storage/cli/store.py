"""The store commands: ``write``, ``read``, ``delete``, ``list``, ``delete-all``, ``migrate``.

Values never travel in argv: ``write`` prompts without echo (twice) or reads one line
from stdin with ``--stdin``; ``read`` prints only to a pipe unless ``--reveal`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from .. import passphrase as prompting
from ..storage import SecureStorage
from .base import PROG, Command, UsageProblem, contains, open_store, where


def _add_write(commands: Any, common: argparse.ArgumentParser) -> None:
    write = commands.add_parser(
        "write", parents=[common], help="store a value (prompted, or one line from --stdin)"
    )
    write.add_argument("key")
    write.add_argument(
        "--stdin", action="store_true", help="read the value from the first line of stdin"
    )


def _add_read(commands: Any, common: argparse.ArgumentParser) -> None:
    read = commands.add_parser(
        "read", parents=[common], help="print a value to a pipe (or to a terminal with --reveal)"
    )
    read.add_argument("key")
    read.add_argument(
        "--reveal", action="store_true", help="allow printing the value to a terminal"
    )


def _add_delete(commands: Any, common: argparse.ArgumentParser) -> None:
    delete = commands.add_parser("delete", parents=[common], help="delete a key")
    delete.add_argument("key")


def _add_list(commands: Any, common: argparse.ArgumentParser) -> None:
    listing = commands.add_parser("list", parents=[common], help="list names (never values)")
    listing.add_argument("--format", choices=["table", "json"], default="table")
    listing.add_argument(
        "--all-namespaces", action="store_true", help="list every namespace of the backend"
    )


def _add_delete_all(commands: Any, common: argparse.ArgumentParser) -> None:
    delete_all = commands.add_parser(
        "delete-all", parents=[common], help="delete every key of the namespace"
    )
    delete_all.add_argument("--yes", action="store_true", help="do not ask for confirmation")


def _add_migrate(commands: Any, common: argparse.ArgumentParser) -> None:
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


def cmd_write(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    store = open_store(args)
    key = args.key
    contains(store, key)  # validates the key and unlocks the store before asking for a value
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
    replaced = contains(store, key)
    store.write(key, value)
    verb = "replaced" if replaced else "stored"
    err.write(f"{verb} {key} ({len(value)} characters) in {where(store)}\n")
    return 0


def cmd_read(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if out.isatty() and not args.reveal:
        raise UsageProblem(
            "refusing to print a secret to a terminal; pipe it "
            f"(`{PROG} read {args.key} | ...`) or pass --reveal."
        )
    store = open_store(args)
    secret = store.read(args.key)
    if secret is None:
        err.write(f"{PROG}: no key named {args.key!r} in {where(store)}\n")
        return 1
    out.write(secret.reveal())
    if out.isatty():
        out.write("\n")
    out.flush()
    return 0


def cmd_delete(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    store = open_store(args)
    existed = contains(store, args.key)
    store.delete(args.key)
    if existed:
        err.write(f"deleted {args.key} from {where(store)}\n")
    else:
        err.write(f"no key named {args.key!r} in {where(store)}; nothing to delete\n")
    return 0


def cmd_list(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    store = open_store(args)
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
        err.write(f"no keys in {where(store)}\n")
        return 0
    width = max(len("NAME"), *(len(r["name"]) for r in rows))
    ns_width = max(len("NAMESPACE"), *(len(r["namespace"]) for r in rows))
    out.write(f"{'NAME':<{width}}  {'NAMESPACE':<{ns_width}}  BACKEND\n")
    for row in rows:
        out.write(f"{row['name']:<{width}}  {row['namespace']:<{ns_width}}  {row['backend']}\n")
    err.write(f"{len(rows)} key(s); backend location: {store.backend_object.location}\n")
    return 0


def cmd_delete_all(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    store = open_store(args)
    names = store.keys()
    if not names:
        err.write(f"no keys in {where(store)}; nothing to delete\n")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageProblem(
                f"this would delete {len(names)} key(s) in {where(store)}; "
                "pass --yes to confirm when not at a terminal."
            )
        err.write(f"Delete all {len(names)} key(s) in {where(store)}? [y/N] ")
        err.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            err.write("nothing deleted\n")
            return 1
    store.delete_all()
    err.write(f"deleted {len(names)} key(s) from {where(store)}\n")
    return 0


def cmd_migrate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.source == args.target:
        raise UsageProblem("--from and --to name the same backend.")
    source = open_store(args, backend=args.source)
    target = open_store(args, backend=args.target)
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
    "write": Command(_add_write, cmd_write),
    "read": Command(_add_read, cmd_read),
    "delete": Command(_add_delete, cmd_delete),
    "list": Command(_add_list, cmd_list),
    "delete-all": Command(_add_delete_all, cmd_delete_all),
    "migrate": Command(_add_migrate, cmd_migrate),
}
