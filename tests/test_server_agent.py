"""Jupyter Server runs the unlock agent: plain `jupyter server` with an existing vault works,
and a passphrase in the server's environment reaches no kernel.

A real Jupyter Server on loopback (tests/test_save_guard.py starts it), real kernels
started through its REST API, the real CLI in subprocesses. Values and the passphrase are
compared, never printed.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from conftest import PASSPHRASE
from test_save_guard import (
    github_token,
    holds_any_form,
    jupyter_server,
    vault_env,  # noqa: F401 -- the fixture, chosen through the environment
    vault_store_with,
)

CLI = [sys.executable, "-m", "jupyter_secure_storage"]


def without_passphrase() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "JUPYTER_SECURE_STORAGE_PASSPHRASE"}


def unlock_from_a_terminal() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "unlock", "--stdin"],
        input=PASSPHRASE + "\n",
        capture_output=True,
        text=True,
        env=without_passphrase(),
        timeout=120,
    )


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def test_a_locked_store_never_stops_a_notebook_being_created_or_saved(
    vault_env: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    value = "v-" + secrets.token_urlsafe(30)
    vault_store_with("OPENAI_API_KEY", value)
    token = github_token()
    with jupyter_server(tmp_path, without_passphrase()) as server:
        # What the Launcher's "Python 3" does: a new untitled notebook.
        status, created = server.request("POST", "contents", {"type": "notebook"})
        assert status == 201, created
        notebook = nbformat.v4.new_notebook()
        notebook.cells.append(nbformat.v4.new_code_cell(f"key = '{token}'"))
        status, _ = server.save(created["path"], {"type": "notebook", "content": notebook})
        assert status in (200, 201)
        on_disk = (server.root / created["path"]).read_text()
        assert token not in on_disk  # token formats are still checked while locked
        assert "[redacted:github-token]" in on_disk
        # Unlocked once (here from a terminal), stored values are checked again.
        unlocked = unlock_from_a_terminal()
        assert unlocked.returncode == 0, unlocked.stderr
        time.sleep(2.5)  # the guard re-reads fingerprints at most every 2 s
        notebook.cells.append(nbformat.v4.new_markdown_cell(f"the key is {value}"))
        status, _ = server.save(created["path"], {"type": "notebook", "content": notebook})
        assert status in (200, 201)
        on_disk = (server.root / created["path"]).read_text()
        assert not holds_any_form(on_disk, value)
        assert "[secret:OPENAI_API_KEY]" in on_disk
    log = server.log.read_text(errors="replace")
    assert "locked" in log
    assert not holds_any_form(log, value)


def test_the_servers_passphrase_reaches_no_kernel_and_is_scrubbed_from_saves(
    vault_env: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    value = "v-" + secrets.token_urlsafe(30)
    vault_store_with("OPENAI_API_KEY", value)
    with jupyter_server(tmp_path, dict(os.environ)) as server:
        status, kernel = server.request("POST", "kernels", {"name": "python3"})
        assert status == 201, kernel
        deadline = time.monotonic() + 60
        kernels: list[int] = []
        while not kernels and time.monotonic() < deadline:
            kernels = [
                pid
                for pid in descendants(server.pid)
                if b"ipykernel" in Path(f"/proc/{pid}/cmdline").read_bytes()
            ]
            time.sleep(0.2)
        assert kernels, "no kernel process appeared under the server"
        secret = PASSPHRASE.encode()
        for pid in kernels:
            environment = Path(f"/proc/{pid}/environ").read_bytes()
            assert b"JUPYTER_SECURE_STORAGE_PASSPHRASE" not in environment
            assert secret not in environment
        # The agent in the server was unlocked with it: a process without it reads.
        read = subprocess.run(
            [*CLI, "read", "OPENAI_API_KEY"],
            capture_output=True,
            text=True,
            env=without_passphrase(),
            timeout=120,
        )
        assert read.returncode == 0
        assert read.stdout == value
        # The passphrase itself is scrubbed from files like a stored value.
        status, _ = server.save(
            "notes.txt", {"type": "file", "format": "text", "content": f"pw: {PASSPHRASE}\n"}
        )
        assert status in (200, 201)
        assert (server.root / "notes.txt").read_text() == "pw: [secret:vault passphrase]\n"
        server.request("DELETE", f"kernels/{kernel['id']}")
    log = server.log.read_text(errors="replace")
    assert PASSPHRASE not in log
    assert not holds_any_form(log, value)


def test_two_servers_of_one_user_share_one_agent_and_outlive_each_other(
    vault_env: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    value = "v-" + secrets.token_urlsafe(30)
    vault_store_with("SHARED", value)
    token = github_token()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    # The first server starts (and hosts) the agent; the second joins it; then the first
    # stops while the second goes on.
    starting_first = jupyter_server(tmp_path / "a", without_passphrase())
    first = starting_first.__enter__()
    try:
        with jupyter_server(tmp_path / "b", without_passphrase()) as second:
            unlocked = unlock_from_a_terminal()
            assert unlocked.returncode == 0, unlocked.stderr
            # The second server uses the first one's agent, unlocked once for both.
            status, _ = second.save(
                "b.txt", {"type": "file", "format": "text", "content": f"k={value}\n"}
            )
            assert status in (200, 201)
            assert (second.root / "b.txt").read_text() == "k=[secret:SHARED]\n"
            starting_first.__exit__(None, None, None)
            first_stopped = True
            time.sleep(2.5)  # past the guard's fingerprint cache (reload_seconds = 2)
            # Its agent is gone: the second server takes over (locked), and a save still
            # goes through with the token-format check.
            status, reply = second.save(
                "c.txt", {"type": "file", "format": "text", "content": f"t={token}\n"}
            )
            assert status in (200, 201), reply
            assert (second.root / "c.txt").read_text() == "t=[redacted:github-token]\n"
    finally:
        if "first_stopped" not in locals():
            starting_first.__exit__(None, None, None)
    log = second.log.read_text(errors="replace")
    assert "using the unlock agent already running" in log
    assert "runs it now" in log
    for text in (log, first.log.read_text(errors="replace")):
        assert not holds_any_form(text, value)
        assert PASSPHRASE not in text
