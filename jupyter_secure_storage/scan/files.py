"""Scanning files and trees for secrets; ``--fix`` scrubs them in place, atomically.

What is read: notebooks (``.ipynb``, parsed, so findings name their cell and where in it;
a file that is not valid JSON is read as text), and any other text file (``.json``
included: scanned as text, so line numbers are the file's). Binary files (a NUL byte in
the first 8 KiB) are skipped silently; files over the size cap are skipped and reported.

Directories are walked the way git sees them: ``.git/`` is never entered, and every
``.gitignore`` from the repository's top down to the file applies (deeper files win, the
last matching line of a file wins, ``!`` re-includes), as does ``.git/info/exclude``.
Paths named on the command line are scanned even when ignored, as git does with paths
it is given. Symbolic links met while walking are not followed.

``--fix`` writes the scrubbed file to a temporary file in the same directory, fsyncs it,
gives it the original's mode and renames it over the original (``os.replace``): a reader
sees the old file or the new one, never half of one. A notebook is re-serialised the way
nbformat writes it (``indent=1``, sorted keys, ``ensure_ascii=False``, trailing newline)
and must pass ``nbformat.validate`` first; a JSON file must still parse. Otherwise the
file is left as it was and a :class:`~jupyter_secure_storage.errors.ScrubRefusedError`
is reported.
"""

from __future__ import annotations

import copy
import json
import os
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from pathspec import GitIgnoreSpec

from ..errors import ScanError, ScrubRefusedError
from .allowlist import Allowlist
from .findings import Finding, Scanner

DEFAULT_MAX_SIZE = 10 * 1024 * 1024
# A file is read whole (and a notebook parsed whole): a bound on the memory one file takes.
LARGEST_MAX_SIZE = 1024 * 1024 * 1024
_SNIFF = 8192


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass(frozen=True)
class FileError:
    """A file that could not be scanned or fixed (shown with its cause and remedy)."""

    path: str
    error: ScanError


@dataclass
class ScanResult:
    findings: list[Finding] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    errors: list[FileError] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)
    files: int = 0
    bytes: int = 0


# --- walking -----------------------------------------------------------------------------------


def _repository_top(directory: Path) -> Path | None:
    for candidate in [directory, *directory.parents]:
        if (candidate / ".git").exists():
            return candidate
    return None


class GitIgnoreRules:
    """Whether git would ignore a path, from every ``.gitignore`` above it in its repository."""

    def __init__(self) -> None:
        self._specs: dict[Path, GitIgnoreSpec | None] = {}

    def _spec(self, directory: Path, top: Path) -> GitIgnoreSpec | None:
        if directory not in self._specs:
            lines: list[str] = []
            sources = [directory / ".gitignore"]
            if directory == top:
                sources.insert(0, top / ".git" / "info" / "exclude")
            for source in sources:
                try:
                    lines.extend(source.read_text(encoding="utf-8", errors="replace").splitlines())
                except OSError:
                    continue
            self._specs[directory] = GitIgnoreSpec.from_lines(lines) if lines else None
        return self._specs[directory]

    def ignored(self, path: Path, top: Path, is_dir: bool) -> bool:
        """``path`` (absolute, below ``top``): the deepest ``.gitignore`` with a say decides."""
        directory = path.parent
        while True:
            spec = self._spec(directory, top)
            if spec is not None:
                relative = path.relative_to(directory).as_posix() + ("/" if is_dir else "")
                verdict = spec.check_file(relative).include
                if verdict is not None:
                    return bool(verdict)
            if directory in (top, directory.parent):
                return False
            directory = directory.parent


def walk(paths: Iterable[Path], allowlist: Allowlist | None = None) -> Iterator[Path]:
    """Every file to scan under ``paths``, in a stable order."""
    rules = GitIgnoreRules()
    seen: set[Path] = set()
    for given in paths:
        if given.is_dir():
            root = given.resolve()
            top = _repository_top(root)
            for directory, subdirectories, files in os.walk(given):
                current = Path(directory)
                absolute = root / current.relative_to(given)
                kept = []
                for name in sorted(subdirectories):
                    if name == ".git" or (current / name).is_symlink():
                        continue
                    if top is not None and rules.ignored(absolute / name, top, is_dir=True):
                        continue
                    kept.append(name)
                subdirectories[:] = kept
                for name in sorted(files):
                    path = current / name
                    if path.is_symlink():
                        continue
                    if top is not None and rules.ignored(absolute / name, top, is_dir=False):
                        continue
                    if allowlist is not None and allowlist.skips(path):
                        continue
                    if (absolute / name) not in seen:
                        seen.add(absolute / name)
                        yield path
        else:
            if allowlist is not None and allowlist.skips(given):
                continue
            if given.resolve() not in seen:
                seen.add(given.resolve())
                yield given


# --- progress ----------------------------------------------------------------------------------


class Progress:
    """A one-line progress bar on a terminal, shown once a run has lasted a second."""

    def __init__(self, total: int, stream: TextIO | None = None, delay: float = 1.0) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self.delay = delay
        self._last = 0.0
        self._shown = False
        try:
            self.enabled = total > 1 and self.stream.isatty()
        except (AttributeError, ValueError):
            self.enabled = False

    def advance(self, count: int = 1) -> None:
        self.done += count
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.started < self.delay or (now - self._last < 0.1 and self.done < self.total):
            return
        self._last = now
        width = 30
        filled = width * self.done // max(self.total, 1)
        self.stream.write(
            f"\rscanning [{'#' * filled}{' ' * (width - filled)}] {self.done}/{self.total} files"
        )
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self.stream.write("\r" + " " * 70 + "\r")
            self.stream.flush()


# --- scanning one file ------------------------------------------------------------------------


def _is_binary(data: bytes) -> bool:
    return b"\x00" in data[:_SNIFF]


def _decode(data: bytes) -> str:
    # Undecodable bytes survive a --fix round trip as lone surrogates.
    return data.decode("utf-8", "surrogateescape")


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def notebook_bytes(notebook: dict[str, Any]) -> bytes:
    """A notebook serialised as nbformat writes it."""
    text = json.dumps(notebook, indent=1, sort_keys=True, ensure_ascii=False)
    return _encode(text + "\n")


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path``'s content with ``data``: all of it or none, same mode."""
    target = path.resolve()
    mode = stat.S_IMODE(target.stat().st_mode)
    handle, temporary = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".jss-tmp"
    )
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    try:
        directory = os.open(target.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(directory)
    except OSError:
        pass
    finally:
        os.close(directory)


def _validate_notebook(notebook: dict[str, Any]) -> str | None:
    import nbformat

    try:
        nbformat.validate(copy.deepcopy(notebook))
    except nbformat.ValidationError as error:
        return str(error.message).splitlines()[0][:200]
    except Exception as error:
        return type(error).__name__
    return None


class FileScanner:
    """Scans paths with one :class:`Scanner`; optionally scrubs what it finds."""

    def __init__(
        self,
        scanner: Scanner,
        allowlist: Allowlist | None = None,
        max_size: int = DEFAULT_MAX_SIZE,
        fix: bool = False,
    ) -> None:
        self.scanner = scanner
        self.allowlist = allowlist or Allowlist()
        self.max_size = max_size
        self.fix = fix

    def scan_paths(
        self, paths: Iterable[Path], progress: Callable[[int], Progress] | None = None
    ) -> ScanResult:
        files = list(walk(paths, self.allowlist))
        meter = progress(len(files)) if progress is not None else None
        result = ScanResult()
        try:
            for path in files:
                self.scan_file(path, result)
                if meter is not None:
                    meter.advance()
        finally:
            if meter is not None:
                meter.close()
        return result

    def scan_file(self, path: Path, result: ScanResult) -> None:
        shown = str(path)
        try:
            size = path.stat().st_size
            if size > self.max_size:
                result.skipped.append(Skipped(shown, f"larger than {self.max_size} bytes"))
                return
            data = path.read_bytes()
        except OSError as error:
            result.errors.append(
                FileError(
                    shown,
                    ScanError(
                        f"{shown} cannot be read ({type(error).__name__}).",
                        "Check that the path exists and is readable.",
                    ),
                )
            )
            return
        if _is_binary(data):
            return
        result.files += 1
        result.bytes += len(data)
        text = _decode(data)
        if path.suffix == ".ipynb":
            notebook = _parse_notebook(text)
            if notebook is not None:
                self._scan_notebook(path, notebook, result)
                return
        self._scan_text(path, text, result)

    def _scan_text(self, path: Path, text: str, result: ScanResult) -> None:
        if self.fix:
            scrubbed, findings = self.scanner.scrub_text(text)
        else:
            scrubbed, findings = text, self.scanner.scan_text(text)
        result.findings.extend(replace(finding, path=str(path)) for finding in findings)
        if not self.fix or not findings:
            return
        if path.suffix == ".json":
            try:
                json.loads(scrubbed)
            except ValueError:
                self._refused(path, "the scrubbed JSON would not parse", result)
                return
        self._write(path, _encode(scrubbed), result)

    def _scan_notebook(self, path: Path, notebook: dict[str, Any], result: ScanResult) -> None:
        findings = self.scanner.scan_notebook(notebook, scrub=self.fix)
        result.findings.extend(replace(finding, path=str(path)) for finding in findings)
        if not self.fix or not findings:
            return
        problem = _validate_notebook(notebook)
        if problem is not None:
            self._refused(path, f"the scrubbed notebook is not valid nbformat ({problem})", result)
            return
        self._write(path, notebook_bytes(notebook), result)

    def _write(self, path: Path, data: bytes, result: ScanResult) -> None:
        try:
            write_atomically(path, data)
        except OSError as error:
            result.errors.append(
                FileError(
                    str(path),
                    ScanError(
                        f"{path} could not be rewritten ({type(error).__name__}); "
                        "it was left unchanged.",
                        "Check that the file and its directory are writable.",
                    ),
                )
            )
            return
        result.fixed.append(str(path))

    @staticmethod
    def _refused(path: Path, why: str, result: ScanResult) -> None:
        result.errors.append(
            FileError(str(path), ScrubRefusedError(f"{path} was not fixed: {why}."))
        )


def _parse_notebook(text: str) -> dict[str, Any] | None:
    try:
        notebook = json.loads(text)
    except ValueError:
        return None
    return notebook if isinstance(notebook, dict) else None
