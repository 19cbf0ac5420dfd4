"""``jupyter-secure-storage scan PATH...``: find secrets in files and trees (docs/scanning.md).

Two detectors: the values kept in the store (by keyed fingerprint; no value is read) and
well-known token formats. The store is opened without ever prompting -- the scan runs in
pre-commit hooks and CI, where a prompt would hang or be answered by nobody -- so a vault
that needs a passphrase nobody gave is skipped with a one-line warning naming the remedy,
and the scan goes on with the token formats. Exit codes: 0 nothing found, 1 findings,
2 usage mistakes and errors (an unreadable file, a fix that was refused).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, TextIO

from ..errors import SecureStorageError
from ..scan.allowlist import Allowlist
from ..scan.files import DEFAULT_MAX_SIZE, LARGEST_MAX_SIZE, FileScanner, Progress
from ..scan.findings import Detector, Scanner
from ..scan.patterns import PatternDetector
from ..scan.report import WRITERS
from .base import Command

PROG = "jupyter-secure-storage scan"


def _size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a whole number of bytes") from None
    if not 0 < value <= LARGEST_MAX_SIZE:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most {LARGEST_MAX_SIZE}")
    return value


def _add_scan(commands: Any, common: argparse.ArgumentParser) -> None:
    scan = commands.add_parser(
        "scan",
        parents=[common],
        help="find secrets (stored values and token formats) in files; exit 1 if any",
        description="Scan notebooks, scripts, JSON and any text, or whole trees (honouring "
        ".gitignore), for values kept in the store and well-known token formats. Never "
        "shows a value. Exit codes: 0 nothing found, 1 findings, 2 usage or errors. "
        "See docs/scanning.md.",
    )
    scan.add_argument("paths", nargs="+", metavar="PATH", type=Path)
    scan.add_argument("--format", choices=sorted(WRITERS), default="table")
    scan.add_argument(
        "--fix",
        action="store_true",
        help="replace each secret in place by a marker ([secret:NAME], [redacted:KIND])",
    )
    scan.add_argument(
        "--no-stored",
        action="store_true",
        help="do not open the store: look for token formats only",
    )
    scan.add_argument(
        "--allowlist",
        type=Path,
        metavar="FILE",
        help="the allowlist file (default: .jss-allowlist here or at the git root)",
    )
    scan.add_argument(
        "--max-size",
        type=_size,
        default=DEFAULT_MAX_SIZE,
        metavar="BYTES",
        help=f"skip (and report) files larger than this (default {DEFAULT_MAX_SIZE})",
    )


def _stored_values(args: argparse.Namespace, err: TextIO) -> Detector | None:
    """The stored-value detector, if the store opens without a prompt; else a warning."""
    from ..config_file import load_config_files
    from ..scan.known import KnownValues
    from ..storage import SecureStorage

    config = load_config_files()
    config.VaultBackend.prompt = False  # never prompt: this may run in a pre-commit hook
    options: dict[str, Any] = {"config": config}
    if getattr(args, "backend", None):
        options["backend"] = args.backend
    try:
        return KnownValues.from_store(SecureStorage(**options))
    except SecureStorageError as error:
        remedy = f" Fix: {error.remedy}" if error.remedy else ""
        err.write(
            f"{PROG}: warning: stored values not checked, token formats only. "
            f"{error.cause}{remedy} (Or pass --no-stored to skip the store.)\n"
        )
        return None


def _silence(stream: TextIO) -> None:
    """Point a closed pipe at /dev/null so that Python's flush at exit stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def cmd_scan(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    missing = [index for index, path in enumerate(args.paths, 1) if not path.exists()]
    if missing:
        # Not echoed: an argument that is not a path may be a value typed by mistake.
        err.write(
            f"{PROG}: {len(missing)} of the paths given do not exist (not shown; the first "
            f"is argument {missing[0]} after `scan`). If a secret was typed there, rotate it "
            "and remove it from your shell history.\n"
        )
        return 2
    try:
        allowlist = Allowlist.load(args.allowlist) if args.allowlist else Allowlist.discover()
    except SecureStorageError as error:
        err.write(f"{PROG}: error: {error.cause}\n  fix: {error.remedy}\n")
        return 2
    detectors: list[Detector] = []
    if not args.no_stored:
        stored = _stored_values(args, err)
        if stored is not None:
            detectors.append(allowlist.filter(stored))
    detectors.append(allowlist.filter(PatternDetector()))
    scanner = FileScanner(Scanner(detectors), allowlist, args.max_size, fix=args.fix)
    result = scanner.scan_paths(args.paths, progress=lambda total: Progress(total, err))

    if result.findings or args.format != "table":
        try:
            WRITERS[args.format](result.findings, out)
            out.flush()
        except BrokenPipeError:
            # The reader went away (`scan ... | head`): the findings still count.
            _silence(out)
    for skipped in result.skipped:
        err.write(f"{PROG}: skipped {skipped.path}: {skipped.reason} (see --max-size)\n")
    for problem in result.errors:
        err.write(f"{PROG}: error: {problem.error.cause}\n")
        if problem.error.remedy:
            err.write(f"  fix: {problem.error.remedy}\n")
    files = f"{result.files} file(s), {result.bytes / 1e6:.1f} MB"
    if args.fix and result.fixed:
        err.write(
            f"{PROG}: scrubbed {len(result.findings)} finding(s) in {len(result.fixed)} "
            f"file(s) ({files} scanned). Rotate any secret that was committed or shared.\n"
        )
    elif result.findings:
        err.write(f"{PROG}: {len(result.findings)} finding(s) in {files}.\n")
    else:
        err.write(f"{PROG}: no secrets found in {files}.\n")
    if result.errors:
        return 2
    return 1 if result.findings else 0


COMMANDS = {"scan": Command(_add_scan, cmd_scan)}
