"""``doctor``: every backend's state here, why, and how to fix it (text or JSON)."""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

from ..doctor import examine, render
from .base import Command, open_store


def _add_doctor(commands: Any, common: argparse.ArgumentParser) -> None:
    doctor = commands.add_parser(
        "doctor", parents=[common], help="show every backend's state and how to fix it"
    )
    doctor.add_argument("--format", choices=["text", "json"], default="text")


def cmd_doctor(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    report = examine(open_store(args))
    if args.format == "json":
        json.dump(report.as_json(), out, indent=2)
        out.write("\n")
    else:
        render(report, out)
    return 0 if report.chosen_usable else 1


COMMANDS = {"doctor": Command(_add_doctor, cmd_doctor)}
