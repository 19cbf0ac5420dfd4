"""Redaction: find registered values (and their common encodings) in text and hide them.

Three layers, each usable on its own:

- :func:`encoded_forms` (from :mod:`jupyter_secure_storage.value_forms`, shared with the
  stored-value fingerprints) -- the strings a value can appear as in output: itself, its
  base64, URL-quoted and escaped forms, and each long line of a multi-line value.
- :class:`Matcher` -- every form of every value at once: an Aho-Corasick automaton
  (``ahocorasick-rs``, a DFA in Rust) scans the UTF-8 text once; overlapping hits are
  merged and replaced by ``[secret:NAME]``. It also answers "could the end of this
  text be the start of a secret?", which is what makes stream output chunk-safe.
- :class:`RedactionEngine` -- a matcher kept in step with ``secret_registry`` (rebuilt
  lazily when the registry's version changes) and a recursive scrub for message
  content.

Why this matcher (bench/redaction.py, 8 MB of output, 50 values = 300 patterns):
one ``re`` alternation ran at 2 MB/s, a ``str.find`` per pattern at 38 MB/s (and
slows with every value: 9 MB/s at 200 values), pyahocorasick at 47 MB/s -- and it
holds the GIL, so a kernel printing waited for every scan (1.32x slower). The Rust
DFA ran at 270-410 MB/s and releases the GIL while it scans. Without the wheel a
per-pattern ``str.find`` matcher gives the same results, slower.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable
from typing import Any

from traitlets import Bool, Int, Unicode, observe
from traitlets.config import Configurable

from ..secret import SecretRegistry, secret_registry
from ..value_forms import encoded_forms

try:  # pragma: no branch
    import ahocorasick_rs
except ImportError:  # pragma: no cover - exercised where the wheel is unavailable
    ahocorasick_rs = None  # type: ignore[assignment]

DEFAULT_REPLACEMENT = "[secret:{name}]"
_SHORT_TAIL = 128  # ends of text up to this long are checked one length at a time
_HEAD = 16  # longer candidate ends are found by the first characters of long patterns
_DFA_LIMIT = 1 << 16  # bytes of patterns above which an NFA is built instead (DFA builds slowly)


class Matcher:
    """All forms of all values, found in one pass over a text."""

    def __init__(
        self,
        names_by_value: dict[str, str],
        min_length: int = 6,
        replacement: str = DEFAULT_REPLACEMENT,
        use_automaton: bool = True,
    ) -> None:
        self.replacement = replacement
        patterns: dict[str, str] = {}
        # Longer values first, so a form shared by two values carries the longer's name.
        for value, name in sorted(names_by_value.items(), key=lambda item: -len(item[0])):
            for form in encoded_forms(value, min_length):
                patterns.setdefault(form, name)
        self.patterns = patterns
        self.longest = max((len(p) for p in patterns), default=0)
        self._pattern_list = list(patterns)
        self._names = [patterns[p] for p in self._pattern_list]
        self._encoded = [p.encode("utf-8", "surrogatepass") for p in self._pattern_list]
        # "Is this the beginning of some pattern?" is a binary search in sorted order:
        # no table of prefixes, whose size would grow with the square of a value's length.
        self._sorted = sorted(patterns)
        self._long_heads = sorted({p[:_HEAD] for p in patterns if len(p) > _SHORT_TAIL})
        self._automaton: Any = None
        if use_automaton and ahocorasick_rs is not None and patterns:
            size = sum(len(p) for p in self._encoded)
            implementation = (
                ahocorasick_rs.Implementation.DFA
                if size <= _DFA_LIMIT
                else ahocorasick_rs.Implementation.ContiguousNFA
            )
            self._automaton = ahocorasick_rs.BytesAhoCorasick(
                self._encoded, implementation=implementation
            )

    @property
    def kind(self) -> str:
        return "aho-corasick" if self._automaton is not None else "str.find"

    def __len__(self) -> int:
        return len(self.patterns)

    def _hits(self, data: bytes) -> Iterable[tuple[int, int, int]]:
        """``(start, end, pattern index)`` of every occurrence, overlapping ones included."""
        if self._automaton is not None:
            # The Rust automaton releases the GIL while it scans: the kernel keeps running.
            for index, start, end in self._automaton.find_matches_as_indexes(
                data, overlapping=True
            ):
                yield start, end, index
            return
        for index, pattern in enumerate(self._encoded):
            start = data.find(pattern)
            while start != -1:
                yield start, start + len(pattern), index
                start = data.find(pattern, start + 1)

    def _spans(self, data: bytes) -> list[tuple[int, int, str]]:
        """Merged byte spans; overlapping hits become one, named by the longest hit in it."""
        merged: list[tuple[int, int, str]] = []
        longest_in_span = 0
        for start, end, index in sorted(self._hits(data)):
            name = self._names[index]
            if merged and start < merged[-1][1]:
                last_start, last_end, last_name = merged[-1]
                if end - start > longest_in_span:
                    last_name, longest_in_span = name, end - start
                merged[-1] = (last_start, max(last_end, end), last_name)
            else:
                merged.append((start, end, name))
                longest_in_span = end - start
        return merged

    def redact(self, text: str) -> str:
        if not self.patterns or not text:
            return text
        # Matching runs on UTF-8: a match of a valid UTF-8 pattern always starts and
        # ends on a character boundary, so cutting the bytes there is safe.
        data = text.encode("utf-8", "surrogatepass")
        spans = self._spans(data)
        if not spans:
            return text
        pieces = []
        position = 0
        for start, end, name in spans:
            pieces.append(data[position:start])
            marker = self.replacement.format(name=name) if name else "[secret]"
            pieces.append(marker.encode("utf-8"))
            position = end
        pieces.append(data[position:])
        return b"".join(pieces).decode("utf-8", "surrogatepass")

    def partial_tail(self, text: str) -> int:
        """Length of the longest end of ``text`` that is the beginning of some pattern.

        Output ending so could be completed by the next chunk into a secret, so a
        stream holds those characters back until it knows.
        """
        if not self.patterns:
            return 0
        limit = min(len(text), self.longest - 1)
        if limit > _SHORT_TAIL and self._long_heads:
            # An end longer than _SHORT_TAIL can only begin a long pattern, so it starts
            # with one of their heads: find those, earliest (longest end) first.
            window = text[-limit:]
            starts: set[int] = set()
            for head in self._long_heads:
                position = window.find(head)
                while position != -1:
                    starts.add(position)
                    position = window.find(head, position + 1)
            for position in sorted(starts):
                if len(window) - position > _SHORT_TAIL and self._begins_a_pattern(
                    window[position:]
                ):
                    return len(window) - position
        for size in range(min(limit, _SHORT_TAIL), 0, -1):
            if self._begins_a_pattern(text[-size:]):
                return size
        return 0

    def _begins_a_pattern(self, piece: str) -> bool:
        index = bisect.bisect_left(self._sorted, piece)
        return index < len(self._sorted) and self._sorted[index].startswith(piece)


class RedactionEngine:
    """A :class:`Matcher` kept in step with a registry, plus scrubbing of nested message content."""

    def __init__(
        self,
        registry: SecretRegistry = secret_registry,
        min_length: int = 6,
        replacement: str = DEFAULT_REPLACEMENT,
    ) -> None:
        self.registry = registry
        self.min_length = min_length
        self.replacement = replacement
        self._matcher: Matcher | None = None
        self._built_for: tuple[int, int, str] = (-1, -1, "")
        self._lock = threading.Lock()

    @property
    def matcher(self) -> Matcher:
        wanted = (self.registry.version, self.min_length, self.replacement)
        matcher = self._matcher
        if matcher is None or self._built_for != wanted:
            with self._lock:
                if self._matcher is None or self._built_for != wanted:
                    self._matcher = Matcher(
                        self.registry.values(), self.min_length, self.replacement
                    )
                    self._built_for = wanted
                matcher = self._matcher
        return matcher

    def redact(self, text: str) -> str:
        return self.matcher.redact(text)

    def scrub(self, value: Any) -> Any:
        """A copy of ``value`` with every string (dict keys included) redacted."""
        matcher = self.matcher
        if not matcher.patterns:
            return value
        return _scrub(value, matcher)


def _scrub(value: Any, matcher: Matcher) -> Any:
    if isinstance(value, str):
        return matcher.redact(value)
    if isinstance(value, dict):
        return {_scrub(k, matcher): _scrub(v, matcher) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(item, matcher) for item in value]
    if isinstance(value, tuple):
        return tuple(_scrub(item, matcher) for item in value)
    return value


class OutputRedactor(Configurable):
    """Settings of the kernel's output redaction (``c.OutputRedactor....`` or ``%config``)."""

    enabled = Bool(
        True,
        help=(
            "Hide registered values in everything the kernel sends to the front end. "
            "Turning it off is shown by %secure_status; %%secure_unredacted turns it "
            "off for one cell."
        ),
    ).tag(config=True)

    min_length = Int(
        6,
        help="Values (and encoded forms) shorter than this are not redacted: too many false hits.",
    ).tag(config=True)

    replacement = Unicode(
        DEFAULT_REPLACEMENT,
        help="What a hidden value becomes; '{name}' is the key it was read under.",
    ).tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.engine = RedactionEngine(secret_registry, self.min_length, self.replacement)
        #: msg_ids of cells run with %%secure_unredacted, and their execution counts.
        self.unredacted_parents: set[str] = set()
        self.unredacted_cells: list[int] = []

    @observe("min_length", "replacement")
    def _update_engine(self, change: Any) -> None:
        self.engine.min_length = self.min_length
        self.engine.replacement = self.replacement

    def is_enabled(self, parent_id: str | None) -> bool:
        return self.enabled and parent_id not in self.unredacted_parents
