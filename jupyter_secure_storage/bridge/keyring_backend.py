"""A ``keyring`` backend on the paired device, for tools that use the ``keyring`` library.

Items are stored on the device in the namespace ``keyring`` under ``<service>/<username>``.
It is never chosen automatically -- its priority is below keyring's own "fail" backend and
outside keyring's chainer -- so it can never win over a usable OS keystore. Choose it
explicitly::

    PYTHON_KEYRING_BACKEND=jupyter_secure_storage.bridge.keyring_backend.DeviceKeyring

or ``default-keyring=jupyter_secure_storage.bridge.keyring_backend.DeviceKeyring`` in
``keyringrc.cfg`` (``keyring diagnose`` shows where that file lives).
"""

from __future__ import annotations

from typing import Any

from jaraco.classes import properties
from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError, PasswordSetError

from ..errors import SecureStorageError

NAMESPACE = "keyring"


class DeviceKeyring(KeyringBackend):
    """keyring's API on the paired device (jupyter-secure-storage's ``device`` backend)."""

    @properties.classproperty
    def priority(cls) -> float:
        # Below keyring's "fail" backend (0) and outside its chainer (which takes only
        # priorities above 0): keyring never picks it by itself, only when it is named.
        return -0.5

    def _backend(self) -> Any:
        from .backend import DeviceBackend

        return DeviceBackend()

    @staticmethod
    def _key(service: str, username: str) -> str:
        return f"{service}/{username}"

    def get_password(self, service: str, username: str) -> str | None:
        value: str | None = self._backend().get(NAMESPACE, self._key(service, username))
        return value

    def set_password(self, service: str, username: str, password: str) -> None:
        try:
            self._backend().set(NAMESPACE, self._key(service, username), password)
        except SecureStorageError as error:
            raise PasswordSetError(error.cause) from error

    def delete_password(self, service: str, username: str) -> None:
        try:
            existed = self._backend().delete(NAMESPACE, self._key(service, username))
        except SecureStorageError as error:
            raise PasswordDeleteError(error.cause) from error
        if not existed:
            raise PasswordDeleteError("no such password on the paired device")
