"""Pairing from a terminal and from a notebook, with real processes on loopback.

A relay (``python -m jupyter_secure_storage.bridge.relay --port 0``), the reference device
(``jupyter-secure-storage device``) and the host side (``jupyter-secure-storage pair``,
``%secure_pair``) each run as real processes or kernels. What is checked besides "it
pairs": the offer -- which holds a one-time secret -- reaches only the terminal or a 0600
file that is removed afterwards, never a pipe, a log or a saved notebook; the confirmation
codes match on both sides and refusing one pairs nothing; values live on the device, not on
this computer; a revoked device really forgot this computer.

Nothing here prints a value or an offer: comparisons are plain ``==``/``in`` under
``--assert=plain``, and assertion messages carry only process logs that hold neither.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import select
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pexpect
import pytest
from conftest import PASSPHRASE, REPO, fast_kdf_config
from IPython.core.displaypub import CapturingDisplayPublisher
from IPython.core.interactiveshell import InteractiveShell
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from traitlets.config import Config

from jupyter_secure_storage import SecureStorage
from jupyter_secure_storage.bridge.device import DeviceState
from jupyter_secure_storage.bridge.host import HostKeystore
from jupyter_secure_storage.bridge.protocol import unb64u
from jupyter_secure_storage.bridge.qr import make_qr, svg, terminal_text
from jupyter_secure_storage.errors import SecureStorageError
from jupyter_secure_storage.kernel.extension import loaded_state
from jupyter_secure_storage.testing import canary

CLI = [sys.executable, "-m", "jupyter_secure_storage"]
DEVICE_PASSPHRASE = "device passphrase for the tests"
OFFER_URI = re.compile(r"jss-pair:[A-Za-z0-9_-]{20,}")
OFFER_STRING_START = "eyJ2Ijox"  # b64u('{"v":1'): how every version-1 offer string begins
CODE = re.compile(r"Confirmation code: (\d{3} \d{3})")


# --- processes ---------------------------------------------------------------------------------


class Relay:
    """The relay on a free loopback port; ``url`` once it listens."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyter_secure_storage.bridge.relay", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 30)
        line = self.process.stdout.readline() if ready else ""
        if not line.startswith("relay listening on ws://"):
            self.stop()
            raise AssertionError("the relay did not start")
        self.url = line.split()[-1]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture(scope="module")
def relay() -> Iterator[Relay]:
    running = Relay()
    yield running
    running.stop()


class Device:
    """``jupyter-secure-storage device --state DIR ...``, its output collected line by line."""

    def __init__(self, env: dict[str, str], state: Path, *args: str, stdin: str = "") -> None:
        self.state = state
        self.process = subprocess.Popen(
            [*CLI, "device", "--state", str(state), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.process.stdin is not None
        self.process.stdin.write(stdin)
        self.process.stdin.close()
        self.lines: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self.lines.append("")  # end of output
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 60) -> str:
        """The first line holding ``text``; fails (with the device's log) if none comes."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                ended = bool(self.lines) and self.lines[-1] == ""
                remaining = deadline - time.monotonic()
                if ended or remaining <= 0:
                    raise AssertionError(f"the device never said {text!r}; it said:\n{self.output}")
                self._changed.wait(remaining)

    def code(self) -> str:
        match = CODE.search(self.wait_for("Confirmation code:"))
        assert match is not None
        return match.group(1)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(20)
        finally:
            if self.process.stdout is not None:
                self.process.stdout.close()

    def pairings(self) -> int:
        return len(DeviceState(self.state, fast_kdf_config()).pairings())

    def stored(self, key: str, namespace: str = "default") -> str | None:
        return DeviceState(self.state, fast_kdf_config()).vault.get(namespace, key)


@pytest.fixture
def env(
    isolated_jupyter: Path, vault_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The host on a vault chosen by the environment -- in subprocesses and in this process."""
    config = fast_kdf_config()
    (isolated_jupyter / "config" / "jupyter_secure_storage_config.json").write_text(
        json.dumps({"VaultBackend": dict(config.VaultBackend)})
    )
    for name, value in {
        "JUPYTER_SECURE_STORAGE_BACKEND": "vault",
        "JUPYTER_SECURE_STORAGE_VAULT": str(vault_path),
        "JUPYTER_SECURE_STORAGE_PASSPHRASE": PASSPHRASE,
        "JUPYTER_SECURE_STORAGE_DEVICE_PASSPHRASE": DEVICE_PASSPHRASE,
        "JUPYTER_SECURE_STORAGE_DEVICE_TIMEOUT": "20",
    }.items():
        monkeypatch.setenv(name, value)
    return {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}


def run(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], input=stdin, capture_output=True, text=True, env=env, timeout=120
    )


def wait_for_file(path: Path, process: subprocess.Popen[str], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return path.read_text().strip()
        assert process.poll() is None, "the pair command ended before writing the offer"
        time.sleep(0.01)
    raise AssertionError(f"{path} never appeared")


def offer_parts(uri: str) -> tuple[str, str]:
    """The offer string and its one-time secret (b64u), to look for in outputs."""
    offer_string = uri.removeprefix("jss-pair:")
    secret = json.loads(unb64u(offer_string))["s"]
    return offer_string, secret


def holds_an_offer(text: str) -> bool:
    return bool(OFFER_URI.search(text)) or OFFER_STRING_START in text


def pair(
    env: dict[str, str], relay: Relay, tmp_path: Path, *device_args: str, name: str = "test phone"
) -> tuple[Device, str, subprocess.CompletedProcess[str]]:
    """``pair --offer-file --yes`` then the device on that file: (device, offer URI, pair run)."""
    offer_file = tmp_path / "offer.txt"
    pairing = subprocess.Popen(
        [*CLI, "pair", "--relay", relay.url, "--offer-file", str(offer_file), "--yes"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    uri = wait_for_file(offer_file, pairing)
    mode = stat.S_IMODE(offer_file.stat().st_mode)
    device = Device(
        env,
        tmp_path / "phone",
        "--offer-file",
        str(offer_file),
        "--auto-approve",
        "--name",
        name,
        *device_args,
    )
    out, err = pairing.communicate(timeout=120)
    done = subprocess.CompletedProcess(pairing.args, pairing.returncode, out, err)
    assert done.returncode == 0, err
    assert mode == 0o600
    assert not offer_file.exists()  # removed once pairing ended
    device.wait_for("serving 1 pairing(s)")
    return device, uri, done


# --- the QR code --------------------------------------------------------------------------------


def test_the_terminal_code_is_the_qr_matrix_and_the_svg_holds_no_offer_text() -> None:
    uri = "jss-pair:" + base64.urlsafe_b64encode(secrets.token_bytes(180)).decode().rstrip("=")
    code = make_qr(uri)
    assert code.error == "M"
    assert code.designator.startswith(str(code.version))
    rows = terminal_text(uri).splitlines()
    decoded: list[list[bool]] = []
    for line in rows:  # light modules are drawn: a block half means "not dark"
        decoded.append([c in "█▀" for c in line])
        decoded.append([c in "█▄" for c in line])
    expected = [[not bool(m) for m in row] for row in code.matrix_iter(border=2)]
    assert decoded[: len(expected)] == expected
    drawing = svg(uri)
    assert drawing.startswith("<svg")
    assert uri not in drawing
    assert uri.removeprefix("jss-pair:") not in drawing


# --- the command line ---------------------------------------------------------------------------


def test_pair_then_use_list_and_revoke_from_the_command_line(
    env: dict[str, str], relay: Relay, tmp_path: Path
) -> None:
    device, uri, paired = pair(env, relay, tmp_path)
    try:
        assert "paired with test-phone" in paired.stderr
        assert paired.stdout == ""
        # The offer went to the 0600 file only: not to stdout, stderr or the device's log.
        offer_string, offer_secret = offer_parts(uri)
        for text in (paired.stdout, paired.stderr, device.output):
            assert not holds_an_offer(text)
            assert offer_string not in text
            assert offer_secret not in text
        host_code = CODE.search(paired.stderr)
        assert host_code is not None
        assert host_code.group(1) == device.code()
        assert device.pairings() == 1

        # devices list: name, relay, when, label -- never a key or a capability.
        record = HostKeystore().device("test-phone")
        table = run(env, "devices", "list")
        assert table.returncode == 0
        lines = table.stdout.splitlines()
        assert lines[0].split() == ["NAME", "RELAY", "PAIRED", "HOST", "LABEL"]
        assert lines[1].split()[:2] == ["test-phone", relay.url]
        as_json = json.loads(run(env, "devices", "list", "--format", "json").stdout)
        assert [row["name"] for row in as_json] == ["test-phone"]
        assert set(as_json[0]) == {"name", "relay", "paired_at", "host_label"}
        assert as_json[0]["relay"] == relay.url
        listed = table.stdout + table.stderr + json.dumps(as_json)
        for private in (record.device_key, record.pairing, record.h2d, record.d2h):
            assert private not in listed

        # The device as a backend of the command line; the value lives on the device only.
        value = canary()
        written = run(
            env, "write", "API_TOKEN", "--stdin", "--backend", "device", stdin=value + "\n"
        )
        assert written.returncode == 0
        assert "stored API_TOKEN" in written.stderr
        read = run(env, "read", "API_TOKEN", "--backend", "device")
        assert read.returncode == 0
        assert read.stdout == value
        names = json.loads(run(env, "list", "--backend", "device", "--format", "json").stdout)
        assert [(row["name"], row["backend"]) for row in names] == [("API_TOKEN", "device")]
        assert device.stored("API_TOKEN") == value
        host = SecureStorage(backend="vault", config=fast_kdf_config())
        on_host = [
            secret.reveal()
            for namespace in host.namespaces()
            for secret in SecureStorage(backend=host.backend_object, namespace=namespace)
            .read_all()
            .values()
        ]
        assert value not in on_host
        deleted = run(env, "delete", "API_TOKEN", "--backend", "device")
        assert deleted.returncode == 0
        assert "deleted API_TOKEN" in deleted.stderr
        assert device.stored("API_TOKEN") is None
        assert run(env, "read", "API_TOKEN", "--backend", "device").returncode == 1
        for done in (written, deleted):
            assert value not in done.stdout + done.stderr
        assert value not in device.output

        # Revoking: the device forgets this computer, then this computer forgets it.
        revoked = run(env, "devices", "revoke", "test-phone")
        assert revoked.returncode == 0
        assert "the device forgot this computer" in revoked.stderr
        device.wait_for("Unpaired from")
        assert device.pairings() == 0
        assert json.loads(run(env, "devices", "list", "--format", "json").stdout) == []
        gone = run(env, "read", "API_TOKEN", "--backend", "device")
        assert gone.returncode == 1
        assert "No device is paired" in gone.stderr
        # Proof that the device forgot: with the old record back here, it refuses the computer.
        HostKeystore().save(record)
        refused = run(env, "list", "--backend", "device")
        assert refused.returncode == 1
        assert "does not recognise this computer" in refused.stderr
        assert "devices revoke test-phone" in refused.stderr
    finally:
        assert device.stop() == 0  # SIGTERM: a clean exit


@pytest.mark.parametrize("answer", ["n", "y"])
def test_interactive_pair_compares_the_code_and_only_yes_pairs(
    env: dict[str, str], relay: Relay, tmp_path: Path, answer: str
) -> None:
    child = pexpect.spawn(
        CLI[0],
        [*CLI[1:], "pair", "--relay", relay.url, "--label", "test host", "--timeout", "60"],
        env=env,
        encoding="utf-8",
        timeout=60,
        echo=False,
    )
    device: Device | None = None
    try:
        child.expect(r"(jss-pair:[A-Za-z0-9_-]+)\r\n")  # on the terminal: meant for a person
        uri = child.match.group(1)
        assert "█" in child.before  # the QR code, as text
        # --offer -: from stdin, so the offer stays out of the device's argv.
        device = Device(env, tmp_path / "phone", "--offer", "-", "--auto-approve", stdin=uri + "\n")
        child.expect(r"Confirmation code: (\d{3} \d{3})")
        assert child.match.group(1) == device.code()
        child.expect(r"Does the device show the same code\? \[y/N\] ")
        child.sendline(answer)
        child.expect(pexpect.EOF)
        transcript = child.before
        child.close()
        if answer == "n":
            assert child.exitstatus == 1
            assert "not paired" in transcript
            assert device.process.wait(30) == 1
            assert "rejected" in device.output
            assert device.pairings() == 0
            assert HostKeystore().devices() == []
        else:
            assert child.exitstatus == 0
            assert "paired with reference-device" in transcript
            device.wait_for("serving 1 pairing(s)")
            assert device.pairings() == 1
            assert [r.host_label for r in HostKeystore().devices()] == ["test host"]
    finally:
        child.close(force=True)
        if device is not None:
            device.stop()


def test_pair_shows_an_offer_only_where_a_person_compares_the_code(
    env: dict[str, str], relay: Relay, tmp_path: Path
) -> None:
    no_terminal = run(env, "pair", "--relay", relay.url)
    assert no_terminal.returncode == 2
    assert "--yes" in no_terminal.stderr
    to_a_pipe = run(env, "pair", "--relay", relay.url, "--yes")
    assert to_a_pipe.returncode == 2
    assert "--offer-file" in to_a_pipe.stderr
    not_a_relay = run(env, "pair", "--relay", "http://127.0.0.1/relay", "--yes")
    assert not_a_relay.returncode == 2
    assert "ws://" in not_a_relay.stderr
    for done in (no_terminal, to_a_pipe, not_a_relay):
        assert done.stdout == ""
        assert not holds_an_offer(done.stderr)
    wrong_place = run(env, "--backend", "memory", "devices", "list")
    assert wrong_place.returncode == 2
    assert "--backend does not apply" in wrong_place.stderr


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_pair_names_an_unreachable_relay_and_a_silent_offer(
    env: dict[str, str], relay: Relay, tmp_path: Path
) -> None:
    offer_file = tmp_path / "offer.txt"
    nowhere = f"ws://127.0.0.1:{free_port()}/relay"
    unreachable = run(env, "pair", "--relay", nowhere, "--offer-file", str(offer_file), "--yes")
    assert unreachable.returncode == 1
    assert "cannot reach the relay" in unreachable.stderr
    assert "fix:" in unreachable.stderr
    assert not offer_file.exists()
    silent = run(
        env,
        "pair",
        "--relay",
        relay.url,
        "--offer-file",
        str(offer_file),
        "--yes",
        "--timeout",
        "1",
    )
    assert silent.returncode == 1
    assert "No device answered" in silent.stderr
    assert not offer_file.exists()
    assert HostKeystore().devices() == []


def test_revoke_forgets_an_offline_device_here_and_says_so(
    env: dict[str, str], relay: Relay, tmp_path: Path
) -> None:
    device, _, _ = pair(env, relay, tmp_path)
    assert device.stop() == 0
    revoked = run(env, "devices", "revoke", "test-phone", "--timeout", "2")
    assert revoked.returncode == 0
    assert "did not confirm" in revoked.stderr
    assert "remove it on the device too" in revoked.stderr
    assert HostKeystore().devices() == []
    assert device.pairings() == 1  # the device, offline, still lists this computer
    unknown = run(env, "devices", "revoke", "no-such-phone")
    assert unknown.returncode == 1
    assert "No device named 'no-such-phone'" in unknown.stderr
    assert run(env, "devices", "revoke").returncode == 2
    assert run(env, "devices", "revoke", "x", "--all").returncode == 2


def test_a_never_policy_keeps_the_value_on_the_device(
    env: dict[str, str], relay: Relay, tmp_path: Path
) -> None:
    device, _, _ = pair(env, relay, tmp_path, "--policy", "SIGNING_KEY=never")
    try:
        assert "policy for default/SIGNING_KEY: never" in device.output
        value = canary()
        written = run(
            env, "write", "SIGNING_KEY", "--stdin", "--backend", "device", stdin=value + "\n"
        )
        assert written.returncode == 0
        assert device.stored("SIGNING_KEY") == value
        refused = run(env, "read", "SIGNING_KEY", "--backend", "device")
        assert refused.returncode == 1
        assert refused.stdout == ""
        assert "never leaves the device" in refused.stderr
        assert value not in refused.stderr
        listed = run(env, "list", "--backend", "device")
        assert "SIGNING_KEY" in listed.stdout
        everyone = run(env, "devices", "revoke", "--all")
        assert everyone.returncode == 0
        assert "revoked test-phone: the device forgot" in everyone.stderr
        device.wait_for("Unpaired from")
    finally:
        device.stop()


def test_the_device_asks_before_each_read_and_stops_cleanly_with_a_question_open(
    env: dict[str, str], relay: Relay, tmp_path: Path
) -> None:
    offer_file = tmp_path / "offer.txt"
    pairing = subprocess.Popen(
        [*CLI, "pair", "--relay", relay.url, "--offer-file", str(offer_file), "--yes"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    wait_for_file(offer_file, pairing)
    phone = pexpect.spawn(
        CLI[0],
        [*CLI[1:], "device", "--state", str(tmp_path / "phone"), "--offer-file", str(offer_file)],
        env=env,
        encoding="utf-8",
        timeout=60,
        echo=False,
    )
    value = canary()

    def in_background(*args: str, stdin: str | None = None) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [*CLI, *args, "--backend", "device"],
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        if process.stdin is not None:
            process.stdin.write(stdin or "")
            process.stdin.close()
            process.stdin = None  # written and closed: communicate() must not flush it
        return process

    try:
        assert pairing.wait(60) == 0
        phone.expect("serving 1 pairing")
        writing = in_background("write", "TOKEN", "--stdin", stdin=value + "\n")
        phone.expect(r"asks to WRITE default/TOKEN\.")
        phone.expect("> ")
        phone.sendline("o")
        assert writing.wait(60) == 0
        reading = in_background("read", "TOKEN")
        phone.expect(r"asks to READ default/TOKEN\.")
        phone.expect("> ")
        phone.sendline("m")  # approve this key for some minutes: the next read does not ask
        assert reading.communicate(timeout=60)[0] == value
        again = in_background("read", "TOKEN")
        assert again.communicate(timeout=60)[0] == value
        assert "asks to READ" not in phone.before
        # A reject on another key: a typed refusal, no value.
        writing = in_background("write", "OTHER", "--stdin", stdin=canary() + "\n")
        phone.expect("asks to WRITE default/OTHER")
        phone.expect("> ")
        phone.sendline("o")
        assert writing.wait(60) == 0
        refused = in_background("read", "OTHER")
        phone.expect("asks to READ default/OTHER")
        phone.expect("> ")
        phone.sendline("r")
        out, err = refused.communicate(timeout=60)
        assert refused.returncode == 1
        assert out == ""
        assert "refused" in err
        # A question is open when the device is stopped: it still exits at once, cleanly.
        pending = in_background("read", "OTHER")
        phone.expect("asks to READ default/OTHER")
        phone.expect("> ")
        phone.kill(15)
        phone.expect(pexpect.EOF, timeout=15)
        phone.close()
        assert phone.exitstatus == 0
        assert value not in phone.before
        pending.kill()
        pending.communicate()
    finally:
        phone.close(force=True)
        if pairing.poll() is None:
            pairing.kill()


def test_a_device_without_an_offer_or_pairing_says_so(env: dict[str, str], tmp_path: Path) -> None:
    lonely = Device(env, tmp_path / "phone", "--auto-approve")
    assert lonely.process.wait(60) == 1
    assert "no pairing to serve" in lonely.output
    bad = Device(env, tmp_path / "phone", "--offer", "-", stdin="jss-pair:not-an-offer\n")
    assert bad.process.wait(60) == 2
    assert "not a pairing offer" in bad.output
    bad_policy = run(env, "device", "--state", str(tmp_path / "phone"), "--policy", "K=maybe")
    assert bad_policy.returncode == 2


# --- %secure_pair -------------------------------------------------------------------------------


class RecordingClient(NotebookClient):
    """An nbclient that keeps every message the kernel sent (to see the offer it showed)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.messages: list[dict[str, Any]] = []

    def process_message(self, msg: dict[str, Any], cell: Any, cell_index: int) -> Any:
        self.messages.append(msg)
        return super().process_message(msg, cell, cell_index)

    def offers(self) -> list[str]:
        shown = [
            json.dumps(m["content"].get("data", {}))
            for m in self.messages
            if m["msg_type"] == "display_data"
        ]
        return sorted({found for text in shown for found in OFFER_URI.findall(text)})


def offer_display_ids(client: RecordingClient) -> tuple[set[str], set[str]]:
    shown, updated = set(), set()
    for message in client.messages:
        display_id = message["content"].get("transient", {}).get("display_id")
        if message["msg_type"] == "display_data" and OFFER_URI.search(
            json.dumps(message["content"])
        ):
            shown.add(display_id)
        if message["msg_type"] == "update_display_data":
            assert not holds_an_offer(json.dumps(message["content"]))
            updated.add(display_id)
    return shown, updated


def test_secure_pair_in_a_kernel_pairs_and_its_display_no_longer_holds_the_offer(
    env: dict[str, str], relay: Relay, tmp_path: Path
) -> None:
    offer_file = tmp_path / "offer.txt"
    # Started first: the device waits for the file the magic writes.
    device = Device(
        env,
        tmp_path / "phone",
        "--offer-file",
        str(offer_file),
        "--auto-approve",
        "--name",
        "kernel phone",
    )
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell("%load_ext jupyter_secure_storage"),
        nbformat.v4.new_code_cell(
            f"%secure_pair --relay {relay.url} --offer-file {offer_file} --yes --timeout 60"
        ),
        nbformat.v4.new_code_cell(
            "from jupyter_secure_storage import SecureStorage\n"
            'SecureStorage(backend="device").keys()'
        ),
    ]
    client = RecordingClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    try:
        client.execute(env=env)
        device.wait_for("serving 1 pairing(s)")
        saved = tmp_path / "saved.ipynb"
        nbformat.write(notebook, saved)
        blob = saved.read_text()

        offers = client.offers()
        assert len(offers) == 1  # it was shown while the device was awaited...
        offer_string, offer_secret = offer_parts(offers[0])
        shown, updated = offer_display_ids(client)
        assert shown  # ...and that same display was replaced
        assert shown <= updated
        assert not holds_an_offer(blob)  # so the saved notebook holds no offer
        assert offer_string not in blob
        assert offer_secret not in blob
        assert "<svg" not in blob
        assert not offer_file.exists()

        outputs = notebook.cells[1].outputs
        displays = [o for o in outputs if o.output_type == "display_data"]
        assert len(displays) == 1
        assert displays[0].data["text/plain"].startswith("pairing offer closed")
        printed = "".join(o.text for o in outputs if o.output_type == "stream")
        assert "paired with kernel-phone" in printed
        code = CODE.search(printed)
        assert code is not None
        assert code.group(1) == device.code()
        assert notebook.cells[2].outputs[0].data["text/plain"] == "[]"
        assert [r.name for r in HostKeystore().devices()] == ["kernel-phone"]
    finally:
        device.stop()


def test_secure_pair_without_stdin_and_without_yes_refuses_before_showing_an_offer(
    env: dict[str, str], relay: Relay, tmp_path: Path
) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell("%load_ext jupyter_secure_storage"),
        nbformat.v4.new_code_cell(f"%secure_pair --relay {relay.url}"),
    ]
    client = RecordingClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute(env=env)
    outputs = notebook.cells[1].outputs
    # A UsageError: one line on stderr, no traceback (IPython's way for magics).
    printed = "".join(o.text for o in outputs if o.output_type == "stream")
    assert printed.startswith("UsageError: %secure_pair:")
    assert "--yes" in printed
    assert not [o for o in outputs if o.output_type == "display_data"]
    assert client.offers() == []
    assert HostKeystore().devices() == []


@pytest.mark.timeout(300)
def test_secure_pair_asks_through_the_front_end_after_closing_the_offer(
    env: dict[str, str], relay: Relay, tmp_path: Path
) -> None:
    """Plays the front end: stdin allowed, the kernel's input_request answered with 'y'."""
    offer_file = tmp_path / "offer.txt"
    device = Device(env, tmp_path / "phone", "--offer-file", str(offer_file), "--auto-approve")
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(env=env)
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)

        def iopub_until_idle(msg_id: str) -> list[dict[str, Any]]:
            messages = []
            while True:
                message = client.get_iopub_msg(timeout=120)
                if message["parent_header"].get("msg_id") != msg_id:
                    continue
                messages.append(message)
                if (
                    message["msg_type"] == "status"
                    and message["content"]["execution_state"] == "idle"
                ):
                    return messages

        iopub_until_idle(client.execute("%load_ext jupyter_secure_storage"))
        msg_id = client.execute(
            f"%secure_pair --relay {relay.url} --offer-file {offer_file} --timeout 60",
            allow_stdin=True,
        )
        request = client.get_stdin_msg(timeout=120)
        assert request["msg_type"] == "input_request"
        assert request["content"]["prompt"] == "Does the device show the same code? [y/N] "
        assert request["content"]["password"] is False
        client.input("y")
        messages = iopub_until_idle(msg_id)
        kinds = [m["msg_type"] for m in messages]
        assert "display_data" in kinds
        assert "update_display_data" in kinds
        update = kinds.index("update_display_data")
        printed = [
            (i, m["content"]["text"]) for i, m in enumerate(messages) if m["msg_type"] == "stream"
        ]
        code_at = next(i for i, text in printed if "Confirmation code" in text)
        assert update < code_at  # the offer was closed before the code was shown
        text = "".join(t for _, t in printed)
        code = CODE.search(text)
        assert code is not None
        assert code.group(1) == device.code()
        assert "paired with reference-device" in text
        device.wait_for("serving 1 pairing(s)")
        assert not holds_an_offer(json.dumps(messages[update]["content"]))
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
        device.stop()


@pytest.fixture
def shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[InteractiveShell]:
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    config = Config()
    config.HistoryManager.enabled = False
    instance = InteractiveShell.instance(config=config)
    instance.display_pub = CapturingDisplayPublisher()
    instance.run_line_magic("load_ext", "jupyter_secure_storage")
    yield instance
    instance.run_line_magic("unload_ext", "jupyter_secure_storage")
    InteractiveShell.clear_instance()


def test_secure_pair_in_a_shell_asks_and_a_no_pairs_nothing(
    env: dict[str, str], relay: Relay, tmp_path: Path, shell: InteractiveShell, capsys: Any
) -> None:
    offer_file = tmp_path / "offer.txt"
    device = Device(env, tmp_path / "phone", "--offer-file", str(offer_file), "--auto-approve")
    state = loaded_state(shell)
    assert state is not None
    asked: list[str] = []

    def answer(question: str) -> str:
        asked.append(question)
        return "n"

    state.magics.confirm_function = answer
    try:
        result = shell.run_line_magic(
            "secure_pair", f"--relay {relay.url} --offer-file {offer_file} --timeout 60"
        )
        assert result is None
        assert asked == ["Does the device show the same code? [y/N] "]
        printed = capsys.readouterr().out
        assert "Not paired" in printed
        code = CODE.search(printed)
        assert code is not None
        assert code.group(1) == device.code()
        assert device.process.wait(30) == 1
        assert "rejected" in device.output
        assert HostKeystore().devices() == []
        published = shell.display_pub.outputs
        assert [p["update"] for p in published] == [False, True]
        first, second = published
        assert OFFER_URI.search(first["data"]["text/html"])  # shown while awaited
        assert second["transient"]["display_id"] == first["transient"]["display_id"]
        assert not holds_an_offer(json.dumps(second["data"]))  # then replaced
        assert not offer_file.exists()
    finally:
        device.stop()


# --- the pairing notebook ------------------------------------------------------------------------


def forms(value: str) -> list[str]:
    data = value.encode()
    return [
        value,
        base64.b64encode(data).decode(),
        base64.urlsafe_b64encode(data).decode(),
        urllib.parse.quote(value, safe=""),
        json.dumps(value)[1:-1],
    ]


def device_values() -> set[str]:
    """What the paired device holds now, read through the bridge (nothing if none is paired)."""
    config = fast_kdf_config()
    config.DeviceBackend.timeout = 10
    try:
        store = SecureStorage(backend="device", config=config)
        return {secret.reveal() for secret in store.read_all().values()}
    except SecureStorageError:
        return set()


@pytest.mark.timeout(600)
def test_the_pairing_notebook_leaves_no_value_and_no_offer_in_its_saved_result(
    env: dict[str, str], tmp_path: Path
) -> None:
    host = SecureStorage(backend="vault", config=fast_kdf_config())
    host.write("DEMO_API_KEY", canary())
    notebook = nbformat.read(REPO / "notebooks" / "03-pair-a-phone.ipynb", as_version=4)
    client = RecordingClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    on_device: set[str] = set()
    with client.setup_kernel(env=env):
        for index, cell in enumerate(notebook.cells):
            client.execute_cell(cell, index)  # raises CellExecutionError on any error
            on_device |= device_values()  # after each cell: values the notebook put there
    saved = tmp_path / "saved.ipynb"
    nbformat.write(notebook, saved)
    blob = saved.read_text()

    assert on_device, "the notebook stored nothing on the device"
    on_host = {
        secret.reveal()
        for namespace in host.namespaces()
        for secret in SecureStorage(backend=host.backend_object, namespace=namespace)
        .read_all()
        .values()
    }
    leaks = [value for value in on_device | on_host for form in forms(value) if form in blob]
    assert leaks == [], f"{len(leaks)} stored value(s) found in the saved notebook"
    offers = client.offers()
    assert len(offers) == 1
    offer_string, offer_secret = offer_parts(offers[0])
    assert not holds_an_offer(blob)
    assert offer_string not in blob
    assert offer_secret not in blob
    assert "<svg" not in blob
    shown, updated = offer_display_ids(client)
    assert shown
    assert shown <= updated
    assert HostKeystore().devices() == []  # revoked by the notebook
    assert "device exit code: 0 -- relay exit code: 0" in blob
