"""Unlocking the vault from JupyterLab: the REST routes on a real Jupyter Server whose
environment holds no passphrase (the point of the unlock agent), and notebook access
grants through the agent the server hosts.

Each server runs on loopback with its own token, its own agent socket (conftest) and a
throwaway vault. The test process opens that vault directly (``use_agent = False``), so
it never unlocks the server's agent by accident. The passphrases are canaries: no reply
and no server log line may hold one, and the tests compare, never print.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from conftest import fast_kdf_config
from test_browser import (
    SCREENSHOTS,
    UI_TIMEOUT_MS,
    Lab,
    chromium,  # noqa: F401 -- a fixture the lab fixture uses
    lab,  # noqa: F401 -- the JupyterLab server fixture
    lab_browser_context,
    new_canary,
    wait_for,
    write_notebook,
)
from test_kernel_leaks import leaked_forms
from test_lab_sidebar import (
    API,
    DUMP_PAGE_STORAGE,
    SIDEBAR_ID,
    add_key,
    call,
    exposed_app,  # noqa: F401 -- the page exposes window.jupyterapp
    is_refusal,
    jupyter_server,
    listed,
)

from jupyter_secure_storage import SecureStorage
from jupyter_secure_storage.agent_client import AgentClient
from jupyter_secure_storage.testing import same

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Locator, Page

NO_PASSPHRASE: dict[str, str | None] = {
    "JUPYTER_SECURE_STORAGE_BACKEND": "vault",
    "JUPYTER_SECURE_STORAGE_PASSPHRASE": None,  # the server must not have it
}


def direct_store(namespace: str = "default") -> SecureStorage:
    """The test's vault opened in this process, never through the server's agent."""
    config = fast_kdf_config()
    config.VaultBackend.use_agent = False
    return SecureStorage(backend="vault", namespace=namespace, config=config)


def status_of(server: Lab) -> dict[str, Any]:
    code, body = call(server, "GET", "status")
    assert code == 200
    reply: dict[str, Any] = json.loads(body)
    return reply


def write_config(isolated_jupyter: Path) -> None:
    config = fast_kdf_config()
    (isolated_jupyter / "config" / "jupyter_secure_storage_config.json").write_text(
        json.dumps({"VaultBackend": dict(config.VaultBackend)})
    )


@pytest.fixture
def passphrase(vault_env: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A canary passphrase, in this process's environment only (for direct_store)."""
    chosen = new_canary(18)
    monkeypatch.setenv("JUPYTER_SECURE_STORAGE_PASSPHRASE", chosen)
    return chosen


@pytest.fixture
def locked_server(
    passphrase: str, vault_env: Path, isolated_jupyter: Path, tmp_path: Path
) -> Iterator[Lab]:
    """A Jupyter Server over an existing vault, started without its passphrase."""
    write_config(isolated_jupyter)
    direct_store().write("EXISTING", new_canary(21))
    with jupyter_server(tmp_path, NO_PASSPHRASE) as running:
        yield running


@pytest.fixture
def empty_server(
    passphrase: str, vault_env: Path, isolated_jupyter: Path, tmp_path: Path
) -> Iterator[Lab]:
    """A Jupyter Server with no vault yet and no passphrase."""
    write_config(isolated_jupyter)
    assert not vault_env.exists()
    with jupyter_server(tmp_path, NO_PASSPHRASE) as running:
        yield running


def test_status_says_locked_and_the_store_routes_say_so_in_their_503(
    locked_server: Lab, passphrase: str
) -> None:
    status = status_of(locked_server)
    assert status["backend"] == "vault"
    assert status["locked"] is True
    assert status["vault_exists"] is True
    assert status["agent"] is True
    assert status["stored_value_check"] == "locked"
    assert status["redaction_values"] is None

    for method, path, body in (
        ("GET", "keys", None),
        ("POST", "keys", {"name": "NEW", "value": new_canary(21)}),
    ):
        code, reply = call(locked_server, method, path, body)
        assert code == 503
        assert is_refusal(reply)
        assert json.loads(reply)["locked"] is True, f"{method} {path}: no locked flag"
    assert direct_store().keys() == ["EXISTING"]


def test_unlock_and_lock_through_the_agent_never_answer_or_log_the_passphrase(
    locked_server: Lab, passphrase: str
) -> None:
    wrong = new_canary(18)
    replies: list[bytes] = []

    code, reply = call(locked_server, "POST", "unlock", {"passphrase": wrong})
    replies.append(reply)
    assert code == 403
    assert is_refusal(reply)
    assert status_of(locked_server)["locked"] is True, "a wrong passphrase unlocked"

    code, reply = call(locked_server, "POST", "unlock", {"passphrase": passphrase})
    replies.append(reply)
    assert code == 204
    status = status_of(locked_server)
    assert (status["locked"], status["stored_value_check"]) == (False, "on")
    code, reply = call(locked_server, "GET", "keys")
    replies.append(reply)
    assert code == 200
    assert "EXISTING" in {key["name"] for key in json.loads(reply)["keys"]}

    # A wrong passphrase is refused while unlocked too, and locks nothing.
    code, reply = call(locked_server, "POST", "unlock", {"passphrase": wrong})
    replies.append(reply)
    assert code == 403
    assert status_of(locked_server)["locked"] is False

    code, reply = call(locked_server, "POST", "lock")
    replies.append(reply)
    assert code == 204
    assert status_of(locked_server)["locked"] is True
    assert call(locked_server, "GET", "keys")[0] == 503

    for blob in [*replies, locked_server.log.read_bytes()]:
        for secret in (passphrase, wrong):
            assert leaked_forms(blob, secret) == [], "a reply or the server log holds a passphrase"


def test_status_polls_never_keep_the_vault_unlocked(
    passphrase: str, vault_env: Path, isolated_jupyter: Path, tmp_path: Path
) -> None:
    """With an idle lock, a page polling GET status still sees the vault lock: asking
    for the state is not a use. (If it were, this poll would keep it unlocked for ever
    and the wait would fail.)"""
    config = fast_kdf_config()
    settings = {"VaultBackend": dict(config.VaultBackend), "UnlockAgent": {"lock_after": 1.0}}
    (isolated_jupyter / "config" / "jupyter_secure_storage_config.json").write_text(
        json.dumps(settings)
    )
    direct_store().write("EXISTING", new_canary(21))
    with jupyter_server(tmp_path, NO_PASSPHRASE) as server:
        assert call(server, "POST", "unlock", {"passphrase": passphrase})[0] == 204
        wait_for(
            lambda: status_of(server)["locked"] is True,
            60,
            "the idle lock while the status is polled",
            pause=lambda: time.sleep(0.1),
        )


def test_unlock_creates_a_new_vault_and_refuses_a_weak_passphrase(
    empty_server: Lab, passphrase: str, vault_env: Path
) -> None:
    status = status_of(empty_server)
    assert (status["locked"], status["vault_exists"]) == (True, False)

    weak = "short"
    code, reply = call(empty_server, "POST", "unlock", {"passphrase": weak})
    assert code == 400
    assert is_refusal(reply)
    assert not vault_env.exists(), "a weak passphrase created a vault"
    assert b"short" not in reply

    code, _ = call(empty_server, "POST", "unlock", {"passphrase": passphrase})
    assert code == 204
    assert vault_env.exists()
    status = status_of(empty_server)
    assert (status["locked"], status["vault_exists"]) == (False, True)

    value = new_canary(21)
    code, _ = call(empty_server, "POST", "keys", {"name": "FIRST", "value": value})
    assert code == 201
    # The new vault opens with the passphrase given (in this process, without the agent).
    assert same(direct_store().read("FIRST"), value)
    assert leaked_forms(empty_server.log.read_bytes(), passphrase) == []
    assert leaked_forms(empty_server.log.read_bytes(), value) == []


@pytest.mark.parametrize(
    "body",
    [{}, {"passphrase": None}, {"passphrase": 12345678}, {"secret": "x"}],
)
def test_unlock_refuses_a_body_without_a_string_passphrase(locked_server: Lab, body: Any) -> None:
    code, reply = call(locked_server, "POST", "unlock", body)
    assert code == 400
    assert is_refusal(reply)
    assert status_of(locked_server)["locked"] is True


def test_unlock_lock_and_grants_need_the_token(locked_server: Lab, passphrase: str) -> None:
    code, reply = call(locked_server, "POST", "unlock", {"passphrase": passphrase}, token=False)
    assert code == 403
    assert is_refusal(reply)
    assert leaked_forms(reply, passphrase) == []
    assert status_of(locked_server)["locked"] is True, "unlocked without the token"
    assert call(locked_server, "POST", "lock", token=False)[0] == 403
    assert call(locked_server, "GET", "status", token=False)[0] == 403
    assert call(locked_server, "GET", "grants", token=False)[0] == 403
    grant = {"notebook": "a.ipynb", "namespace": "default", "key": "EXISTING"}
    assert call(locked_server, "PUT", "grants", grant, token=False)[0] == 403
    assert call(locked_server, "GET", "access-log", token=False)[0] == 403


# --- notebook access grants ------------------------------------------------------------------


def test_grants_are_put_listed_and_deleted_by_the_notebooks_server_path(
    locked_server: Lab, passphrase: str
) -> None:
    assert call(locked_server, "POST", "unlock", {"passphrase": passphrase})[0] == 204
    notebook = "work/analysis.ipynb"
    grant = {"notebook": notebook, "namespace": "default", "key": "EXISTING"}

    code, reply = call(locked_server, "GET", "grants?notebook=work%2Fanalysis.ipynb")
    assert (code, json.loads(reply)) == (200, {"grants": []})
    assert call(locked_server, "PUT", "grants", grant)[0] == 204
    assert call(locked_server, "PUT", "grants", grant)[0] == 204  # twice: still one grant

    code, reply = call(locked_server, "GET", "grants?notebook=work%2Fanalysis.ipynb")
    assert code == 200
    grants = json.loads(reply)["grants"]
    assert [(g["notebook"], g["namespace"], g["key"]) for g in grants] == [
        (notebook, "default", "EXISTING")
    ]
    assert isinstance(grants[0]["granted"], float)
    # The agent keeps it under the absolute path a kernel's JPY_SESSION_NAME holds.
    absolute = str(locked_server.root / notebook)
    kept = AgentClient().call("grants", "", notebook=absolute)
    assert [g["notebook"] for g in kept] == [absolute]
    # Another notebook has none.
    other = json.loads(call(locked_server, "GET", "grants?notebook=other.ipynb")[1])
    assert other == {"grants": []}

    assert call(locked_server, "DELETE", "grants", grant)[0] == 204
    assert json.loads(call(locked_server, "GET", "grants")[1]) == {"grants": []}


@pytest.mark.parametrize(
    "notebook",
    ["", "../outside.ipynb", "a/../../outside.ipynb", 7],
)
def test_grants_refuse_a_notebook_outside_the_server_root(
    locked_server: Lab, notebook: Any
) -> None:
    grant = {"notebook": notebook, "namespace": "default", "key": "EXISTING"}
    code, reply = call(locked_server, "PUT", "grants", grant)
    assert code == 400
    assert is_refusal(reply)
    assert json.loads(call(locked_server, "GET", "grants")[1]) == {"grants": []}


def test_access_log_lists_the_agents_answers_newest_first(locked_server: Lab) -> None:
    root = locked_server.root
    grant = {"notebook": "granted.ipynb", "namespace": "default", "key": "EXISTING"}
    assert call(locked_server, "PUT", "grants", grant)[0] == 204
    client = AgentClient()
    asked = [("granted.ipynb", True), ("stranger.ipynb", False)]
    for notebook, _ in asked:
        client.call(
            "access", "", notebook=str(root / notebook), namespace="default", key="EXISTING"
        )

    code, reply = call(locked_server, "GET", "access-log?limit=10")
    assert code == 200
    entries = json.loads(reply)["entries"]
    assert [(e["notebook"], e["key"], e["allowed"]) for e in entries] == [
        ("stranger.ipynb", "EXISTING", False),
        ("granted.ipynb", "EXISTING", True),
    ]
    assert entries[0]["time"] >= entries[1]["time"]
    assert len(json.loads(call(locked_server, "GET", "access-log?limit=1")[1])["entries"]) == 1
    for bad in ("0", "-1", "many", "100000"):
        code, reply = call(locked_server, "GET", f"access-log?limit={bad}")
        assert code == 400
        assert is_refusal(reply)


# --- the unlock dialog in JupyterLab ---------------------------------------------------------

# Every text field's current value (a typed value lives in the property, not the DOM).
FIELD_VALUES = """() => Array.from(document.querySelectorAll('input, textarea'))
  .map(field => field.value).join('\\n')"""

# A cookie-only POST without the XSRF header, as a page of another origin could not even
# make; the page answers statuses only.
UNLOCK_WITHOUT_XSRF = """async (passphrase) => {
  const body = JSON.stringify({passphrase});
  const refused = await fetch('/secure-storage/api/unlock', {method: 'POST', body});
  const status = await (await fetch('/secure-storage/api/status')).json();
  return {unlock: refused.status, locked: status.locked};
}"""

COMMAND_LABELS = """async (ids) => {
  await window.jupyterapp.restored;
  return ids.map(id => window.jupyterapp.commands.hasCommand(id) ?
    window.jupyterapp.commands.label(id) : null);
}"""


@pytest.fixture
def vault_without_server_passphrase(
    vault_env: Path, isolated_jupyter: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """An existing vault, and a passphrase the server will not be given (requested
    before ``lab``, which copies the environment when it starts the server)."""
    chosen = new_canary(18)
    monkeypatch.setenv("JUPYTER_SECURE_STORAGE_PASSPHRASE", chosen)
    write_config(isolated_jupyter)
    direct_store().write("EXISTING", new_canary(21))
    monkeypatch.delenv("JUPYTER_SECURE_STORAGE_PASSPHRASE")
    return chosen


@dataclass
class LabPage:
    page: Page
    context: BrowserContext
    replies: list[tuple[str, bytes]]  # (request, reply body) of every API call

    def settle(self) -> None:
        self.page.wait_for_timeout(200)

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
        wait_for(condition, timeout, what, self.settle)

    def status_item(self, state: str) -> Locator:
        return self.page.locator(f'.jp-SecureStorage-status[data-state="{state}"]')

    def dialog(self) -> Locator:
        return self.page.locator(".jp-Dialog").filter(
            has=self.page.locator(".jp-SecureStorage-unlockBody")
        )

    def sidebar(self) -> Locator:
        return self.page.locator(f"#{SIDEBAR_ID}")

    def show_sidebar(self) -> None:
        if not self.sidebar().is_visible():
            self.page.locator(f'.jp-SideBar .lm-TabBar-tab[data-id="{SIDEBAR_ID}"]').click()
        self.sidebar().wait_for()

    def type_passphrase(self, passphrase: str, *, enter: bool = False) -> None:
        dialog = self.dialog()
        dialog.wait_for()
        field = dialog.locator(".jp-SecureStorage-passphrase")
        field.fill(passphrase)
        if enter:
            field.press("Enter")
        else:
            dialog.get_by_role("button", name="Unlock").click()


@contextlib.contextmanager
def lab_page(server: Lab, tmp_path: Path) -> Iterator[LabPage]:
    """Chromium on JupyterLab; loopback only, every API reply recorded; a screenshot of
    the page into tmp_path if anything fails."""
    from playwright.sync_api import Route, sync_playwright

    replies: list[tuple[str, bytes]] = []

    def recording_api_replies(route: Route) -> None:
        url = urllib.parse.urlsplit(route.request.url)
        if url.hostname != "127.0.0.1":
            route.abort()
        elif url.path.startswith(API):
            response = route.fetch()
            replies.append((f"{route.request.method} {url.path}", response.body()))
            route.fulfill(response=response)
        else:
            route.continue_()

    with sync_playwright() as playwright:
        context = lab_browser_context(playwright)
        context.route("**/*", recording_api_replies)
        page = context.new_page()
        try:
            query = urllib.parse.urlencode({"token": server.token})
            page.goto(f"{server.url}/lab?{query}", timeout=UI_TIMEOUT_MS)
            yield LabPage(page, context, replies)
        except BaseException:
            page.screenshot(path=tmp_path / "failure.png", full_page=True)
            print(f"debug screenshot: {tmp_path / 'failure.png'}; server log: {server.log}")
            raise
        finally:
            context.close()
            context.browser.close()


def new_notebook_from_launcher(lab_page: LabPage, root: Path) -> Path:
    """The Launcher's first notebook card, then the toolbar's save button."""
    page = lab_page.page
    page.locator('.jp-LauncherCard[data-category="Notebook"]').first.click(timeout=UI_TIMEOUT_MS)
    panel = page.locator(".jp-NotebookPanel").first
    panel.wait_for(timeout=UI_TIMEOUT_MS)
    notebook = root / "Untitled.ipynb"
    lab_page.wait_for(notebook.exists, "the Launcher's notebook to be created")
    created = notebook.stat().st_mtime_ns
    panel.locator(".jp-Notebook .jp-Cell .cm-content").first.click()
    page.keyboard.type("x = 1")
    page.locator('.jp-NotebookPanel-toolbar [data-command="docmanager:save"]').click()
    rename = page.locator(".jp-Dialog").get_by_role("button", name="Rename and Save")

    def saved() -> bool:
        if rename.is_visible():  # JupyterLab offers a name on a first save: keep it
            rename.click()
        return notebook.stat().st_mtime_ns != created and b"x = 1" in notebook.read_bytes()

    lab_page.wait_for(saved, "the notebook to be saved")
    return notebook


@pytest.mark.timeout(300)
def test_unlock_dialog_unlocks_locks_and_leaves_no_passphrase_anywhere(
    vault_without_server_passphrase: str,
    exposed_app: None,  # noqa: F811 -- the fixture imported from test_lab_sidebar
    lab: Lab,  # noqa: F811 -- the fixture imported from test_browser
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    passphrase = vault_without_server_passphrase
    wrong = new_canary(18)
    value = new_canary(21)
    shots = SCREENSHOTS if os.environ.get("JSS_UPDATE_SCREENSHOTS") == "1" else tmp_path
    shots.mkdir(parents=True, exist_ok=True)

    with lab_page(lab, tmp_path) as session:
        page = session.page
        # Locked from the start: the server has no passphrase; saves still go on.
        locked_item = session.status_item("locked")
        locked_item.wait_for(timeout=UI_TIMEOUT_MS)
        assert "stored-value check: locked" in locked_item.inner_text()
        new_notebook_from_launcher(session, lab.root)
        assert session.dialog().count() == 0, "creating a notebook asked for the passphrase"

        # The sidebar's listing is refused as locked: the dialog opens by itself.
        session.show_sidebar()
        session.dialog().wait_for()
        session.dialog().locator(".jp-SecureStorage-passphrase").focus()
        session.dialog().locator(".jp-Dialog-content").screenshot(
            path=shots / "lab-unlock.png", animations="disabled"
        )

        # A wrong passphrase: the server's cause and remedy, still locked.
        session.type_passphrase(wrong)
        problem = session.dialog().locator(".jp-SecureStorage-unlockError")
        problem.wait_for()
        assert "does not open" in problem.locator(".jp-SecureStorage-errorMessage").inner_text()
        assert "stays locked" in problem.locator(".jp-SecureStorage-errorRemedy").inner_text()
        assert status_of(lab)["locked"] is True

        # The right one (Enter submits): unlocked, the names listed.
        session.type_passphrase(passphrase, enter=True)
        session.dialog().wait_for(state="detached")
        session.status_item("unlocked").wait_for()
        listed(page, "default", "EXISTING").wait_for()
        fields_after_unlock = page.evaluate(FIELD_VALUES).encode()
        dom_after_unlock = page.content().encode()

        add_key(page, "default", "ADDED_UNLOCKED", value)
        listed(page, "default", "ADDED_UNLOCKED").wait_for()

        # Lock: the status says so, the names go, and no dialog opens unasked.
        session.sidebar().locator(".jp-SecureStorage-header .jp-SecureStorage-lock").click()
        session.status_item("locked").wait_for()
        session.sidebar().locator(".jp-SecureStorage-locked").wait_for()
        assert listed(page, "default", "EXISTING").count() == 0
        assert status_of(lab)["locked"] is True
        session.settle()
        assert session.dialog().count() == 0, "locking opened the unlock dialog"
        without_xsrf = page.evaluate(UNLOCK_WITHOUT_XSRF, passphrase)

        # Unlock again from the status bar item.
        session.status_item("locked").click()
        session.type_passphrase(passphrase)
        session.status_item("unlocked").wait_for()
        listed(page, "default", "ADDED_UNLOCKED").wait_for()

        # A reload: still unlocked (the agent holds the key, not the page), no dialog.
        page.reload()
        session.status_item("unlocked").wait_for(timeout=UI_TIMEOUT_MS)
        session.show_sidebar()
        listed(page, "default", "ADDED_UNLOCKED").wait_for()
        assert session.dialog().count() == 0
        labels = page.evaluate(COMMAND_LABELS, ["secure-storage:unlock", "secure-storage:lock"])
        page.evaluate("() => window.jupyterapp.commands.execute('secure-storage:lock')")
        session.status_item("locked").wait_for()

        page_storage = page.evaluate(DUMP_PAGE_STORAGE).encode()
        cookies = json.dumps(session.context.cookies()).encode()
        fields = page.evaluate(FIELD_VALUES).encode()
        dom = page.content().encode()
        replies = list(session.replies)

    assert without_xsrf == {"unlock": 403, "locked": True}, "a cookie-only unlock was accepted"
    assert labels == ["Secure storage: Unlock", "Secure storage: Lock"]
    assert status_of(lab)["locked"] is True, "the Lock command did not lock"
    monkeypatch.setenv("JUPYTER_SECURE_STORAGE_PASSPHRASE", passphrase)
    assert same(direct_store().read("ADDED_UNLOCKED"), value), "the vault lacks the value"

    places: dict[str, bytes] = {
        "the page's storage": page_storage,
        "the page's cookies": cookies,
        "the page's fields after the dialog closed": fields_after_unlock,
        "the page's DOM after the dialog closed": dom_after_unlock,
        "the page's fields at the end": fields,
        "the page's DOM at the end": dom,
        "the server's log": lab.log.read_bytes(),
    }
    for number, (request, body) in enumerate(replies):
        places[f"reply {number}, to {request}"] = body
    findings = [
        f"{what} in {place} as forms {forms}"
        for what, secret in (
            ("the passphrase", passphrase),
            ("the wrong one", wrong),
            ("the value", value),
        )
        for place, blob in places.items()
        if (forms := leaked_forms(blob, secret))
    ]
    assert findings == [], "; ".join(findings)
    assert any(request == f"POST {API}/unlock" for request, _ in replies), "no unlock request"


# --- notebook access in the sidebar ----------------------------------------------------------

ACCESS_CELL = """from jupyter_secure_storage import SecureStorage
granted = SecureStorage().read("OPENAI_API_KEY") is not None
try:
    SecureStorage(namespace="team-a").read("DB_PASSWORD")
    refused = "read"
except Exception as error:
    refused = type(error).__name__
print("granted", granted, "refused", refused)"""


def grants_of(server: Lab, notebook: str) -> list[tuple[str, str, str]]:
    query = urllib.parse.urlencode({"notebook": notebook})
    code, body = call(server, "GET", f"grants?{query}")
    assert code == 200
    return [(g["notebook"], g["namespace"], g["key"]) for g in json.loads(body)["grants"]]


@pytest.mark.timeout(300)
def test_sidebar_grants_a_key_to_the_current_notebook_and_lists_the_access_log(
    lab: Lab,  # noqa: F811 -- the fixture imported from test_browser
    tmp_path: Path,
) -> None:
    values = {"OPENAI_API_KEY": new_canary(21), "DB_PASSWORD": new_canary(23)}
    for namespace, name in (("default", "OPENAI_API_KEY"), ("team-a", "DB_PASSWORD")):
        body = {"namespace": namespace, "name": name, "value": values[name]}
        assert call(lab, "POST", "keys", body)[0] == 201
    notebook = "work/analysis.ipynb"
    (lab.root / "work").mkdir()
    write_notebook(lab.root / notebook, [ACCESS_CELL])
    shots = SCREENSHOTS if os.environ.get("JSS_UPDATE_SCREENSHOTS") == "1" else tmp_path
    shots.mkdir(parents=True, exist_ok=True)

    with lab_page(lab, tmp_path) as session:
        page = session.page
        query = urllib.parse.urlencode({"token": lab.token})
        page.goto(f"{lab.url}/lab/tree/{notebook}?{query}", timeout=UI_TIMEOUT_MS)
        page.locator(".jp-NotebookPanel").first.wait_for(timeout=UI_TIMEOUT_MS)
        session.show_sidebar()
        access = session.sidebar().locator(f'.jp-SecureStorage-access[data-notebook="{notebook}"]')
        access.wait_for()

        def toggle(namespace: str, name: str) -> Locator:
            item = access.locator(f'li[data-namespace="{namespace}"][data-name="{name}"]')
            return item.locator('input[role="switch"]')

        assert not toggle("default", "OPENAI_API_KEY").is_checked()
        assert not toggle("team-a", "DB_PASSWORD").is_checked()
        toggle("default", "OPENAI_API_KEY").click()
        session.wait_for(
            lambda: grants_of(lab, notebook) == [(notebook, "default", "OPENAI_API_KEY")],
            "GET grants to show the toggled grant",
        )
        assert toggle("default", "OPENAI_API_KEY").is_checked()
        assert not toggle("team-a", "DB_PASSWORD").is_checked()

        # The notebook's kernel reads the granted key and is refused the other.
        cell = page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").first
        cell.locator(".jp-InputArea-editor .cm-content").click()
        page.keyboard.press("Control+Enter")
        output = cell.locator(".jp-OutputArea-output")
        output.get_by_text("granted True refused NotebookAccessError").wait_for(
            timeout=UI_TIMEOUT_MS
        )

        # The access log, refreshed with the panel: newest first.
        session.sidebar().locator(".jp-SecureStorage-refresh").click()
        entries = session.sidebar().locator(".jp-SecureStorage-logEntry")
        session.wait_for(lambda: entries.count() >= 2, "the access log to list both requests")
        newest = [
            (
                entries.nth(i).get_attribute("data-notebook"),
                entries.nth(i).get_attribute("data-name"),
                entries.nth(i).locator(".jp-SecureStorage-logVerdict").text_content(),
            )
            for i in range(2)
        ]
        assert newest == [
            (notebook, "DB_PASSWORD", "refused"),
            (notebook, "OPENAI_API_KEY", "allowed"),
        ]
        session.sidebar().locator(".jp-SecureStorage-log").scroll_into_view_if_needed()
        page.screenshot(
            path=shots / "lab-sidebar.png",
            clip={"x": 0, "y": 0, "width": 980, "height": 900},
            animations="disabled",
        )

        # Off again: revoked.
        toggle("default", "OPENAI_API_KEY").click()
        session.wait_for(lambda: grants_of(lab, notebook) == [], "GET grants to be empty")
        dom = page.content().encode()
        replies = list(session.replies)

    places = {"the page's DOM": dom, "the server's log": lab.log.read_bytes()}
    places |= {f"reply {n}, to {request}": body for n, (request, body) in enumerate(replies)}
    findings = [
        f"{name} in {place}"
        for name, value in values.items()
        for place, blob in places.items()
        if leaked_forms(blob, value)
    ]
    assert findings == [], "; ".join(findings)


@pytest.fixture
def no_vault_and_no_server_passphrase(
    passphrase: str, vault_env: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """A passphrase to choose, out of the environment before ``lab`` copies it."""
    monkeypatch.delenv("JUPYTER_SECURE_STORAGE_PASSPHRASE")
    return passphrase


@pytest.mark.timeout(300)
def test_dialog_creates_the_vault_after_asking_twice(
    no_vault_and_no_server_passphrase: str,
    lab: Lab,  # noqa: F811 -- the fixture imported from test_browser
    vault_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No vault yet and no passphrase anywhere the server can see: the dialog's create
    variant asks twice, refuses two different passphrases and a weak one, then creates."""
    passphrase = no_vault_and_no_server_passphrase
    assert not vault_env.exists()
    other = new_canary(18)
    with lab_page(lab, tmp_path) as session:
        session.status_item("locked").wait_for(timeout=UI_TIMEOUT_MS)
        session.status_item("locked").click()
        dialog = session.dialog()
        dialog.wait_for()
        assert "Create the vault" in dialog.locator(".jp-Dialog-header").inner_text()

        def create(first: str, second: str) -> None:
            dialog.wait_for()
            dialog.locator(".jp-SecureStorage-passphrase").fill(first)
            dialog.locator(".jp-SecureStorage-passphraseRepeat").fill(second)
            dialog.get_by_role("button", name="Create").click()

        create(passphrase, other)
        dialog.locator(".jp-SecureStorage-unlockError").get_by_text("differ").wait_for()
        assert not vault_env.exists()
        create("short", "short")
        dialog.locator(".jp-SecureStorage-errorRemedy").get_by_text("8 characters").wait_for()
        assert not vault_env.exists()
        create(passphrase, passphrase)
        session.status_item("unlocked").wait_for()
        assert vault_env.exists()
        fields = session.page.evaluate(FIELD_VALUES).encode()
        replies = list(session.replies)

    monkeypatch.setenv("JUPYTER_SECURE_STORAGE_PASSPHRASE", passphrase)
    assert direct_store().keys() == []  # the new vault opens with the passphrase given
    places = {"the page's fields": fields, "the server's log": lab.log.read_bytes()}
    places |= {f"reply {n}, to {request}": body for n, (request, body) in enumerate(replies)}
    assert [
        place
        for place, blob in places.items()
        if leaked_forms(blob, passphrase) or leaked_forms(blob, other)
    ] == []
