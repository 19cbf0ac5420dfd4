"""The server's pre-save hook: password widget values are blanked, stored values and
token formats are scrubbed, and a failure refuses the save.

The first tests check the hook's logic on models directly; the last ones save through
the contents API of a real Jupyter Server on loopback (token auth), with a real vault
as the store. Values are compared, never printed.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import string
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import fast_kdf_config
from tornado.web import HTTPError
from traitlets.config import Config

from jupyter_secure_storage import SecureStorage
from jupyter_secure_storage.server.save_guard import (
    WIDGET_STATE,
    SaveGuard,
    blank_password_widgets,
    guarded_save,
    scrub_before_save,
)
from jupyter_secure_storage.testing import canary


def notebook_with(models: dict[str, Any]) -> dict[str, Any]:
    return {
        "cells": [],
        "metadata": {"widgets": {WIDGET_STATE: {"version_major": 2, "state": models}}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def model(name: str, value: str) -> dict[str, Any]:
    return {
        "model_name": name,
        "model_module": "@jupyter-widgets/controls",
        "state": {"value": value},
    }


def test_password_values_are_blanked_and_others_kept() -> None:
    typed = canary()
    notebook = notebook_with(
        {
            "a": model("PasswordModel", typed),
            "b": model("TextModel", "visible"),
            "c": model("PasswordModel", ""),
        }
    )
    assert blank_password_widgets(notebook) == 1
    state = notebook["metadata"]["widgets"][WIDGET_STATE]["state"]
    assert state["a"]["state"]["value"] == ""
    assert state["b"]["state"]["value"] == "visible"


def test_the_hook_scrubs_notebook_models_in_place() -> None:
    typed = canary()
    saved = {"type": "notebook", "content": notebook_with({"a": model("PasswordModel", typed)})}
    scrub_before_save(model=saved, path="x.ipynb", contents_manager=None)
    assert typed not in str(saved)


def test_files_and_notebooks_without_widgets_pass_untouched() -> None:
    plain = {"type": "file", "content": "text", "format": "text"}
    scrub_before_save(model=plain, path="x.txt", contents_manager=None)
    assert plain["content"] == "text"
    bare = {"type": "notebook", "content": {"cells": [], "metadata": {}}}
    scrub_before_save(model=bare, path="x.ipynb", contents_manager=None)


def test_a_failure_refuses_the_save_with_a_reason() -> None:
    broken = {"type": "notebook", "content": {"metadata": {"widgets": {WIDGET_STATE: []}}}}
    with pytest.raises(HTTPError) as raised:
        scrub_before_save(model=broken, path="x.ipynb", contents_manager=None)
    assert raised.value.status_code == 500
    assert "not saved" in (raised.value.reason or "")


# --- stored values and token formats, the hook on its own --------------------------------


def github_token() -> str:
    alphabet = string.ascii_letters + string.digits
    return "ghp_" + "".join(secrets.choice(alphabet) for _ in range(36))


def forms(value: str) -> list[str]:
    data = value.encode()
    return [
        value,
        base64.b64encode(data).decode(),
        base64.urlsafe_b64encode(data).decode().rstrip("="),
        urllib.parse.quote(value, safe=""),
        json.dumps(value)[1:-1],
    ]


def holds_any_form(text: str, value: str) -> bool:
    return any(form in text for form in forms(value))


def planted_notebook(value: str, token: str) -> dict[str, Any]:
    """A notebook holding ``value`` (stored) and ``token`` (a format) in every part."""
    notebook = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("client = make_client()\nprint(client.key)")
    code.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text=f"key is {value}\n"),
        nbformat.v4.new_output(
            "display_data",
            data={
                "text/plain": "Basic " + base64.b64encode(f"me:{value}".encode()).decode(),
                "text/html": f"<b>{urllib.parse.quote(value, safe='')}</b>",
            },
        ),
    ]
    markdown = nbformat.v4.new_markdown_cell(f"My token: `{token}`\n\n![chart](attachment:a.txt)")
    markdown.attachments = {"a.txt": {"text/plain": base64.b64encode(value.encode()).decode()}}
    notebook.cells = [code, markdown]
    notebook.metadata["widgets"] = {
        WIDGET_STATE: {
            "version_major": 2,
            "version_minor": 0,
            "state": {
                "m1": {
                    "model_name": "TextModel",
                    "model_module": "@jupyter-widgets/controls",
                    "model_module_version": "2.0.0",
                    "state": {"value": json.dumps({"api_key": value})},
                }
            },
        }
    }
    return dict(notebook)


@pytest.fixture
def vault_env(vault_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The vault chosen through the environment, as the server (a subprocess) sees it."""
    monkeypatch.setenv("JUPYTER_SECURE_STORAGE_BACKEND", "vault")
    return vault_env


def vault_store_with(name: str, value: str) -> SecureStorage:
    store = SecureStorage(backend="vault", config=fast_kdf_config())
    store.write(name, value)
    return store


def test_stored_values_and_token_formats_are_scrubbed_everywhere(vault_env: Path) -> None:
    value = "v-" + secrets.token_urlsafe(30)
    token = github_token()
    vault_store_with("OPENAI_API_KEY", value)
    notebook = planted_notebook(value, token)
    guard = SaveGuard()
    findings = guard.check({"type": "notebook", "content": notebook}, "n.ipynb")
    saved = json.dumps(notebook)
    assert not holds_any_form(saved, value)
    assert token not in saved
    assert "[secret:OPENAI_API_KEY]" in saved
    assert "[redacted:github-token]" in saved
    assert {f.name for f in findings if f.name} == {"OPENAI_API_KEY"}
    nbformat.validate(nbformat.from_dict(notebook))


def test_text_files_are_scrubbed_in_both_formats(vault_env: Path) -> None:
    value = "v-" + secrets.token_urlsafe(30)
    vault_store_with("K", value)
    guard = SaveGuard()
    text_model = {"type": "file", "format": "text", "content": f"KEY = '{value}'\n"}
    guard.check(text_model, "a.py")
    assert text_model["content"] == "KEY = '[secret:K]'\n"
    encoded = base64.b64encode(f"token={value}".encode()).decode()
    b64_model = {"type": "file", "format": "base64", "content": encoded}
    guard.check(b64_model, "a.cfg")
    assert base64.b64decode(b64_model["content"]) == b"token=[secret:K]"


def test_a_binary_file_holding_a_stored_value_is_refused(vault_env: Path) -> None:
    value = "v-" + secrets.token_urlsafe(30)
    vault_store_with("K", value)
    blob = b"\x89PNG\r\n\x1a\n\xff\xfe" + value.encode() + b"\x00\x01"
    model = {"type": "file", "format": "base64", "content": base64.b64encode(blob).decode()}
    with pytest.raises(HTTPError) as refused:
        guarded_save(SaveGuard(), model, "img.png")
    assert refused.value.status_code == 503
    assert "binary" in (refused.value.reason or "")
    assert not holds_any_form(str(refused.value) + (refused.value.reason or ""), value)
    clean = {"type": "file", "format": "base64", "content": base64.b64encode(b"\xff\x00").decode()}
    guarded_save(SaveGuard(), clean, "ok.bin")


def test_a_locked_store_refuses_the_save_unless_told_otherwise(
    vault_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = "v-" + secrets.token_urlsafe(30)
    vault_store_with("K", value)
    from jupyter_secure_storage.backends import vault as vault_module

    vault_module._OPEN.clear()
    monkeypatch.delenv("JUPYTER_SECURE_STORAGE_PASSPHRASE")
    token = github_token()
    model = {"type": "file", "format": "text", "content": f"{value} {token}"}
    with pytest.raises(HTTPError) as refused:
        guarded_save(SaveGuard(), model, "a.txt")
    assert refused.value.status_code == 503
    reason = refused.value.reason or ""
    assert "did not save" in reason
    assert "JUPYTER_SECURE_STORAGE_PASSPHRASE" in reason
    assert "patterns-only" in reason
    assert model["content"] == f"{value} {token}"  # nothing half-scrubbed
    config = Config()
    config.SaveGuard.when_store_locked = "patterns-only"
    guarded_save(SaveGuard(config=config), model, "a.txt")
    assert token not in model["content"]


def test_a_value_written_a_moment_ago_is_scrubbed_from_the_next_save(vault_env: Path) -> None:
    store = vault_store_with("FIRST", "v-" + secrets.token_urlsafe(30))
    config = Config()
    config.SaveGuard.reload_seconds = 0.0
    guard = SaveGuard(config=config)
    guard.check({"type": "file", "format": "text", "content": "warm up"}, "a.txt")
    later = "v-" + secrets.token_urlsafe(30)
    store.write("LATER", later)
    model = {"type": "file", "format": "text", "content": later}
    guard.check(model, "a.txt")
    assert model["content"] == "[secret:LATER]"


def test_switches_turn_each_check_off(vault_env: Path) -> None:
    value = "v-" + secrets.token_urlsafe(30)
    vault_store_with("K", value)
    token = github_token()
    config = Config()
    config.SaveGuard.stored_values = False
    config.SaveGuard.files = True
    model = {"type": "file", "format": "text", "content": f"{value} {token}"}
    SaveGuard(config=config).check(model, "a.txt")
    assert model["content"] == f"{value} [redacted:github-token]"
    config.SaveGuard.files = False
    untouched = {"type": "file", "format": "text", "content": token}
    SaveGuard(config=config).check(untouched, "a.txt")
    assert untouched["content"] == token


# --- a real Jupyter Server ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, root: Path, port: int, token: str, log: Path) -> None:
        self.root, self.token, self.log = root, token, log
        self.api = f"http://127.0.0.1:{port}/api"
        self.pid = 0

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 - loopback
            f"{self.api}/{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def save(self, path: str, model: dict[str, Any]) -> tuple[int, Any]:
        return self.request("PUT", f"contents/{path}", model)


@contextmanager
def jupyter_server(tmp_path: Path, env: dict[str, str], *extra_args: str) -> Iterator[Server]:
    port, token = free_port(), secrets.token_hex(16)
    root = tmp_path / f"root-{port}"
    root.mkdir()
    log = tmp_path / f"server-{port}.log"
    command = [
        sys.executable, "-m", "jupyter_server",
        "--ServerApp.jpserver_extensions={'jupyter_secure_storage.server': True}",
        f"--ServerApp.port={port}", "--ServerApp.ip=127.0.0.1",
        "--ServerApp.port_retries=0", "--ServerApp.open_browser=False",
        f"--ServerApp.root_dir={root}", "--ServerApp.allow_root=True", *extra_args,
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**env, "JUPYTER_TOKEN": token},
        )
    server = Server(root, port, token, log)
    server.pid = process.pid
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if server.request("GET", "status")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert process.poll() is None, "jupyter server exited"
            assert time.monotonic() < deadline, "jupyter server did not start"
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_real_server_saves_notebooks_and_checkpoints_without_secrets(
    vault_env: Path, tmp_path: Path
) -> None:
    value = "v-" + secrets.token_urlsafe(30)
    token = github_token()
    vault_store_with("OPENAI_API_KEY", value)
    with jupyter_server(tmp_path, dict(os.environ)) as server:
        notebook = planted_notebook(value, token)
        status, _ = server.save("n.ipynb", {"type": "notebook", "content": notebook})
        assert status in (200, 201)
        status, _ = server.save(
            "settings.py", {"type": "file", "format": "text", "content": f"KEY = {value!r}\n"}
        )
        assert status in (200, 201)
        status, checkpoint = server.request("POST", "contents/n.ipynb/checkpoints")
        assert status == 201
        on_disk = (server.root / "n.ipynb").read_text()
        assert not holds_any_form(on_disk, value)
        assert token not in on_disk
        assert "[secret:OPENAI_API_KEY]" in on_disk
        nbformat.validate(nbformat.reads(on_disk, as_version=4))
        script = (server.root / "settings.py").read_text()
        assert script == "KEY = '[secret:OPENAI_API_KEY]'\n"
        saved_checkpoints = list((server.root / ".ipynb_checkpoints").glob("n-*.ipynb"))
        assert len(saved_checkpoints) == 1
        assert checkpoint["id"] in saved_checkpoints[0].name
        assert not holds_any_form(saved_checkpoints[0].read_text(), value)
    log = server.log.read_text(errors="replace")
    assert "scrubbed" in log
    assert "OPENAI_API_KEY" in log
    assert not holds_any_form(log, value)
    assert token not in log


def test_a_real_server_with_a_locked_store_refuses_and_keeps_the_file(
    vault_env: Path, tmp_path: Path
) -> None:
    # Without the unlock agent (switched off), a kernel may have unlocked the vault on its
    # own, so a store the server cannot read must refuse the save.
    value = "v-" + secrets.token_urlsafe(30)
    vault_store_with("OPENAI_API_KEY", value)
    locked = {k: v for k, v in os.environ.items() if k != "JUPYTER_SECURE_STORAGE_PASSPHRASE"}
    with jupyter_server(tmp_path, locked, "--VaultBackend.use_agent=False") as server:
        before = json.dumps(nbformat.v4.new_notebook(), indent=1) + "\n"
        (server.root / "n.ipynb").write_text(before)
        notebook = planted_notebook(value, github_token())
        status, reply = server.save("n.ipynb", {"type": "notebook", "content": notebook})
        assert status == 503
        assert "did not save" in reply["message"]
        assert "JUPYTER_SECURE_STORAGE_PASSPHRASE" in reply["message"]
        assert not holds_any_form(json.dumps(reply), value)  # the refusal never repeats it
        assert (server.root / "n.ipynb").read_text() == before
        status, _ = server.save("new.txt", {"type": "file", "format": "text", "content": value})
        assert status == 503
        assert not (server.root / "new.txt").exists()
    assert not holds_any_form(server.log.read_text(errors="replace"), value)


def test_an_inline_allow_marker_keeps_a_token_but_never_a_stored_value(vault_env: Path) -> None:
    value = "v-" + secrets.token_urlsafe(30)
    vault_store_with("K", value)
    token = github_token()
    text = f"DEMO = '{token}'  # jss: allow (revoked)\nKEY = '{value}'  # jss: allow\n"
    model = {"type": "file", "format": "text", "content": text}
    SaveGuard().check(model, "a.py")
    assert model["content"] == (
        f"DEMO = '{token}'  # jss: allow (revoked)\nKEY = '[secret:K]'  # jss: allow\n"
    )


def test_the_extension_is_enabled_by_installing_the_package() -> None:
    """jupyter-config/jupyter_server_config.d ships in the wheel's data: no manual step."""
    listed = subprocess.run(
        [sys.executable, "-m", "jupyter_server", "extension", "list"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = listed.stdout + listed.stderr
    line = next((row for row in output.splitlines() if "jupyter_secure_storage.server" in row), "")
    assert "enabled" in line
    assert "OK" in output[output.index("jupyter_secure_storage.server") :]
