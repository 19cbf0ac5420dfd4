"""Choosing a backend: arguments, environment, config files, plugins; and their mistakes."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from conftest import fast_kdf_config
from traitlets.config import Config

from jupyter_secure_storage import SecureStorage
from jupyter_secure_storage.backends.base import available_backends
from jupyter_secure_storage.backends.memory import MemoryBackend
from jupyter_secure_storage.errors import InvalidKeyError, UnknownBackendError
from jupyter_secure_storage.testing import StorageBehaviour, canary, same


def test_traitlets_config_chooses_backend_and_namespace() -> None:
    config = Config()
    config.SecureStorage.backend = "memory"
    config.SecureStorage.namespace = "from-config"
    store = SecureStorage(config=config)
    assert store.backend_name == "memory"
    assert store.namespace == "from-config"


def test_environment_wins_over_config_and_arguments_win_over_both(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = Config()
    config.SecureStorage.backend = "vault"
    monkeypatch.setenv("JUPYTER_SECURE_STORAGE_BACKEND", "memory")
    assert SecureStorage(config=config).backend_name == "memory"
    assert "JUPYTER_SECURE_STORAGE_BACKEND" in SecureStorage(config=config).backend_choice.reason
    assert SecureStorage(config=config, backend="vault").backend_name == "vault"


def test_vault_path_from_environment_wins_over_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = fast_kdf_config()
    config.VaultBackend.path = str(tmp_path / "from-config.jssv")
    monkeypatch.setenv("JUPYTER_SECURE_STORAGE_VAULT", str(tmp_path / "from-env.jssv"))
    monkeypatch.setenv("JUPYTER_SECURE_STORAGE_PASSPHRASE", "a passphrase for tests")
    SecureStorage(backend="vault", config=config).write("K", canary())
    assert (tmp_path / "from-env.jssv").exists()
    assert not (tmp_path / "from-config.jssv").exists()


@pytest.mark.parametrize("suffix", ["json", "py"])
def test_config_file_in_the_jupyter_config_dir_is_read(isolated_jupyter: Path, suffix: str) -> None:
    target = isolated_jupyter / "config" / f"jupyter_secure_storage_config.{suffix}"
    if suffix == "json":
        target.write_text(json.dumps({"SecureStorage": {"backend": "memory", "namespace": "ns-j"}}))
        expected_namespace = "ns-j"
    else:
        target.write_text(
            'c.SecureStorage.backend = "memory"\nc.SecureStorage.namespace = "ns-p"\n'
        )
        expected_namespace = "ns-p"
    store = SecureStorage()
    assert store.backend_name == "memory"
    assert store.namespace == expected_namespace


def test_a_broken_config_file_is_named(isolated_jupyter: Path) -> None:
    (isolated_jupyter / "config" / "jupyter_secure_storage_config.py").write_text("c.Oops = (\n")
    with pytest.raises(Exception, match=r"jupyter_secure_storage_config\.py"):
        SecureStorage()


def test_unknown_backend_lists_the_known_ones() -> None:
    with pytest.raises(UnknownBackendError) as raised:
        SecureStorage(backend="no-such-store").keys()
    assert isinstance(raised.value, ValueError)
    for known in ("auto", "keyring", "memory", "vault"):
        assert known in raised.value.remedy


@pytest.mark.parametrize("namespace", ["", "has space", "slash/inside", "#hash", "x" * 65, "ünï"])
def test_invalid_namespaces_are_refused(namespace: str) -> None:
    with pytest.raises(InvalidKeyError):
        SecureStorage(backend="memory", namespace=namespace)


def test_a_backend_object_can_be_passed_directly() -> None:
    backend = MemoryBackend(store_name="direct")
    store = SecureStorage(backend=backend)
    value = canary()
    store.write("K", value)
    assert same(SecureStorage(backend=MemoryBackend(store_name="direct")).read("K"), value)
    assert SecureStorage(backend="memory").read("K") is None
    backend.clear()


def test_builtin_backends_are_registered_as_entry_points() -> None:
    assert {"keyring", "memory", "vault"} <= set(available_backends())


# --- a third-party backend through the entry-point group -----------------------------------

PLUGIN_MODULE = textwrap.dedent(
    '''
    """A third-party backend: values in a JSON file (test only; not secure)."""
    import json
    from pathlib import Path
    from traitlets import Unicode
    from jupyter_secure_storage.backends.base import Backend

    class JsonFileBackend(Backend):
        name = "jsonfile"
        secure = False
        path = Unicode("").tag(config=True)

        def _load(self):
            p = Path(self.path)
            return json.loads(p.read_text()) if p.exists() else {}

        def _save(self, data):
            Path(self.path).write_text(json.dumps(data))

        def get(self, namespace, key):
            return self._load().get(namespace, {}).get(key)

        def set(self, namespace, key, value):
            data = self._load()
            data.setdefault(namespace, {})[key] = value
            self._save(data)

        def delete(self, namespace, key):
            data = self._load()
            existed = data.get(namespace, {}).pop(key, None) is not None
            self._save(data)
            return existed

        def list_names(self, namespace):
            return sorted(self._load().get(namespace, {}))
    '''
)


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real distribution on sys.path: a module plus a dist-info with its entry point."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "jss_json_plugin.py").write_text(PLUGIN_MODULE)
    dist_info = site / "jss_json_plugin-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: jss-json-plugin\nVersion: 1.0\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[jupyter_secure_storage.backends]\njsonfile = jss_json_plugin:JsonFileBackend\n"
    )
    monkeypatch.syspath_prepend(str(site))
    return tmp_path / "plugin-store.json"


def test_a_plugin_backend_is_found_by_name(installed_plugin: Path) -> None:
    assert "jsonfile" in available_backends()
    config = Config()
    config.JsonFileBackend.path = str(installed_plugin)
    store = SecureStorage(backend="jsonfile", config=config)
    value = canary()
    store.write("PLUGGED", value)
    assert same(store.read("PLUGGED"), value)
    assert installed_plugin.exists()


class TestPluginPassesTheBehaviourSuite(StorageBehaviour):
    """A third-party backend runs the same suite as the built-in ones."""

    huge_value_length = 20_000

    @pytest.fixture
    def make_store(self, installed_plugin: Path):  # type: ignore[no-untyped-def]
        def make(namespace: str = "default") -> SecureStorage:
            config = Config()
            config.JsonFileBackend.path = str(installed_plugin)
            return SecureStorage(backend="jsonfile", namespace=namespace, config=config)

        return make
