"""The unlock agent: the passphrase typed once, every other process asks the agent.

Real sockets and real processes: the agent runs in a thread of this process (its own
event loop, as Jupyter Server runs it) or as ``jupyter-secure-storage agent``; clients are
``SecureStorage`` in this process and the CLI in subprocesses that never see the
passphrase. Values and passphrases are compared, never printed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PASSPHRASE, fast_kdf_config
from test_cli import (
    CLI,
    env,  # noqa: F401 -- the fixture
    run,
)

from jupyter_secure_storage import SecureStorage
from jupyter_secure_storage.agent import AgentAlreadyRunning, UnlockAgent
from jupyter_secure_storage.agent.server import peer_allowed, peer_uid
from jupyter_secure_storage.agent_client import (
    ENV_AGENT_SOCKET,
    AgentClient,
    encode_message,
)
from jupyter_secure_storage.errors import (
    AgentUnavailableError,
    VaultLockedError,
    WrongPassphraseError,
)
from jupyter_secure_storage.testing import canary


@pytest.fixture
def socket_path() -> Path:
    return Path(os.environ[ENV_AGENT_SOCKET])


@pytest.fixture
def agent(socket_path: Path) -> Iterator[UnlockAgent]:
    running = UnlockAgent(config=fast_kdf_config())
    running.start_in_thread()
    yield running
    running.stop()


@pytest.fixture
def cli_env(env: dict[str, str]) -> dict[str, str]:  # noqa: F811
    """test_cli's environment for the CLI (the vault chosen), less the passphrase."""
    environment = dict(env)
    del environment["JUPYTER_SECURE_STORAGE_PASSPHRASE"]
    return environment


def store(vault_path: Path) -> SecureStorage:
    return SecureStorage(backend="vault", config=_vault_config(vault_path))


def _vault_config(vault_path: Path) -> object:
    config = fast_kdf_config()
    config.VaultBackend.path = str(vault_path)
    config.VaultBackend.prompt = False
    return config


def unlock(vault_path: Path, passphrase: str = PASSPHRASE, create: bool = True) -> None:
    AgentClient().call("unlock", os.path.abspath(vault_path), passphrase=passphrase, create=create)


# --- one unlock, every process ---------------------------------------------------------------


def test_processes_without_the_passphrase_read_through_the_unlocked_agent(
    agent: UnlockAgent, cli_env: dict[str, str], vault_path: Path
) -> None:
    done = run(cli_env, "unlock", "--stdin", stdin=PASSPHRASE + "\n")
    assert done.returncode == 0, done.stderr
    assert "created and unlocked" in done.stderr
    value = canary()
    assert run(cli_env, "write", "AGENT_KEY", "--stdin", stdin=value + "\n").returncode == 0
    read = run(cli_env, "read", "AGENT_KEY")
    assert read.returncode == 0
    assert read.stdout == value
    # This process has no passphrase either: its read goes through the agent too.
    secret = store(vault_path).read("AGENT_KEY")
    assert secret is not None
    assert secret.reveal() == value
    # The file is a real vault: it opens in-process with the passphrase, without the agent.
    config = _vault_config(vault_path)
    config.VaultBackend.use_agent = False
    os.environ["JUPYTER_SECURE_STORAGE_PASSPHRASE"] = PASSPHRASE
    try:
        direct = SecureStorage(backend="vault", config=config).read("AGENT_KEY")
    finally:
        del os.environ["JUPYTER_SECURE_STORAGE_PASSPHRASE"]
    assert direct is not None
    assert direct.reveal() == value
    for output in (done, read):
        assert PASSPHRASE not in output.stdout + output.stderr


def test_lock_then_a_read_names_the_unlock_remedy_and_changes_nothing(
    agent: UnlockAgent, cli_env: dict[str, str], vault_path: Path
) -> None:
    unlock(vault_path)
    store(vault_path).write("LOCKED_KEY", canary())
    before = vault_path.read_bytes()
    done = run(cli_env, "lock")
    assert done.returncode == 0
    assert "forgot every vault key" in done.stderr
    read = run(cli_env, "read", "LOCKED_KEY")
    assert read.returncode == 1
    assert "unlock" in read.stderr
    assert "jupyter-secure-storage unlock" in read.stderr
    with pytest.raises(VaultLockedError):
        store(vault_path).read("LOCKED_KEY")
    assert vault_path.read_bytes() == before


def test_a_write_in_a_process_that_can_prompt_unlocks_the_agent_for_everyone(
    agent: UnlockAgent, cli_env: dict[str, str], vault_path: Path
) -> None:
    unlock(vault_path)
    run(cli_env, "lock")
    # A notebook's %secure_write asks in a password field; the answer unlocks the agent.
    backend = store(vault_path).backend_object
    backend.prompt = True
    backend.prompt_function = lambda _text: PASSPHRASE
    SecureStorage(backend=backend).write("PROMPTED", canary())
    assert run(cli_env, "read", "PROMPTED").returncode == 0  # no prompt there: agent unlocked


def test_a_wrong_passphrase_is_refused_even_while_unlocked(
    agent: UnlockAgent, vault_path: Path
) -> None:
    unlock(vault_path)
    store(vault_path).write("K", canary())
    with pytest.raises(WrongPassphraseError):
        unlock(vault_path, passphrase="not the passphrase at all")
    assert store(vault_path).read("K") is not None  # still unlocked, nothing changed


def test_the_idle_lock_forgets_the_key(socket_path: Path, vault_path: Path) -> None:
    config = fast_kdf_config()
    config.UnlockAgent.lock_after = 0.5
    running = UnlockAgent(config=config)
    running.start_in_thread()
    try:
        unlock(vault_path)
        store(vault_path).write("IDLE", canary())
        client = AgentClient()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.25)
            # Asking for the status is no use of the vault: polling it (as a status bar
            # does) must not keep the agent unlocked.
            if not client.call("status", os.path.abspath(vault_path))["unlocked"]:
                break
        else:
            pytest.fail("the agent never locked while idle")
        with pytest.raises(VaultLockedError):
            store(vault_path).read("IDLE")
    finally:
        running.stop()


# --- the agent's own safety -----------------------------------------------------------------


def test_a_second_agent_for_the_same_user_is_not_started(agent: UnlockAgent) -> None:
    with pytest.raises(AgentAlreadyRunning):
        UnlockAgent().start_in_thread()
    assert AgentClient().running()


def test_an_agent_cut_off_mid_request_gives_a_typed_error_and_changes_nothing(
    socket_path: Path, vault_path: Path
) -> None:
    os.environ["JUPYTER_SECURE_STORAGE_PASSPHRASE"] = PASSPHRASE
    try:
        store(vault_path).write("KEPT", canary())
    finally:
        del os.environ["JUPYTER_SECURE_STORAGE_PASSPHRASE"]
    before = vault_path.read_bytes()
    # An "agent" that takes the request and dies before answering.
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(socket_path))
    listener.listen(1)

    def die_on_request() -> None:
        connection, _ = listener.accept()
        connection.recv(65536)
        connection.close()

    thread = threading.Thread(target=die_on_request, daemon=True)
    thread.start()
    with pytest.raises(AgentUnavailableError) as raised:
        store(vault_path).write("KEPT", canary())
    thread.join(5)
    listener.close()
    assert "stopped answering" in raised.value.cause
    assert vault_path.read_bytes() == before


def test_a_killed_agent_process_leaves_the_vault_whole(
    cli_env: dict[str, str], vault_path: Path, socket_path: Path
) -> None:
    agent_process = subprocess.Popen(
        [*CLI, "agent"], env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert agent_process.stdout is not None
        assert "listening" in agent_process.stdout.readline()
        assert run(cli_env, "unlock", "--stdin", stdin=PASSPHRASE + "\n").returncode == 0
        value = canary()
        assert run(cli_env, "write", "SURVIVES", "--stdin", stdin=value + "\n").returncode == 0
    finally:
        agent_process.send_signal(signal.SIGKILL)
        agent_process.wait(10)
    # The socket file is left behind by the killed agent: a client works without it.
    read = run(cli_env, "read", "SURVIVES")
    assert read.returncode == 1
    assert "needs a passphrase" in read.stderr
    with_passphrase = dict(cli_env, JUPYTER_SECURE_STORAGE_PASSPHRASE=PASSPHRASE)
    again = run(with_passphrase, "read", "SURVIVES")
    assert again.returncode == 0
    assert again.stdout == value
    # And a new agent replaces the dead one's socket.
    replacement = UnlockAgent(config=fast_kdf_config())
    replacement.start_in_thread()
    try:
        assert AgentClient().running()
    finally:
        replacement.stop()


def test_the_agent_started_with_the_passphrase_unlocks_and_prints_neither(
    cli_env: dict[str, str], vault_path: Path
) -> None:
    with_passphrase = dict(cli_env, JUPYTER_SECURE_STORAGE_PASSPHRASE=PASSPHRASE)
    agent_process = subprocess.Popen(
        [*CLI, "agent"],
        env=with_passphrase,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert agent_process.stdout is not None
        assert "unlocked from the environment" in agent_process.stdout.readline()
        value = canary()
        assert run(cli_env, "write", "ENV_AGENT", "--stdin", stdin=value + "\n").returncode == 0
        assert run(cli_env, "read", "ENV_AGENT").stdout == value
    finally:
        agent_process.send_signal(signal.SIGTERM)
        out, err = agent_process.communicate(timeout=20)
    assert agent_process.returncode == 0
    assert "stopped" in err
    assert PASSPHRASE not in out + err
    assert value not in out + err


def test_garbage_on_the_socket_does_not_stop_the_agent(
    agent: UnlockAgent, socket_path: Path
) -> None:
    for garbage in (
        b"\xff\xff\xff\xff",  # a length far over the limit
        b"\x00\x00\x00\x05{oops",  # not JSON
        encode_message({"v": 99, "op": "ping"}),  # another protocol version
        encode_message({"v": 1, "op": "no-such-operation", "vault": "/x"}),
        encode_message({"v": 1, "op": "get", "vault": "relative/path", "args": {}}),
        b"\x00\x00",  # cut short
    ):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(10)
            connection.connect(str(socket_path))
            connection.sendall(garbage)
            connection.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := connection.recv(65536):
                reply += chunk
        if reply:
            answer = json.loads(reply[4:])
            assert answer["ok"] is False
            assert answer["error"]["type"] in ("AgentRefusedError",)
    assert AgentClient().running()


def test_a_socket_folder_others_can_enter_is_refused(socket_path: Path) -> None:
    socket_path.parent.chmod(0o755)
    with pytest.raises(AgentUnavailableError) as raised:
        AgentClient().call("ping")
    assert "not a private folder" in raised.value.cause
    with pytest.raises(AgentUnavailableError):
        UnlockAgent().start_in_thread()


def test_the_peer_check_admits_only_the_same_uid() -> None:
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        assert peer_uid(left) == os.getuid()
    assert peer_allowed(os.getuid(), os.getuid())
    assert not peer_allowed(os.getuid() + 1, os.getuid())
    assert peer_allowed(None, os.getuid())  # where the OS cannot tell, the folder mode decides


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to run a client as another user")
def test_another_user_is_refused_by_the_agent(agent: UnlockAgent, socket_path: Path) -> None:
    # Open the folder and socket to everyone (a mistake the peer check must survive).
    socket_path.parent.chmod(0o711)
    socket_path.chmod(0o666)
    probe = (
        "import json, socket, struct, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "s.connect(sys.argv[1])\n"
        "body = json.dumps({'v': 1, 'op': 'ping', 'vault': ''}).encode()\n"
        "s.sendall(struct.pack('>I', len(body)) + body)\n"
        "data = b''\n"
        "while chunk := s.recv(65536):\n"
        "    data += chunk\n"
        "print(json.loads(data[4:])['error']['type'])\n"
    )
    done = subprocess.run(
        # Debian's interpreter: the venv's lives under /root, which another user cannot enter.
        [
            shutil.which("python3", path="/usr/bin") or "/usr/bin/python3",
            "-I",
            "-c",
            probe,
            str(socket_path),
        ],
        capture_output=True,
        text=True,
        user=65534,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-500:]
    assert done.stdout.strip() == "AgentRefusedError"
    socket_path.parent.chmod(0o700)
    assert AgentClient().running()  # and it still answers its own user


# --- from a notebook: %secure_unlock, %secure_lock, %secure_status -------------------------


def test_the_magics_unlock_lock_and_show_the_agent(
    agent: UnlockAgent, vault_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from IPython.core.interactiveshell import InteractiveShell
    from test_magics import answer_prompts_with, make_shell

    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    shell = make_shell(tmp_path, SecureStorage__backend="vault", VaultBackend__path=str(vault_path))
    try:
        shell.run_line_magic("load_ext", "jupyter_secure_storage")
        asked = answer_prompts_with(shell, PASSPHRASE)

        def output(code: str) -> str:
            from IPython.utils.capture import capture_output

            with capture_output() as captured:
                result = shell.run_cell(code)
            assert result.error_in_exec is None, type(result.error_in_exec).__name__
            return captured.stdout + str(result.result or "")

        assert "created and unlocked" in output("%secure_unlock")
        assert len(asked) == 2  # a new vault's passphrase, asked twice
        assert "vault unlocked" in output("%secure_status")
        assert "locked:" in output("%secure_lock")
        assert "LOCKED" in output("%secure_status")
        assert not AgentClient().call("status", os.path.abspath(vault_path))["unlocked"]
        assert "unlocked the vault" in output("%secure_unlock")
        assert AgentClient().call("status", os.path.abspath(vault_path))["unlocked"]
    finally:
        shell.run_line_magic("unload_ext", "jupyter_secure_storage")
        InteractiveShell.clear_instance()


def test_a_socket_path_too_long_for_unix_sockets_is_named_with_a_remedy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    folder = tmp_path / ("long-" + "x" * 120)
    folder.mkdir(mode=0o700)
    monkeypatch.setenv(ENV_AGENT_SOCKET, str(folder / "agent.sock"))
    with pytest.raises(AgentUnavailableError) as refused:
        UnlockAgent().start_in_thread()
    assert "too long" in refused.value.cause
    assert ENV_AGENT_SOCKET in refused.value.remedy
    assert not (folder / "agent.sock").exists()


def test_unlock_with_an_empty_stdin_is_a_usage_error(
    agent: UnlockAgent, cli_env: dict[str, str], vault_path: Path
) -> None:
    done = run(cli_env, "unlock", "--stdin", stdin="\n")
    assert done.returncode == 2
    assert "no passphrase" in done.stderr
    assert not vault_path.exists()  # nothing was created
    assert not AgentClient().call("status", os.path.abspath(vault_path))["unlocked"]
