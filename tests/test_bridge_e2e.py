"""The device backend end to end: a real relay on loopback, the reference device, the host.

The shared behaviour suite runs on ``backend="device"``; then what only a bridge has:
a relay restarted between requests, a device that went offline (a typed error within
the timeout, naming which part is missing), an unpaired host, and two relay processes
sharing one real redis-server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import fast_kdf_config

from jupyter_secure_storage import SecureStorage
from jupyter_secure_storage.bridge.backend import DeviceBackend
from jupyter_secure_storage.bridge.device import AutoApprover, DeviceState, ReferenceDevice
from jupyter_secure_storage.bridge.host import HostKeystore, PairingAttempt
from jupyter_secure_storage.errors import (
    DeviceDeniedError,
    DeviceOfflineError,
    RelayUnreachableError,
)
from jupyter_secure_storage.testing import StorageBehaviour, canary, same

DEVICE_PASSPHRASE = "device test passphrase"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RelayProcess:
    """``python -m jupyter_secure_storage.bridge.relay`` on a loopback port."""

    def __init__(self, port: int | None = None, redis_url: str | None = None) -> None:
        self.port = port or free_port()
        self.redis_url = redis_url
        self.process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/relay"

    def start(self) -> RelayProcess:
        command = [
            sys.executable,
            "-m",
            "jupyter_secure_storage.bridge.relay",
            "--port",
            str(self.port),
        ]
        if self.redis_url:
            command += ["--redis", self.redis_url]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert "relay listening" in line, "the relay did not start"
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture(scope="module")
def relay() -> Iterator[RelayProcess]:
    process = RelayProcess().start()
    yield process
    process.stop()


class RunningDevice:
    """A reference device serving in its own thread and event loop."""

    def __init__(self, directory: Path, name: str = "test phone") -> None:
        self.device = ReferenceDevice(
            DeviceState(directory, fast_kdf_config()),
            AutoApprover(),
            name=name,
            say=lambda *_: None,
        )
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def pair(self, relay_url: str, label: str = "test host") -> str:
        async def both() -> str:
            attempt = PairingAttempt(relay_url, label)
            pairing = asyncio.create_task(self.device.pair(attempt.offer.uri, timeout=30))
            pending = await attempt.wait_for_device(30)
            record = await attempt.finish(True)
            await pairing
            assert record is not None
            assert pending.device_name == record.name
            return record.name

        return asyncio.run(both())

    def start(self) -> None:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._stop = asyncio.Event()
            loop.run_until_complete(self.device.serve(self._stop, ready=ready.set))
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(30), "the device did not start serving"

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        self._thread = None


@pytest.fixture
def device_env(vault_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_SECURE_STORAGE_DEVICE_PASSPHRASE", DEVICE_PASSPHRASE)
    # The host keeps its pairings in this test's own vault, not in a keyring shared by
    # the whole run (where a real Secret Service is running).
    monkeypatch.setenv("JUPYTER_SECURE_STORAGE_BACKEND", "vault")


@pytest.fixture
def paired_device(relay: RelayProcess, device_env: None, tmp_path: Path) -> Iterator[RunningDevice]:
    running = RunningDevice(tmp_path / "phone")
    running.pair(relay.url)
    running.start()
    yield running
    running.stop()


def device_store(namespace: str = "default", timeout: float = 15) -> SecureStorage:
    config = fast_kdf_config()
    config.DeviceBackend.timeout = timeout
    return SecureStorage(backend="device", namespace=namespace, config=config)


# --- the behaviour suite on the device backend ------------------------------------------------


class TestDeviceBackend(StorageBehaviour):
    huge_value_length = 10_000  # the protocol carries at most 60,000 bytes a value

    @pytest.fixture
    def make_store(self, paired_device: RunningDevice) -> Callable[..., SecureStorage]:
        return device_store


# --- what only a bridge has -----------------------------------------------------------------


def test_pairing_is_stored_on_both_sides(paired_device: RunningDevice) -> None:
    records = HostKeystore().devices()
    assert [r.name for r in records] == ["test-phone"]
    assert len(paired_device.device.state.pairings()) == 1
    assert "paired with 'test-phone'" in DeviceBackend().diagnose().summary


def test_a_relay_restart_between_requests_is_survived(device_env: None, tmp_path: Path) -> None:
    relay = RelayProcess().start()
    restarted: RelayProcess | None = None
    running = RunningDevice(tmp_path / "phone")
    try:
        running.pair(relay.url)
        running.start()
        value = canary()
        device_store().write("BEFORE", value)
        relay.stop()
        with pytest.raises(RelayUnreachableError):
            device_store(timeout=3).read("BEFORE")
        restarted = RelayProcess(port=relay.port).start()  # same address, empty memory store
        deadline = time.monotonic() + 20
        while True:  # the device reconnects on its own
            try:
                found = device_store(timeout=5).read("BEFORE")
                break
            except (DeviceOfflineError, RelayUnreachableError):
                assert time.monotonic() < deadline, "the device never came back"
        assert same(found, value)
    finally:
        running.stop()
        relay.stop()
        if restarted is not None:
            restarted.stop()


def test_an_offline_device_is_a_typed_error_within_the_timeout(
    paired_device: RunningDevice,
) -> None:
    paired_device.stop()
    started = time.monotonic()
    with pytest.raises(DeviceOfflineError) as raised:
        device_store(timeout=2).read("ANY")
    assert time.monotonic() - started < 10
    assert "did not answer" in raised.value.cause
    assert "JUPYTER_SECURE_STORAGE_DEVICE_TIMEOUT" in raised.value.remedy


def test_an_unreachable_relay_is_named_as_such(device_env: None, tmp_path: Path) -> None:
    relay = RelayProcess().start()
    running = RunningDevice(tmp_path / "phone")
    running.pair(relay.url)
    relay.stop()
    with pytest.raises(RelayUnreachableError) as raised:
        device_store(timeout=3).read("ANY")
    assert relay.url in raised.value.cause


def test_a_device_that_unpaired_refuses_the_host(paired_device: RunningDevice) -> None:
    store = device_store()
    store.write("K", canary())
    for pairing in paired_device.device.state.pairings():
        paired_device.device.state.forget_pairing(pairing)
    with pytest.raises(DeviceDeniedError) as raised:
        device_store(timeout=5).read("K")
    assert "does not recognise this computer" in raised.value.cause
    assert "devices revoke" in raised.value.remedy


def test_unpair_from_the_host_forgets_both_sides(paired_device: RunningDevice) -> None:
    DeviceBackend().unpair()
    assert HostKeystore().devices() == []
    assert paired_device.device.state.pairings() == []


def test_values_rest_encrypted_on_the_device(paired_device: RunningDevice, tmp_path: Path) -> None:
    value = canary()
    device_store().write("AT_REST", value)
    files = [p for p in (tmp_path / "phone").rglob("*") if p.is_file()]
    assert files
    assert all(value.encode() not in p.read_bytes() for p in files)


def test_device_values_are_fingerprinted_in_the_host_store(paired_device: RunningDevice) -> None:
    """The save guard and scanners find a phone's values without asking the phone."""
    from jupyter_secure_storage.scan.known import KnownValues

    value = canary()
    device_store().write("ON_PHONE", value)
    host_store = SecureStorage(config=fast_kdf_config())  # the host's own vault
    assert [f.name for f in KnownValues.from_store(host_store).find(f"x {value} y")] == ["ON_PHONE"]
    assert [f.name for f in KnownValues.from_store(device_store()).find(value)] == ["ON_PHONE"]
    device_store().delete("ON_PHONE")
    assert KnownValues.from_store(host_store).find(value) == []


# --- Redis: two relays, one set of mailboxes ------------------------------------------------


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    server = shutil.which("redis-server")
    if server is None:
        if os.environ.get("JSS_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server is not installed (scripts/test.sh installs it)")
        pytest.skip("redis-server is not installed; run the tests through scripts/test.sh")
    port = free_port()
    directory = tempfile.mkdtemp()
    process = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            directory,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            break
        assert time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(10)
    shutil.rmtree(directory, ignore_errors=True)


def test_host_and_device_on_two_relays_sharing_redis(
    redis_url: str, device_env: None, tmp_path: Path
) -> None:
    relay_a = RelayProcess(redis_url=redis_url).start()
    relay_b = RelayProcess(redis_url=redis_url).start()
    running = RunningDevice(tmp_path / "phone")
    try:
        running.pair(relay_a.url)
        # As a load balancer might: the device reaches the other relay node.
        state = running.device.state
        for pairing in state.pairings():
            pairing.relay = relay_b.url
            state.save_pairing(pairing)
        running.start()
        value = canary()
        store = device_store()
        store.write("SHARED", value)
        assert same(store.read("SHARED"), value)
        assert store.keys() == ["SHARED"]
    finally:
        running.stop()
        relay_a.stop()
        relay_b.stop()


# --- the keyring entry point ----------------------------------------------------------------


def test_keyring_tools_can_use_the_device_when_they_choose_it(
    paired_device: RunningDevice,
) -> None:
    import keyring.core

    chosen = keyring.core.load_keyring(
        "jupyter_secure_storage.bridge.keyring_backend.DeviceKeyring"
    )
    value = canary()
    chosen.set_password("some-tool", "alice", value)
    assert chosen.get_password("some-tool", "alice") == value
    assert device_store(namespace="keyring").keys() == ["some-tool/alice"]
    chosen.delete_password("some-tool", "alice")
    assert chosen.get_password("some-tool", "alice") is None


def test_the_device_keyring_is_never_chosen_automatically() -> None:
    import keyring.backend
    import keyring.core

    from jupyter_secure_storage.bridge.keyring_backend import DeviceKeyring

    detected = keyring.core._detect_backend()  # what keyring would choose by itself
    chained = getattr(detected, "backends", [detected])
    assert not isinstance(detected, DeviceKeyring)
    assert all(not isinstance(backend, DeviceKeyring) for backend in chained)
    assert DeviceKeyring.priority < 0
