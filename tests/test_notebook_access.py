"""Per-notebook access: a notebook's kernel reads a key only once it is granted to it.

The grants live with the unlock agent (a real one on a socket, in a thread here); the
notebook is the one Jupyter Server names in ``$JPY_SESSION_NAME``. A real kernel (nbclient,
with that variable set as the server sets it) shows what a person sees. Values are
compared, never printed.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from conftest import fast_kdf_config
from nbclient import NotebookClient

from jupyter_secure_storage import SecureStorage
from jupyter_secure_storage.agent import UnlockAgent
from jupyter_secure_storage.agent.access import NotebookAccess
from jupyter_secure_storage.agent_client import AgentClient
from jupyter_secure_storage.errors import InvalidKeyError, NotebookAccessError
from jupyter_secure_storage.storage import notebook_identity
from jupyter_secure_storage.testing import canary, same


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[UnlockAgent]:
    config = fast_kdf_config()
    config.UnlockAgent.access_file = str(tmp_path / "grants" / "notebook-access.json")
    running = UnlockAgent(config=config)
    running.start_in_thread()
    yield running
    running.stop()


@pytest.fixture
def notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """This process runs for a notebook, as a kernel Jupyter Server started does."""
    path = str(tmp_path / "work" / "analysis.ipynb")
    monkeypatch.setenv("JPY_SESSION_NAME", path)
    return path


def grant(notebook: str, key: str, namespace: str = "default") -> None:
    AgentClient().call("grant", "", notebook=notebook, namespace=namespace, key=key)


# --- the grants file ---------------------------------------------------------------------


def test_grants_are_kept_per_notebook_in_a_private_file(tmp_path: Path) -> None:
    access = NotebookAccess(tmp_path / "access.json")
    access.grant("/a/one.ipynb", "default", "K")
    access.grant("/a/one.ipynb", "default", "K")  # once only
    access.grant("/a/two.ipynb", "team", "K")
    assert [(g.notebook, g.namespace, g.key) for g in access.grants("/a/one.ipynb")] == [
        ("/a/one.ipynb", "default", "K")
    ]
    assert len(access.grants()) == 2
    assert stat.S_IMODE((tmp_path / "access.json").stat().st_mode) == 0o600
    assert access.allowed("/a/one.ipynb", "default", "K")
    assert not access.allowed("/a/two.ipynb", "default", "K")  # another namespace's grant
    assert not access.allowed("/a/../a/three.ipynb", "default", "K")
    access.revoke("/a/one.ipynb", "default", "K")
    assert not access.allowed("/a/one.ipynb", "default", "K")
    log = access.log()
    assert [entry.allowed for entry in log] == [False, False, False, True]  # newest first
    assert NotebookAccess(tmp_path / "access.json").grants() == access.grants()


def test_a_damaged_grants_file_grants_nothing_and_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "access.json"
    path.write_text("{not json")
    access = NotebookAccess(path)
    assert not access.allowed("/a/one.ipynb", "default", "K")
    assert path.read_text() == "{not json"


def test_a_grant_needs_an_absolute_notebook_path(tmp_path: Path) -> None:
    with pytest.raises(InvalidKeyError):
        NotebookAccess(tmp_path / "a.json").grant("relative.ipynb", "default", "K")


def test_the_notebook_is_named_by_its_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    assert notebook_identity() is None
    monkeypatch.setenv("JPY_SESSION_NAME", "/srv/work/./a.ipynb")
    assert notebook_identity() == "/srv/work/a.ipynb"
    # A path relative to the server's root: the kernel started in the notebook's folder.
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    monkeypatch.setenv("JPY_SESSION_NAME", "sub/b.ipynb")
    assert notebook_identity() == str(tmp_path / "sub" / "b.ipynb")


# --- through the facade ------------------------------------------------------------------


def test_a_notebook_reads_a_key_only_once_granted(agent: UnlockAgent, notebook: str) -> None:
    value = canary()
    SecureStorage(backend="memory", notebook_access="off").write("OPENAI_API_KEY", value)
    store = SecureStorage(backend="memory")
    with pytest.raises(NotebookAccessError) as refused:
        store.read("OPENAI_API_KEY")
    assert "OPENAI_API_KEY" in refused.value.cause
    assert "analysis.ipynb" in refused.value.cause
    assert "Secrets sidebar" in refused.value.remedy
    assert value not in str(refused.value)
    grant(notebook, "OPENAI_API_KEY")
    assert same(store.read("OPENAI_API_KEY"), value)
    AgentClient().call("revoke", "", notebook=notebook, namespace="default", key="OPENAI_API_KEY")
    with pytest.raises(NotebookAccessError):
        store.read("OPENAI_API_KEY")
    log = AgentClient().call("access_log", "", limit=10)
    assert [entry["allowed"] for entry in log[:3]] == [False, True, False]
    assert {entry["notebook"] for entry in log} == {notebook}
    assert "value" not in json.dumps(log)


def test_what_a_notebook_writes_is_its_own_but_others_keys_are_not_overwritten(
    agent: UnlockAgent, notebook: str
) -> None:
    store = SecureStorage(backend="memory")
    typed = canary()
    store.write("TYPED_HERE", typed)  # %secure_write in this notebook
    assert same(store.read("TYPED_HERE"), typed)
    outside = SecureStorage(backend="memory", notebook_access="off")
    outside.write("SOMEONE_ELSES", canary())
    for attempt in (
        lambda: store.write("SOMEONE_ELSES", "replaced by the notebook"),
        lambda: store.delete("SOMEONE_ELSES"),
        store.read_all,
        store.delete_all,
    ):
        with pytest.raises(NotebookAccessError):
            attempt()
    assert outside.keys() == ["SOMEONE_ELSES", "TYPED_HERE"]  # nothing changed
    assert store.keys() == ["SOMEONE_ELSES", "TYPED_HERE"]  # names are not secret


def test_outside_a_notebook_nothing_is_checked(
    agent: UnlockAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    store = SecureStorage(backend="memory")
    store.write("SCRIPT_KEY", canary())
    assert store.read("SCRIPT_KEY") is not None


def test_without_an_agent_auto_allows_and_on_refuses(notebook: str) -> None:
    value = canary()
    SecureStorage(backend="memory", notebook_access="off").write("K", value)
    assert same(SecureStorage(backend="memory").read("K"), value)
    with pytest.raises(NotebookAccessError) as refused:
        SecureStorage(backend="memory", notebook_access="on").read("K")
    assert "no unlock agent" in refused.value.cause


# --- a real kernel ------------------------------------------------------------------------


def test_a_kernel_started_for_a_notebook_needs_the_grant(
    agent: UnlockAgent, tmp_path: Path, vault_env: Path
) -> None:
    value = canary()
    SecureStorage(backend="vault", config=fast_kdf_config(), notebook_access="off").write(
        "SHARED_KEY", value
    )
    path = str(tmp_path / "shared-with-me.ipynb")
    cells = [
        "%load_ext jupyter_secure_storage",
        "key = %secure_read SHARED_KEY",
        "import hashlib; print(hashlib.sha256(key.reveal().encode()).hexdigest())",
    ]
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTEST_CURRENT_TEST",)} | {
        "JPY_SESSION_NAME": path,
        "JUPYTER_SECURE_STORAGE_BACKEND": "vault",
    }

    def run() -> nbformat.NotebookNode:
        document = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
        NotebookClient(
            document, timeout=120, kernel_name="python3", allow_errors=True,
            resources={"metadata": {"path": str(tmp_path)}},
        ).execute(env=environment)  # fmt: skip
        return document

    refused = json.dumps(run().cells[1].outputs)
    assert "NotebookAccessError" in refused or "may not read" in refused
    assert "Notebook access" in refused
    assert value not in refused
    grant(path, "SHARED_KEY")
    allowed = run()
    import hashlib

    printed = "".join(output.get("text", "") for output in allowed.cells[2].outputs)
    assert hashlib.sha256(value.encode()).hexdigest() in printed


def test_grants_from_the_command_line(agent: UnlockAgent, notebook: str) -> None:
    import subprocess
    import sys

    cli = [sys.executable, "-m", "jupyter_secure_storage"]
    value = canary()
    SecureStorage(backend="memory", notebook_access="off").write("CLI_KEY", value)
    outside = {k: v for k, v in os.environ.items() if k != "JPY_SESSION_NAME"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cli, *args], capture_output=True, text=True, env=outside, timeout=120
        )

    done = run("grant", notebook, "CLI_KEY")
    assert done.returncode == 0, done.stderr
    assert same(SecureStorage(backend="memory").read("CLI_KEY"), value)
    listed = json.loads(run("grants", notebook, "--format", "json").stdout)
    assert [(g["namespace"], g["key"]) for g in listed] == [("default", "CLI_KEY")]
    assert run("revoke", notebook, "CLI_KEY").returncode == 0
    with pytest.raises(NotebookAccessError):
        SecureStorage(backend="memory").read("CLI_KEY")
    log = run("grants", "--log").stdout
    assert "REFUSED default/CLI_KEY" in log
    assert "allowed default/CLI_KEY" in log
    agent.stop()
    stopped = run("grants")
    assert stopped.returncode == 1
    assert "No unlock agent runs" in stopped.stderr
