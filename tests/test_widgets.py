"""SecretPrompt and SecretsPanel with a recording comm: what the kernel would send, checked.

Front-end actions are fed through each widget's real message handler (``_handle_msg``)
exactly as ipykernel's comm manager delivers them: a state update when the field
changes, a custom ``submit`` message when Enter is pressed, a click on a button.
The real-browser test (test_browser.py) covers the same flow in JupyterLab.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import comm
import ipywidgets
import pytest
from conftest import fast_kdf_config
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from jupyter_secure_storage import Secret, SecureStorage
from jupyter_secure_storage.testing import canary, same
from jupyter_secure_storage.widgets import SecretPrompt, SecretsPanel, prompt_secret


class RecordingComm:
    """Keeps every message a widget would send to the front end."""

    sent: ClassVar[list[Any]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.comm_id = kwargs.get("comm_id") or f"comm-{len(RecordingComm.sent)}"
        self.kernel = "recording"
        RecordingComm.sent.append(("open", kwargs.get("data")))

    def open(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_msg(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_close(self, *args: Any, **kwargs: Any) -> None:
        pass

    def send(self, data: Any = None, metadata: Any = None, buffers: Any = None) -> None:
        RecordingComm.sent.append(("send", data))

    def close(self, *args: Any, **kwargs: Any) -> None:
        pass


@pytest.fixture(autouse=True)
def recording_comm(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    RecordingComm.sent = []
    monkeypatch.setattr(comm, "create_comm", RecordingComm)
    yield RecordingComm.sent
    ipywidgets.Widget.close_all()


def sent_text() -> str:
    return json.dumps(RecordingComm.sent, default=str)


def front_end_types(widget: Any, typed: str) -> None:
    """The field changed and the front end synced it (on Enter or blur)."""
    widget.field._handle_msg(
        {
            "content": {
                "data": {"method": "update", "state": {"value": typed}, "buffer_paths": []}
            },
            "buffers": [],
        }
    )


def front_end_presses_enter(widget: Any) -> None:
    widget.field._handle_msg(
        {"content": {"data": {"method": "custom", "content": {"event": "submit"}}}, "buffers": []}
    )


def front_end_clicks(button: Any) -> None:
    button._handle_msg(
        {"content": {"data": {"method": "custom", "content": {"event": "click"}}}, "buffers": []}
    )


@pytest.fixture
def store() -> SecureStorage:
    return SecureStorage(backend="memory")


# --- SecretPrompt ---------------------------------------------------------------------------


def test_save_writes_blanks_and_confirms_with_the_length_only(store: SecureStorage) -> None:
    value = canary()
    heard: list[bool] = []
    store.register_listener("OPENAI_API_KEY", lambda s: heard.append(s is not None))
    prompt = SecretPrompt("OPENAI_API_KEY", store=store)
    front_end_types(prompt, value)
    assert prompt.field.value == ""
    front_end_clicks(prompt.save_button)
    assert same(store.read("OPENAI_API_KEY"), value)
    assert prompt.status.value == f"saved OPENAI_API_KEY · {len(value)} characters"
    assert heard == [True]
    assert value not in sent_text()


def test_the_typed_value_is_never_echoed_and_the_blank_is_sent(store: SecureStorage) -> None:
    prompt = SecretPrompt("K", store=store)
    RecordingComm.sent.clear()
    value = canary()
    front_end_types(prompt, value)
    updates = [data for kind, data in RecordingComm.sent if kind == "send"]
    assert value not in sent_text()
    assert any(
        u.get("method") == "update" and u.get("state", {}).get("value") == "" for u in updates
    )
    assert prompt.field.get_state()["value"] == ""


def test_enter_saves_even_when_it_arrives_before_the_value(store: SecureStorage) -> None:
    value = canary()
    prompt = SecretPrompt("ENTERED", store=store)
    front_end_presses_enter(prompt)  # the browser sends 'submit' before the change
    front_end_types(prompt, value)
    assert same(store.read("ENTERED"), value)
    assert prompt.status.value.startswith("saved ENTERED")


def test_enter_after_the_value_saves_too(store: SecureStorage) -> None:
    value = canary()
    prompt = SecretPrompt("ENTERED", store=store)
    front_end_types(prompt, value)
    front_end_presses_enter(prompt)
    assert same(store.read("ENTERED"), value)


def test_a_value_arriving_on_blur_waits_for_save(store: SecureStorage) -> None:
    value = canary()
    prompt = SecretPrompt("BLURRED", store=store)
    front_end_types(prompt, value)
    assert store.read("BLURRED") is None
    assert prompt.status.value == f"{len(value)} characters entered · Save or press Enter"


def test_cancel_stores_nothing_and_forgets(store: SecureStorage) -> None:
    prompt = SecretPrompt("CANCELLED", store=store)
    front_end_types(prompt, canary())
    front_end_clicks(prompt.cancel_button)
    front_end_clicks(prompt.save_button)
    assert store.keys() == []
    assert prompt.status.value.startswith("nothing entered")


def test_env_option_sets_the_variable(
    store: SecureStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JSS_WIDGET_VAR", raising=False)
    value = canary()
    prompt = SecretPrompt("K", store=store, env="JSS_WIDGET_VAR")
    front_end_types(prompt, value)
    prompt.submit()
    assert os.environ.get("JSS_WIDGET_VAR") == value
    assert prompt.status.value.endswith("$JSS_WIDGET_VAR set")


def test_a_locked_vault_shows_in_the_status_and_keeps_the_value_out(
    vault_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_SECURE_STORAGE_VAULT", str(vault_path))
    config = fast_kdf_config()
    config.VaultBackend.prompt = False  # as in a widget callback: nobody can be asked
    locked = SecureStorage(backend="vault", config=config)
    prompt = SecretPrompt("K", store=locked)
    value = canary()
    front_end_types(prompt, value)
    prompt.submit()
    assert prompt.status.value.startswith("not saved:")
    assert "JUPYTER_SECURE_STORAGE_PASSPHRASE" in prompt.status.value
    assert value not in sent_text()
    assert not vault_path.exists()
    # After unlocking, Save works with what was typed (Cancel would have forgotten it).
    monkeypatch.setenv("JUPYTER_SECURE_STORAGE_PASSPHRASE", "a test passphrase")
    assert prompt.submit() is not None
    assert same(locked.read("K"), value)


def test_a_damaged_vault_shows_in_the_status(vault_env: Path) -> None:
    vault_env.parent.mkdir(parents=True, exist_ok=True)
    vault_env.write_bytes(b"not a vault")
    prompt = SecretPrompt("K", store=SecureStorage(backend="vault", config=fast_kdf_config()))
    value = canary()
    front_end_types(prompt, value)
    assert prompt.submit() is None
    assert "damaged" in prompt.status.value
    assert value not in sent_text()
    assert vault_env.read_bytes() == b"not a vault"


def test_an_invalid_key_or_variable_is_refused(store: SecureStorage) -> None:
    with pytest.raises(ValueError, match="empty"):
        SecretPrompt("", store=store)
    with pytest.raises(Exception, match="environment variable"):
        SecretPrompt("K", store=store, env="1NOT-A-NAME")


def test_on_saved_callbacks_get_a_secret(store: SecureStorage) -> None:
    got: list[Secret] = []
    prompt = SecretPrompt("K", store=store)
    prompt.on_saved(lambda _prompt, secret: got.append(secret))
    value = canary()
    front_end_types(prompt, value)
    prompt.submit()
    assert len(got) == 1
    assert same(got[0], value)


# --- SecretsPanel --------------------------------------------------------------------------------


def test_panel_lists_names_backend_and_time_never_values(store: SecureStorage) -> None:
    values = [canary(), canary()]
    store.write("B_KEY", values[0])
    store.write("A_KEY", values[1])
    panel = SecretsPanel(store=store)
    names = [row.children[0].value for row in panel.rows.children]
    assert names == ["A_KEY", "B_KEY"]
    assert all(row.children[1].value == "memory" for row in panel.rows.children)
    assert all(row.children[2].value != "—" for row in panel.rows.children)
    assert all(value not in sent_text() for value in values)
    assert panel.status.value == "2 key(s)"


def test_panel_delete_asks_first(store: SecureStorage) -> None:
    store.write("DOOMED", canary())
    panel = SecretsPanel(store=store)
    actions = panel.rows.children[0].children[3]
    delete = actions.children[1]
    front_end_clicks(delete)
    assert actions.children[0].value == "delete DOOMED?"
    front_end_clicks(actions.children[2])  # No
    assert store.keys() == ["DOOMED"]
    front_end_clicks(actions.children[1])  # Delete again
    front_end_clicks(actions.children[1])  # Yes, delete
    assert store.keys() == []
    assert panel.rows.children == ()
    assert panel.status.value == "deleted DOOMED"


def test_panel_inject_sets_the_environment(
    store: SecureStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JSS_PANEL_KEY", raising=False)
    value = canary()
    store.write("JSS_PANEL_KEY", value)
    store.write("not an env name", canary())
    panel = SecretsPanel(store=store)
    rows = {row.children[0].value: row for row in panel.rows.children}
    assert rows["not an env name"].children[3].children[0].disabled
    front_end_clicks(rows["JSS_PANEL_KEY"].children[3].children[0])
    assert os.environ.get("JSS_PANEL_KEY") == value
    assert value not in sent_text()


def test_panel_add_opens_a_prompt_and_refreshes_after_save(store: SecureStorage) -> None:
    panel = SecretsPanel(store=store)
    panel.add_name.value = "NEW_KEY"
    front_end_clicks(panel.add_button)
    prompt = panel.adding.children[0]
    assert isinstance(prompt, SecretPrompt)
    value = canary()
    front_end_types(prompt, value)
    front_end_clicks(prompt.save_button)
    assert [row.children[0].value for row in panel.rows.children] == ["NEW_KEY"]
    assert value not in sent_text()


def test_panel_add_with_a_bad_name_says_why(store: SecureStorage) -> None:
    panel = SecretsPanel(store=store)
    panel.add_name.value = ""
    front_end_clicks(panel.add_button)
    assert panel.status.value.startswith("cannot add that key")
    assert panel.adding.children == ()


# --- the magic's --widget -----------------------------------------------------------------------


def test_secure_write_widget_shows_a_prompt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    config = Config()
    config.SecureStorage.backend = "memory"
    config.HistoryManager.enabled = False
    shell = InteractiveShell.instance(config=config)
    try:
        shell.run_line_magic("load_ext", "jupyter_secure_storage")
        result = shell.run_cell("%secure_write WIDGET_KEY --widget")
        assert result.success
        assert "SecretPrompt" in capsys.readouterr().out
        instances = ipywidgets.widgets.widget._instances.values()
        displayed = [w for w in instances if isinstance(w, SecretPrompt)]
        assert [w.key for w in displayed] == ["WIDGET_KEY"]
    finally:
        shell.run_line_magic("unload_ext", "jupyter_secure_storage")
        InteractiveShell.clear_instance()


def test_prompt_secret_displays_once_and_returns_nothing(
    store: SecureStorage, capsys: pytest.CaptureFixture[str]
) -> None:
    # Returning the widget too would show it a second time as the cell's result.
    assert prompt_secret("HELPER_KEY", store=store) is None  # type: ignore[func-returns-value]
    instances = ipywidgets.widgets.widget._instances.values()
    assert [w.key for w in instances if isinstance(w, SecretPrompt)] == ["HELPER_KEY"]


def test_a_long_status_wraps_and_is_shown_as_text() -> None:
    from jupyter_secure_storage.widgets import StatusLine

    line = StatusLine(value="not saved: <b>a message</b> & its remedy")
    assert line.value == "not saved: &lt;b&gt;a message&lt;/b&gt; &amp; its remedy"
    line.value = line.value  # setting it again does not escape twice
    assert line.value == "not saved: &lt;b&gt;a message&lt;/b&gt; &amp; its remedy"
    import ipywidgets

    assert isinstance(line, ipywidgets.HTML)  # an HTML widget wraps; a Label cuts off
