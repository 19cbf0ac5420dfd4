"""Every error the package raises, in one flat module.

Each error carries a ``cause`` (what went wrong, in words a person can act on)
and a ``remedy`` (what to do about it). ``str(error)`` joins both. No message
ever contains a stored value: callers pass names, paths and counts, never values.
"""

from __future__ import annotations


class SecureStorageError(Exception):
    """Base of every error raised by jupyter_secure_storage."""

    default_remedy: str = ""

    def __init__(self, cause: str, remedy: str | None = None) -> None:
        self.cause = cause
        self.remedy = remedy if remedy is not None else self.default_remedy
        super().__init__(self._message())

    def _message(self) -> str:
        if self.remedy:
            return f"{self.cause} Remedy: {self.remedy}"
        return self.cause


# --- input mistakes --------------------------------------------------------------------


class InvalidKeyError(SecureStorageError, ValueError):
    """A key or namespace name that cannot be stored (empty, control characters, too long)."""


class InvalidValueTypeError(SecureStorageError, TypeError):
    """A value that is not a ``str`` (or ``None`` to delete)."""


class InvalidValueError(SecureStorageError, ValueError):
    """A ``str`` value that cannot be stored as it is (e.g. it holds lone surrogates)."""


class ValueTooLargeError(InvalidValueError):
    """A value bigger than the store can hold; it is refused, never truncated."""


class SecretNotFoundError(SecureStorageError, LookupError):
    """A key that must be in the store is not there (e.g. one a kernel needs at launch)."""


class SecretSerializationError(SecureStorageError, TypeError):
    """An attempt to pickle, ``%store`` or otherwise copy a ``Secret`` to disk."""

    default_remedy = (
        "Keep the secret in the store and read it again where it is needed "
        "(SecureStorage().read(name)); call .reveal() only at the point of use."
    )


# --- choosing and reaching a backend ---------------------------------------------------


class UnknownBackendError(SecureStorageError, ValueError):
    """A backend name that is neither built in nor registered as a plugin."""


class BackendUnavailableError(SecureStorageError):
    """The chosen backend cannot work on this machine right now."""

    default_remedy = "Run `jupyter-secure-storage doctor` to see every backend's state."


class InsecureBackendError(BackendUnavailableError):
    """keyring offered only a plaintext, null or failing backend; it is refused."""


class BackendOperationError(SecureStorageError):
    """The backend was reachable but an operation on it failed."""


class KeystoreLockedError(BackendOperationError):
    """The OS keystore is locked and could not be unlocked without a person present."""

    default_remedy = (
        "Unlock your login keyring (log in to the desktop session, or run "
        "`gnome-keyring-daemon --unlock` with the password on stdin), "
        "or use the vault: JUPYTER_SECURE_STORAGE_BACKEND=vault."
    )


# --- the paired device -------------------------------------------------------------------


class BridgeError(SecureStorageError):
    """Base of the paired-device bridge's errors."""


class NoPairedDeviceError(BridgeError):
    """The device backend was asked for, but no device (or not the named one) is paired."""

    default_remedy = (
        "Pair one: %secure_pair in a notebook, or `jupyter-secure-storage pair --relay URL`."
    )


class RelayUnreachableError(BridgeError):
    """The relay could not be reached or closed the connection."""

    default_remedy = (
        "Check the relay address and that it runs (`jupyter-secure-storage relay`); "
        "the request was not delivered."
    )


class DeviceOfflineError(BridgeError):
    """The relay took the request but the device did not answer in time."""

    default_remedy = (
        "Open the device (phone app, web page, or `jupyter-secure-storage device`) and retry; "
        "raise JUPYTER_SECURE_STORAGE_DEVICE_TIMEOUT to wait longer."
    )


class DeviceDeniedError(BridgeError):
    """The device refused: its owner rejected the request, or the key's policy forbids it."""


class PairingError(BridgeError):
    """Pairing failed: expired or used offer, a rejected code, or a broken handshake."""


# --- the vault file --------------------------------------------------------------------


class VaultError(SecureStorageError):
    """Base of the vault's errors. The vault file is never modified when one is raised."""


class VaultLockedError(VaultError):
    """The vault needs a passphrase and none could be obtained."""

    default_remedy = (
        "Set JUPYTER_SECURE_STORAGE_PASSPHRASE for unattended runs, run in a terminal "
        "or notebook that can prompt, or keep the vault key in the OS keystore "
        "(c.VaultBackend.key_in_keyring = True)."
    )


class WrongPassphraseError(VaultError):
    """The passphrase does not open this vault."""

    default_remedy = (
        "Check JUPYTER_SECURE_STORAGE_PASSPHRASE or the passphrase you typed. "
        "The vault file was not changed."
    )


class VaultCorruptedError(VaultError):
    """The vault file is damaged: bad magic, bad checksum, truncated, or failed authentication."""

    default_remedy = (
        "The file was left exactly as found. Restore it from a backup, or move it "
        "aside and start a new vault (JUPYTER_SECURE_STORAGE_VAULT=new/path)."
    )


class UnsupportedVaultVersionError(VaultError):
    """The vault was written by a newer version of jupyter-secure-storage."""

    default_remedy = (
        "Upgrade: pip install -U jupyter-secure-storage. The vault file was not changed."
    )


class WeakPassphraseError(VaultError, ValueError):
    """A passphrase too short to protect a new vault."""

    default_remedy = "Choose a passphrase of at least 8 characters (a few random words is best)."


class VaultBusyError(VaultError):
    """Another process held the vault's lock for longer than the timeout."""

    default_remedy = (
        "Retry; if it persists, look for a hung process using the vault "
        "(its lock file sits next to the vault file)."
    )


# --- the unlock agent ------------------------------------------------------------------------


class AgentError(SecureStorageError):
    """Base of the unlock agent's own errors."""


class AgentUnavailableError(AgentError):
    """The unlock agent was reached and stopped answering, or its socket is not safe to use."""

    default_remedy = (
        "Restart Jupyter Server (it runs the agent), or run `jupyter-secure-storage agent`."
    )


class AgentRefusedError(AgentError):
    """The unlock agent refused a request (another user, or an operation it does not know)."""


class NotebookAccessError(SecureStorageError, PermissionError):
    """This notebook has not been granted the key it asked for (Notebook access)."""


# --- scanning files for secrets ----------------------------------------------------------


class ScanError(SecureStorageError):
    """Base of the errors of ``jupyter-secure-storage scan``."""


class AllowlistError(ScanError, ValueError):
    """An allowlist file that cannot be used as written (its line number is in the cause)."""

    default_remedy = (
        "Each line of the allowlist is `path: GLOB`, `fingerprint: SHA256HEX`, "
        "`regex: PATTERN` or `kind: KIND`; comments start with #. See docs/scanning.md."
    )


class ScrubRefusedError(ScanError):
    """``scan --fix`` would have written an invalid file, so the file was left unchanged."""

    default_remedy = (
        "Remove the secret by hand (the findings name its place), or open the file in "
        "Jupyter and save it: the pre-save hook scrubs it. Then rotate the secret."
    )


__all__ = [
    "AllowlistError",
    "BackendOperationError",
    "BackendUnavailableError",
    "BridgeError",
    "DeviceDeniedError",
    "DeviceOfflineError",
    "InsecureBackendError",
    "InvalidKeyError",
    "InvalidValueError",
    "InvalidValueTypeError",
    "KeystoreLockedError",
    "NoPairedDeviceError",
    "PairingError",
    "RelayUnreachableError",
    "ScanError",
    "ScrubRefusedError",
    "SecretNotFoundError",
    "SecretSerializationError",
    "SecureStorageError",
    "UnknownBackendError",
    "UnsupportedVaultVersionError",
    "ValueTooLargeError",
    "VaultBusyError",
    "VaultCorruptedError",
    "VaultError",
    "VaultLockedError",
    "WeakPassphraseError",
    "WrongPassphraseError",
]
