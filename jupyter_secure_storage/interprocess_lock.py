"""An exclusive lock shared by every process of the user, held on a small lock file.

Used around the vault's read-modify-write and around the keyring backend's index
of names, so that two kernels writing at once never lose each other's changes.
``flock`` on POSIX, ``msvcrt.locking`` on Windows; the lock file itself is never
deleted (deleting it would let two processes lock two different files).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

# flock locks belong to an open file description, so two threads of one process
# that open the file separately do exclude each other; this in-process lock only
# spares them the polling.
_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


def _thread_lock(path: str) -> threading.Lock:
    with _THREAD_LOCKS_GUARD:
        return _THREAD_LOCKS.setdefault(path, threading.Lock())


class LockTimeout(Exception):
    """The lock was not acquired within the timeout."""


class InterProcessLock:
    """``with InterProcessLock(path, timeout=10):`` -- exclusive across processes and threads."""

    def __init__(self, path: str | os.PathLike[str], timeout: float = 10.0) -> None:
        self.path = str(path)
        self.timeout = timeout
        self._fd: int | None = None
        self._thread_lock = _thread_lock(os.path.abspath(self.path))

    def acquire(self) -> None:
        deadline = time.monotonic() + self.timeout
        if not self._thread_lock.acquire(timeout=self.timeout):
            raise LockTimeout(self.path)
        try:
            Path(self.path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            delay = 0.001
            while True:
                if _try_lock(fd):
                    self._fd = fd
                    return
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise LockTimeout(self.path)
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        except BaseException:
            self._thread_lock.release()
            raise

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            _unlock(fd)
        finally:
            os.close(fd)
            self._thread_lock.release()

    def __enter__(self) -> InterProcessLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
