"""``vault``: an encrypted file, the default where no OS keystore is usable.

One file holds every namespace. Its format (version 1) is documented in
``docs/vault-format.md``; in short::

    magic "JSSVAULT" | u16 version | u32 header length H | header (JSON, H bytes)
    | SHA-256 of everything before it | AES-256-GCM(body JSON) with the prefix as AAD

A random 256-bit data key encrypts the body. The header holds that key wrapped
(AES-256-GCM) by one or more *slots*: a key derived from the passphrase with
Argon2id (RFC 9106 parameters), and optionally a random key kept in the OS
keystore. The header checksum tells a damaged file from a wrong passphrase.

Guarantees:
- every write is atomic and durable (temporary file, fsync, rename, fsync of the
  directory), mode 0600, serialised across processes by a lock file;
- an error never modifies the file: wrong passphrase, damage, truncation and a
  newer format each raise their own typed error and leave the bytes as they were;
- after unlocking, reads cost a header comparison and a dict lookup: the data
  key and the decrypted body stay cached in the process until :meth:`lock`.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import os
import secrets
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar, cast

from traitlets import Bool, Float, Int, Unicode, default

from .. import passphrase as passphrase_prompt
from ..agent_client import AgentClient, AgentNotRunning
from ..errors import (
    BackendOperationError,
    SecureStorageError,
    UnsupportedVaultVersionError,
    VaultBusyError,
    VaultCorruptedError,
    VaultLockedError,
    WeakPassphraseError,
    WrongPassphraseError,
)
from ..interprocess_lock import InterProcessLock, LockTimeout
from ..paths import ENV_PASSPHRASE, ENV_VAULT, default_vault_path, env_value
from .base import Backend, Diagnosis

MAGIC = b"JSSVAULT"
FORMAT_VERSION = 1
_PREFIX = struct.Struct(">8sHI")  # magic, version, header length
_CHECKSUM_SIZE = 32
_TAG_SIZE = 16
_MAX_HEADER = 1 << 20
_BODY_PAD = 1024  # the body is padded to a multiple of this, so its size says little
_SLOT_AAD = b"jupyter-secure-storage vault slot v1\x00"
MIN_PASSPHRASE_LENGTH = 8
KEYRING_KEY_SERVICE = "jupyter-secure-storage-vault-key"
_Method = TypeVar("_Method", bound=Callable[..., Any])


def _crypto() -> Any:
    """``cryptography``'s AES-GCM, Argon2id and InvalidTag, imported on first use: a client
    of the unlock agent never encrypts anything, and the import costs every short-lived
    command about 10 ms."""
    from types import SimpleNamespace

    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

    return SimpleNamespace(AESGCM=AESGCM, Argon2id=Argon2id, InvalidTag=InvalidTag)


def _agent_first(method: _Method) -> _Method:
    """Run the operation in this user's unlock agent when one runs, else in this process.

    The agent holds the data key; a kernel, the CLI or the Jupyter server then never
    derives it, and never holds the passphrase (docs/agent.md).
    """
    code = method.__code__
    names = list(code.co_varnames[1 : code.co_argcount])

    @functools.wraps(method)
    def run(self: VaultBackend, *args: Any, **kwargs: Any) -> Any:
        if self.use_agent:
            arguments = dict(zip(names, args, strict=False)) | kwargs
            try:
                return self._agent_call(method.__name__, arguments)
            except AgentNotRunning:
                pass
        return method(self, *args, **kwargs)

    return cast(_Method, run)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise _corrupt(f"{what} is missing from the header")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as error:
        raise _corrupt(f"{what} in the header is not base64") from error


def _corrupt(cause: str, path: str = "") -> VaultCorruptedError:
    where = f"The vault file {path}" if path else "The vault file"
    return VaultCorruptedError(f"{where} is damaged: {cause}.")


@dataclass
class _Slot:
    """One way to unwrap the data key: a passphrase (Argon2id) or a key in the OS keystore."""

    kind: str
    nonce: bytes
    wrapped_key: bytes
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            **self.params,
            "nonce": _b64(self.nonce),
            "wrapped_key": _b64(self.wrapped_key),
        }

    @classmethod
    def from_json(cls, raw: Any) -> _Slot:
        if not isinstance(raw, dict) or raw.get("type") not in ("passphrase", "keyring"):
            raise _corrupt("a key slot has an unknown type")
        params = {k: v for k, v in raw.items() if k not in ("type", "nonce", "wrapped_key")}
        return cls(
            kind=raw["type"],
            nonce=_unb64(raw.get("nonce"), "a slot nonce"),
            wrapped_key=_unb64(raw.get("wrapped_key"), "a wrapped key"),
            params=params,
        )


@dataclass
class _Parsed:
    """A vault file split into its parts; nothing decrypted yet."""

    prefix: bytes  # magic..header, the body's associated data
    vault_id: str
    slots: list[_Slot]
    body_nonce: bytes
    body: bytes


def parse_vault(raw: bytes, path: str = "") -> _Parsed:
    """Check a vault file's structure. Raises a typed error; never needs the passphrase."""
    if len(raw) < _PREFIX.size:
        if MAGIC.startswith(raw[: len(MAGIC)]):
            raise _corrupt(f"it is truncated ({len(raw)} bytes)", path)
        raise _corrupt("it is not a jupyter-secure-storage vault (wrong magic bytes)", path)
    magic, version, header_length = _PREFIX.unpack_from(raw)
    if magic != MAGIC:
        raise _corrupt("it is not a jupyter-secure-storage vault (wrong magic bytes)", path)
    if version > FORMAT_VERSION:
        raise UnsupportedVaultVersionError(
            f"The vault file {path} uses format version {version}; this version of "
            f"jupyter-secure-storage reads up to version {FORMAT_VERSION}."
        )
    if version < 1:
        raise _corrupt(f"its format version {version} does not exist", path)
    if header_length > _MAX_HEADER:
        raise _corrupt("its header length is implausible", path)
    header_end = _PREFIX.size + header_length
    if len(raw) < header_end + _CHECKSUM_SIZE:
        raise _corrupt(f"it is truncated ({len(raw)} bytes)", path)
    prefix = raw[:header_end]
    if hashlib.sha256(prefix).digest() != raw[header_end : header_end + _CHECKSUM_SIZE]:
        raise _corrupt("its header checksum does not match", path)
    try:
        header = json.loads(prefix[_PREFIX.size :].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _corrupt("its header is not valid JSON", path) from error
    if not isinstance(header, dict) or header.get("cipher") != "AES-256-GCM":
        raise _corrupt("its header names no known cipher", path)
    body = raw[header_end + _CHECKSUM_SIZE :]
    body_length = header.get("body_length")
    if not isinstance(body_length, int):
        raise _corrupt("its header has no body length", path)
    if len(body) < body_length:
        raise _corrupt(f"it is truncated ({len(body)} of {body_length} body bytes present)", path)
    if len(body) > body_length:
        raise _corrupt("it has unexpected bytes after the end of the body", path)
    slots = [_Slot.from_json(raw_slot) for raw_slot in header.get("slots", [])]
    if not slots:
        raise _corrupt("its header has no key slots", path)
    vault_id = header.get("vault_id")
    if not isinstance(vault_id, str):
        raise _corrupt("its header has no vault id", path)
    return _Parsed(
        prefix, vault_id, slots, _unb64(header.get("body_nonce"), "the body nonce"), body
    )


def derive_passphrase_key(passphrase: str, params: dict[str, Any]) -> bytes:
    """Argon2id over the passphrase with the slot's salt and costs."""
    try:
        kdf = _crypto().Argon2id(
            salt=_unb64(params.get("salt"), "the Argon2id salt"),
            length=32,
            iterations=int(params["iterations"]),
            lanes=int(params["lanes"]),
            memory_cost=int(params["memory_kib"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise _corrupt("a passphrase slot has invalid Argon2id parameters") from error
    return bytes(kdf.derive(passphrase.encode("utf-8")))


def _slot_aad(vault_id: str, kind: str) -> bytes:
    return _SLOT_AAD + vault_id.encode("ascii") + b"\x00" + kind.encode("ascii")


def _wrap(kek: bytes, data_key: bytes, vault_id: str, kind: str) -> tuple[bytes, bytes]:
    nonce = os.urandom(12)
    return nonce, _crypto().AESGCM(kek).encrypt(nonce, data_key, _slot_aad(vault_id, kind))


def _unwrap(kek: bytes, slot: _Slot, vault_id: str) -> bytes | None:
    try:
        aad = _slot_aad(vault_id, slot.kind)
        return bytes(_crypto().AESGCM(kek).decrypt(slot.nonce, slot.wrapped_key, aad))
    except _crypto().InvalidTag:
        return None


Entries = dict[str, dict[str, dict[str, Any]]]  # namespace -> key -> {"value", "modified"}


@dataclass
class _OpenVault:
    """What the process keeps after unlocking one vault file."""

    vault_id: str
    data_key: bytes
    slots: list[_Slot]
    prefix: bytes  # the prefix of the file the entries came from
    entries: Entries


# Unlocked vaults by absolute path, shared by every VaultBackend of the process.
_OPEN: dict[str, _OpenVault] = {}
_OPEN_GUARD = threading.Lock()


class VaultBackend(Backend):
    """An encrypted file: the headless default, and the fallback when no OS keystore works."""

    name: ClassVar[str] = "vault"

    path = Unicode(
        help=(
            "The vault file. Default: $JUPYTER_SECURE_STORAGE_VAULT, else "
            "<jupyter data dir>/secure_storage/vault.jssv. The environment variable "
            "wins over this setting."
        )
    ).tag(config=True)

    prompt = Bool(
        True,
        help=(
            "Ask for the passphrase (terminal, or the kernel's password input) when "
            "JUPYTER_SECURE_STORAGE_PASSPHRASE is not set."
        ),
    ).tag(config=True)

    key_in_keyring = Bool(
        False,
        help=(
            "Keep a key that opens the vault in the OS keystore, so it unlocks "
            "without a passphrase on this machine. The passphrase slot stays."
        ),
    ).tag(config=True)

    kdf_memory_kib = Int(
        65536, help="Argon2id memory for new vaults, in KiB (RFC 9106: 64 MiB)."
    ).tag(config=True)
    kdf_iterations = Int(3, help="Argon2id passes for new vaults (RFC 9106: 3).").tag(config=True)
    kdf_lanes = Int(4, help="Argon2id lanes for new vaults (RFC 9106: 4).").tag(config=True)

    lock_timeout = Float(10.0, help="Seconds to wait for another process's write to finish.").tag(
        config=True
    )

    use_agent = Bool(
        True,
        help=(
            "Go through this user's unlock agent when one runs (Jupyter Server runs one; "
            "so does `jupyter-secure-storage agent`): the passphrase is then typed once "
            "for every kernel and command. Off: always unlock in this process."
        ),
    ).tag(config=True)

    passphrase_variable = Unicode(
        ENV_PASSPHRASE,
        help="The environment variable that holds the passphrase for unattended runs.",
    ).tag(config=True)

    @default("path")
    def _default_path(self) -> str:
        return str(default_vault_path())

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        from_env = env_value(ENV_VAULT)
        if "path" not in kwargs and from_env:
            self.path = from_env
        #: Replaces getpass (tests, widgets). Called with the prompt text.
        self.prompt_function: passphrase_prompt.PromptFunction | None = None
        self._file: tuple[str, Path] | None = None
        self._keyring_slot_failed = False

    # --- identity ----------------------------------------------------------------------

    @property
    def file(self) -> Path:
        # Resolved once per path: reads use it twice, and they are the hot path.
        if self._file is None or self._file[0] != self.path:
            self._file = (self.path, Path(os.path.abspath(os.path.expanduser(self.path))))
        return self._file[1]

    @property
    def location(self) -> str:
        return str(self.file)

    @property
    def _lock_path(self) -> Path:
        return self.file.with_name(self.file.name + ".lock")

    # --- reading the file ----------------------------------------------------------------

    def _read_file(self) -> bytes | None:
        try:
            return self.file.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise BackendOperationError(
                f"Cannot read the vault file {self.file}: {error.strerror}.",
                "Check the file's owner and permissions (it should be yours, mode 0600).",
            ) from error

    def _read_prefix(self) -> bytes | None:
        """Only the magic, version and header: enough to see whether the file changed."""
        try:
            with open(self.file, "rb") as handle:
                head = handle.read(_PREFIX.size)
                if len(head) < _PREFIX.size:
                    return head
                _, _, header_length = _PREFIX.unpack(head)
                if header_length > _MAX_HEADER:
                    return head
                return head + handle.read(header_length)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise BackendOperationError(
                f"Cannot read the vault file {self.file}: {error.strerror}.",
                "Check the file's owner and permissions (it should be yours, mode 0600).",
            ) from error

    def _decrypt_body(self, parsed: _Parsed, data_key: bytes) -> Entries:
        try:
            cipher = _crypto().AESGCM(data_key)
            plain = cipher.decrypt(parsed.body_nonce, parsed.body, parsed.prefix)
        except _crypto().InvalidTag as error:
            raise _corrupt(
                "its contents fail authentication (changed or damaged)", str(self.file)
            ) from error
        try:
            body = json.loads(plain.decode("utf-8"))
            entries = body["namespaces"]
            if not isinstance(entries, dict):
                raise TypeError
        except (UnicodeDecodeError, ValueError, KeyError, TypeError) as error:
            raise _corrupt("its decrypted contents are not valid", str(self.file)) from error
        return entries

    # --- unlocking -------------------------------------------------------------------------

    def _passphrase(self, prompt_text: str) -> str:
        from_env = env_value(self.passphrase_variable)
        if from_env is not None:
            return from_env
        if not self.prompt:
            raise VaultLockedError(
                f"The vault {self.file} needs a passphrase: {self.passphrase_variable} "
                "is not set and prompting is off (c.VaultBackend.prompt)."
            )
        try:
            return passphrase_prompt.ask(prompt_text, self.prompt_function)
        except passphrase_prompt.NoPrompt as error:
            raise VaultLockedError(
                f"The vault {self.file} needs a passphrase: {self.passphrase_variable} is not set "
                "and nobody can answer a prompt here (no terminal, or a notebook run "
                "without stdin such as nbclient or papermill)."
            ) from error

    def _unlock(self, parsed: _Parsed) -> bytes:
        keyring_slot = next((s for s in parsed.slots if s.kind == "keyring"), None)
        if keyring_slot is not None:
            kek = _keyring_get_key(parsed.vault_id)
            if kek is not None:
                data_key = _unwrap(kek, keyring_slot, parsed.vault_id)
                if data_key is not None:
                    return data_key
        passphrase_slot = next((s for s in parsed.slots if s.kind == "passphrase"), None)
        if passphrase_slot is None:
            raise VaultLockedError(
                f"The vault {self.file} opens only with a key kept in the OS keystore, "
                "and that key is not there (or the OS keystore is not reachable).",
                "Unlock the OS keystore, or restore the vault key to it; "
                "`jupyter-secure-storage doctor` shows whether the keystore is usable.",
            )
        secret_text = self._passphrase(f"Passphrase for the vault {self.file}: ")
        data_key = _unwrap(
            derive_passphrase_key(secret_text, passphrase_slot.params),
            passphrase_slot,
            parsed.vault_id,
        )
        if data_key is None:
            source = (
                f"from {self.passphrase_variable}"
                if env_value(self.passphrase_variable) is not None
                else "typed"
            )
            raise WrongPassphraseError(
                f"The passphrase ({source}) does not open the vault {self.file}."
            )
        return data_key

    def _open(self, raw: bytes) -> _OpenVault:
        """Parse, unlock (reusing a cached key for the same vault) and decrypt ``raw``."""
        parsed = parse_vault(raw, str(self.file))
        cached = _OPEN.get(str(self.file))
        if cached is not None and cached.vault_id == parsed.vault_id:
            data_key = cached.data_key
        else:
            data_key = self._unlock(parsed)
        entries = self._decrypt_body(parsed, data_key)
        opened = _OpenVault(parsed.vault_id, data_key, parsed.slots, parsed.prefix, entries)
        with _OPEN_GUARD:
            _OPEN[str(self.file)] = opened
        return opened

    def _current(self) -> _OpenVault | None:
        """The vault as it is on disk now, decrypting only when another writer changed it."""
        cached = _OPEN.get(str(self.file))
        if cached is not None:
            prefix = self._read_prefix()
            if prefix is None:
                return None
            # A fresh random body nonce goes into the header on every write, so an
            # unchanged header means an unchanged file.
            if prefix == cached.prefix:
                return cached
        raw = self._read_file()
        if raw is None:
            return None
        return self._open(raw)

    # --- writing --------------------------------------------------------------------------

    def _locked(self) -> InterProcessLock:
        return InterProcessLock(self._lock_path, timeout=self.lock_timeout)

    def _create(self) -> _OpenVault:
        """A new, empty vault in memory (written by the caller's first write)."""
        vault_id = secrets.token_hex(16)
        data_key = _crypto().AESGCM.generate_key(bit_length=256)
        slots: list[_Slot] = []
        passphrase_text: str | None = env_value(self.passphrase_variable)
        if passphrase_text is None and not self.key_in_keyring:
            if not self.prompt:
                raise VaultLockedError(
                    f"Creating the vault {self.file} needs a passphrase: "
                    f"{self.passphrase_variable} is not set and prompting is off "
                    "(c.VaultBackend.prompt)."
                )
            try:
                passphrase_text = passphrase_prompt.ask_new(
                    f"New passphrase for the vault {self.file}: ",
                    "Repeat the passphrase: ",
                    self.prompt_function,
                )
            except passphrase_prompt.NoPrompt as error:
                raise VaultLockedError(
                    f"Creating the vault {self.file} needs a passphrase: "
                    f"{self.passphrase_variable} is not set and nobody can answer a prompt here."
                ) from error
            if passphrase_text is None:
                raise WeakPassphraseError(
                    "The two passphrases differ; no vault was created.",
                    "Run the command again and type the same passphrase twice.",
                )
        if passphrase_text is not None:
            if len(passphrase_text) < MIN_PASSPHRASE_LENGTH:
                raise WeakPassphraseError(
                    f"A new vault needs a passphrase of at least {MIN_PASSPHRASE_LENGTH} "
                    f"characters; the one given has {len(passphrase_text)}. No vault was created."
                )
            params = {
                "kdf": "argon2id",
                "salt": _b64(os.urandom(16)),
                "iterations": self.kdf_iterations,
                "lanes": self.kdf_lanes,
                "memory_kib": self.kdf_memory_kib,
            }
            kek = derive_passphrase_key(passphrase_text, params)
            nonce, wrapped = _wrap(kek, data_key, vault_id, "passphrase")
            slots.append(_Slot("passphrase", nonce, wrapped, params))
        opened = _OpenVault(vault_id, data_key, slots, b"", {})
        if self.key_in_keyring:
            self._add_keyring_slot(opened)
        return opened

    def _add_keyring_slot(self, opened: _OpenVault) -> bool:
        """Keep a fresh key for this vault in the OS keystore; False (and a warning) if it fails."""
        kek = _crypto().AESGCM.generate_key(bit_length=256)
        try:
            _keyring_set_key(opened.vault_id, kek)
        except SecureStorageError as error:
            if not opened.slots:
                raise
            self.log.warning(
                "Could not keep the vault key in the OS keystore (%s); "
                "the vault still opens with its passphrase.",
                error.cause,
            )
            self._keyring_slot_failed = True
            return False
        nonce, wrapped = _wrap(kek, opened.data_key, opened.vault_id, "keyring")
        opened.slots = [s for s in opened.slots if s.kind != "keyring"]
        opened.slots.append(_Slot("keyring", nonce, wrapped, {"service": KEYRING_KEY_SERVICE}))
        return True

    def _wants_keyring_slot(self, opened: _OpenVault) -> bool:
        # After one failed attempt (keystore unreachable) this process stops trying:
        # every read would otherwise take the lock and log the same warning.
        return (
            self.key_in_keyring
            and not self._keyring_slot_failed
            and not any(s.kind == "keyring" for s in opened.slots)
        )

    def _write_lock(self) -> InterProcessLock:
        lock = self._locked()
        try:
            lock.acquire()
        except LockTimeout as error:
            raise VaultBusyError(
                f"Another process held the vault {self.file} for more than {self.lock_timeout:g} s."
            ) from error
        return lock

    def _write(self, opened: _OpenVault, entries: Entries) -> None:
        """Encrypt ``entries`` and replace the file atomically and durably.

        The process's cached copy changes only once the new file is in place, so a
        failed write (disk full, killed) never leaves the cache ahead of the disk.
        """
        body_nonce = os.urandom(12)
        body = json.dumps({"namespaces": entries}, separators=(",", ":")).encode()
        padded_length = -(-(len(body) + 1) // _BODY_PAD) * _BODY_PAD
        body += b" " * (padded_length - len(body))
        header = json.dumps(
            {
                "vault_id": opened.vault_id,
                "cipher": "AES-256-GCM",
                "body_nonce": _b64(body_nonce),
                "body_length": len(body) + _TAG_SIZE,
                "slots": [slot.to_json() for slot in opened.slots],
            },
            separators=(",", ":"),
        ).encode()
        prefix = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)) + header
        ciphertext = _crypto().AESGCM(opened.data_key).encrypt(body_nonce, body, prefix)
        _atomic_write(self.file, prefix + hashlib.sha256(prefix).digest() + ciphertext)
        written = _OpenVault(opened.vault_id, opened.data_key, list(opened.slots), prefix, entries)
        with _OPEN_GUARD:
            _OPEN[str(self.file)] = written

    def _modify(self, change: Callable[[Entries], tuple[Any, bool]]) -> Any:
        """Run ``change`` under the lock on a copy of the newest contents; write if it says so."""
        # Unlock (or ask for a new vault's passphrase) before taking the lock, so a
        # person typing does not hold up other processes.
        new_vault = self._create() if self._current() is None else None
        lock = self._write_lock()
        try:
            _remove_stale_temporaries(self.file)
            opened = self._current()
            created = opened is None
            if opened is None:
                opened = new_vault if new_vault is not None else self._create()
            entries = {namespace: dict(keys) for namespace, keys in opened.entries.items()}
            result, changed = change(entries)
            if self._wants_keyring_slot(opened):
                opened = _OpenVault(
                    opened.vault_id, opened.data_key, list(opened.slots), opened.prefix, entries
                )
                changed = self._add_keyring_slot(opened) or changed
            if changed or (created and entries):
                self._write(opened, entries)
            return result
        finally:
            lock.release()

    # --- the protocol -----------------------------------------------------------------------

    def _entries(self) -> Entries:
        opened = self._current()
        if opened is None:
            return {}
        if self._wants_keyring_slot(opened):
            self._modify(lambda entries: (None, False))
        return opened.entries

    @_agent_first
    def get(self, namespace: str, key: str) -> str | None:
        entry = self._entries().get(namespace, {}).get(key)
        return None if entry is None else str(entry["value"])

    @_agent_first
    def set(self, namespace: str, key: str, value: str) -> None:
        def change(entries: Entries) -> tuple[None, bool]:
            entries.setdefault(namespace, {})[key] = {"value": value, "modified": time.time()}
            return None, True

        self._modify(change)

    atomic_batches = True

    @_agent_first
    def set_many(self, changes: list[tuple[str, str, str | None]]) -> None:
        """All the changes in one durable write of the vault."""

        def change(entries: Entries) -> tuple[None, bool]:
            now = time.time()
            for namespace, key, value in changes:
                keys = entries.setdefault(namespace, {})
                if value is None:
                    keys.pop(key, None)
                else:
                    keys[key] = {"value": value, "modified": now}
                if not keys:
                    del entries[namespace]
            return None, True

        self._modify(change)

    @_agent_first
    def delete(self, namespace: str, key: str) -> bool:
        if not self.file.exists():
            return False

        def change(entries: Entries) -> tuple[bool, bool]:
            keys = entries.get(namespace, {})
            if key not in keys:
                return False, False
            del keys[key]
            if not keys:
                del entries[namespace]
            return True, True

        return bool(self._modify(change))

    @_agent_first
    def list_names(self, namespace: str) -> list[str]:
        return sorted(self._entries().get(namespace, {}))

    @_agent_first
    def list_namespaces(self) -> list[str]:
        return sorted(ns for ns, keys in self._entries().items() if keys)

    @_agent_first
    def get_all(self, namespace: str) -> dict[str, str]:
        return {k: str(e["value"]) for k, e in self._entries().get(namespace, {}).items()}

    @_agent_first
    def delete_all(self, namespace: str) -> list[str]:
        if not self.file.exists():
            return []

        def change(entries: Entries) -> tuple[list[str], bool]:
            removed = sorted(entries.pop(namespace, {}))
            return removed, bool(removed)

        return list(self._modify(change))

    @_agent_first
    def modified_times(self, namespace: str) -> dict[str, float | None]:
        return {
            key: float(entry["modified"]) if "modified" in entry else None
            for key, entry in self._entries().get(namespace, {}).items()
        }

    # --- state ------------------------------------------------------------------------------

    def lock(self) -> None:
        """Forget the unlocked key and the decrypted contents (in the agent too, if one runs)."""
        if self.use_agent:
            with contextlib.suppress(AgentNotRunning):
                AgentClient().call("lock", str(self.file))
        with _OPEN_GUARD:
            _OPEN.pop(str(self.file), None)

    close = lock

    @property
    def is_unlocked(self) -> bool:
        if self.use_agent:
            with contextlib.suppress(AgentNotRunning, SecureStorageError):
                return bool(AgentClient().call("status", str(self.file))["unlocked"])
        return str(self.file) in _OPEN

    @property
    def exists(self) -> bool:
        """Whether the vault file is there (no unlocking needed to tell)."""
        return self.file.exists()

    def unlock(self, passphrase: str, create: bool = False) -> None:
        """Unlock this vault in this process with ``passphrase`` (what the agent does on
        request); with ``create`` and no file yet, make an empty vault with it.

        Raises :class:`WrongPassphraseError`, :class:`WeakPassphraseError` (a new vault),
        or :class:`VaultLockedError` when there is no vault and ``create`` is false.
        """
        saved = (self.prompt, self.prompt_function, self.passphrase_variable)
        self.prompt, self.prompt_function = True, lambda _prompt: passphrase
        self.passphrase_variable = ""  # the passphrase given, not the environment's
        try:
            if str(self.file) in _OPEN:
                self._check_passphrase(passphrase)
            if self._current() is not None:
                return
            if not create:
                raise VaultLockedError(
                    f"There is no vault at {self.file} yet.",
                    "Create it: store a first key, or unlock with a new passphrase.",
                )
            self._modify(lambda entries: (None, True))
        finally:
            self.prompt, self.prompt_function, self.passphrase_variable = saved

    def _check_passphrase(self, passphrase: str) -> None:
        """Raise :class:`WrongPassphraseError` unless ``passphrase`` opens the file as it is
        (an unlock of a vault already open here must still be the right passphrase)."""
        raw = self._read_file()
        if raw is None:
            return
        parsed = parse_vault(raw, str(self.file))
        slot = next((s for s in parsed.slots if s.kind == "passphrase"), None)
        if (
            slot is None
            or _unwrap(derive_passphrase_key(passphrase, slot.params), slot, parsed.vault_id)
            is None
        ):
            raise WrongPassphraseError(f"The passphrase given does not open the vault {self.file}.")

    # --- through the unlock agent --------------------------------------------------------------

    def _agent_call(self, op: str, arguments: dict[str, Any]) -> Any:
        """``op`` in the agent; a locked agent is unlocked first, with the passphrase this
        process can get (environment or prompt). :class:`AgentNotRunning` without one."""
        client = AgentClient()
        try:
            return _from_wire(op, client.call(op, str(self.file), **arguments))
        except VaultLockedError:
            self.unlock_agent(client)
        return _from_wire(op, client.call(op, str(self.file), **arguments))

    def unlock_agent(self, client: AgentClient | None = None) -> bool:
        """Unlock this vault in the running agent with a passphrase got here (the
        environment, else a prompt; a new passphrase, asked twice, when there is no vault
        yet). Returns whether the vault was created. :class:`AgentNotRunning` without an
        agent; :class:`VaultLockedError` when nobody can give a passphrase here."""
        client = client if client is not None else AgentClient()
        state = client.call("status", str(self.file))
        create = not state["exists"]
        try:
            if create:
                passphrase_text = env_value(self.passphrase_variable)
                if passphrase_text is None:
                    if not self.prompt:
                        raise passphrase_prompt.NoPrompt("prompting is off")
                    passphrase_text = passphrase_prompt.ask_new(
                        f"New passphrase for the vault {self.file}: ",
                        "Repeat the passphrase: ",
                        self.prompt_function,
                    )
                    if passphrase_text is None:
                        raise WeakPassphraseError(
                            "The two passphrases differ; no vault was created.",
                            "Run the command again and type the same passphrase twice.",
                        )
            else:
                passphrase_text = env_value(self.passphrase_variable)
                if passphrase_text is None:
                    if not self.prompt:
                        raise passphrase_prompt.NoPrompt("prompting is off")
                    passphrase_text = passphrase_prompt.ask(
                        f"Passphrase for the vault {self.file}: ", self.prompt_function
                    )
        except passphrase_prompt.NoPrompt:
            verb = "Creating" if create else "Opening"
            raise VaultLockedError(
                f"{verb} the vault {self.file} needs its passphrase: the unlock agent for "
                f"this user holds it locked, {self.passphrase_variable} is not set, and "
                "nobody can answer a prompt here.",
                "Unlock it once for this user: the unlock dialog in JupyterLab, or "
                "`jupyter-secure-storage unlock` in a terminal.",
            ) from None
        client.call("unlock", str(self.file), passphrase=passphrase_text, create=create)
        return create

    def diagnose(self) -> Diagnosis:
        details: list[str] = []
        if env_value(ENV_VAULT):
            details.append(f"path from {ENV_VAULT}")
        variable = self.passphrase_variable
        details.append(f"passphrase: {'from ' + variable if env_value(variable) else 'prompt'}")
        raw = None
        try:
            raw = self._read_file()
        except SecureStorageError as error:
            return Diagnosis(self.name, False, error.cause, error.remedy, tuple(details))
        if raw is None:
            parent = self.file.parent
            while not parent.exists():
                parent = parent.parent
            if not os.access(parent, os.W_OK):
                return Diagnosis(
                    self.name,
                    False,
                    f"no vault at {self.file}, and {parent} is not writable",
                    f"Point {ENV_VAULT} at a writable location.",
                    tuple(details),
                )
            return Diagnosis(
                self.name,
                True,
                f"no vault yet at {self.file}; the first write creates it",
                "",
                tuple(details),
            )
        try:
            parsed = parse_vault(raw, str(self.file))
        except SecureStorageError as error:
            return Diagnosis(self.name, False, error.cause, error.remedy, tuple(details))
        mode = self.file.stat().st_mode & 0o777
        details.append(f"file mode {mode:04o}")
        kinds = ", ".join(slot.kind for slot in parsed.slots)
        details.append(f"opens with: {kinds}")
        if mode & 0o077:
            return Diagnosis(
                self.name,
                True,
                f"vault at {self.file} is readable by other users (mode {mode:04o})",
                f"chmod 600 {self.file}",
                tuple(details),
            )
        state = "unlocked in this process" if str(self.file) in _OPEN else "locked"
        if self.use_agent:
            with contextlib.suppress(AgentNotRunning, SecureStorageError):
                agent = AgentClient()
                unlocked = agent.call("status", str(self.file))["unlocked"]
                state = f"{'unlocked' if unlocked else 'locked'} in the unlock agent"
                details.append(f"unlock agent: {agent.path}")
        return Diagnosis(self.name, True, f"vault at {self.file} ({state})", "", tuple(details))


def _from_wire(op: str, result: Any) -> Any:
    """A result as the in-process method returns it (JSON has no tuples)."""
    if op in ("list_names", "list_namespaces", "delete_all"):
        return [str(name) for name in result]
    if op == "delete":
        return bool(result)
    return result


# --- file operations -------------------------------------------------------------------------


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(
        temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600
    )
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    if hasattr(os, "O_DIRECTORY"):
        directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def _remove_stale_temporaries(path: Path) -> None:
    # Temporaries are only created under the lock, so any found while holding it
    # belong to a writer that died (e.g. SIGKILL) before renaming.
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()


# --- the vault key in the OS keystore --------------------------------------------------------


def _keyring_get_key(vault_id: str) -> bytes | None:
    from .keyring import resolve_secure_keyring

    try:
        keyring_backend = resolve_secure_keyring()
        stored = keyring_backend.get_password(KEYRING_KEY_SERVICE, vault_id)
    except Exception:
        return None
    if stored is None:
        return None
    try:
        key = base64.b64decode(stored, validate=True)
    except ValueError:
        return None
    return key if len(key) == 32 else None


def _keyring_set_key(vault_id: str, key: bytes) -> None:
    from .keyring import resolve_secure_keyring

    keyring_backend = resolve_secure_keyring()
    try:
        keyring_backend.set_password(KEYRING_KEY_SERVICE, vault_id, _b64(key))
    except Exception as error:
        raise BackendOperationError(
            f"The OS keystore refused to store the vault key ({type(error).__name__}).",
            "Run `jupyter-secure-storage doctor`.",
        ) from error
