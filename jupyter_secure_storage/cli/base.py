"""What every command group shares: the program's name, how a usage mistake is raised,
the ``--backend``/``--namespace`` options, and opening the store they name."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from ..storage import SecureStorage, validate_key

PROG = "jupyter-secure-storage"


class UsageProblem(Exception):
    """A mistake in how the command was called (exit code 2)."""


Handler = Callable[[argparse.Namespace, TextIO, TextIO], int]


@dataclass(frozen=True)
class Command:
    """One subcommand: how its parser is added, and the function that runs it."""

    add_parser: Callable[[Any, argparse.ArgumentParser], None]
    run: Handler


def common_options() -> argparse.ArgumentParser:
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


def open_store(args: argparse.Namespace, backend: str | None = None) -> SecureStorage:
    """The store the command's ``--backend``/``--namespace`` name (``backend`` overrides)."""
    options: dict[str, Any] = {}
    chosen = backend if backend is not None else getattr(args, "backend", None)
    if chosen is not None:
        options["backend"] = chosen
    if getattr(args, "namespace", None) is not None:
        options["namespace"] = args.namespace
    return SecureStorage(**options)


def where(store: SecureStorage) -> str:
    """The namespace, backend and location, as messages name them."""
    return f"namespace {store.namespace!r}, {store.backend_name} ({store.backend_object.location})"


def contains(store: SecureStorage, key: str) -> bool:
    """Whether ``key`` is stored (validating it, and unlocking the store).

    On a paired device a read would ask its owner to approve, and carry the value over
    the bridge, only to learn that it exists: the device's list of names says so without
    either.
    """
    if store.backend_name == "device":
        return validate_key(key) in store.keys()
    return store.contains_key(key)
