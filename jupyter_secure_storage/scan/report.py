"""Reporting findings: a table for people, JSON for scripts, SARIF 2.1.0 for code scanning.

No format ever holds a matched value. Each finding carries the SHA-256 of its match
(``fingerprint``), which is what an allowlist names (:mod:`.allowlist`).

SARIF: one rule per kind that was found, one result per finding, a physical location
with ``region.startLine``/``startColumn``. For a notebook those are the line and column
inside the cell's text (the JSON file's own lines mean nothing to a reader); the cell
and the place in it (``source``, ``outputs[0].text``) are in the message and in a
logical location. ``partialFingerprints`` lets code scanning track a finding across runs.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any, TextIO

from .._version import __version__
from .findings import STORED, Finding
from .patterns import PATTERNS

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://github.com/jupyter-secure-storage/jupyter-secure-storage"
_DESCRIPTIONS = {pattern.kind: pattern.description for pattern in PATTERNS}
_DESCRIPTIONS[STORED] = "a value kept in jupyter-secure-storage, in one of its encodings"


def finding_json(finding: Finding) -> dict[str, Any]:
    data = finding.to_json()
    digest = getattr(finding, "fingerprint", "")
    if digest:
        data["fingerprint"] = digest
    return data


def _place(finding: Finding) -> str:
    if finding.cell is not None:
        return f"cell {finding.cell}" + (f" {finding.where}" if finding.where else "")
    return finding.where


def write_table(findings: Sequence[Finding], out: TextIO) -> None:
    rows = [("PATH", "LINE", "CELL", "KIND", "NAME")]
    for finding in findings:
        cell = "" if finding.cell is None else str(finding.cell)
        if finding.cell is not None and finding.where:
            cell += f" {finding.where}"
        elif finding.where:
            cell = finding.where
        name = finding.name or ""
        if finding.encoding and finding.encoding != "literal":
            name += f" ({finding.encoding})"
        rows.append((finding.path, str(finding.line), cell, finding.kind, name))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [value.ljust(widths[i]) for i, value in enumerate(row[:4])]
        out.write("  ".join([*cells, row[4]]).rstrip() + "\n")


def write_json(findings: Sequence[Finding], out: TextIO) -> None:
    json.dump([finding_json(f) for f in findings], out, indent=1, ensure_ascii=False)
    out.write("\n")


def _message(finding: Finding) -> str:
    if finding.kind == STORED:
        what = f"The stored secret {finding.name or '(unnamed)'}"
        if finding.encoding and finding.encoding != "literal":
            what += f" ({finding.encoding})"
    else:
        what = f"A {_DESCRIPTIONS.get(finding.kind, finding.kind)}"
    place = _place(finding)
    return f"{what} is in this file" + (f" ({place})" if place else "") + "."


def _uri(path: str) -> str:
    """A relative path as a relative URI reference; an absolute one as a file: URI."""
    pure = PurePath(path)
    if pure.is_absolute():
        return Path(path).as_uri()
    return urllib.parse.quote(pure.as_posix())


def sarif(findings: Sequence[Finding]) -> dict[str, Any]:
    kinds = sorted({finding.kind for finding in findings})
    rule_index = {kind: index for index, kind in enumerate(kinds)}
    rules = [
        {
            "id": kind,
            "name": "".join(part.capitalize() for part in kind.split("-")),
            "shortDescription": {"text": _DESCRIPTIONS.get(kind, kind)},
            "fullDescription": {
                "text": f"{_DESCRIPTIONS.get(kind, kind)}. Remove it from the file (scan "
                "--fix), keep it in jupyter-secure-storage, and rotate it if it was shared."
            },
            "defaultConfiguration": {"level": "error"},
            "properties": {"tags": ["security", "secret"]},
        }
        for kind in kinds
    ]
    results = []
    for finding in findings:
        location: dict[str, Any] = {
            "physicalLocation": {
                "artifactLocation": {"uri": _uri(finding.path)},
                "region": {
                    "startLine": max(finding.line, 1),
                    "startColumn": max(finding.column, 1),
                },
            }
        }
        place = _place(finding)
        if place:
            location["logicalLocations"] = [{"name": place, "kind": "member"}]
        result: dict[str, Any] = {
            "ruleId": finding.kind,
            "ruleIndex": rule_index[finding.kind],
            "level": "error",
            "message": {"text": _message(finding)},
            "locations": [location],
        }
        digest = getattr(finding, "fingerprint", "")
        if digest:
            result["partialFingerprints"] = {"matchSha256/v1": digest}
        results.append(result)
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "jupyter-secure-storage",
                        "version": __version__,
                        "informationUri": INFORMATION_URI,
                        "rules": rules,
                    }
                },
                "results": results,
            }
        ],
    }


def write_sarif(findings: Sequence[Finding], out: TextIO) -> None:
    json.dump(sarif(findings), out, indent=1, ensure_ascii=False)
    out.write("\n")


WRITERS = {"table": write_table, "json": write_json, "sarif": write_sarif}
