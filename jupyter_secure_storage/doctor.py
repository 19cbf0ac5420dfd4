"""``doctor``: every backend's state here -- usable or not, why, and how to fix it.

Shared by ``jupyter-secure-storage doctor`` and, later, ``%secure_status``. It
never prints or returns a value; for the passphrase variable it says only
whether it is set.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from .backends.base import Diagnosis, available_backends, load_backend_class
from .errors import SecureStorageError
from .paths import ENV_BACKEND, ENV_PASSPHRASE, ENV_VAULT
from .storage import SecureStorage


@dataclass
class Report:
    """What ``doctor`` found."""

    backends: list[Diagnosis]
    chosen: str
    chosen_reason: str
    chosen_usable: bool
    environment: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen,
            "chosen_reason": self.chosen_reason,
            "chosen_usable": self.chosen_usable,
            "environment": self.environment,
            "backends": [asdict(d) | {"details": list(d.details)} for d in self.backends],
        }


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def _environment() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.release()}",
        "jupyter-secure-storage": _package_version("jupyter-secure-storage"),
        "keyring": _package_version("keyring"),
        "cryptography": _package_version("cryptography"),
        ENV_BACKEND: os.environ.get(ENV_BACKEND) or "(unset)",
        ENV_VAULT: os.environ.get(ENV_VAULT) or "(unset)",
        # Only whether it is set: never its value, not even its length.
        ENV_PASSPHRASE: "set" if os.environ.get(ENV_PASSPHRASE) else "(unset)",
        "PYTHON_KEYRING_BACKEND": os.environ.get("PYTHON_KEYRING_BACKEND") or "(unset)",
        "DBUS_SESSION_BUS_ADDRESS": "set"
        if os.environ.get("DBUS_SESSION_BUS_ADDRESS")
        else "(unset)",
    }


def examine(store: SecureStorage) -> Report:
    """Diagnose every installed backend, and the one ``store`` would use."""
    diagnoses = []
    for name in sorted(available_backends()):
        try:
            backend = load_backend_class(name)(parent=store)
            diagnoses.append(backend.diagnose())
        except SecureStorageError as error:
            diagnoses.append(Diagnosis(name, False, error.cause, error.remedy))
        except Exception as error:
            diagnoses.append(
                Diagnosis(name, False, f"diagnosis failed ({type(error).__name__})", "")
            )
    try:
        choice = store.backend_choice
        chosen, reason = choice.name, choice.reason
        chosen_usable = next((d.usable for d in diagnoses if d.backend == chosen), True)
    except SecureStorageError as error:
        chosen, reason, chosen_usable = str(store.backend), error.cause, False
    return Report(diagnoses, chosen, reason, chosen_usable, _environment())


def render(report: Report, stream: Any = None) -> None:
    """Write the report for a person."""
    out = stream or sys.stdout
    mark = {True: "ok", False: "--"}
    out.write("Backends:\n")
    for diagnosis in report.backends:
        out.write(f"  [{mark[diagnosis.usable]}] {diagnosis.backend:<9} {diagnosis.summary}\n")
        for detail in diagnosis.details:
            out.write(f"       {'':<9} {detail}\n")
        if diagnosis.remedy:
            out.write(f"       {'':<9} fix: {diagnosis.remedy}\n")
    state = "usable" if report.chosen_usable else "NOT usable"
    out.write(f"\nIn use: {report.chosen} ({state}) -- {report.chosen_reason}\n")
    out.write("\nEnvironment:\n")
    for name, value in report.environment.items():
        out.write(f"  {name}: {value}\n")
