"""``device``: values kept on a paired phone, reached through the bridge.

Every operation is one request in a fresh Noise session (docs/bridge-protocol.md §9),
bounded by ``JUPYTER_SECURE_STORAGE_DEVICE_TIMEOUT`` seconds (``c.DeviceBackend.timeout``).
An unreachable relay and a silent device are told apart: :class:`RelayUnreachableError`
versus :class:`DeviceOfflineError`, both within that time.
"""

from __future__ import annotations

import os
import time
from typing import Any, ClassVar

from traitlets import Float, Unicode, default

from ..backends.base import Backend, Diagnosis
from ..errors import DeviceOfflineError, SecureStorageError
from . import protocol
from .host import BridgeLoop, DeviceClient, HostKeystore, raise_for

ENV_DEVICE_TIMEOUT = "JUPYTER_SECURE_STORAGE_DEVICE_TIMEOUT"
# UTF-8 needs at most 4 bytes a character; the protocol carries 60,000 bytes.
MAX_VALUE_CHARACTERS = protocol.MAX_VALUE_BYTES // 4


class DeviceBackend(Backend):
    """Values on a paired device; each read may ask its owner for approval."""

    name: ClassVar[str] = "device"

    device = Unicode(
        "", help="The paired device to use (its name); empty: the only one paired."
    ).tag(config=True)

    timeout = Float(
        help=(
            "Seconds a request may take, approval on the device included. "
            "Default: $JUPYTER_SECURE_STORAGE_DEVICE_TIMEOUT, else 60."
        )
    ).tag(config=True)

    @default("timeout")
    def _default_timeout(self) -> float:
        try:
            return float(os.environ.get(ENV_DEVICE_TIMEOUT, "60"))
        except ValueError:
            return 60.0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._client: DeviceClient | None = None
        self._loaded = 0.0

    @property
    def client(self) -> DeviceClient:
        # The pairing record is read again every few seconds, so a revoke or a new
        # pairing made by another process is seen by a long-lived store.
        if self._client is None or time.monotonic() - self._loaded > 10:
            keystore = HostKeystore()
            self._client = DeviceClient(keystore.device(self.device or None), keystore.host_key())
            self._loaded = time.monotonic()
        return self._client

    @property
    def location(self) -> str:
        try:
            record = self.client.record
        except SecureStorageError:
            return "paired device (none usable)"
        return f"device {record.name!r} via {record.relay}"

    def _call(
        self, op: str, namespace: str, key: str | None = None, value: str | None = None
    ) -> dict[str, Any]:
        client = self.client
        request = protocol.new_request(
            op, namespace=namespace, key=key, value=value, lifetime=int(self.timeout) + 60
        )
        try:
            answer = BridgeLoop.get().run(client.request(request, self.timeout), self.timeout)
        except TimeoutError:
            # The request bounds itself; this is the safety net if the loop is stuck.
            raise DeviceOfflineError(
                f"No answer from the device {client.record.name!r} or the relay within "
                f"{self.timeout:g} s."
            ) from None
        raise_for(answer, client.record.name)
        return answer

    # --- the protocol ---------------------------------------------------------------------

    def get(self, namespace: str, key: str) -> str | None:
        answer = self._call("read", namespace, key)
        return str(answer["value"]) if answer.get("found") else None

    def set(self, namespace: str, key: str, value: str) -> None:
        self._call("write", namespace, key, value)

    def delete(self, namespace: str, key: str) -> bool:
        return bool(self._call("delete", namespace, key).get("existed", True))

    def contains(self, namespace: str, key: str) -> bool:
        # From the names: a read would ask the owner and carry the value over the bridge.
        return key in self.list_names(namespace)

    def list_names(self, namespace: str) -> list[str]:
        return sorted(str(name) for name in self._call("list", namespace).get("names", []))

    def max_value_length(self) -> int | None:
        return MAX_VALUE_CHARACTERS

    def fingerprint_backend(self) -> Backend:
        # The phone's values pass through this computer when written, so their
        # fingerprints can be kept here, in the store that holds the pairing records.
        return HostKeystore().store.backend_object

    def unpair(self) -> None:
        """Ask the device to forget this computer, then forget the device."""
        record = self.client.record
        self._call("unpair", "default")
        HostKeystore().forget(record.name)
        self._client = None

    def diagnose(self) -> Diagnosis:
        try:
            record = self.client.record
        except SecureStorageError as error:
            return Diagnosis(self.name, False, error.cause, error.remedy)
        return Diagnosis(
            self.name,
            True,
            f"paired with {record.name!r} via {record.relay} (reachability is checked per request)",
            "",
            (f"timeout: {self.timeout:g} s",),
        )
