"""Scrub the copy of captured output that ipykernel echoes to the kernel's own terminal.

ipykernel captures file descriptors 1 and 2 (subprocesses, C code, ``os.write``) through
a pipe, forwards what it reads to the front end, and also writes it to a duplicate of
the original descriptor -- in real use the terminal or log of the Jupyter server.
Scrubbing messages does not cover that copy (field-notes.md). For each ``OutStream``
that watches a descriptor, this guard puts a pipe of its own in place of that
duplicate (``OutStream._original_stdstream_copy``, the one internal it relies on) and
forwards what arrives, redacted, to the real descriptor. As on the message path, text
that could still grow into a secret is held until the next bytes show it cannot.
``fileno()`` of the stream returns the same descriptor, so subprocesses given
``stdout=sys.stdout`` are covered too.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import threading
import time
from typing import Any

from .redaction import RedactionEngine

_READ_SIZE = 65536


class _EchoPipe:
    """One replaced duplicate: a pipe, and the thread that scrubs it into the real descriptor."""

    def __init__(self, stream: Any, engine: RedactionEngine) -> None:
        self.stream = stream
        self.engine = engine
        self.real_fd: int = stream._original_stdstream_copy
        self.read_fd, self.write_fd = os.pipe()
        self.thread = threading.Thread(target=self._forward, name="jss-echo-scrub", daemon=True)

    def start(self) -> None:
        self.stream._original_stdstream_copy = self.write_fd
        self.thread.start()

    def stop(self) -> None:
        if self.stream._original_stdstream_copy == self.write_fd:
            self.stream._original_stdstream_copy = self.real_fd
        # ipykernel's watcher may have read the old descriptor just before the swap:
        # give its write time to land before closing (a closed or reused descriptor
        # there would stop its capture).
        time.sleep(0.2)
        os.close(self.write_fd)  # the forwarder sees end-of-file, flushes and exits
        self.thread.join(timeout=5)

    def _forward(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        held = ""
        try:
            while True:
                chunk = os.read(self.read_fd, _READ_SIZE)
                final = not chunk
                text = held + decoder.decode(chunk, final=final)
                matcher = self.engine.matcher
                text = matcher.redact(text)
                keep = 0 if final else matcher.partial_tail(text)
                held = text[len(text) - keep :] if keep else ""
                out = text[: len(text) - keep] if keep else text
                if out:
                    _write_all(self.real_fd, out.encode("utf-8", "surrogateescape"))
                if final:
                    return
        finally:
            with contextlib.suppress(OSError):
                os.close(self.read_fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except OSError:
            return  # the terminal went away; the front end still has its copy
        view = view[written:]


class FdEchoGuard:
    """Installs an :class:`_EchoPipe` on every stream that echoes captured descriptors."""

    def __init__(self, streams: list[Any], engine: RedactionEngine) -> None:
        self.streams = streams
        self.engine = engine
        self._pipes: list[_EchoPipe] = []

    @property
    def installed(self) -> bool:
        return bool(self._pipes)

    def install(self) -> None:
        if self._pipes:
            return
        for stream in self.streams:
            if isinstance(getattr(stream, "_original_stdstream_copy", None), int):
                pipe = _EchoPipe(stream, self.engine)
                pipe.start()
                self._pipes.append(pipe)

    def uninstall(self) -> None:
        for pipe in self._pipes:
            pipe.stop()
        self._pipes = []
