"""The paired-device bridge's commands (docs/pairing.md): ``relay``, ``pair``, ``devices``,
``device``.

``pair`` shows an offer and pairs a device, ``devices`` lists and revokes paired devices,
``device`` runs the reference device (the phone side, in Python), ``relay`` the relay
between them (it has its own flags and logging: docs/relay.md).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from ..errors import PairingError, SecureStorageError
from ..storage import validate_key
from .base import PROG, Command, UsageProblem

if TYPE_CHECKING:
    from ..bridge.host import HostKeystore

T = TypeVar("T")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a number of seconds") from None
    if not 0 < value <= 86_400:
        raise argparse.ArgumentTypeError("must be more than 0 and at most 86400 seconds")
    return value


def _add_relay(commands: Any, common: argparse.ArgumentParser) -> None:
    # Listed in --help only: `relay` is dispatched before parsing (see relay_command).
    commands.add_parser("relay", add_help=False, help="run the paired-device relay (docs/relay.md)")


def _add_pair(commands: Any, common: argparse.ArgumentParser) -> None:
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


def _add_devices(commands: Any, common: argparse.ArgumentParser) -> None:
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


def _add_device(commands: Any, common: argparse.ArgumentParser) -> None:
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
    from ..bridge.qr import check_label, check_relay_url, default_label

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
    from ..bridge.qr import terminal_text, write_offer_file

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
        from ..bridge.protocol import passkey_problem

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
    from ..bridge.qr import run_pairing_step

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
    from ..bridge.host import HostKeystore, PairingAttempt
    from ..bridge.qr import remove_offer_file, run_pairing_step

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
    from ..bridge.host import HostKeystore

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
    from ..bridge.backend import DeviceBackend

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
    from ..bridge.device import POLICIES

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
    from ..bridge.protocol import ProtocolError, decode_offer

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
    from ..bridge.noise import NoiseError
    from ..bridge.protocol import ProtocolError
    from ..bridge.relay_client import RelayError

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
    from ..bridge.device import AutoApprover, DeviceState, ReferenceDevice, TerminalApprover
    from ..bridge.protocol import ProtocolError, decode_offer
    from ..config_file import load_config_files

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


def relay_command(arguments: Sequence[str]) -> int:
    """``relay ...``: the relay parses its own arguments and sets up its own logging."""
    from ..bridge.relay import relay_command as run_relay

    return run_relay(list(arguments))


def _relay_needs_dispatch(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    # Reached only when options come before `relay`; the relay takes its own instead.
    raise UsageProblem(f"`relay` takes its own options: run `{PROG} relay --help`.")


COMMANDS = {
    "relay": Command(_add_relay, _relay_needs_dispatch),
    "pair": Command(_add_pair, cmd_pair),
    "devices": Command(_add_devices, cmd_devices),
    "device": Command(_add_device, cmd_device),
}
