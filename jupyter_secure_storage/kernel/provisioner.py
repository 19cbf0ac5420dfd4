"""A kernel provisioner that puts secrets from the store into a kernel's environment at launch.

Any kernel -- R, Julia, a shell, Python -- gets e.g. ``$OPENAI_API_KEY`` without the
value ever being in a notebook, in argv or in the kernelspec file. The kernelspec
(``kernel.json``) names the provisioner and says which variable gets which key::

    "metadata": {
      "kernel_provisioner": {
        "provisioner_name": "secure-storage-provisioner",
        "config": {
          "inject_env": {"OPENAI_API_KEY": "OPENAI_API_KEY", "HF_TOKEN": "huggingface"},
          "namespace": "team-a",
          "backend": "vault"
        }
      }
    }

``inject_env`` maps an environment variable to the name of a key in the store;
``namespace`` and ``backend`` are optional (without them the store is chosen as
``SecureStorage()`` chooses it: ``JUPYTER_SECURE_STORAGE_BACKEND``, then config
files, then ``auto``). :func:`with_secret_env` writes that stanza into a kernelspec
dict.

The keys are read on every launch and restart, in the Jupyter server's process,
off its event loop (keyring talks D-Bus, the vault runs Argon2id). The kernel is
not started when any of them cannot be read:

- a key that is not in the store raises :class:`SecretNotFoundError`, naming every
  missing key and its variable;
- a store that cannot be opened raises the store's own typed error
  (``VaultLockedError``, ``WrongPassphraseError``, ``BackendUnavailableError``, ...),
  its cause prefixed with the kernel, the key and the variable;
- a configuration mistake (an invalid variable name, an unknown config key, a
  variable the kernelspec's own ``env`` also sets) raises :class:`InvalidKeyError`.

The provisioner never prompts: nobody types into a Jupyter server's terminal, and a
prompt there would hang the launch. A vault is unlocked by
``JUPYTER_SECURE_STORAGE_PASSPHRASE`` in the server's environment or by a vault key
kept in the OS keystore (``c.VaultBackend.key_in_keyring = True``).

Values go only into the environment handed to the kernel's process: never into
argv, logs, error messages, the kernelspec, or the ``env`` the kernel manager keeps
for restarts (the provisioner works on a copy and reads the store again on restart).
"""

from __future__ import annotations

import asyncio
import copy
import os
import re
import shlex
from collections.abc import Mapping
from typing import Any

from jupyter_client.provisioning.local_provisioner import LocalProvisioner
from traitlets import Dict, Unicode, validate

from ..config_file import load_config_files
from ..errors import (
    InvalidKeyError,
    InvalidValueError,
    SecretNotFoundError,
    SecureStorageError,
    VaultLockedError,
)
from ..paths import ENV_PASSPHRASE
from ..storage import SecureStorage, validate_key, validate_namespace

#: The entry-point name under ``jupyter_client.kernel_provisioners``.
PROVISIONER_NAME = "secure-storage-provisioner"

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_ENV_NAME_LENGTH = 255


def _validate_env_name(name: object, key: object) -> str:
    """Return ``name`` if it can name an environment variable; never echo a rejected one."""
    # A rejected "name" may be a value pasted into the wrong place, so the message
    # describes it (and names the key it was meant for) without repeating it.
    about = f"for the key {key!r}" if isinstance(key, str) else "in inject_env"
    if not isinstance(name, str):
        raise InvalidKeyError(
            f"An environment variable name {about} is not a str ({type(name).__name__}).",
            'Map variable names to key names: {"OPENAI_API_KEY": "OPENAI_API_KEY"}.',
        )
    if len(name) > _MAX_ENV_NAME_LENGTH or not _ENV_NAME.fullmatch(name):
        raise InvalidKeyError(
            f"The environment variable name {about} ({len(name)} characters) is not a "
            "portable variable name: letters, digits and '_', not starting with a digit.",
            'Map variable names to key names: {"OPENAI_API_KEY": "OPENAI_API_KEY"}. '
            "(Values never belong in a kernelspec: store them with "
            "`jupyter-secure-storage write NAME`.)",
        )
    return name


def validate_inject_env(inject_env: object) -> dict[str, str]:
    """Check an ``inject_env`` mapping (variable name -> key name); return a plain dict copy."""
    if not isinstance(inject_env, Mapping):
        raise InvalidKeyError(
            f"inject_env is a {type(inject_env).__name__}, not a mapping.",
            'Map variable names to key names: {"OPENAI_API_KEY": "OPENAI_API_KEY"}.',
        )
    checked: dict[str, str] = {}
    for name, key in inject_env.items():
        checked_name = _validate_env_name(name, key)
        try:
            checked[checked_name] = validate_key(key)
        except InvalidKeyError as error:
            raise InvalidKeyError(
                f"inject_env: the key name for ${checked_name} is not valid. {error.cause}",
                error.remedy,
            ) from None
    return checked


def _check_no_overlap(inject_env: Mapping[str, str], kernelspec_env: Mapping[str, Any]) -> None:
    """The kernelspec's own ``env`` is applied after injection and would win silently."""
    overlap = sorted(set(inject_env) & set(kernelspec_env))
    if overlap:
        raise InvalidKeyError(
            f"The kernelspec's env also sets {', '.join(overlap)}, which inject_env fills "
            "from the store; the kernelspec's entry would replace the stored value.",
            "Remove those variables from the kernelspec's env.",
        )


class SecureEnvProvisioner(LocalProvisioner):
    """Launch a local kernel with environment variables filled from the secure store.

    Configured per kernelspec in ``metadata.kernel_provisioner.config`` (or, for every
    kernelspec using this provisioner, as ``c.SecureEnvProvisioner.*`` in the server's
    config; the kernelspec wins).
    """

    # Untyped items: validate_inject_env checks them and raises the package's own errors.
    inject_env = Dict(
        help=(
            "Environment variables to set from the store: variable name -> key name, "
            'e.g. {"OPENAI_API_KEY": "OPENAI_API_KEY"}. Every key must be in the store, '
            "or the kernel is not started."
        ),
    ).tag(config=True)

    namespace = Unicode(
        None,
        allow_none=True,
        help="The store namespace to read from (default: SecureStorage's, usually 'default').",
    ).tag(config=True)

    backend = Unicode(
        None,
        allow_none=True,
        help=(
            "The store backend to read from: 'auto', 'keyring', 'vault', ... "
            "(default: JUPYTER_SECURE_STORAGE_BACKEND, then config files, then 'auto')."
        ),
    ).tag(config=True)

    @validate("inject_env")
    def _validate_inject_env(self, proposal: Any) -> dict[str, str]:
        return validate_inject_env(proposal["value"])

    @validate("namespace")
    def _validate_namespace(self, proposal: Any) -> str | None:
        value = proposal["value"]
        return None if value is None else validate_namespace(value)

    def __init__(self, **kwargs: Any) -> None:
        # The kernelspec's config arrives as keyword arguments. traitlets would only warn
        # about an unknown one (quoting its value); a misspelt "inject_env" must instead
        # stop the launch rather than start a kernel without its keys.
        unknown = sorted(set(kwargs) - set(self.class_trait_names()))
        if unknown:
            raise InvalidKeyError(
                f"The kernel_provisioner config of the {PROVISIONER_NAME!r} kernelspec has "
                f"unknown entries: {', '.join(unknown)}.",
                "Use inject_env (variable name -> key name), and optionally namespace and backend.",
            )
        super().__init__(**kwargs)

    # --- launching --------------------------------------------------------------------------

    @property
    def _kernel_label(self) -> str:
        spec = self.kernel_spec
        display = getattr(spec, "display_name", None) or getattr(spec, "name", None)
        return f"The kernel {display!r}" if display else "The kernel"

    def _make_store(self) -> SecureStorage:
        # Config as SecureStorage() builds it (config files, then the server's config on
        # top), with prompting off: a passphrase prompt in the server would hang the launch.
        config = load_config_files()
        config.merge(self.config)
        config.VaultBackend.prompt = False
        options: dict[str, Any] = {"config": config, "parent": self}
        if self.backend is not None:
            options["backend"] = self.backend
        if self.namespace is not None:
            options["namespace"] = self.namespace
        return SecureStorage(**options)

    def _in_context(self, error: SecureStorageError, name: str, key: str) -> SecureStorageError:
        """The same error type, its cause saying which kernel, key and variable it stopped."""
        cause = (
            f"{self._kernel_label} was not started: reading the key {key!r} for "
            f"${name} failed. {error.cause}"
        )
        remedy = error.remedy
        if isinstance(error, VaultLockedError):
            remedy = (
                "The kernel provisioner never prompts. Unlock the store once for this "
                "user (the unlock dialog in JupyterLab, or `jupyter-secure-storage "
                f"unlock`), set {ENV_PASSPHRASE} in the environment of the Jupyter server "
                "(read once, then removed), or keep the vault key in the OS keystore "
                "(c.VaultBackend.key_in_keyring = True)."
            )
        try:
            return type(error)(cause, remedy)
        except TypeError:  # a plugin's error class with another signature
            return error

    def _read_values(self) -> dict[str, str]:
        """Read every key (blocking: run it in a thread). Raises unless all are there."""
        store = self._make_store()
        values: dict[str, str] = {}
        missing: list[tuple[str, str]] = []
        for name, key in sorted(self.inject_env.items()):
            try:
                secret = store.read(key)
            except SecureStorageError as error:
                raise self._in_context(error, name, key) from error
            if secret is None:
                missing.append((name, key))
                continue
            value = secret.reveal()
            if "\0" in value:
                raise InvalidValueError(
                    f"{self._kernel_label} was not started: the value of the key {key!r} "
                    f"holds a NUL character, which an environment variable (${name}) "
                    "cannot carry.",
                    "Store the value without NUL characters (or base64-encode it).",
                )
            values[name] = value
        if missing:
            listed = ", ".join(f"{key!r} (for ${name})" for name, key in missing)
            listed = f"the key {listed} is" if len(missing) == 1 else f"the keys {listed} are"
            where = f"namespace {store.namespace!r} of the {store.backend_name} store"
            options = "" if store.namespace == "default" else f" --namespace {store.namespace}"
            if self.backend is not None:
                options += f" --backend {shlex.quote(self.backend)}"
            raise SecretNotFoundError(
                f"{self._kernel_label} was not started: {listed} not in {where} "
                f"({store.backend_object.location}).",
                f"Store {'it' if len(missing) == 1 else 'each'} as the user running Jupyter, "
                f"e.g. `jupyter-secure-storage write {shlex.quote(missing[0][1])}{options}`, "
                "then start the kernel again; or fix inject_env in the kernelspec.",
            )
        return values

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Read the configured keys off the event loop, add them to ``env``, then launch as usual.

        Raises a :class:`~jupyter_secure_storage.errors.SecureStorageError` (and starts
        nothing) when a key is missing or the store cannot be read.
        """
        spec_env = getattr(self.kernel_spec, "env", None) or {}
        _check_no_overlap(self.inject_env, spec_env)
        if not self.inject_env:
            self.log.warning(
                "%s uses %s but its inject_env is empty: nothing is injected.",
                self._kernel_label,
                PROVISIONER_NAME,
            )
            return dict(await super().pre_launch(**kwargs))
        values = await asyncio.to_thread(self._read_values)
        # A copy: the caller's dict is kept by the kernel manager for restarts, and a
        # value must not outlive the launch there.
        given = kwargs.get("env")
        env = dict(os.environ if given is None else given)
        env.update(values)
        kwargs["env"] = env
        self.log.info(
            "Kernel %s: set %s from the secure store.",
            self.kernel_id,
            ", ".join(f"${name}" for name in sorted(values)),
        )
        return dict(await super().pre_launch(**kwargs))


def with_secret_env(
    kernelspec: Mapping[str, Any],
    inject_env: Mapping[str, str],
    namespace: str | None = None,
    backend: str | None = None,
) -> dict[str, Any]:
    """A copy of ``kernelspec`` (a ``kernel.json`` dict) launched by :class:`SecureEnvProvisioner`.

    ``inject_env`` maps environment variable names to key names in the store -- names
    only, never values. Other metadata is kept; a different provisioner already named in
    the kernelspec is refused rather than replaced.

    >>> spec = {"argv": ["R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"],
    ...         "display_name": "R", "language": "R"}
    >>> with_secret_env(spec, {"OPENAI_API_KEY": "OPENAI_API_KEY"})["metadata"]
    {'kernel_provisioner': {'provisioner_name': 'secure-storage-provisioner', 'config': {'inject_env': {'OPENAI_API_KEY': 'OPENAI_API_KEY'}}}}
    """  # noqa: E501
    checked = validate_inject_env(inject_env)
    spec = copy.deepcopy(dict(kernelspec))
    _check_no_overlap(checked, spec.get("env") or {})
    metadata = spec.setdefault("metadata", {})
    if not isinstance(metadata, dict):
        raise InvalidKeyError(
            f"The kernelspec's metadata is a {type(metadata).__name__}, not an object.",
            "Fix the kernelspec: metadata is a JSON object.",
        )
    current = metadata.get("kernel_provisioner")
    if isinstance(current, Mapping):
        current_name = current.get("provisioner_name")
        if current_name not in (None, PROVISIONER_NAME):
            raise InvalidKeyError(
                f"The kernelspec already uses the kernel provisioner {current_name!r}.",
                f"A kernel has one provisioner; {PROVISIONER_NAME!r} launches kernels "
                "locally. Remove the other provisioner first if that is what you want.",
            )
    config: dict[str, Any] = {"inject_env": checked}
    if namespace is not None:
        config["namespace"] = validate_namespace(namespace)
    if backend is not None:
        if not isinstance(backend, str) or not backend:
            raise InvalidKeyError(
                "backend is a non-empty str such as 'vault' or 'keyring'.",
                "Pass a backend name, or None for SecureStorage's usual choice.",
            )
        config["backend"] = backend
    metadata["kernel_provisioner"] = {"provisioner_name": PROVISIONER_NAME, "config": config}
    return spec


__all__ = [
    "PROVISIONER_NAME",
    "SecretNotFoundError",
    "SecureEnvProvisioner",
    "validate_inject_env",
    "with_secret_env",
]
