"""The kernel provisioner, end to end: real kernels launched by jupyter_client, real vaults.

The "kernel" is a /bin/sh script, not IPython -- the point is that any language's
kernel gets its keys. It writes SHA-256 digests of the injected variables (never
their values) to a file, then idles like a kernel until it is shut down. The store
is a throwaway vault chosen through the environment, as on a headless server.

Tests compare digests and booleans, never values, so a failure cannot print a secret.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import sys
import textwrap
import time
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from conftest import PASSPHRASE, REPO, fast_kdf_config
from jupyter_client import AsyncKernelManager, KernelManager

from jupyter_secure_storage import SecureStorage, SecureStorageError
from jupyter_secure_storage.backends import vault as vault_module
from jupyter_secure_storage.errors import InvalidKeyError, VaultLockedError, WrongPassphraseError
from jupyter_secure_storage.kernel.provisioner import (
    PROVISIONER_NAME,
    SecretNotFoundError,
    SecureEnvProvisioner,
    with_secret_env,
)
from jupyter_secure_storage.testing import canary

pytestmark = pytest.mark.skipif(
    sys.platform == "win32" or not Path("/proc/self/cmdline").exists(),
    reason="the stand-in kernel is a POSIX shell script; argv is checked through /proc",
)

GROUP = "jupyter_client.kernel_provisioners"
TARGET = "jupyter_secure_storage.kernel.provisioner:SecureEnvProvisioner"
KERNEL_NAME = "secure-sh"
WATCHED = ("OPENAI_API_KEY", "HF_TOKEN")

# A kernel in a language that is not Python. `printf` is a shell builtin, so a value
# passed to it is never any process's argv; sha256sum reads it from a pipe.
KERNEL_SCRIPT = textwrap.dedent(
    """\
    #!/bin/sh
    connection_file="$1"
    out="$2"
    digest() { printf '%s' "$1" | sha256sum | cut -d ' ' -f 1; }
    {
      if [ -n "${OPENAI_API_KEY+set}" ]; then
        echo "OPENAI_API_KEY=$(digest "$OPENAI_API_KEY")"
      else
        echo "OPENAI_API_KEY=unset"
      fi
      if [ -n "${HF_TOKEN+set}" ]; then
        echo "HF_TOKEN=$(digest "$HF_TOKEN")"
      else
        echo "HF_TOKEN=unset"
      fi
      echo "FROM_SPEC=${FROM_SPEC-unset}"
      echo "FROM_SERVER=${FROM_SERVER-unset}"
      if [ -f "$connection_file" ]; then echo "CONNECTION_FILE=present"; fi
    } > "$out.tmp"
    mv "$out.tmp" "$out"
    exec sleep 600
    """
)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- the entry point ---------------------------------------------------------------------------


def _declared_in_pyproject() -> bool:
    pyproject = REPO / "pyproject.toml"
    return pyproject.exists() and GROUP in pyproject.read_text(encoding="utf-8")


@pytest.fixture
def provisioner_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """How jupyter_client finds the provisioner: "installed", or a "stand-in" distribution.

    The installed entry point (from pyproject.toml) is used whenever it exists. Only
    while pyproject.toml does not declare it yet, a dist-info on sys.path stands in,
    pointing at the same class. Declared but not installed means a stale install.
    """
    installed = entry_points(group=GROUP, name=PROVISIONER_NAME)
    if installed:
        (entry_point,) = installed
        assert entry_point.value == TARGET
        return "installed"
    if _declared_in_pyproject():
        pytest.fail(
            f"pyproject.toml declares {GROUP} but the {PROVISIONER_NAME!r} entry point is "
            "not installed: run .venv/bin/pip install -e . again."
        )
    site = tmp_path / "entry-point-site"
    dist_info = site / "jss_provisioner_entry_point-0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: jss-provisioner-entry-point\nVersion: 0\n"
    )
    (dist_info / "entry_points.txt").write_text(f"[{GROUP}]\n{PROVISIONER_NAME} = {TARGET}\n")
    monkeypatch.syspath_prepend(str(site))
    return "stand-in"


# --- the store, the kernelspec, the kernel -------------------------------------------------------


@pytest.fixture
def store(
    isolated_jupyter: Path, vault_env: Path, monkeypatch: pytest.MonkeyPatch
) -> SecureStorage:
    """A vault chosen through the environment, with cheap KDF costs from a config file."""
    (isolated_jupyter / "config" / "jupyter_secure_storage_config.json").write_text(
        json.dumps({"VaultBackend": dict(fast_kdf_config().VaultBackend)})
    )
    monkeypatch.setenv("JUPYTER_SECURE_STORAGE_BACKEND", "vault")
    return SecureStorage()


def forget_unlocked_vaults() -> None:
    """Drop this process's cached vault keys, so the provisioner has to unlock for itself."""
    vault_module._OPEN.clear()


class Kernels:
    """Writes kernelspecs into a JUPYTER_PATH of the test's own and launches them."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.spec_dir = root / "jupyter-path" / "kernels" / KERNEL_NAME
        self.out = root / "kernel-saw.txt"
        self.managers: list[KernelManager] = []
        monkeypatch.setenv("JUPYTER_PATH", str(root / "jupyter-path"))

    def install(
        self,
        inject_env: dict[str, str],
        *,
        env: dict[str, str] | None = None,
        **options: Any,
    ) -> Path:
        self.spec_dir.mkdir(parents=True, exist_ok=True)
        script = self.spec_dir / "kernel.sh"
        script.write_text(KERNEL_SCRIPT)
        plain = {
            "argv": ["/bin/sh", "{resource_dir}/kernel.sh", "{connection_file}", str(self.out)],
            "display_name": "Shell (secure env)",
            "language": "sh",
            "env": env or {},
        }
        spec_file = self.spec_dir / "kernel.json"
        spec_file.write_text(json.dumps(with_secret_env(plain, inject_env, **options), indent=1))
        return spec_file

    def install_raw(self, provisioner_config: dict[str, Any]) -> None:
        """A kernelspec written by hand, for configurations with_secret_env refuses."""
        self.spec_dir.mkdir(parents=True, exist_ok=True)
        (self.spec_dir / "kernel.sh").write_text(KERNEL_SCRIPT)
        spec = {
            "argv": ["/bin/sh", "{resource_dir}/kernel.sh", "{connection_file}", str(self.out)],
            "display_name": "Shell (secure env)",
            "language": "sh",
            "metadata": {
                "kernel_provisioner": {
                    "provisioner_name": PROVISIONER_NAME,
                    "config": provisioner_config,
                }
            },
        }
        (self.spec_dir / "kernel.json").write_text(json.dumps(spec))

    def manager(self) -> KernelManager:
        manager = KernelManager(kernel_name=KERNEL_NAME)
        self.managers.append(manager)
        return manager

    def start(self) -> KernelManager:
        manager = self.manager()
        manager.start_kernel()
        return manager

    def seen(self, timeout: float = 30.0) -> dict[str, str]:
        """What the kernel recorded: variable -> digest (or "unset"), plus markers."""
        deadline = time.monotonic() + timeout
        while not self.out.exists():
            if time.monotonic() > deadline:
                pytest.fail(f"the stand-in kernel wrote nothing to {self.out} in {timeout} s")
            time.sleep(0.05)
        lines = self.out.read_text().splitlines()
        return dict(line.split("=", 1) for line in lines)

    def shutdown_all(self) -> None:
        for manager in self.managers:
            if manager.has_kernel:
                manager.shutdown_kernel(now=True)


@pytest.fixture
def kernels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, provisioner_entry_point: str
) -> Iterator[Kernels]:
    launcher = Kernels(tmp_path, monkeypatch)
    yield launcher
    launcher.shutdown_all()


def proc_bytes(pid: int, name: str) -> bytes:
    return (Path("/proc") / str(pid) / name).read_bytes()


# --- the key reaches the kernel ------------------------------------------------------------------


def test_a_non_python_kernel_gets_the_stored_key_in_its_environment(
    store: SecureStorage,
    kernels: Kernels,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    value = canary()
    store.write("OPENAI_API_KEY", value)
    forget_unlocked_vaults()  # the provisioner unlocks the vault itself, from the environment
    monkeypatch.setenv("FROM_SERVER", "kept")
    spec_file = kernels.install({"OPENAI_API_KEY": "OPENAI_API_KEY"}, env={"FROM_SPEC": "kept"})
    caplog.set_level(logging.DEBUG)

    # Started as jupyter_server starts kernels: with an env of its own, which the kernel
    # manager keeps (for restarts) and which must not receive the value.
    server_env = {**os.environ, "JPY_SESSION_NAME": "analysis.ipynb"}
    manager = kernels.manager()
    manager.start_kernel(env=server_env)

    assert isinstance(manager.provisioner, SecureEnvProvisioner)
    seen = kernels.seen()
    assert seen["OPENAI_API_KEY"] == sha256(value)
    assert seen["HF_TOKEN"] == "unset"  # only what inject_env names
    assert seen["FROM_SPEC"] == "kept"  # the kernelspec's env still applies
    assert seen["FROM_SERVER"] == "kept"  # and the server's environment is inherited
    assert seen["CONNECTION_FILE"] == "present"  # launched like any kernel

    pid = manager.provisioner.pid
    needle = value.encode()
    in_argv = needle in proc_bytes(pid, "cmdline")
    assert not in_argv
    in_kernel_environment = needle in proc_bytes(pid, "environ")
    assert in_kernel_environment  # where it is meant to be (and why same-user processes see it)

    in_kernelspec = value in spec_file.read_text()
    assert not in_kernelspec
    in_connection_file = value in Path(manager.connection_file).read_text()
    assert not in_connection_file
    in_callers_env = value in server_env.values()
    assert not in_callers_env
    kept_for_restarts = repr(manager._launch_args)
    in_kernel_manager = value in kept_for_restarts
    assert not in_kernel_manager
    in_server_environment = value in os.environ.values()
    assert not in_server_environment
    in_logs = value in caplog.text
    assert not in_logs
    assert "$OPENAI_API_KEY" in caplog.text  # the log names what was set


def test_a_restart_reads_the_store_again(store: SecureStorage, kernels: Kernels) -> None:
    first, second = canary(), canary()
    store.write("OPENAI_API_KEY", first)
    kernels.install({"OPENAI_API_KEY": "OPENAI_API_KEY"})
    manager = kernels.start()
    assert kernels.seen()["OPENAI_API_KEY"] == sha256(first)

    store.write("OPENAI_API_KEY", second)  # rotated while the kernel runs
    kernels.out.unlink()
    manager.restart_kernel(now=True)

    assert kernels.seen()["OPENAI_API_KEY"] == sha256(second)


def test_an_async_kernel_manager_as_jupyter_server_uses(
    store: SecureStorage, kernels: Kernels
) -> None:
    value = canary()
    store.write("OPENAI_API_KEY", value)
    forget_unlocked_vaults()
    kernels.install({"OPENAI_API_KEY": "OPENAI_API_KEY"})

    async def launch_and_stop() -> str:
        manager = AsyncKernelManager(kernel_name=KERNEL_NAME)
        try:
            await manager.start_kernel()  # the store is read in a worker thread
            seen = await asyncio.to_thread(kernels.seen)
            return seen["OPENAI_API_KEY"]
        finally:
            if manager.has_kernel:
                await manager.shutdown_kernel(now=True)

    assert asyncio.run(launch_and_stop()) == sha256(value)


def test_several_variables_one_namespace_and_a_backend_named_in_the_kernelspec(
    store: SecureStorage, kernels: Kernels
) -> None:
    # The kernelspec's backend wins over JUPYTER_SECURE_STORAGE_BACKEND=vault.
    team = SecureStorage(backend="memory", namespace="team-a")
    openai, hugging = canary(), canary()
    team.write("openai", openai)
    team.write("huggingface", hugging)
    store.write("openai", canary())  # the same name in the vault is not the one used
    kernels.install(
        {"OPENAI_API_KEY": "openai", "HF_TOKEN": "huggingface"},
        namespace="team-a",
        backend="memory",
    )
    kernels.start()
    seen = kernels.seen()
    assert seen["OPENAI_API_KEY"] == sha256(openai)
    assert seen["HF_TOKEN"] == sha256(hugging)


# --- and when it cannot, the kernel does not start ---------------------------------------------


def test_a_missing_key_stops_the_launch_naming_the_key_and_the_variable(
    store: SecureStorage, kernels: Kernels
) -> None:
    present = canary()
    store.write("openai", present)
    kernels.install({"OPENAI_API_KEY": "openai", "HF_TOKEN": "huggingface"})
    manager = kernels.manager()

    with pytest.raises(SecretNotFoundError) as raised:
        manager.start_kernel()

    error = raised.value
    assert isinstance(error, SecureStorageError)
    assert isinstance(error, LookupError)
    assert "'huggingface'" in error.cause
    assert "$HF_TOKEN" in error.cause
    assert "openai" not in error.cause  # only what is missing
    assert "jupyter-secure-storage write huggingface" in error.remedy
    leaked = present in str(error)
    assert not leaked
    assert not manager.has_kernel
    assert not kernels.out.exists()


@pytest.mark.parametrize("lock", ["no passphrase", "wrong passphrase"])
def test_a_vault_that_does_not_open_stops_the_launch(
    store: SecureStorage, kernels: Kernels, monkeypatch: pytest.MonkeyPatch, lock: str
) -> None:
    value = canary()
    store.write("OPENAI_API_KEY", value)
    forget_unlocked_vaults()
    if lock == "no passphrase":
        monkeypatch.delenv("JUPYTER_SECURE_STORAGE_PASSPHRASE")
        expected: type[SecureStorageError] = VaultLockedError
    else:
        monkeypatch.setenv("JUPYTER_SECURE_STORAGE_PASSPHRASE", "not the " + PASSPHRASE)
        expected = WrongPassphraseError
    kernels.install({"OPENAI_API_KEY": "OPENAI_API_KEY"})
    manager = kernels.manager()

    with pytest.raises(expected) as raised:
        manager.start_kernel()

    error = raised.value
    assert "'OPENAI_API_KEY'" in error.cause
    assert "$OPENAI_API_KEY" in error.cause
    assert "was not started" in error.cause
    assert "JUPYTER_SECURE_STORAGE_PASSPHRASE" in str(error)
    if lock == "no passphrase":
        assert "never prompts" in error.remedy
    leaked = value in str(error) or PASSPHRASE in str(error)
    assert not leaked
    assert not manager.has_kernel
    assert not kernels.out.exists()


def test_a_misspelt_config_entry_stops_the_launch(kernels: Kernels) -> None:
    kernels.install_raw({"inject_envs": {"OPENAI_API_KEY": "OPENAI_API_KEY"}})
    manager = kernels.manager()
    with pytest.raises(InvalidKeyError, match="inject_envs"):
        manager.start_kernel()
    assert not kernels.out.exists()


def test_a_variable_the_kernelspec_env_also_sets_is_refused(
    store: SecureStorage, kernels: Kernels
) -> None:
    store.write("OPENAI_API_KEY", canary())
    kernels.install_raw({"inject_env": {"OPENAI_API_KEY": "OPENAI_API_KEY"}})
    spec_path = kernels.spec_dir / "kernel.json"
    spec = json.loads(spec_path.read_text())
    spec["env"] = {"OPENAI_API_KEY": ""}  # would silently replace the stored value
    spec_path.write_text(json.dumps(spec))
    manager = kernels.manager()
    with pytest.raises(InvalidKeyError, match="OPENAI_API_KEY"):
        manager.start_kernel()
    assert not manager.has_kernel


# --- writing kernelspecs ------------------------------------------------------------------------


IR_SPEC = {
    "argv": ["R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"],
    "display_name": "R",
    "language": "R",
    "metadata": {"debugger": False},
}


def test_with_secret_env_adds_the_provisioner_stanza_and_keeps_the_rest() -> None:
    original = json.loads(json.dumps(IR_SPEC))
    spec = with_secret_env(
        IR_SPEC, {"OPENAI_API_KEY": "openai"}, namespace="team-a", backend="vault"
    )
    assert original == IR_SPEC  # the argument is not changed
    assert spec["argv"] == IR_SPEC["argv"]
    assert spec["metadata"] == {
        "debugger": False,
        "kernel_provisioner": {
            "provisioner_name": "secure-storage-provisioner",
            "config": {
                "inject_env": {"OPENAI_API_KEY": "openai"},
                "namespace": "team-a",
                "backend": "vault",
            },
        },
    }
    assert json.loads(json.dumps(spec)) == spec
    again = with_secret_env(spec, {"HF_TOKEN": "hf"})  # our own stanza is replaced
    assert again["metadata"]["kernel_provisioner"]["config"] == {"inject_env": {"HF_TOKEN": "hf"}}


def test_with_secret_env_refuses_mistakes_without_echoing_them() -> None:
    pasted = "sk-" + canary()
    with pytest.raises(InvalidKeyError) as raised:
        with_secret_env(IR_SPEC, {pasted: "OPENAI_API_KEY"})  # the mapping turned around
    echoed = pasted in str(raised.value)
    assert not echoed
    with pytest.raises(InvalidKeyError):
        with_secret_env(IR_SPEC, {"OPENAI_API_KEY": ""})
    with pytest.raises(InvalidKeyError):
        with_secret_env(IR_SPEC, {"OPENAI_API_KEY": "k"}, namespace="no spaces allowed")
    with pytest.raises(InvalidKeyError, match="OPENAI_API_KEY"):
        with_secret_env({**IR_SPEC, "env": {"OPENAI_API_KEY": "x"}}, {"OPENAI_API_KEY": "k"})
    other = {**IR_SPEC, "metadata": {"kernel_provisioner": {"provisioner_name": "k8s"}}}
    with pytest.raises(InvalidKeyError, match="k8s"):
        with_secret_env(other, {"OPENAI_API_KEY": "k"})


def test_the_entry_point_in_use(provisioner_entry_point: str) -> None:
    """Says which way jupyter_client found the provisioner in this run (see -rA)."""
    from jupyter_client.kernelspec import KernelSpec
    from jupyter_client.provisioning import KernelProvisionerFactory

    spec = KernelSpec(**with_secret_env(IR_SPEC, {"OPENAI_API_KEY": "k"}))
    assert KernelProvisionerFactory.instance().is_provisioner_available(spec)
    if provisioner_entry_point == "stand-in":
        pytest.skip(
            "pyproject.toml does not declare the entry point yet; a stand-in dist-info "
            "was used for the kernel tests"
        )
