"""The shared behaviour suite (jupyter_secure_storage.testing) on every built-in backend."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import fast_kdf_config, keyring_config

from jupyter_secure_storage import SecureStorage
from jupyter_secure_storage.testing import StorageBehaviour

Factory = Callable[..., SecureStorage]


class TestMemoryBackend(StorageBehaviour):
    @pytest.fixture
    def make_store(self) -> Factory:
        def make(namespace: str = "default") -> SecureStorage:
            return SecureStorage(backend="memory", namespace=namespace, config=fast_kdf_config())

        return make


class TestVaultBackend(StorageBehaviour):
    @pytest.fixture
    def make_store(self, vault_env: Path) -> Factory:
        def make(namespace: str = "default") -> SecureStorage:
            return SecureStorage(backend="vault", namespace=namespace, config=fast_kdf_config())

        return make


@pytest.mark.secret_service
class TestKeyringBackendOnSecretService(StorageBehaviour):
    @pytest.fixture
    def make_store(self, keyring_prefix: str) -> Factory:
        def make(namespace: str = "default") -> SecureStorage:
            return SecureStorage(
                backend="keyring", namespace=namespace, config=keyring_config(keyring_prefix)
            )

        return make


@pytest.mark.secret_service
class TestKeyringBackendChunkedOnSecretService(StorageBehaviour):
    """The same suite with a tiny item cap, so every value and index is split into chunks."""

    huge_value_length = 3_000  # about 50 chunks of 64 bytes: each is a D-Bus round trip

    @pytest.fixture
    def make_store(self, keyring_prefix: str) -> Factory:
        def make(namespace: str = "default") -> SecureStorage:
            config = keyring_config(keyring_prefix, max_item_bytes=64)
            return SecureStorage(backend="keyring", namespace=namespace, config=config)

        return make
