"""Unlocking the vault from JupyterLab: the REST routes on a real Jupyter Server whose
environment holds no passphrase (the point of the unlock agent), and notebook access
grants through the agent the server hosts.

Each server runs on loopback with its own token, its own agent socket (conftest) and a
throwaway vault. The test process opens that vault directly (``use_agent = False``), so
it never unlocks the server's agent by accident. The passphrases are canaries: no reply
and no server log line may hold one, and the tests compare, never print.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import fast_kdf_config
from test_browser import Lab, new_canary
from test_kernel_leaks import leaked_forms
from test_lab_sidebar import call, is_refusal, jupyter_server

from jupyter_secure_storage import SecureStorage
from jupyter_secure_storage.agent_client import AgentClient
from jupyter_secure_storage.testing import same

NO_PASSPHRASE: dict[str, str | None] = {
    "JUPYTER_SECURE_STORAGE_BACKEND": "vault",
    "JUPYTER_SECURE_STORAGE_PASSPHRASE": None,  # the server must not have it
}


def direct_store(namespace: str = "default") -> SecureStorage:
    """The test's vault opened in this process, never through the server's agent."""
    config = fast_kdf_config()
    config.VaultBackend.use_agent = False
    return SecureStorage(backend="vault", namespace=namespace, config=config)


def status_of(server: Lab) -> dict[str, Any]:
    code, body = call(server, "GET", "status")
    assert code == 200
    reply: dict[str, Any] = json.loads(body)
    return reply


def write_config(isolated_jupyter: Path) -> None:
    config = fast_kdf_config()
    (isolated_jupyter / "config" / "jupyter_secure_storage_config.json").write_text(
        json.dumps({"VaultBackend": dict(config.VaultBackend)})
    )


@pytest.fixture
def passphrase(vault_env: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A canary passphrase, in this process's environment only (for direct_store)."""
    chosen = new_canary(18)
    monkeypatch.setenv("JUPYTER_SECURE_STORAGE_PASSPHRASE", chosen)
    return chosen


@pytest.fixture
def locked_server(
    passphrase: str, vault_env: Path, isolated_jupyter: Path, tmp_path: Path
) -> Iterator[Lab]:
    """A Jupyter Server over an existing vault, started without its passphrase."""
    write_config(isolated_jupyter)
    direct_store().write("EXISTING", new_canary(21))
    with jupyter_server(tmp_path, NO_PASSPHRASE) as running:
        yield running


@pytest.fixture
def empty_server(
    passphrase: str, vault_env: Path, isolated_jupyter: Path, tmp_path: Path
) -> Iterator[Lab]:
    """A Jupyter Server with no vault yet and no passphrase."""
    write_config(isolated_jupyter)
    assert not vault_env.exists()
    with jupyter_server(tmp_path, NO_PASSPHRASE) as running:
        yield running


def test_status_says_locked_and_the_store_routes_say_so_in_their_503(
    locked_server: Lab, passphrase: str
) -> None:
    status = status_of(locked_server)
    assert status["backend"] == "vault"
    assert status["locked"] is True
    assert status["vault_exists"] is True
    assert status["agent"] is True
    assert status["stored_value_check"] == "locked"
    assert status["redaction_values"] is None

    for method, path, body in (
        ("GET", "keys", None),
        ("POST", "keys", {"name": "NEW", "value": new_canary(21)}),
    ):
        code, reply = call(locked_server, method, path, body)
        assert code == 503
        assert is_refusal(reply)
        assert json.loads(reply)["locked"] is True, f"{method} {path}: no locked flag"
    assert direct_store().keys() == ["EXISTING"]


def test_unlock_and_lock_through_the_agent_never_answer_or_log_the_passphrase(
    locked_server: Lab, passphrase: str
) -> None:
    wrong = new_canary(18)
    replies: list[bytes] = []

    code, reply = call(locked_server, "POST", "unlock", {"passphrase": wrong})
    replies.append(reply)
    assert code == 403
    assert is_refusal(reply)
    assert status_of(locked_server)["locked"] is True, "a wrong passphrase unlocked"

    code, reply = call(locked_server, "POST", "unlock", {"passphrase": passphrase})
    replies.append(reply)
    assert code == 204
    status = status_of(locked_server)
    assert (status["locked"], status["stored_value_check"]) == (False, "on")
    code, reply = call(locked_server, "GET", "keys")
    replies.append(reply)
    assert code == 200
    assert "EXISTING" in {key["name"] for key in json.loads(reply)["keys"]}

    # A wrong passphrase is refused while unlocked too, and locks nothing.
    code, reply = call(locked_server, "POST", "unlock", {"passphrase": wrong})
    replies.append(reply)
    assert code == 403
    assert status_of(locked_server)["locked"] is False

    code, reply = call(locked_server, "POST", "lock")
    replies.append(reply)
    assert code == 204
    assert status_of(locked_server)["locked"] is True
    assert call(locked_server, "GET", "keys")[0] == 503

    for blob in [*replies, locked_server.log.read_bytes()]:
        for secret in (passphrase, wrong):
            assert leaked_forms(blob, secret) == [], "a reply or the server log holds a passphrase"


def test_unlock_creates_a_new_vault_and_refuses_a_weak_passphrase(
    empty_server: Lab, passphrase: str, vault_env: Path
) -> None:
    status = status_of(empty_server)
    assert (status["locked"], status["vault_exists"]) == (True, False)

    weak = "short"
    code, reply = call(empty_server, "POST", "unlock", {"passphrase": weak})
    assert code == 400
    assert is_refusal(reply)
    assert not vault_env.exists(), "a weak passphrase created a vault"
    assert b"short" not in reply

    code, _ = call(empty_server, "POST", "unlock", {"passphrase": passphrase})
    assert code == 204
    assert vault_env.exists()
    status = status_of(empty_server)
    assert (status["locked"], status["vault_exists"]) == (False, True)

    value = new_canary(21)
    code, _ = call(empty_server, "POST", "keys", {"name": "FIRST", "value": value})
    assert code == 201
    # The new vault opens with the passphrase given (in this process, without the agent).
    assert same(direct_store().read("FIRST"), value)
    assert leaked_forms(empty_server.log.read_bytes(), passphrase) == []
    assert leaked_forms(empty_server.log.read_bytes(), value) == []


@pytest.mark.parametrize(
    "body",
    [{}, {"passphrase": None}, {"passphrase": 12345678}, {"secret": "x"}],
)
def test_unlock_refuses_a_body_without_a_string_passphrase(locked_server: Lab, body: Any) -> None:
    code, reply = call(locked_server, "POST", "unlock", body)
    assert code == 400
    assert is_refusal(reply)
    assert status_of(locked_server)["locked"] is True


def test_unlock_lock_and_grants_need_the_token(locked_server: Lab, passphrase: str) -> None:
    code, reply = call(locked_server, "POST", "unlock", {"passphrase": passphrase}, token=False)
    assert code == 403
    assert is_refusal(reply)
    assert leaked_forms(reply, passphrase) == []
    assert status_of(locked_server)["locked"] is True, "unlocked without the token"
    assert call(locked_server, "POST", "lock", token=False)[0] == 403
    assert call(locked_server, "GET", "status", token=False)[0] == 403
    assert call(locked_server, "GET", "grants", token=False)[0] == 403
    grant = {"notebook": "a.ipynb", "namespace": "default", "key": "EXISTING"}
    assert call(locked_server, "PUT", "grants", grant, token=False)[0] == 403
    assert call(locked_server, "GET", "access-log", token=False)[0] == 403


# --- notebook access grants ------------------------------------------------------------------


def test_grants_are_put_listed_and_deleted_by_the_notebooks_server_path(
    locked_server: Lab, passphrase: str
) -> None:
    assert call(locked_server, "POST", "unlock", {"passphrase": passphrase})[0] == 204
    notebook = "work/analysis.ipynb"
    grant = {"notebook": notebook, "namespace": "default", "key": "EXISTING"}

    code, reply = call(locked_server, "GET", "grants?notebook=work%2Fanalysis.ipynb")
    assert (code, json.loads(reply)) == (200, {"grants": []})
    assert call(locked_server, "PUT", "grants", grant)[0] == 204
    assert call(locked_server, "PUT", "grants", grant)[0] == 204  # twice: still one grant

    code, reply = call(locked_server, "GET", "grants?notebook=work%2Fanalysis.ipynb")
    assert code == 200
    grants = json.loads(reply)["grants"]
    assert [(g["notebook"], g["namespace"], g["key"]) for g in grants] == [
        (notebook, "default", "EXISTING")
    ]
    assert isinstance(grants[0]["granted"], float)
    # The agent keeps it under the absolute path a kernel's JPY_SESSION_NAME holds.
    absolute = str(locked_server.root / notebook)
    kept = AgentClient().call("grants", "", notebook=absolute)
    assert [g["notebook"] for g in kept] == [absolute]
    # Another notebook has none.
    other = json.loads(call(locked_server, "GET", "grants?notebook=other.ipynb")[1])
    assert other == {"grants": []}

    assert call(locked_server, "DELETE", "grants", grant)[0] == 204
    assert json.loads(call(locked_server, "GET", "grants")[1]) == {"grants": []}


@pytest.mark.parametrize(
    "notebook",
    ["", "../outside.ipynb", "a/../../outside.ipynb", 7],
)
def test_grants_refuse_a_notebook_outside_the_server_root(
    locked_server: Lab, notebook: Any
) -> None:
    grant = {"notebook": notebook, "namespace": "default", "key": "EXISTING"}
    code, reply = call(locked_server, "PUT", "grants", grant)
    assert code == 400
    assert is_refusal(reply)
    assert json.loads(call(locked_server, "GET", "grants")[1]) == {"grants": []}


def test_access_log_lists_the_agents_answers_newest_first(locked_server: Lab) -> None:
    root = locked_server.root
    grant = {"notebook": "granted.ipynb", "namespace": "default", "key": "EXISTING"}
    assert call(locked_server, "PUT", "grants", grant)[0] == 204
    client = AgentClient()
    asked = [("granted.ipynb", True), ("stranger.ipynb", False)]
    for notebook, _ in asked:
        client.call(
            "access", "", notebook=str(root / notebook), namespace="default", key="EXISTING"
        )

    code, reply = call(locked_server, "GET", "access-log?limit=10")
    assert code == 200
    entries = json.loads(reply)["entries"]
    assert [(e["notebook"], e["key"], e["allowed"]) for e in entries] == [
        ("stranger.ipynb", "EXISTING", False),
        ("granted.ipynb", "EXISTING", True),
    ]
    assert entries[0]["time"] >= entries[1]["time"]
    assert len(json.loads(call(locked_server, "GET", "access-log?limit=1")[1])["entries"]) == 1
    for bad in ("0", "-1", "many", "100000"):
        code, reply = call(locked_server, "GET", f"access-log?limit={bad}")
        assert code == 400
        assert is_refusal(reply)
