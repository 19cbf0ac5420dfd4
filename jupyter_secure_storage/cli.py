"""``jupyter-secure-storage`` (also ``jupyter secure-storage``): the command line front end.

Values never travel in argv: ``write`` prompts without echo (twice) or reads one
line from stdin with ``--stdin``; ``read`` prints only to a pipe unless
``--reveal`` is given. Exit codes: 0 success, 1 failure or not found, 2 usage.

The paired-device bridge (docs/pairing.md): ``pair`` shows an offer and pairs a device,
``devices`` lists and revokes paired devices, ``device`` runs the reference device (the
phone side, in Python), ``relay`` the relay between them.

``scan`` finds stored values and token formats in files (docs/scanning.md); its handler
lives in :mod:`jupyter_secure_storage.scan.cli_scan`.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from . import passphrase as prompting
from ._version import __version__
from .doctor import examine, render
from .errors import InvalidKeyError, PairingError, SecureStorageError
from .scan.cli_scan import add_scan_command, cmd_scan
from .storage import SecureStorage, validate_key

if TYPE_CHECKING:
    from .bridge.host import HostKeystore

PROG = "jupyter-secure-storage"
T = TypeVar("T")


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

    commands.add_parser("relay", add_help=False, help="run the paired-device relay (docs/relay.md)")

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

    _add_bridge_commands(commands)
    add_scan_command(commands, common)
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a number of seconds") from None
    if not 0 < value <= 86_400:
        raise argparse.ArgumentTypeError("must be more than 0 and at most 86400 seconds")
    return value


def _add_bridge_commands(commands: Any) -> None:
    pair = commands.add_parser(
        "pair",
        help="pair a device (a phone, or `device`) through a relay; shows a QR code",
        description="Show a pairing offer (QR code) for a device to scan, wait for it, and "
        "compare the confirmation code. The offer holds a one-time secret: it is shown only "
        "on a terminal, or written to --offer-file for scripts. See docs/pairing.md.",
    )
    pair.add_argument(
        "--relay", required=True, metavar="URL", help="the relay's ws:// or wss:// URL"
    )
    pair.add_argument("--label", help="how the device shows this computer (default: user@hostname)")
    pair.add_argument(
        "--offer-file",
        metavar="PATH",
        help="write the offer URI to PATH (mode 0600) instead of showing it; "
        "removed when pairing ends",
    )
    pair.add_argument(
        "--yes",
        action="store_true",
        help="accept the confirmation code without asking (tests; or when the code is "
        "compared another way)",
    )
    pair.add_argument(
        "--timeout",
        type=_seconds,
        default=600.0,
        metavar="SECONDS",
        help="how long to wait for the device (default 600; the offer expires after at most 600)",
    )

    devices = commands.add_parser("devices", help="list or revoke paired devices")
    actions = devices.add_subparsers(dest="devices_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="the paired devices (never keys)")
    listing.add_argument("--format", choices=["table", "json"], default="table")
    revoke = actions.add_parser(
        "revoke", help="unpair a device: tell it to forget this computer, then forget it here"
    )
    revoke.add_argument("name", nargs="?", help="the device's name (see `devices list`)")
    revoke.add_argument("--all", action="store_true", help="revoke every paired device")
    revoke.add_argument(
        "--timeout",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for the device's answer (default 10); past it the device "
        "is forgotten here anyway",
    )

    device = commands.add_parser(
        "device",
        help="run the reference device: keeps values for paired computers (tests, demos)",
        description="The phone side of the bridge, in Python: pair with --offer or "
        "--offer-file, then answer paired computers until SIGINT/SIGTERM. Values are kept "
        "in an encrypted vault under --state (passphrase: "
        "$JUPYTER_SECURE_STORAGE_DEVICE_PASSPHRASE, else a prompt); each read asks here "
        "unless --auto-approve.",
    )
    device.add_argument(
        "--state", required=True, metavar="DIR", help="the device's own directory (its vault)"
    )
    offer = device.add_mutually_exclusive_group()
    offer.add_argument(
        "--offer",
        metavar="URI",
        help="pair with this offer first ('-': read it from stdin, which keeps it out of "
        "the process list)",
    )
    offer.add_argument(
        "--offer-file",
        metavar="PATH",
        help="pair with the offer in PATH first, waiting up to --timeout for the file",
    )
    device.add_argument(
        "--auto-approve",
        action="store_true",
        help="approve every request without asking (tests and demos only)",
    )
    device.add_argument(
        "--name",
        default="reference device",
        help="how computers will name this device (default: 'reference device')",
    )
    device.add_argument(
        "--policy",
        action="append",
        default=[],
        metavar="KEY=POLICY",
        help="set a key's policy before serving: ask (default: every read asks), session "
        "(one approval lasts 15 minutes) or never (the value never leaves the device); "
        "repeatable",
    )
    device.add_argument(
        "--namespace",
        default=argparse.SUPPRESS,
        help="the namespace of the keys given to --policy (default: 'default')",
    )
    device.add_argument(
        "--timeout",
        type=_seconds,
        default=600.0,
        metavar="SECONDS",
        help="how long to wait for the offer file and the computer (default 600)",
    )


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


def _contains(store: SecureStorage, key: str) -> bool:
    """Whether ``key`` is stored (validating it, and unlocking the store).

    On a paired device a read would ask its owner to approve, and carry the value over
    the bridge, only to learn that it exists: the device's list of names says so without
    either.
    """
    if store.backend_name == "device":
        return validate_key(key) in store.keys()
    return store.contains_key(key)


# --- commands --------------------------------------------------------------------------------


def cmd_write(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    store = _store(args)
    key = args.key
    _contains(store, key)  # validates the key and unlocks the store before asking for a value
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
    replaced = _contains(store, key)
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
    existed = _contains(store, args.key)
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


# --- the paired-device bridge (docs/pairing.md) ----------------------------------------------


def _no_backend_option(args: argparse.Namespace) -> None:
    if getattr(args, "backend", None) is not None:
        raise UsageProblem(
            f"--backend does not apply to `{args.command}`: pairing records live in the OS "
            "keystore when one is usable, else in the vault (set by config or "
            "$JUPYTER_SECURE_STORAGE_BACKEND), where the device backend looks for them."
        )


def _when(stamp: float) -> str:
    """ISO 8601 with this computer's UTC offset, e.g. 2025-06-01T14:03:12+02:00."""
    return datetime.fromtimestamp(stamp, tz=timezone.utc).astimezone().isoformat("T", "seconds")


def _pair_arguments(args: argparse.Namespace, out: TextIO) -> tuple[str, str]:
    """The relay URL and label, after refusing what cannot pair safely here."""
    from .bridge.qr import check_label, check_relay_url, default_label

    _no_backend_option(args)
    try:
        relay = check_relay_url(args.relay)
        label = check_label(args.label if args.label is not None else default_label())
    except ValueError as error:
        raise UsageProblem(str(error)) from None
    if not args.yes and not sys.stdin.isatty():
        raise UsageProblem(
            "pairing asks you to compare a confirmation code, and stdin is not a terminal; "
            "run it at a terminal, or pass --yes only when the code is compared another way "
            "(--yes alone trusts whichever device answers the offer first)."
        )
    if args.offer_file is None and not out.isatty():
        raise UsageProblem(
            "the offer holds a one-time secret, so it is shown only on a terminal, not "
            "written to a pipe or a log; pass --offer-file PATH to hand it to a script."
        )
    return relay, label


def _show_offer(offer: Any, offer_file: Path | None, out: TextIO, err: TextIO) -> None:
    from .bridge.qr import terminal_text, write_offer_file

    uri, label = offer.uri, offer.label
    until = time.strftime("%H:%M:%S", time.localtime(offer.expires))
    if offer_file is None:
        # The code holds the web companion's link (a phone's camera opens it); the line
        # below it is the offer URI for the reference device or for copying.
        out.write(terminal_text(offer.companion_link()))
        out.write(f"{uri}\n")
        out.flush()
        err.write(
            f"Scan the code with the device, or give it the offer above. It works once "
            f"and expires at {until}. This computer shows itself as {label!r}.\n"
        )
        from .bridge.protocol import passkey_problem

        problem = passkey_problem(offer.relay)
        if problem:
            err.write(f"Note: {problem}\n")
        return
    try:
        write_offer_file(offer_file, uri)
    except OSError as error:
        raise PairingError(
            f"Cannot write the offer file {offer_file}: {error.strerror}.",
            "Choose a writable path for --offer-file.",
        ) from None
    err.write(
        f"offer written to {offer_file} (mode 0600; it works once, expires at {until}, "
        "and the file is removed when pairing ends)\n"
    )


def _confirmed(args: argparse.Namespace, attempt: Any, err: TextIO) -> bool:
    from .bridge.qr import run_pairing_step

    if args.yes:
        err.write("confirmed without asking (--yes)\n")
        return True
    err.write("Does the device show the same code? [y/N] ")
    err.flush()
    try:
        return sys.stdin.readline().strip().lower() in ("y", "yes")
    except KeyboardInterrupt:
        run_pairing_step(attempt.finish(False), 15)  # tell the device, then stop
        raise


def cmd_pair(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .bridge.host import HostKeystore, PairingAttempt
    from .bridge.qr import remove_offer_file, run_pairing_step

    relay, label = _pair_arguments(args, out)
    keystore = HostKeystore()
    attempt = PairingAttempt(relay, label, keystore, lifetime=int(min(args.timeout, 600)))
    uri = attempt.offer.uri
    offer_file = Path(args.offer_file).expanduser() if args.offer_file else None
    try:
        _show_offer(attempt.offer, offer_file, out, err)
        err.write(f"waiting for a device (at most {args.timeout:g} s; Ctrl-C cancels)...\n")
        err.flush()
        pending = run_pairing_step(attempt.wait_for_device(args.timeout), args.timeout)
    finally:
        if offer_file is not None:
            remove_offer_file(offer_file, uri)
    err.write(f"\nThe device {pending.device_name!r} answered.\n")
    err.write(f"Confirmation code: {pending.code}\n")
    record = run_pairing_step(attempt.finish(_confirmed(args, attempt, err)), 15)
    if record is None:
        err.write(
            "not paired: the code was not confirmed. The device was told; nothing was "
            "stored. If the device showed another code (or none), someone else may have "
            "used the offer: pair again with a new one.\n"
        )
        return 1
    err.write(
        f"paired with {record.name} (via {record.relay}); use it with --backend device, "
        f"or SecureStorage(backend='device'). Pairing keys: {keystore.store.backend_name} "
        f"({keystore.store.backend_object.location})\n"
    )
    return 0


def cmd_devices(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .bridge.host import HostKeystore

    _no_backend_option(args)
    keystore = HostKeystore()
    where = f"{keystore.store.backend_name} ({keystore.store.backend_object.location})"
    if args.devices_command == "list":
        rows = [
            {
                "name": record.name,
                "relay": record.relay,
                "paired_at": _when(record.created),
                "host_label": record.host_label,
            }
            for record in keystore.devices()
        ]
        if args.format == "json":
            json.dump(rows, out, indent=2)
            out.write("\n")
            return 0
        if not rows:
            err.write(f"no device is paired; pairing records: {where}\n")
            return 0
        columns = [("NAME", "name"), ("RELAY", "relay"), ("PAIRED", "paired_at")]
        widths = [max(len(title), *(len(row[field]) for row in rows)) for title, field in columns]
        header = "  ".join(
            f"{title:<{width}}" for (title, _), width in zip(columns, widths, strict=True)
        )
        out.write(f"{header}  HOST LABEL\n")
        for row in rows:
            cells = "  ".join(
                f"{row[field]:<{width}}" for (_, field), width in zip(columns, widths, strict=True)
            )
            out.write(f"{cells}  {row['host_label']}\n")
        err.write(f"{len(rows)} device(s); pairing records: {where}\n")
        return 0
    return _revoke(args, keystore, err)


def _revoke(args: argparse.Namespace, keystore: HostKeystore, err: TextIO) -> int:
    from .bridge.backend import DeviceBackend

    if args.all == bool(args.name):
        raise UsageProblem("say which device to revoke: `devices revoke NAME`, or --all.")
    if args.all:
        names = [record.name for record in keystore.devices()]
        if not names:
            err.write("no device is paired; nothing to revoke\n")
            return 0
    else:
        names = [keystore.device(args.name).name]  # NoPairedDeviceError names the cause
    for name in names:
        try:
            DeviceBackend(device=name, timeout=args.timeout).unpair()
        except SecureStorageError as error:
            keystore.forget(name)
            err.write(
                f"revoked {name} on this computer; the device did not confirm that it forgot "
                f"this computer: {error.cause}\n"
                "  It may still list this computer: remove it on the device too.\n"
            )
            continue
        err.write(f"revoked {name}: the device forgot this computer, and this computer forgot it\n")
    return 0


class _DaemonThreads(concurrent.futures.ThreadPoolExecutor):
    """The device loop's default executor: each call on its own daemon thread.

    The terminal approver waits for a line of stdin on an executor thread; a standard
    pool would keep the process alive after SIGINT/SIGTERM until someone pressed Enter.
    """

    def submit(
        self, fn: Callable[..., T], /, *args: Any, **kwargs: Any
    ) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as error:
                future.set_exception(error)

        threading.Thread(target=run, name="jss-device-prompt", daemon=True).start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        return None


def _policies(args: argparse.Namespace) -> list[tuple[str, str]]:
    from .bridge.device import POLICIES

    wanted = []
    for item in args.policy:
        key, separator, policy = item.rpartition("=")
        if not separator or policy not in POLICIES:
            raise UsageProblem(
                f"--policy takes KEY=POLICY with POLICY one of {', '.join(POLICIES)} "
                "(the argument is not shown)."
            )
        wanted.append((validate_key(key), policy))
    return wanted


async def _until_stopped(stop: asyncio.Event, work: Coroutine[Any, Any, T]) -> T | None:
    """``work``'s result, or None if ``stop`` was set first (``work`` is then cancelled)."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


async def _offer_from_file(path: Path, deadline: float) -> str:
    """Wait for a valid, unexpired offer in ``path`` (a notebook or script writes it later)."""
    from .bridge.protocol import ProtocolError, decode_offer

    while time.monotonic() < deadline:
        try:
            text = path.read_text(encoding="ascii").strip()
            offer, _ = decode_offer(text)
            if not offer.expired():
                return text
        except (OSError, UnicodeDecodeError, ProtocolError):
            pass  # not there yet, or not a whole offer yet
        await asyncio.sleep(0.2)
    raise PairingError(
        f"No valid offer appeared in {path} in time.",
        f"Start `{PROG} pair --relay URL --offer-file {path}` (or %secure_pair with "
        "--offer-file) on the computer, or raise --timeout.",
    )


async def _device_pairs(
    device: Any, args: argparse.Namespace, offer_text: str | None, stop: asyncio.Event
) -> bool:
    """Pair with the offer given (waiting for --offer-file); False if stopped first."""
    from .bridge.noise import NoiseError
    from .bridge.protocol import ProtocolError
    from .bridge.relay_client import RelayError

    deadline = time.monotonic() + args.timeout
    text = offer_text
    if args.offer_file is not None:
        device.say(f"waiting for an offer in {args.offer_file}")
        text = await _until_stopped(
            stop, _offer_from_file(Path(args.offer_file).expanduser(), deadline)
        )
        if text is None:
            return False
    if text is None:
        return True
    try:
        paired = await _until_stopped(
            stop, device.pair(text, max(1.0, deadline - time.monotonic()))
        )
    except RelayError as error:
        raise PairingError(
            f"Cannot pair: {error}.",
            "Check that the relay named in the offer runs and can be reached from here.",
        ) from None
    except (ProtocolError, NoiseError) as error:
        raise PairingError(f"Cannot pair: {error}.", "Pair again, with a new offer.") from None
    return paired is not None


async def _device_main(
    device: Any, args: argparse.Namespace, offer_text: str | None, err: TextIO
) -> int:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(_DaemonThreads())
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    if not await _device_pairs(device, args, offer_text, stop):
        err.write("stopped before pairing\n")
        return 1
    if not device.state.pairings():
        if args.policy:
            device.say("policies saved; no pairing to serve yet")
            return 0
        err.write(f"{PROG} device: no pairing to serve; pair first with --offer or --offer-file\n")
        return 1
    # serve() says "serving N pairing(s) via ..." once subscribed. It notices `stop` only
    # between requests, and a request waiting for an approval holds it: cancel it instead.
    await _until_stopped(stop, device.serve(stop))
    err.write("stopped\n")
    return 0


def cmd_device(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from .bridge.device import AutoApprover, DeviceState, ReferenceDevice, TerminalApprover
    from .bridge.protocol import ProtocolError, decode_offer
    from .config_file import load_config_files

    _no_backend_option(args)
    name = args.name.strip()
    if not name or len(name) > 64:
        raise UsageProblem("--name must be 1-64 characters.")
    policies = _policies(args)
    namespace = getattr(args, "namespace", None) or "default"
    offer_text: str | None = None
    if args.offer is not None:
        offer_text = sys.stdin.readline().strip() if args.offer == "-" else args.offer
        try:
            decode_offer(offer_text)
        except ProtocolError as error:
            raise UsageProblem(f"--offer is not a pairing offer ({error}).") from None

    def say(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    state = DeviceState(Path(args.state).expanduser(), load_config_files())
    approver = AutoApprover() if args.auto_approve else TerminalApprover()
    device = ReferenceDevice(state, approver, name=name, say=say)  # unlocks its vault
    for key, policy in policies:
        state.set_policy(namespace, key, policy)
        say(f"policy for {namespace}/{key}: {policy}")
    if not args.auto_approve and not sys.stdin.isatty():
        err.write(
            f"{PROG} device: stdin is not a terminal, so requests that need approval will be "
            "rejected (pass --auto-approve for tests and demos).\n"
        )
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(_device_main(device, args, offer_text, err))
    finally:
        loop.close()


COMMANDS = {
    "write": cmd_write,
    "read": cmd_read,
    "delete": cmd_delete,
    "list": cmd_list,
    "delete-all": cmd_delete_all,
    "doctor": cmd_doctor,
    "migrate": cmd_migrate,
    "pair": cmd_pair,
    "devices": cmd_devices,
    "device": cmd_device,
    "scan": cmd_scan,
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
