"""A pre-save hook that keeps secrets out of what Jupyter Server writes to disk.

The kernel scrubs what it sends, but the front end writes the file -- and a front end
can hold what the kernel never scrubbed: a value typed into a password field while the
kernel was busy, output saved before the extension was loaded, a token pasted into a
Markdown cell. So every save of a notebook or text file passes here first:

- the value of every password widget in ``metadata.widgets`` is blanked;
- every stored value (found by its keyed fingerprint, in any of the encodings the
  kernel's redaction knows; :mod:`jupyter_secure_storage.scan.known`) and every
  well-known token format (:mod:`jupyter_secure_storage.scan.patterns`) is replaced by a
  visible marker (``[secret:NAME]``, ``[redacted:KIND]``) in sources, outputs,
  attachments and metadata; the names scrubbed are logged, never the values.

Fail closed (field-notes.md: an ordinary exception in a pre-save hook is logged and the
file is saved anyway): any failure -- a locked store whose fingerprints cannot be read,
a bug -- is turned into an HTTP error, the save is refused, the person sees why, and the
file on disk stays as it was. Checkpoints are copies of the saved file, so they are
scrubbed too.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections import Counter
from typing import Any

from traitlets import Bool, Enum, Float
from traitlets.config import Config, LoggingConfigurable

from ..config_file import load_config_files
from ..errors import SecureStorageError, VaultLockedError
from ..scan.findings import STORED, Finding, Scanner

WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
# Models whose value is a secret by construction: ipywidgets' Password (and
# jupyter_secure_storage's SecretField, which uses the same front-end model).
SECRET_MODELS = {"PasswordModel"}

log = logging.getLogger("jupyter_secure_storage.server")


def blank_password_widgets(notebook: dict[str, Any]) -> int:
    """Empty the value of every password widget in the notebook's saved widget state."""
    widgets = notebook.get("metadata", {}).get("widgets")
    if not widgets:
        return 0
    state = widgets.get(WIDGET_STATE, {}).get("state", {})
    blanked = 0
    for model in state.values():
        if model.get("model_name") in SECRET_MODELS:
            values = model.get("state", {})
            if values.get("value"):
                values["value"] = ""
                blanked += 1
    return blanked


class SaveRefused(Exception):
    """The scrub could not be done: the save must not happen. ``str()`` is for people."""


class SaveGuard(LoggingConfigurable):
    """What the pre-save hook checks. Configure as ``c.SaveGuard.*`` in
    ``jupyter_server_config.py``."""

    stored_values = Bool(
        True,
        help=(
            "Scrub values held in the secure store (found by fingerprint, never read). "
            "Needs the store readable by the server: an OS keystore, or a vault with "
            "JUPYTER_SECURE_STORAGE_PASSPHRASE (or a key in the keystore) in the "
            "server's environment."
        ),
    ).tag(config=True)

    patterns = Bool(True, help="Scrub well-known token formats (API keys, JWTs, PEM keys...).").tag(
        config=True
    )

    files = Bool(True, help="Check text files too, not only notebooks.").tag(config=True)

    when_store_locked = Enum(
        ["refuse", "patterns-only"],
        "refuse",
        help=(
            "When the store's fingerprints cannot be read (a locked vault, a locked "
            "keystore): 'refuse' the save (fail closed, the default) or save after "
            "checking token formats only, with a warning in the log."
        ),
    ).tag(config=True)

    reload_seconds = Float(
        2.0,
        help=(
            "Fingerprints are re-read from the store at most this often, so a value "
            "stored a moment ago is scrubbed from the next save."
        ),
    ).tag(config=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._known: Any = None
        self._loaded_at = float("-inf")
        self._extra: Any = None
        #: Whether stored values are checked: "on", "locked" (the store is locked in the
        #: unlock agent: token formats only, or the fingerprints read before the lock),
        #: or "off". Shown in JupyterLab's status bar.
        self.stored_value_check = "on" if self.stored_values else "off"
        self._agent_running: Any = None

    def also_scrub(self, names_by_value: dict[str, str]) -> None:
        """Scrub these values too (the vault passphrase the server was started with)."""
        from ..scan.known import KnownValues

        values = {value: name for value, name in names_by_value.items() if value}
        self._extra = KnownValues.from_values(values) if values else None

    def use_agent_state(self, agent_running: Any) -> None:
        """``agent_running()`` tells whether this user's unlock agent answers: then a
        locked store means no kernel of this server could have read a stored value."""
        self._agent_running = agent_running

    # --- the detectors ------------------------------------------------------------------

    def _store_config(self) -> Config:
        # The package's config files under the server's own, as the unlock agent and the
        # REST API open the store, so all three reach the same store.
        config = load_config_files(Config(self.config) if self.config else None)
        # The server never prompts: a passphrase prompt would hang a save on a terminal
        # nobody is watching.
        config.VaultBackend.prompt = False
        return config

    def _known_values(self) -> Any:
        from ..scan.known import KnownValues
        from ..storage import SecureStorage

        now = time.monotonic()
        if self._known is not None and now - self._loaded_at < self.reload_seconds:
            return self._known
        try:
            store = SecureStorage(config=self._store_config())
            known = KnownValues.from_store(store)
        except VaultLockedError as error:
            through_agent = getattr(store.backend_object, "use_agent", False)
            if not through_agent or self._agent_running is None or not self._agent_running():
                return self._unreadable(error)
            # Locked in the agent: no kernel of this server can have read a value since,
            # and a value read before the lock is in the fingerprints read then.
            if self.stored_value_check != "locked":
                self.log.info(
                    "jupyter-secure-storage: the store is locked; saves are checked for "
                    "token formats%s until it is unlocked.",
                    " and the stored values known before the lock" if self._known else "",
                )
            self.stored_value_check = "locked"
            return self._known
        except SecureStorageError as error:
            return self._unreadable(error)
        self.stored_value_check = "on"
        self._known, self._loaded_at = known, now
        return known

    def _unreadable(self, error: SecureStorageError) -> Any:
        """The fingerprints cannot be read and kernels may have read values: refuse the
        save (fail closed), unless configured to check token formats only."""
        cause = getattr(error, "cause", str(error))
        remedy = getattr(error, "remedy", "")
        if self.when_store_locked == "patterns-only":
            self.log.warning(
                "jupyter-secure-storage: stored values are NOT checked in saved files "
                "(%s); token formats still are.",
                cause,
            )
            return None
        raise SaveRefused(
            "jupyter-secure-storage could not read the fingerprints of your stored "
            f"secrets ({cause}), so it cannot check this file for them and did not "
            "save it; the file on disk is unchanged. "
            + (f"{remedy} " if remedy else "")
            + "To save after checking token formats only, set "
            "c.SaveGuard.when_store_locked = 'patterns-only' in jupyter_server_config.py."
        ) from error

    def scanner(self) -> Scanner:
        detectors: list[Any] = []
        if self._extra is not None:
            detectors.append(self._extra)
        if self.stored_values:
            known = self._known_values()
            if known is not None and len(known):
                detectors.append(known)
        if self.patterns:
            from ..scan.allowlist import Allowlist
            from ..scan.patterns import PatternDetector

            # A token on a line marked `jss: allow` is kept, as `scan` keeps it; a
            # stored value is always scrubbed.
            detectors.append(Allowlist().filter(PatternDetector()))
        return Scanner(detectors)

    # --- the hook -----------------------------------------------------------------------

    def check(self, model: dict[str, Any], path: str) -> list[Finding]:
        """Scrub ``model`` in place; return what was found. Raises on any failure."""
        kind = model.get("type")
        content = model.get("content")
        if kind == "notebook" and isinstance(content, dict):
            blanked = blank_password_widgets(content)
            if blanked:
                self.log.info("blanked %d password widget value(s) in %s", blanked, path)
            findings = self.scanner().scan_notebook(content, scrub=True)
        elif kind == "file" and self.files and isinstance(content, str):
            findings = self._check_file(model, content)
        else:
            return []
        if findings:
            self.log.warning(
                "jupyter-secure-storage scrubbed %d secret(s) from %s before saving: %s",
                len(findings),
                path,
                _summary(findings),
            )
        return findings

    def _check_file(self, model: dict[str, Any], content: str) -> list[Finding]:
        if model.get("format") == "base64":
            try:
                text = base64.b64decode(content, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return self._check_binary(content)
            new, findings = self.scanner().scrub_text(text)
            if findings:
                model["content"] = base64.b64encode(new.encode("utf-8")).decode("ascii")
            return findings
        new, findings = self.scanner().scrub_text(content)
        model["content"] = new
        return findings

    def _check_binary(self, content: str) -> list[Finding]:
        """A binary file cannot be scrubbed without breaking it: a stored value in it
        (its bytes, or any encoding of them) refuses the save."""
        scanner = self.scanner()
        scanner.detectors = [d for d in scanner.detectors if getattr(d, "exact", False)]
        if not scanner.detectors:
            return []
        try:
            data = base64.b64decode(content)
        except binascii.Error:
            return []
        findings = scanner.scan_text(data.decode("latin-1"))
        if findings:
            raise SaveRefused(
                "This binary file holds a stored secret "
                f"({_summary(findings)}); it cannot be scrubbed without damaging it, so "
                "it was not saved and the file on disk is unchanged. Remove the secret "
                "from the data and save again."
            )
        return []


def _summary(findings: list[Finding]) -> str:
    counts = Counter(f.name if f.kind == STORED and f.name else f.kind for f in findings)
    return ", ".join(f"{label} x{n}" if n > 1 else label for label, n in sorted(counts.items()))


_default_guard: list[SaveGuard] = []


def _guard() -> SaveGuard:
    if not _default_guard:
        _default_guard.append(SaveGuard())
    return _default_guard[0]


def scrub_before_save(model: dict[str, Any], path: str, **kwargs: Any) -> None:
    """The pre-save hook (with a default :class:`SaveGuard`). Refuses the save with a
    ``tornado.web.HTTPError`` on any failure."""
    guarded_save(_guard(), model, path)


def guarded_save(guard: SaveGuard, model: dict[str, Any], path: str) -> None:
    from tornado.web import HTTPError

    try:
        guard.check(model, path)
    except SaveRefused as refused:
        message = str(refused)
        log.error("jupyter-secure-storage refused to save %s: %s", path, message)
        raise HTTPError(503, message.replace("%", "%%"), reason=message) from None
    except Exception as error:
        log.error(
            "jupyter-secure-storage refused to save %s: the secret check failed (%s)",
            path,
            type(error).__name__,
        )
        message = (
            "jupyter-secure-storage could not check this file for secrets, so it "
            f"was not saved ({type(error).__name__}). The file on disk is unchanged."
        )
        raise HTTPError(500, message, reason=message) from None


def load_save_guard(serverapp: Any, hosted: Any = None) -> SaveGuard:
    """Register the pre-save hook; with ``hosted`` (the server's unlock agent) a locked
    store lets saves go on with the token-format check, and the server's passphrase is
    scrubbed like a stored value."""
    guard = SaveGuard(parent=serverapp)
    if hosted is not None:
        guard.use_agent_state(lambda: hosted.running)
        if hosted.passphrase:
            guard.also_scrub({hosted.passphrase: "vault passphrase"})

    def hook(model: dict[str, Any], path: str, **_kwargs: Any) -> None:
        guarded_save(guard, model, path)

    serverapp.contents_manager.register_pre_save_hook(hook)
    serverapp.log.info(
        "jupyter-secure-storage: notebooks and text files are checked for secrets before "
        "saving (stored values: %s, token formats: %s)",
        "on" if guard.stored_values else "off",
        "on" if guard.patterns else "off",
    )
    return guard
