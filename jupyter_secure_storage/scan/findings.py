"""Findings, the scanner that combines detectors, and walking notebooks and JSON.

One scanner serves three front ends -- the Jupyter Server pre-save hook, the ``scan``
command and the pre-commit hook -- so they agree on what is a secret. Detectors are
small objects with ``find(text) -> list[Finding]``: known stored values (keyed
fingerprints, :mod:`jupyter_secure_storage.scan.known`) and token formats
(:mod:`jupyter_secure_storage.scan.patterns`). A finding carries where and what, never
the matched text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

STORED = "stored-value"


@dataclass(frozen=True)
class Finding:
    """One secret found in a text: where it is and what it is. Never the text itself."""

    kind: str  # STORED, or a pattern id such as "openai-api-key"
    start: int  # character offsets in the text that was scanned
    end: int
    name: str | None = None  # the key a stored value is stored under
    encoding: str | None = None  # how a stored value appeared: literal, base64, ...
    path: str = ""  # set by file walkers
    cell: int | None = None  # notebook cell index
    where: str = ""  # e.g. "source", "outputs[0].text", "metadata.widgets"
    line: int = 0  # 1-based, in the scanned text
    column: int = 0

    @property
    def marker(self) -> str:
        """What the secret is replaced by when scrubbed."""
        if self.kind == STORED:
            return f"[secret:{self.name}]" if self.name else "[secret]"
        return f"[redacted:{self.kind}]"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"path": self.path, "kind": self.kind, "line": self.line}
        if self.cell is not None:
            data["cell"] = self.cell
        if self.where:
            data["where"] = self.where
        if self.name:
            data["name"] = self.name
        if self.encoding:
            data["encoding"] = self.encoding
        data["column"] = self.column
        return data


class Detector(Protocol):
    def find(self, text: str) -> list[Finding]: ...


def find_many(detector: Detector, texts: list[str]) -> list[list[Finding]]:
    """``detector.find`` over many texts: in one call where the detector batches
    (``find_many``), which saves the per-call cost of a vectorised matcher on the many
    short strings of a notebook."""
    batched = getattr(detector, "find_many", None)
    if batched is not None:
        return list(batched(texts))
    return [detector.find(text) for text in texts]


@dataclass
class Scanner:
    """Runs every detector over a text; merges overlapping findings; scrubs."""

    detectors: list[Detector] = field(default_factory=list)

    def scan_text(self, text: str) -> list[Finding]:
        return self.scan_texts([text])[0]

    def scan_texts(
        self, texts: list[str], encoded: list[bool] | None = None
    ) -> list[list[Finding]]:
        """Findings per text. ``encoded[i]`` marks base64 media (an image in an output,
        an attachment): only exact detectors (stored values, confirmed by HMAC) look
        there -- a token *format* matches random base64 by chance, and scrubbing it
        would break the image for nothing."""
        per_text: list[list[Finding]] = [[] for _ in texts]
        for detector in self.detectors:
            if encoded is not None and not getattr(detector, "exact", False):
                chosen = [i for i, media in enumerate(encoded) if not media]
                results = find_many(detector, [texts[i] for i in chosen])
                for i, more in zip(chosen, results, strict=True):
                    per_text[i].extend(more)
                continue
            for found, more in zip(per_text, find_many(detector, texts), strict=True):
                found.extend(more)
        return [
            _with_positions(text, _merge(found))
            for text, found in zip(texts, per_text, strict=True)
        ]

    def scrub_text(self, text: str) -> tuple[str, list[Finding]]:
        findings = self.scan_text(text)
        return apply_markers(text, findings), findings

    # --- structured documents ------------------------------------------------------------

    def scan_json(self, document: Any, scrub: bool = False) -> list[Finding]:
        """Every string in a JSON document (dict keys included); scrubbed in place if asked.

        nbformat stores multi-line strings as lists of lines: those are joined before
        scanning, so a secret spanning lines (a PEM key) is found whole. All strings are
        scanned in one batch.
        """
        slots: list[_Slot] = []
        _collect(document, "", slots)
        results = self.scan_texts(
            [slot.text for slot in slots], [_is_media(slot.where) for slot in slots]
        )
        findings: list[Finding] = []
        for slot, found in zip(slots, results, strict=True):
            findings.extend(replace(f, where=slot.where) for f in found)
        if scrub:
            # In collection order: a value is replaced under its old key, then the key.
            for slot, found in zip(slots, results, strict=True):
                if found:
                    slot.put(apply_markers(slot.text, found))
        return findings

    def scan_notebook(self, notebook: dict[str, Any], scrub: bool = False) -> list[Finding]:
        findings: list[Finding] = []
        for index, cell in enumerate(notebook.get("cells", [])):
            for finding in self.scan_json(cell, scrub):
                findings.append(replace(finding, cell=index))
        metadata = notebook.get("metadata")
        if metadata is not None:
            findings.extend(
                replace(f, where="metadata" + ("." + f.where if f.where else ""))
                for f in self.scan_json(metadata, scrub)
            )
        return findings


def _merge(findings: Iterable[Finding]) -> list[Finding]:
    """Overlapping findings become one; a stored value wins over a pattern (it has a name)."""
    ordered = sorted(findings, key=lambda f: (f.start, -(f.end - f.start), f.kind != STORED))
    merged: list[Finding] = []
    for finding in ordered:
        if merged and finding.start < merged[-1].end:
            last = merged[-1]
            keeper = last if last.kind == STORED or finding.kind != STORED else finding
            merged[-1] = replace(keeper, start=last.start, end=max(last.end, finding.end))
        else:
            merged.append(finding)
    return merged


def _with_positions(text: str, findings: list[Finding]) -> list[Finding]:
    if not findings:
        return findings
    positioned = []
    line, line_start, scanned = 1, 0, 0
    for finding in findings:
        while True:
            newline = text.find("\n", scanned, finding.start)
            if newline == -1:
                break
            line, line_start, scanned = line + 1, newline + 1, newline + 1
        positioned.append(replace(finding, line=line, column=finding.start - line_start + 1))
    return positioned


# Output and attachment mime types whose strings are base64 of binary data.
_MEDIA_PREFIXES = ("image/", "audio/", "video/", "font/")
_MEDIA_TYPES = {"application/pdf", "application/octet-stream", "application/zip"}
_TEXT_MEDIA = {"image/svg+xml"}


def _is_media(where: str) -> bool:
    mime = where.rsplit(".", 1)[-1]
    if mime in _TEXT_MEDIA:
        return False
    return mime in _MEDIA_TYPES or mime.startswith(_MEDIA_PREFIXES)


def apply_markers(text: str, findings: list[Finding]) -> str:
    """``text`` with each finding (sorted, not overlapping) replaced by its marker."""
    if not findings:
        return text
    pieces, position = [], 0
    for finding in findings:
        pieces.append(text[position : finding.start])
        pieces.append(finding.marker)
        position = finding.end
    pieces.append(text[position:])
    return "".join(pieces)


@dataclass
class _Slot:
    where: str
    text: str
    put: Callable[[str], None]


def _collect(value: Any, where: str, slots: list[_Slot]) -> None:
    """The strings of a JSON document, each with a way to replace it in place."""
    if isinstance(value, list):
        if value and all(isinstance(item, str) for item in value):
            lines = value

            def put_lines(new: str) -> None:
                lines[:] = new.splitlines(keepends=True)

            slots.append(_Slot(where, "".join(value), put_lines))
            return
        for index, item in enumerate(value):
            if isinstance(item, str):
                slots.append(_Slot(f"{where}[{index}]", item, _setter(value, index)))
            else:
                _collect(item, f"{where}[{index}]", slots)
        return
    if isinstance(value, dict):
        for key in list(value):
            child = f"{where}.{key}" if where else str(key)
            item = value[key]
            if isinstance(item, str):
                slots.append(_Slot(child, item, _setter(value, key)))
            else:
                _collect(item, child, slots)
            if isinstance(key, str):
                slots.append(_Slot(child + "(key)", key, _key_setter(value, key)))


def _setter(container: Any, index: Any) -> Callable[[str], None]:
    def put(new: str) -> None:
        container[index] = new

    return put


def _key_setter(mapping: dict[str, Any], key: str) -> Callable[[str], None]:
    def put(new: str) -> None:
        mapping[new] = mapping.pop(key)

    return put
