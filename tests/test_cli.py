"""The command line, end to end in subprocesses: values never in argv, never echoed.

Each command runs as a real process with its own environment (an isolated Jupyter
config dir with cheap vault KDF costs, a throwaway vault). Interactive prompts go
through a real pseudo-terminal with pexpect.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest
from conftest import PASSPHRASE, fast_kdf_config

from jupyter_secure_storage.testing import canary

CLI = [sys.executable, "-m", "jupyter_secure_storage"]


@pytest.fixture
def env(isolated_jupyter: Path, vault_path: Path) -> dict[str, str]:
    config = fast_kdf_config()
    (isolated_jupyter / "config" / "jupyter_secure_storage_config.json").write_text(
        json.dumps({"VaultBackend": dict(config.VaultBackend)})
    )
    environment = dict(os.environ)
    environment.update(
        JUPYTER_SECURE_STORAGE_BACKEND="vault",
        JUPYTER_SECURE_STORAGE_VAULT=str(vault_path),
        JUPYTER_SECURE_STORAGE_PASSPHRASE=PASSPHRASE,
    )
    return environment


def run(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], input=stdin, capture_output=True, text=True, env=env, timeout=120
    )


def write(env: dict[str, str], key: str, value: str, *extra: str) -> None:
    done = run(env, "write", key, "--stdin", *extra, stdin=value + "\n")
    assert done.returncode == 0, done.stderr


def spawn(env: dict[str, str], *args: str) -> pexpect.spawn:
    return pexpect.spawn(
        CLI[0], [*CLI[1:], *args], env=env, encoding="utf-8", timeout=60, echo=False
    )


# --- write and read ---------------------------------------------------------------------------


def test_write_from_stdin_then_read_through_a_pipe(env: dict[str, str]) -> None:
    value = canary()
    written = run(env, "write", "API_TOKEN", "--stdin", stdin=value + "\n")
    assert written.returncode == 0
    assert "stored API_TOKEN" in written.stderr
    assert value not in written.stdout + written.stderr
    read = run(env, "read", "API_TOKEN")
    assert read.returncode == 0
    assert read.stdout == value  # the bare value, no newline, for $(...) and pipes


def test_stdin_keeps_inner_spaces_and_drops_only_the_line_ending(env: dict[str, str]) -> None:
    value = "  spaced value\twith tab  "
    run(env, "write", "SPACED", "--stdin", stdin=value + "\r\n")
    assert run(env, "read", "SPACED").stdout == value


def test_an_empty_stdin_stores_nothing(env: dict[str, str]) -> None:
    done = run(env, "write", "EMPTY", "--stdin", stdin="")
    assert done.returncode == 2
    assert run(env, "list", "--format", "json").stdout.strip() == "[]"


def test_write_without_a_terminal_or_stdin_flag_says_to_use_stdin(env: dict[str, str]) -> None:
    done = run(env, "write", "K", stdin="ignored\n")
    assert done.returncode == 2
    assert "--stdin" in done.stderr
    assert run(env, "read", "K").returncode == 1


def test_a_value_typed_as_an_argument_is_refused_and_not_echoed(env: dict[str, str]) -> None:
    value = canary()
    done = run(env, "write", "K", value)
    assert done.returncode == 2
    assert value not in done.stdout + done.stderr
    assert "shell history" in done.stderr
    assert run(env, "read", "K").returncode == 1


def test_read_refuses_to_print_to_a_terminal(env: dict[str, str]) -> None:
    value = canary()
    write(env, "TOKEN", value)
    child = spawn(env, "read", "TOKEN")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 2
    assert "--reveal" in child.before
    assert value not in child.before


def test_read_with_reveal_prints_to_a_terminal(env: dict[str, str]) -> None:
    value = canary()
    write(env, "TOKEN", value)
    child = spawn(env, "read", "TOKEN", "--reveal")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert value in child.before


def test_read_of_a_missing_key_fails_with_its_name(env: dict[str, str]) -> None:
    done = run(env, "read", "MISSING")
    assert done.returncode == 1
    assert "MISSING" in done.stderr
    assert done.stdout == ""


def test_interactive_write_prompts_twice_without_echo(env: dict[str, str]) -> None:
    value = canary()
    child = spawn(env, "write", "TYPED")
    child.expect("Value for TYPED: ")
    child.sendline(value)
    child.expect("Repeat the value for TYPED: ")
    child.sendline(value)
    child.expect(pexpect.EOF)
    transcript = child.before
    child.close()
    assert child.exitstatus == 0
    assert value not in transcript
    assert run(env, "read", "TYPED").stdout == value


def test_interactive_write_with_different_entries_stores_nothing(env: dict[str, str]) -> None:
    child = spawn(env, "write", "TYPED")
    child.expect("Value for TYPED: ")
    child.sendline(canary())
    child.expect("Repeat")
    child.sendline(canary())
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    assert run(env, "read", "TYPED").returncode == 1


def test_invalid_key_is_a_usage_error(env: dict[str, str]) -> None:
    done = run(env, "write", "bad\tkey", "--stdin", stdin="v\n")
    assert done.returncode == 2
    assert "control" in done.stderr


# --- list, delete, delete-all -----------------------------------------------------------------


def test_list_shows_names_namespace_and_backend_never_values(env: dict[str, str]) -> None:
    values = {"A_KEY": canary(), "B_KEY": canary()}
    for key, value in values.items():
        write(env, key, value)
    write(env, "TEAM_KEY", canary(), "--namespace", "team-a")
    table = run(env, "list")
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAME", "NAMESPACE", "BACKEND"]
    assert [line.split() for line in lines[1:]] == [
        ["A_KEY", "default", "vault"],
        ["B_KEY", "default", "vault"],
    ]
    as_json = json.loads(run(env, "list", "--format", "json", "--all-namespaces").stdout)
    assert {(row["name"], row["namespace"]) for row in as_json} == {
        ("A_KEY", "default"),
        ("B_KEY", "default"),
        ("TEAM_KEY", "team-a"),
    }
    everything = table.stdout + table.stderr + json.dumps(as_json)
    assert all(value not in everything for value in values.values())


def test_delete_removes_and_a_missing_key_is_fine(env: dict[str, str]) -> None:
    write(env, "GONE", canary())
    assert run(env, "delete", "GONE").returncode == 0
    assert run(env, "read", "GONE").returncode == 1
    again = run(env, "delete", "GONE")
    assert again.returncode == 0
    assert "nothing to delete" in again.stderr


def test_delete_all_needs_yes_without_a_terminal(env: dict[str, str]) -> None:
    write(env, "K1", canary())
    write(env, "K2", canary())
    refused = run(env, "delete-all")
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
    assert len(json.loads(run(env, "list", "--format", "json").stdout)) == 2
    assert run(env, "delete-all", "--yes").returncode == 0
    assert json.loads(run(env, "list", "--format", "json").stdout) == []


def test_delete_all_asks_at_a_terminal(env: dict[str, str]) -> None:
    write(env, "K1", canary())
    child = spawn(env, "delete-all")
    child.expect(r"\[y/N\]")
    child.sendline("n")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    assert len(json.loads(run(env, "list", "--format", "json").stdout)) == 1
    child = spawn(env, "delete-all")
    child.expect(r"\[y/N\]")
    child.sendline("y")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert json.loads(run(env, "list", "--format", "json").stdout) == []


# --- failures that name their cause and fix, and change nothing -------------------------------


def test_a_locked_vault_names_the_passphrase_variable(env: dict[str, str]) -> None:
    write(env, "K", canary())
    locked = dict(env)
    del locked["JUPYTER_SECURE_STORAGE_PASSPHRASE"]
    done = run(locked, "list")
    assert done.returncode == 1
    assert "JUPYTER_SECURE_STORAGE_PASSPHRASE" in done.stderr
    assert "fix:" in done.stderr


def test_a_wrong_passphrase_fails_and_leaves_the_file(
    env: dict[str, str], vault_path: Path
) -> None:
    write(env, "K", canary())
    before = hashlib.sha256(vault_path.read_bytes()).hexdigest()
    wrong = dict(env, JUPYTER_SECURE_STORAGE_PASSPHRASE="wrong passphrase")
    done = run(wrong, "write", "K2", "--stdin", stdin="v\n")
    assert done.returncode == 1
    assert "does not open" in done.stderr
    assert "wrong passphrase" not in done.stderr
    assert hashlib.sha256(vault_path.read_bytes()).hexdigest() == before


def test_an_unknown_backend_in_the_environment_is_named(env: dict[str, str]) -> None:
    done = run(dict(env, JUPYTER_SECURE_STORAGE_BACKEND="bogus"), "list")
    assert done.returncode == 1
    assert "JUPYTER_SECURE_STORAGE_BACKEND='bogus'" in done.stderr
    assert "vault" in done.stderr


# --- doctor -----------------------------------------------------------------------------------


def test_doctor_reports_every_backend_and_never_the_passphrase(env: dict[str, str]) -> None:
    done = run(env, "doctor")
    assert done.returncode == 0
    for backend in ("keyring", "memory", "vault"):
        assert backend in done.stdout
    assert "In use: vault" in done.stdout
    assert PASSPHRASE not in done.stdout + done.stderr
    report = json.loads(run(env, "doctor", "--format", "json").stdout)
    assert report["chosen"] == "vault"
    assert report["environment"]["JUPYTER_SECURE_STORAGE_PASSPHRASE"] == "set"
    assert {b["backend"] for b in report["backends"]} >= {"keyring", "memory", "vault"}


def test_doctor_without_dbus_explains_how_to_get_a_keystore(env: dict[str, str]) -> None:
    no_bus = {k: v for k, v in env.items() if k != "DBUS_SESSION_BUS_ADDRESS"}
    no_bus.pop("JUPYTER_SECURE_STORAGE_BACKEND")
    report = json.loads(run(no_bus, "doctor", "--format", "json").stdout)
    keyring_state = next(b for b in report["backends"] if b["backend"] == "keyring")
    assert keyring_state["usable"] is False
    assert "gnome-keyring" in keyring_state["remedy"]
    assert report["chosen"] == "vault"
    assert report["chosen_usable"] is True


def test_doctor_fails_when_the_backend_in_use_cannot_work(env: dict[str, str]) -> None:
    no_bus = {k: v for k, v in env.items() if k != "DBUS_SESSION_BUS_ADDRESS"}
    done = run(no_bus, "--backend", "keyring", "doctor")
    assert done.returncode == 1
    assert "NOT usable" in done.stdout


# --- migrate ----------------------------------------------------------------------------------


@pytest.mark.secret_service
def test_migrate_copies_everything_between_backends_without_loss(
    env: dict[str, str], keyring_prefix: str, isolated_jupyter: Path
) -> None:
    config_file = isolated_jupyter / "config" / "jupyter_secure_storage_config.json"
    config = json.loads(config_file.read_text())
    config["KeyringBackend"] = {"service_prefix": keyring_prefix}
    config_file.write_text(json.dumps(config))
    values = {"A": canary(), "B": "ünïcødé 😀 " + canary(), "LONG": "x" * 5000}
    for key, value in values.items():
        write(env, key, value)
    write(env, "T", "team value", "--namespace", "team-a")

    dry = run(env, "migrate", "--from", "vault", "--to", "keyring", "--all-namespaces", "--dry-run")
    assert dry.returncode == 0
    assert "would copy default/A" in dry.stdout
    keyring_env = dict(env, JUPYTER_SECURE_STORAGE_BACKEND="keyring")
    assert json.loads(run(keyring_env, "list", "--format", "json").stdout) == []

    done = run(env, "migrate", "--from", "vault", "--to", "keyring", "--all-namespaces")
    assert done.returncode == 0, done.stderr
    assert "copied 4 key(s)" in done.stderr
    for key, value in values.items():
        assert run(keyring_env, "read", key).stdout == value
    assert run(keyring_env, "--namespace", "team-a", "read", "T").stdout == "team value"
    assert run(env, "read", "A").stdout == values["A"]  # the source is unchanged

    # The target now differs for A: migrating back refuses, copies nothing, names A.
    write(keyring_env, "A", "changed in keyring")
    write(keyring_env, "ONLY_IN_KEYRING", "new")
    refused = run(env, "migrate", "--from", "keyring", "--to", "vault")
    assert refused.returncode == 1
    assert "default/A" in refused.stderr
    assert run(env, "read", "ONLY_IN_KEYRING").returncode == 1
    assert run(env, "read", "A").stdout == values["A"]
    overwritten = run(env, "migrate", "--from", "keyring", "--to", "vault", "--overwrite")
    assert overwritten.returncode == 0
    assert run(env, "read", "A").stdout == "changed in keyring"
    assert run(env, "read", "ONLY_IN_KEYRING").stdout == "new"


def test_migrate_to_the_same_backend_is_refused(env: dict[str, str]) -> None:
    done = run(env, "migrate", "--from", "vault", "--to", "vault")
    assert done.returncode == 2


# --- entry points -----------------------------------------------------------------------------


def test_jupyter_subcommand_and_console_script_work(env: dict[str, str]) -> None:
    bin_dir = Path(sys.executable).parent
    path_env = dict(env, PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}")
    write(env, "VIA_JUPYTER", canary())
    for command in (["jupyter", "secure-storage"], ["jupyter-secure-storage"]):
        done = subprocess.run(
            [*command, "list", "--format", "json"],
            capture_output=True,
            text=True,
            env=path_env,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert [row["name"] for row in json.loads(done.stdout)] == ["VIA_JUPYTER"]


def test_vault_passphrases_are_prompted_for_at_a_terminal(env: dict[str, str]) -> None:
    at_terminal = dict(env)
    del at_terminal["JUPYTER_SECURE_STORAGE_PASSPHRASE"]
    typed_passphrase = "typed at the terminal"
    value = canary()
    child = spawn(at_terminal, "write", "PROMPTED")
    child.expect("Value for PROMPTED: ")
    child.sendline(value)
    child.expect("Repeat the value")
    child.sendline(value)
    child.expect("New passphrase for the vault")
    child.sendline(typed_passphrase)
    child.expect("Repeat the passphrase")
    child.sendline(typed_passphrase)
    child.expect(pexpect.EOF)
    transcript = child.before
    child.close()
    assert child.exitstatus == 0
    assert value not in transcript
    assert typed_passphrase not in transcript

    child = spawn(at_terminal, "list")
    child.expect("Passphrase for the vault")
    child.sendline(typed_passphrase)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "PROMPTED" in child.before

    child = spawn(at_terminal, "list")
    child.expect("Passphrase for the vault")
    child.sendline("not it at all")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    assert "does not open" in child.before
    assert "PROMPTED" not in child.before
