"""Findings a person has accepted: inline markers and the ``.jss-allowlist`` file.

Inline: a line that holds ``# jss: allow`` -- or ``pragma: allowlist secret``, the marker
detect-secrets uses, so lines already marked for it stay quiet -- has no findings. The
marker can be in any comment syntax (``// jss: allow``, ``<!-- jss: allow -->``).

The file: ``.jss-allowlist`` in the current directory or at the root of its git
repository (or the file given with ``--allowlist``), one rule a line::

    # comments and blank lines are ignored
    path: docs/examples/**          # gitignore-style glob, relative to the file: not scanned
    fingerprint: 9f86d0818...       # SHA-256 (hex) of an accepted match, from `--format json`
    regex: ^AKIA[A-Z0-9]{12}TEST$   # a Python regex; a match it fully matches is accepted
    kind: jwt                       # every finding of this kind is accepted

Allowed values are never written in plaintext: a fingerprint is the SHA-256 of the
matched text, which the scan's JSON and SARIF output give for every finding.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from pathspec import GitIgnoreSpec

from ..errors import AllowlistError
from .findings import Detector, Finding, find_many

INLINE_MARKERS = ("jss: allow", "pragma: allowlist secret")
ALLOWLIST_FILE = ".jss-allowlist"
_DIRECTIVES = ("path", "fingerprint", "regex", "kind")
_TRAILING_COMMENT = re.compile(r"\s+#.*$")


def fingerprint(matched: str) -> str:
    """The SHA-256 (hex) of a matched text: how an allowlist names it without holding it."""
    return hashlib.sha256(matched.encode("utf-8", "surrogatepass")).hexdigest()


def inline_allowed(text: str, start: int, end: int) -> bool:
    """Whether a line of ``text`` that the span ``[start, end)`` touches has an inline marker."""
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", max(end - 1, start))
    line = text[line_start : len(text) if line_end == -1 else line_end]
    return any(marker in line for marker in INLINE_MARKERS)


@dataclass(frozen=True)
class MatchedFinding(Finding):
    """A finding with the fingerprint of what it matched (for reports and allowlists)."""

    fingerprint: str = ""


@dataclass
class Allowlist:
    """The rules of one allowlist file (empty: only inline markers apply)."""

    base: Path | None = None  # the directory path globs are relative to
    source: str = ""
    path_globs: list[str] = field(default_factory=list)
    fingerprints: set[str] = field(default_factory=set)
    regexes: list[re.Pattern[str]] = field(default_factory=list)
    kinds: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._paths: GitIgnoreSpec | None = None

    # --- loading ---------------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str, base: Path | None = None, source: str = "") -> Allowlist:
        allowlist = cls(base=base, source=source)
        where = source or ALLOWLIST_FILE
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            directive, colon, argument = line.partition(":")
            # A "#" after whitespace starts a comment (a regex can write it as \x23).
            argument = _TRAILING_COMMENT.sub("", argument)
            directive, argument = directive.strip().lower(), argument.strip()
            if not colon or directive not in _DIRECTIVES or not argument:
                # The line is not echoed: it could hold a value pasted by mistake.
                raise AllowlistError(
                    f"{where}, line {number}: not a rule (expected one of "
                    f"{', '.join(d + ':' for d in _DIRECTIVES)} followed by its argument)."
                )
            if directive == "path":
                allowlist.path_globs.append(argument)
            elif directive == "fingerprint":
                digest = argument.split()[0].lower()
                if not re.fullmatch(r"[0-9a-f]{64}", digest):
                    raise AllowlistError(
                        f"{where}, line {number}: a fingerprint is 64 hexadecimal characters "
                        "(the SHA-256 that `scan --format json` prints)."
                    )
                allowlist.fingerprints.add(digest)
            elif directive == "regex":
                try:
                    allowlist.regexes.append(re.compile(argument))
                except re.error as error:
                    raise AllowlistError(
                        f"{where}, line {number}: the regex does not compile ({error.msg})."
                    ) from None
            else:
                allowlist.kinds.add(argument)
        return allowlist

    @classmethod
    def load(cls, path: Path) -> Allowlist:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise AllowlistError(
                f"The allowlist {path} cannot be read ({type(error).__name__}).",
                "Check the path given with --allowlist, or drop the option.",
            ) from None
        return cls.parse(text, base=path.resolve().parent, source=str(path))

    @classmethod
    def discover(cls, start: Path | None = None) -> Allowlist:
        """``.jss-allowlist`` in ``start`` (default: the current directory) or its git root."""
        here = (start or Path.cwd()).resolve()
        candidates = [here]
        for parent in [here, *here.parents]:
            if (parent / ".git").exists():
                candidates.append(parent)
                break
        for directory in candidates:
            if (directory / ALLOWLIST_FILE).is_file():
                return cls.load(directory / ALLOWLIST_FILE)
        return cls()

    # --- applying ----------------------------------------------------------------------------

    def skips(self, path: Path) -> bool:
        """Whether a file is excluded by a ``path:`` rule."""
        if not self.path_globs or self.base is None:
            return False
        if self._paths is None:
            self._paths = GitIgnoreSpec.from_lines(self.path_globs)
        try:
            relative = path.resolve().relative_to(self.base)
        except ValueError:
            return False
        return self._paths.match_file(relative.as_posix())

    def allows(self, finding: Finding, matched: str, digest: str | None = None) -> bool:
        if finding.kind in self.kinds:
            return True
        if self.fingerprints and (digest or fingerprint(matched)) in self.fingerprints:
            return True
        return any(regex.fullmatch(matched) for regex in self.regexes)

    def filter(self, detector: Detector) -> AllowlistedDetector:
        """``detector`` with this allowlist (and the inline markers) applied to its findings."""
        return AllowlistedDetector(detector, self)


class AllowlistedDetector:
    """A detector whose findings pass the allowlist; survivors carry their fingerprint.

    It batches (``find_many``) and is ``exact`` when the detector it wraps is, so the
    scanner treats it as it would treat that detector.
    """

    def __init__(self, inner: Detector, allowlist: Allowlist) -> None:
        self.inner = inner
        self.allowlist = allowlist
        self.exact = bool(getattr(inner, "exact", False))

    def find(self, text: str) -> list[Finding]:
        return self._kept(text, self.inner.find(text))

    def find_many(self, texts: list[str]) -> list[list[Finding]]:
        return [
            self._kept(text, found)
            for text, found in zip(texts, find_many(self.inner, texts), strict=True)
        ]

    def _kept(self, text: str, found: list[Finding]) -> list[Finding]:
        kept: list[Finding] = []
        for finding in found:
            if inline_allowed(text, finding.start, finding.end):
                continue
            matched = text[finding.start : finding.end]
            digest = fingerprint(matched)
            if self.allowlist.allows(finding, matched, digest):
                continue
            values = {f.name: getattr(finding, f.name) for f in fields(Finding)}
            kept.append(MatchedFinding(**values, fingerprint=digest))
        return kept
