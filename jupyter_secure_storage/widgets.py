"""Widgets that take and list secrets without a value ever staying in widget state.

ipywidgets' own ``Password`` is a synced trait: the value is echoed back to every front
end and lands in saved widget state (field-notes.md). :class:`SecretPrompt` uses stock
ipywidgets only (no custom JavaScript, so it works in JupyterLab, Notebook 7 and VS
Code) and closes each path:

- the field's ``value`` is tagged ``echo_update=False``, so the kernel never sends a
  typed value back to any front end;
- the moment a value arrives in the kernel it is moved to a private attribute and the
  field is blanked, in the kernel and (by the update that sends) in the front end,
  so saved widget state can only ever hold ``""``;
- the kernel's output redaction also scrubs every comm message, as a second line.

:class:`SecretsPanel` shows names, backends and times of last change -- never a value,
not even a masked one of the right length.
"""

from __future__ import annotations

import html
import os
import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import ipywidgets as widgets
from traitlets import Unicode, validate

from .errors import SecureStorageError
from .secret import Secret
from .storage import SecureStorage, validate_key

SavedCallback = Callable[["SecretPrompt", Secret], None]
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SUBMIT_WINDOW = 2.0  # seconds an Enter waits for the value it submits


class SecretField(widgets.Password):
    """A password box whose value is never echoed back to front ends."""

    value = Unicode(help="What was typed; the prompt empties it as soon as it arrives.").tag(
        sync=True, echo_update=False
    )


class StatusLine(widgets.HTML):
    """A status line that wraps instead of cutting a long message (an error's remedy)
    off at the widget's edge, as a ``Label`` does. Text only: what is set is escaped."""

    @validate("value")
    def _escape(self, proposal: Any) -> str:
        text = str(proposal["value"])
        # Idempotent: setting an escaped value again does not escape it twice.
        return html.escape(html.unescape(text), quote=False)


class SecretPrompt(widgets.VBox):
    """A labelled password field with Save and Cancel, and a status line.

    Save (or Enter) writes the value under ``key``; the field is blanked at once and the
    status confirms with the length only. ``env=True`` (or a variable name) also puts
    the value into ``os.environ``.
    """

    def __init__(
        self,
        key: str,
        *,
        store: SecureStorage | None = None,
        namespace: str | None = None,
        env: bool | str = False,
        **kwargs: Any,
    ) -> None:
        self.key = validate_key(key)
        if store is None:
            store = SecureStorage(namespace=namespace) if namespace else SecureStorage()
        self.store = store
        self.variable = self._variable_for(env)
        self.field = SecretField(
            placeholder="paste the value, then Enter or Save",
            continuous_update=False,
            layout=widgets.Layout(width="22em"),
        )
        self.save_button = widgets.Button(
            description="Save", button_style="primary", icon="lock", tooltip=f"store {key}"
        )
        self.cancel_button = widgets.Button(description="Cancel", tooltip="forget what was typed")
        self.status = StatusLine(value=self._where())
        self._pending: str | None = None
        self._submit_requested_at = 0.0
        self._saved_callbacks: list[SavedCallback] = []
        self.field.observe(self._value_arrived, names="value")
        self.field.on_msg(self._field_message)
        self.save_button.on_click(lambda _button: self.submit())
        self.cancel_button.on_click(lambda _button: self.cancel())
        row = widgets.HBox(
            [
                widgets.Label(value=key, layout=widgets.Layout(min_width="8em")),
                self.field,
                self.save_button,
                self.cancel_button,
            ]
        )
        super().__init__(children=[row, self.status], **kwargs)

    # --- what the person does ---------------------------------------------------------

    def _value_arrived(self, change: dict[str, Any]) -> None:
        typed = change["new"]
        if not typed:
            return  # our own blanking
        self._pending = typed
        self.field.value = ""
        if time.monotonic() - self._submit_requested_at < _SUBMIT_WINDOW:
            self._submit_requested_at = 0.0
            self.submit()
        else:
            self.status.value = f"{len(typed)} characters entered · Save or press Enter"

    def _field_message(self, _widget: Any, content: dict[str, Any], _buffers: Any) -> None:
        # Enter sends a 'submit' message before the value it submits arrives.
        if content.get("event") != "submit":
            return
        if self._pending is None:
            self._submit_requested_at = time.monotonic()
        else:
            self.submit()

    def submit(self) -> Secret | None:
        """Store what was entered: the stored Secret, or None (nothing entered, or an error)."""
        value = self._pending
        if not value:
            self.status.value = f"nothing entered · {self._where()}"
            return None
        try:
            self.store.write(self.key, value)
        except SecureStorageError as error:
            # The value stays in this object for a retry (Cancel forgets it); the
            # message names the cause and never the value.
            self.status.value = f"not saved: {error}"
            return None
        self._pending = None
        secret = Secret(value, self.key)
        message = f"saved {self.key} · {len(value)} characters"
        if self.variable:
            os.environ[self.variable] = value
            message += f" · ${self.variable} set"
        self.status.value = message
        for callback in list(self._saved_callbacks):
            callback(self, secret)
        return secret

    def cancel(self) -> None:
        """Forget what was typed; store nothing."""
        self._pending = None
        self._submit_requested_at = 0.0
        self.field.value = ""
        self.status.value = f"cancelled · nothing stored · {self._where()}"

    def on_saved(self, callback: SavedCallback) -> None:
        """Call ``callback(prompt, secret)`` after each successful save."""
        self._saved_callbacks.append(callback)

    # --- helpers ---------------------------------------------------------------------------

    def _variable_for(self, env: bool | str) -> str | None:
        if env is True:
            variable = self.key
        elif isinstance(env, str) and env:
            variable = env
        else:
            return None
        if not _ENV_NAME.fullmatch(variable):
            raise SecureStorageError(
                f"{variable!r} cannot name an environment variable.",
                "Pass env='VARIABLE_NAME' (letters, digits and _, not starting with a digit).",
            )
        return variable

    def _where(self) -> str:
        try:
            return f"{self.key} → namespace {self.store.namespace!r}, {self.store.backend_name}"
        except SecureStorageError as error:
            return f"store not usable: {error.cause}"


def prompt_secret(key: str, **kwargs: Any) -> None:
    """Show a :class:`SecretPrompt` for ``key``: ``prompt_secret("OPENAI_API_KEY")``.

    Returns nothing, so that as a cell's last line it is shown once; build a
    ``SecretPrompt`` yourself to keep a handle on it (e.g. for ``on_saved``).
    """
    from IPython.display import display

    display(SecretPrompt(key, **kwargs))


class SecretsPanel(widgets.VBox):
    """The names in a namespace, with backend and last change; delete, inject, add. No values."""

    def __init__(
        self,
        store: SecureStorage | None = None,
        namespace: str | None = None,
        **kwargs: Any,
    ) -> None:
        if store is None:
            store = SecureStorage(namespace=namespace) if namespace else SecureStorage()
        self.store = store
        self.rows = widgets.VBox()
        self.status = StatusLine()
        self.add_name = widgets.Text(
            placeholder="new key name", layout=widgets.Layout(width="14em")
        )
        self.add_button = widgets.Button(description="Add", icon="plus", tooltip="store a new key")
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.adding = widgets.VBox()
        self.add_button.on_click(lambda _button: self.open_prompt(self.add_name.value.strip()))
        self.refresh_button.on_click(lambda _button: self.refresh())
        self.title = widgets.HTML()
        super().__init__(
            children=[
                self.title,
                self.rows,
                widgets.HBox([self.add_name, self.add_button, self.refresh_button]),
                self.adding,
                self.status,
            ],
            **kwargs,
        )
        self.refresh()

    def refresh(self) -> None:
        try:
            entries = self.store.entries()
            where = self.store.backend_name  # the location is in %secure_status, not in state
        except SecureStorageError as error:
            self.rows.children = ()
            self.status.value = f"store not usable: {error}"
            return
        self.title.value = (
            f"<b>Secrets</b> · namespace <code>{_escape(self.store.namespace)}</code> · "
            f"{_escape(where)}"
        )
        self.rows.children = [self._row(entry.name, entry.modified) for entry in entries]
        self.status.value = f"{len(entries)} key(s)" if entries else "no keys yet"

    def _row(self, name: str, modified: datetime | None) -> widgets.HBox:
        when = modified.astimezone().strftime("%Y-%m-%d %H:%M") if modified else "—"
        inject = widgets.Button(
            description="Inject",
            icon="terminal",
            tooltip=f"set ${name} in this kernel's environment",
            disabled=not _ENV_NAME.fullmatch(name),
        )
        delete = widgets.Button(description="Delete", icon="trash", button_style="danger")
        actions = widgets.HBox([inject, delete])
        row = widgets.HBox(
            [
                widgets.Label(value=name, layout=widgets.Layout(width="16em")),
                widgets.Label(value=self.store.backend_name, layout=widgets.Layout(width="6em")),
                widgets.Label(value=when, layout=widgets.Layout(width="10em")),
                actions,
            ]
        )
        inject.on_click(lambda _button: self.inject(name))
        delete.on_click(lambda _button: self._confirm_delete(name, actions))
        return row

    def _confirm_delete(self, name: str, actions: widgets.HBox) -> None:
        original = actions.children
        yes = widgets.Button(description="Yes, delete", button_style="danger")
        no = widgets.Button(description="No")
        actions.children = [widgets.Label(value=f"delete {name}?"), yes, no]
        yes.on_click(lambda _button: self.delete(name))

        def keep(_button: Any) -> None:
            actions.children = original

        no.on_click(keep)

    def delete(self, name: str) -> None:
        try:
            self.store.delete(name)
        except SecureStorageError as error:
            self.status.value = f"not deleted: {error}"
            return
        self.refresh()
        self.status.value = f"deleted {name}"

    def inject(self, name: str) -> None:
        try:
            secret = self.store.read(name)
        except SecureStorageError as error:
            self.status.value = f"not injected: {error}"
            return
        if secret is None:
            self.status.value = f"{name} is no longer stored"
            self.refresh()
            return
        os.environ[name] = secret.reveal()
        self.status.value = f"${name} set in this kernel's environment"

    def open_prompt(self, name: str) -> SecretPrompt | None:
        try:
            prompt = SecretPrompt(name, store=self.store)
        except SecureStorageError as error:
            self.status.value = f"cannot add that key: {error.cause}"
            return None
        prompt.on_saved(lambda _prompt, _secret: self.refresh())
        self.adding.children = [prompt]
        self.add_name.value = ""
        return prompt


def _escape(text: str) -> str:
    import html

    return html.escape(text)
