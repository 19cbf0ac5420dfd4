"""The keyring backend on a real Secret Service, and what happens where there is none.

Processes that need a different keyring set-up (no D-Bus, a plaintext keyring)
run as subprocesses, because keyring picks its backend once per process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import KEYRINGS_ALT, PASSPHRASE, fast_kdf_config, keyring_config
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_secure_storage import SecureStorage
from jupyter_secure_storage.backends.keyring import KeyringBackend
from jupyter_secure_storage.errors import BackendOperationError
from jupyter_secure_storage.testing import canary, same

pytestmark = pytest.mark.secret_service


def keyring_store(prefix: str, namespace: str = "default", **traits: object) -> SecureStorage:
    return SecureStorage(
        backend="keyring", namespace=namespace, config=keyring_config(prefix, **traits)
    )


def secret_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["secret-tool", *args], capture_output=True, text=True, timeout=30)


# --- interoperability: the items are ordinary keystore items ----------------------------------


def test_values_are_ordinary_items_other_tools_can_find(keyring_prefix: str) -> None:
    value = canary()
    keyring_store(keyring_prefix, "team-a").write("OPENAI_API_KEY", value)
    found = secret_tool(
        "lookup", "service", f"{keyring_prefix}/team-a", "username", "OPENAI_API_KEY"
    )
    assert found.returncode == 0
    assert found.stdout == value


def test_an_item_written_by_another_tool_reads_back(keyring_prefix: str) -> None:
    import keyring

    value = canary()
    keyring.set_password(f"{keyring_prefix}/default", "FROM_KEYRING_CLI", value)
    assert same(keyring_store(keyring_prefix).read("FROM_KEYRING_CLI"), value)


# --- chunking for capped stores --------------------------------------------------------------


def _items_under(prefix: str) -> int:
    # secret-tool prints attributes on stderr (and secrets on stdout, which we ignore).
    listing = secret_tool("search", "--all", "application", "Python keyring library")
    return listing.stderr.count(f"attribute.service = {prefix}")


def test_long_values_are_split_and_shrinking_them_removes_old_chunks(keyring_prefix: str) -> None:
    store = keyring_store(keyring_prefix, max_item_bytes=100)
    long_value = "é😀x" * 200  # 1400 bytes of UTF-8 -> 14+ chunks
    store.write("LONG", long_value)
    assert same(store.read("LONG"), long_value)
    with_chunks = _items_under(keyring_prefix)
    store.write("LONG", "short")
    assert same(store.read("LONG"), "short")
    after = _items_under(keyring_prefix)
    assert with_chunks - after >= 14


def test_a_missing_chunk_is_a_typed_error_not_a_truncated_value(keyring_prefix: str) -> None:
    store = keyring_store(keyring_prefix, max_item_bytes=64)
    store.write("CHUNKED", "z" * 500)
    secret_tool("clear", "service", f"{keyring_prefix}/default#chunks", "username", "CHUNKED#3")
    with pytest.raises(BackendOperationError, match="incomplete"):
        store.read("CHUNKED")


def test_a_value_stored_under_a_cap_reads_back_without_one(keyring_prefix: str) -> None:
    value = "v" * 1000
    keyring_store(keyring_prefix, max_item_bytes=64).write("MOVED", value)
    assert same(keyring_store(keyring_prefix).read("MOVED"), value)


@settings(max_examples=200, deadline=None)
@given(value=st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=300))
def test_splitting_keeps_every_character_and_respects_the_cap(value: str) -> None:
    backend = KeyringBackend()
    backend._keyring = object()  # splitting needs no keystore; UTF-8 costing applies
    for cap in (4, 7, 64):
        chunks = backend._split(value, cap)
        assert "".join(chunks) == value
        assert all(len(c.encode()) <= cap for c in chunks if len(c) > 1)


# --- the index of names under concurrent writers ----------------------------------------------

INDEX_WRITER = textwrap.dedent(
    """
    import sys
    from traitlets.config import Config
    from jupyter_secure_storage import SecureStorage
    config = Config()
    config.KeyringBackend.service_prefix = sys.argv[1]
    store = SecureStorage(backend="keyring", config=config)
    for i in range(int(sys.argv[3])):
        store.write(f"{sys.argv[2]}-{i}", "v")
    """
)


def test_index_keeps_every_name_when_four_processes_write_at_once(keyring_prefix: str) -> None:
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", INDEX_WRITER, keyring_prefix, f"kernel{n}", "15"],
            stderr=subprocess.PIPE,
        )
        for n in range(4)
    ]
    for writer in writers:
        _, errors = writer.communicate(timeout=240)
        assert writer.returncode == 0, errors.decode()[-2000:]
    keys = keyring_store(keyring_prefix).keys()
    assert len(keys) == 60
    assert {f"kernel{n}-{i}" for n in range(4) for i in range(15)} == set(keys)


def test_a_name_whose_item_vanished_is_skipped_by_read_all(keyring_prefix: str) -> None:
    store = keyring_store(keyring_prefix)
    kept = canary()
    store.write("KEPT", kept)
    store.write("VANISHED", canary())
    secret_tool("clear", "service", f"{keyring_prefix}/default", "username", "VANISHED")
    everything = store.read_all()
    assert list(everything) == ["KEPT"]
    assert same(everything["KEPT"], kept)


# --- no Secret Service, plaintext keyrings ----------------------------------------------------

PROBE = textwrap.dedent(
    """
    import json, sys
    from jupyter_secure_storage import SecureStorage
    from jupyter_secure_storage.errors import SecureStorageError
    result = {}
    try:
        store = SecureStorage(backend=sys.argv[1])
        result["backend"] = store.backend_name
        result["reason"] = store.backend_choice.reason
        store.write("PROBE_KEY", sys.argv[2])
        result["wrote"] = True
    except SecureStorageError as error:
        result["error"] = type(error).__name__
        result["cause"] = error.cause
        result["remedy"] = error.remedy
    print(json.dumps(result))
    """
)


def run_probe(
    backend: str, env: dict[str, str], value: str = "probe-value"
) -> tuple[dict[str, str], str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, backend, value],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout), done.stderr


def without_dbus(vault: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DBUS_SESSION_BUS_ADDRESS"}
    env.update(
        HOME=str(home),
        JUPYTER_SECURE_STORAGE_VAULT=str(vault),
        JUPYTER_SECURE_STORAGE_PASSPHRASE=PASSPHRASE,
    )
    return env


@pytest.fixture
def fast_kdf_config_dir(isolated_jupyter: Path) -> Path:
    config_dir = isolated_jupyter / "config"
    config = fast_kdf_config()
    (config_dir / "jupyter_secure_storage_config.json").write_text(
        json.dumps({"VaultBackend": dict(config.VaultBackend)})
    )
    return config_dir


@pytest.mark.usefixtures("fast_kdf_config_dir")
def test_without_dbus_auto_chooses_the_vault_and_says_so(tmp_path: Path) -> None:
    vault = tmp_path / "v.jssv"
    result, stderr = run_probe("auto", without_dbus(vault, tmp_path))
    assert result.get("backend") == "vault"
    assert result.get("wrote") is True
    assert "No usable OS keystore" in stderr
    assert str(vault) in stderr
    assert vault.exists()


@pytest.mark.usefixtures("fast_kdf_config_dir")
def test_without_dbus_asking_for_keyring_explains_how_to_get_one(tmp_path: Path) -> None:
    result, _ = run_probe("keyring", without_dbus(tmp_path / "v.jssv", tmp_path))
    assert result.get("error") == "BackendUnavailableError"
    assert "gnome-keyring" in result["remedy"]
    assert "JUPYTER_SECURE_STORAGE_BACKEND=vault" in result["remedy"]
    assert not (tmp_path / "v.jssv").exists()


@pytest.mark.usefixtures("fast_kdf_config_dir")
def test_a_plaintext_keyring_is_refused_and_nothing_is_written_to_it(tmp_path: Path) -> None:
    assert (KEYRINGS_ALT / "keyrings" / "alt").is_dir(), "scripts/test.sh installs keyrings.alt"
    env = without_dbus(tmp_path / "v.jssv", tmp_path)
    env["PYTHONPATH"] = str(KEYRINGS_ALT)
    env["PYTHON_KEYRING_BACKEND"] = "keyrings.alt.file.PlaintextKeyring"
    value = canary()
    result, _ = run_probe("keyring", env, value)
    assert result.get("error") == "InsecureBackendError"
    assert "PlaintextKeyring" in result["cause"]
    result, _ = run_probe("auto", env, value)
    assert result.get("backend") == "vault"
    plaintext_files = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix == ".cfg"]
    assert all(value not in p.read_text(errors="replace") for p in plaintext_files)
    assert all(value.encode() not in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    "keyring_class", ["keyring.backends.null.Keyring", "keyring.backends.fail.Keyring"]
)
@pytest.mark.usefixtures("fast_kdf_config_dir")
def test_null_and_fail_keyrings_are_refused(tmp_path: Path, keyring_class: str) -> None:
    env = dict(os.environ, PYTHON_KEYRING_BACKEND=keyring_class)
    result, _ = run_probe("keyring", env)
    assert result.get("error") == "BackendUnavailableError"
    assert keyring_class.rsplit(".", 1)[0] in result["cause"]


def test_a_chain_with_a_plaintext_keyring_uses_the_secret_service(
    keyring_prefix: str, tmp_path: Path
) -> None:
    """keyring chains viable backends; a failing keystore must never fall through to plaintext."""
    script = textwrap.dedent(
        """
        import sys
        from traitlets.config import Config
        from jupyter_secure_storage import SecureStorage
        config = Config()
        config.KeyringBackend.service_prefix = sys.argv[1]
        store = SecureStorage(backend="keyring", config=config)
        print(store.backend_object.location)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(KEYRINGS_ALT))
    env.pop("PYTHON_KEYRING_BACKEND", None)
    done = subprocess.run(
        [sys.executable, "-c", script, keyring_prefix],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "SecretService" in done.stdout
