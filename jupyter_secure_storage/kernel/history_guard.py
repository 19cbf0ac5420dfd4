"""Keep values out of IPython's history (``In``, ``_ih``, ``_iN`` and ``history.sqlite``).

IPython stores each cell's source before running it, so a value typed on a magic
line is in history before the magic can refuse it (field-notes.md). The guard
wraps the history manager's ``store_inputs``: extra words typed after
``%secure_write KEY`` are replaced by ``[removed]``, and registered values (and
their encodings) by ``[secret:NAME]``, before anything is stored. Output history
(``HistoryManager.db_log_output``, off by default) is scrubbed the same way.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .redaction import RedactionEngine

REMOVED = "[removed]"
_WRITE_LINE = re.compile(r"^\s*%secure_write\b(?P<rest>.*)$", re.MULTILINE)
# Options of %secure_write that take a value (kept: they are not secrets).
_OPTIONS_WITH_VALUE = ("-n", "--namespace")


def split_write_arguments(rest: str) -> tuple[list[str], list[str], list[str]]:
    """``(positionals, options, extras)`` of what follows ``%secure_write``.

    Extras are words that can only be a value typed where it must not be: a second
    positional, or the part after ``=`` in ``KEY=VALUE``.
    """
    words = rest.split()
    positionals: list[str] = []
    options: list[str] = []
    skip_next = False
    for word in words:
        if skip_next:
            options.append(word)
            skip_next = False
        elif word in _OPTIONS_WITH_VALUE:
            options.append(word)
            skip_next = True
        elif word.startswith("-") and len(word) > 1:
            options.append(word)
        else:
            positionals.append(word)
    extras = positionals[1:]
    if positionals and "=" in positionals[0]:
        key, _, value = positionals[0].partition("=")
        if value:
            extras.insert(0, value)
        positionals[0] = key
    return positionals[:1], options, extras


def values_typed_on_write_lines(source: str) -> list[str]:
    """Every word in ``source`` typed after ``%secure_write KEY`` (each a likely value)."""
    found: list[str] = []
    for match in _WRITE_LINE.finditer(source):
        found.extend(split_write_arguments(match.group("rest"))[2])
    return found


def sanitize_source(source: str, engine: RedactionEngine, typed: list[str]) -> str:
    """``source`` without the words in ``typed`` and without registered values."""
    for word in sorted(set(typed), key=len, reverse=True):
        source = source.replace(word, REMOVED)
    return engine.redact(source)


class HistoryGuard:
    """Wraps one ``HistoryManager``'s ``store_inputs`` and ``store_output``."""

    def __init__(self, history_manager: Any, engine: RedactionEngine) -> None:
        self.history_manager = history_manager
        self.engine = engine
        self._originals: dict[str, Callable[..., Any]] = {}

    @property
    def installed(self) -> bool:
        return bool(self._originals)

    def install(self) -> None:
        if self._originals or self.history_manager is None:
            return
        manager = self.history_manager
        self._originals = {
            "store_inputs": manager.store_inputs,
            "store_output": manager.store_output,
        }
        manager.store_inputs = self._store_inputs
        manager.store_output = self._store_output

    def uninstall(self) -> None:
        manager = self.history_manager
        for name in self._originals:
            if manager.__dict__.get(name) is not None:
                del manager.__dict__[name]
        self._originals = {}

    def _store_inputs(self, line_num: int, source: str, source_raw: str | None = None) -> None:
        raw = source if source_raw is None else source_raw
        # Found in the raw cell; removed from both it and the transformed one, where
        # the magic line has become get_ipython().run_line_magic('secure_write', ...).
        typed = values_typed_on_write_lines(raw)
        self._originals["store_inputs"](
            line_num,
            sanitize_source(source, self.engine, typed),
            sanitize_source(raw, self.engine, typed),
        )

    def _store_output(self, line_num: int) -> None:
        reprs = getattr(self.history_manager, "output_hist_reprs", None)
        if isinstance(reprs, dict) and isinstance(reprs.get(line_num), str):
            reprs[line_num] = self.engine.redact(reprs[line_num])
        self._originals["store_output"](line_num)
