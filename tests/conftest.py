"""Fixtures shared by every test: an isolated Jupyter environment and stores on each backend.

Every test gets its own Jupyter data and config directories and none of the
package's environment variables, so nothing reads or writes a real vault or a
person's config. Keyring tests need a real Secret Service on the session D-Bus
(scripts/test.sh starts one); with ``JSS_REQUIRE_SECRET_SERVICE=1`` a missing one
fails the run instead of skipping.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from traitlets.config import Config

from jupyter_secure_storage.agent_client import ENV_AGENT_SOCKET
from jupyter_secure_storage.backends import vault as vault_module
from jupyter_secure_storage.backends.keyring import KeyringBackend
from jupyter_secure_storage.backends.memory import MemoryBackend
from jupyter_secure_storage.secret import secret_registry

PASSPHRASE = "correct horse battery staple"  # test passphrase for throwaway vaults
REPO = Path(__file__).resolve().parent.parent
KEYRINGS_ALT = REPO / ".venv" / "extras" / "keyrings-alt"

OUR_VARIABLES = (
    "JUPYTER_SECURE_STORAGE_BACKEND",
    "JUPYTER_SECURE_STORAGE_VAULT",
    "JUPYTER_SECURE_STORAGE_PASSPHRASE",
    "PYTHON_KEYRING_BACKEND",
)


def fast_kdf_config() -> Config:
    """Cheap Argon2id costs so each test's new vault takes milliseconds, not 150 ms."""
    config = Config()
    config.VaultBackend.kdf_memory_kib = 1024
    config.VaultBackend.kdf_iterations = 1
    config.VaultBackend.kdf_lanes = 1
    return config


@pytest.fixture(autouse=True)
def isolated_jupyter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name in OUR_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "jupyter"
    for sub in ("data", "config", "runtime"):
        (home / sub).mkdir(parents=True)
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(home / "data"))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(home / "config"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(home / "runtime"))
    # Each test has its own unlock agent socket, so no test ever reaches another's agent
    # (or a person's). Short: a Unix socket path holds about 100 bytes.
    agent_folder = Path(tempfile.mkdtemp(prefix="jss-agent-"))
    monkeypatch.setenv(ENV_AGENT_SOCKET, str(agent_folder / "agent.sock"))
    known = secret_registry.values()
    yield home
    shutil.rmtree(agent_folder, ignore_errors=True)
    vault_module._OPEN.clear()
    MemoryBackend(store_name="default").clear()
    # Forget the values this test registered: the process-wide registry would otherwise
    # grow across the whole run (the huge-value tests put megabytes in it).
    with secret_registry._lock:
        secret_registry._names_by_value = known
        secret_registry.version += 1


@pytest.fixture
def vault_path(tmp_path: Path) -> Path:
    return tmp_path / "vaults" / "test.jssv"


@pytest.fixture
def vault_env(monkeypatch: pytest.MonkeyPatch, vault_path: Path) -> Path:
    """The vault backend chosen through the environment, as an unattended run would."""
    monkeypatch.setenv("JUPYTER_SECURE_STORAGE_VAULT", str(vault_path))
    monkeypatch.setenv("JUPYTER_SECURE_STORAGE_PASSPHRASE", PASSPHRASE)
    return vault_path


_secret_service_state: list[tuple[bool, str]] = []


def secret_service_usable() -> tuple[bool, str]:
    if not _secret_service_state:
        diagnosis = KeyringBackend().diagnose()
        usable = diagnosis.usable and "SecretService" in diagnosis.summary
        _secret_service_state.append((usable, diagnosis.summary))
    return _secret_service_state[0]


@pytest.fixture
def secret_service() -> None:
    usable, summary = secret_service_usable()
    if usable:
        return
    reason = f"no real Secret Service here ({summary}); run the tests through scripts/test.sh"
    if os.environ.get("JSS_REQUIRE_SECRET_SERVICE") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def keyring_prefix(secret_service: None) -> Iterator[str]:
    """A service prefix of this test's own; every item under it is removed afterwards."""
    prefix = f"jss-test-{secrets.token_hex(6)}"
    yield prefix
    config = Config()
    config.KeyringBackend.service_prefix = prefix
    backend = KeyringBackend(config=config)
    for namespace in backend.list_namespaces():
        backend.delete_all(namespace)


def keyring_config(prefix: str, **traits: object) -> Config:
    config = Config()
    config.KeyringBackend.service_prefix = prefix
    for name, value in traits.items():
        config.KeyringBackend[name] = value
    return config
