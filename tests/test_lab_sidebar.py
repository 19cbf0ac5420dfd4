"""The Secrets sidebar in a real JupyterLab typed into by a real Chromium, and the REST API
behind it on a real Jupyter Server.

The servers run on loopback with their own token and store into a throwaway vault whose
passphrase is in the *server's* environment, as on an unattended server (the server
hands it to its unlock agent; test_lab_unlock.py runs servers without it). The
browser test opens JupyterLab, opens the sidebar, adds keys through its form, sees them
listed, deletes one through the confirmation dialog, and proves through
``SecureStorage`` in this process that the vault got each value and then lost it. It
also sends requests from the page: without the XSRF header (refused), and a
jupyter-secrets-manager connector round trip with it. Then no canary is in the page's
DOM, its local, session or IndexedDB storage, its cookies, any REST response but the
connector's GET of that secret, or the server's log.

The REST tests call the API with the token over real HTTP: bad input is a 400 that
never repeats the value, missing keys and connector secrets are 204 on delete and 404 on
the connector's GET, no token is a 403, and a vault the server cannot unlock is a 503
with cause and remedy.

Needs ``/usr/bin/chromium`` and ``playwright`` for the browser test (see test_browser.py,
whose server fixture, browser flags and helpers this reuses), and the extension built
(scripts/lib.sh ``lab_build``, or the wheel's build hook).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from conftest import fast_kdf_config
from test_browser import (
    LAB_START_TIMEOUT,
    PROXY_VARIABLES,
    UI_TIMEOUT_MS,
    Lab,
    chromium,  # noqa: F401 -- a fixture the lab fixture uses
    free_port,
    lab,  # noqa: F401 -- the JupyterLab server fixture
    lab_browser_context,
    new_canary,
    stop_process_group,
    wait_for,
)
from test_kernel_leaks import leaked_forms

from jupyter_secure_storage import SecureStorage
from jupyter_secure_storage.server.rest import CONNECTOR_NAMESPACE
from jupyter_secure_storage.testing import same

if TYPE_CHECKING:
    from playwright.sync_api import Page

API = "/secure-storage/api"
SIDEBAR_ID = "jupyter-secure-storage-sidebar"
SECRETS_MANAGER_NAMESPACE = "@jupyterlite/ai:providers"  # a plugin id, as the manager uses
SECRETS_MANAGER_ID = "openai"
SECRETS_MANAGER_INSTALLED = (
    subprocess.run(
        [sys.executable, "-c", "import jupyter_secrets_manager"], capture_output=True
    ).returncode
    == 0
)

# Every value the page could have kept: local, session and IndexedDB storage, as JSON.
DUMP_PAGE_STORAGE = """async () => {
  const dump = {local: {}, session: {}, indexedDB: {}};
  for (const [name, area] of [['local', localStorage], ['session', sessionStorage]]) {
    for (let i = 0; i < area.length; i++) {
      dump[name][area.key(i)] = area.getItem(area.key(i));
    }
  }
  const databases = indexedDB.databases ? await indexedDB.databases() : [];
  const request = r => new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
  for (const info of databases) {
    const db = await request(indexedDB.open(info.name));
    const stores = {};
    for (const name of db.objectStoreNames) {
      stores[name] = await request(db.transaction(name).objectStore(name).getAll());
    }
    db.close();
    dump.indexedDB[info.name] = stores;
  }
  return JSON.stringify(dump);
}"""

# Requests from the page with its login cookie, as an extension would make them; the
# page answers statuses and whether the value matched, never the value.
CONNECTOR_FROM_PAGE = """async ({namespace, id, value}) => {
  const xsrf = (document.cookie.match(/(?:^|; )_xsrf=([^;]*)/) || [])[1] || '';
  const url = '/secure-storage/api/connector/' + encodeURIComponent(namespace) + '/' +
    encodeURIComponent(id);
  const body = JSON.stringify({value});
  const withXsrf = {'X-XSRFToken': xsrf};
  const result = {};
  result.putWithoutXsrf = (await fetch(url, {method: 'PUT', body})).status;
  result.put = (await fetch(url, {method: 'PUT', body, headers: withXsrf})).status;
  const got = await fetch(url, {headers: withXsrf});
  result.get = got.status;
  result.matches = (await got.json()).value === value;
  const listed = await fetch('/secure-storage/api/connector/' + encodeURIComponent(namespace),
    {headers: withXsrf});
  result.ids = (await listed.json()).ids;
  result.delete = (await fetch(url, {method: 'DELETE', headers: withXsrf})).status;
  result.getAfterDelete = (await fetch(url, {headers: withXsrf})).status;
  return result;
}"""


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def vault_store(namespace: str = "default") -> SecureStorage:
    """The test's vault, opened in this process (path and passphrase from vault_env)."""
    return SecureStorage(backend="vault", namespace=namespace, config=fast_kdf_config())


def call(
    server: Lab,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: bool = True,
    raw: bytes | None = None,
) -> tuple[int, bytes]:
    """One request to the API; the status and the body as bytes (never printed)."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"token {server.token}"
    request = urllib.request.Request(  # noqa: S310 -- always http://127.0.0.1:<port>
        f"{server.url}{API}/{path}", data=data, method=method, headers=headers
    )
    try:
        with server.opener.open(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def quoted(*segments: str) -> str:
    return "/".join(urllib.parse.quote(segment, safe="") for segment in segments)


def is_refusal(body: bytes) -> bool:
    """A JSON error with both a message and a remedy."""
    reply = json.loads(body)
    return bool(reply.get("message")) and bool(reply.get("remedy"))


@contextlib.contextmanager
def jupyter_server(tmp_path: Path, env_changes: dict[str, str | None]) -> Iterator[Lab]:
    """A plain Jupyter Server (no browser needed) on 127.0.0.1 with its own token."""
    root = tmp_path / "server-root"
    root.mkdir(exist_ok=True)
    token = secrets.token_hex(24)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    for name in PROXY_VARIABLES:
        env.pop(name, None)
        env.pop(name.upper(), None)
    env |= {"JUPYTER_TOKEN": token, "HOME": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    for name, value in env_changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    command = [
        sys.executable,
        "-m",
        "jupyter_server",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--port-retries=0",
        f"--ServerApp.root_dir={root}",
    ]
    if os.geteuid() == 0:
        command.append("--allow-root")
    log = tmp_path / f"jupyter-server-{port}.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Lab(url=f"http://127.0.0.1:{port}", token=token, root=root, log=log, process=process)
    try:

        def started() -> bool:
            if process.poll() is not None:
                pytest.fail(f"jupyter server exited with {process.returncode}; its log: {log}")
            try:
                return call(server, "GET", "status")[0] in (200, 503)
            except OSError:
                return False

        wait_for(started, LAB_START_TIMEOUT, f"the secure-storage API to answer (log: {log})")
        yield server
    finally:
        stop_process_group(process)


@pytest.fixture
def server(vault_env: Path, isolated_jupyter: Path, tmp_path: Path) -> Iterator[Lab]:
    """A Jupyter Server whose REST API stores into the test's vault."""
    config = fast_kdf_config()
    (isolated_jupyter / "config" / "jupyter_secure_storage_config.json").write_text(
        json.dumps({"VaultBackend": dict(config.VaultBackend)})
    )
    with jupyter_server(tmp_path, {"JUPYTER_SECURE_STORAGE_BACKEND": "vault"}) as running:
        yield running


# --- the REST API -------------------------------------------------------------------------


def test_rest_stores_lists_and_deletes_without_answering_a_value(server: Lab) -> None:
    value = new_canary(21)
    status, body = call(server, "GET", "status")
    assert status == 200
    assert json.loads(body)["backend"] == "vault"

    status, body = call(
        server, "POST", "keys", {"namespace": "team-a", "name": "API_KEY", "value": value}
    )
    assert status == 201
    assert json.loads(body) == {"name": "API_KEY", "namespace": "team-a"}
    assert same(vault_store("team-a").read("API_KEY"), value), "the vault lacks the value"

    status, body = call(server, "GET", "keys")
    assert status == 200
    listed = json.loads(body)["keys"]
    entry = next(k for k in listed if k["name"] == "API_KEY")
    assert entry["namespace"] == "team-a"
    assert entry["backend"] == "vault"
    assert str(entry["modified"])[:4].isdigit(), "no ISO 8601 modification time"
    replies = [body]

    status, body = call(server, "DELETE", quoted("keys", "team-a", "API_KEY"))
    assert status == 204
    assert vault_store("team-a").read("API_KEY") is None
    # Deleting a missing key is no error, as in the facade.
    status, body = call(server, "DELETE", quoted("keys", "team-a", "API_KEY"))
    assert status == 204
    names = [k["name"] for k in json.loads(call(server, "GET", "keys")[1])["keys"]]
    assert "API_KEY" not in names
    for reply in [*replies, server.log.read_bytes()]:
        assert leaked_forms(reply, value) == [], "a reply or the server log holds the value"


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("name", "bad\x01name"),  # a control character
        ("name", " padded "),
        ("name", "x" * 300),  # too long: a value pasted as a name, say
        ("namespace", "not a namespace!"),
        ("value", 12345),
        ("value", None),  # the facade's write(key, None) deletes; the API must refuse it
    ],
)
def test_rest_refuses_bad_input_with_a_400_that_never_repeats_the_value(
    server: Lab, field: str, bad: Any
) -> None:
    stored = new_canary(17)
    vault_store().write("GOOD_NAME", stored)
    value = new_canary(21)
    body = {"namespace": "default", "name": "GOOD_NAME", "value": value, field: bad}
    status, reply = call(server, "POST", "keys", body)
    assert status == 400
    assert is_refusal(reply), "the 400 lacks a message or a remedy"
    assert leaked_forms(reply, value) == [], "the 400 repeats the value"
    assert same(vault_store().read("GOOD_NAME"), stored), "a refused request changed the store"
    assert vault_store().keys() == ["GOOD_NAME"]
    assert leaked_forms(server.log.read_bytes(), value) == [], "the server log holds the value"


def test_rest_refuses_bodies_it_cannot_read(server: Lab) -> None:
    for raw in (b"not json", b"[1, 2]", json.dumps({"name": "ONLY_A_NAME"}).encode()):
        status, reply = call(server, "POST", "keys", raw=raw)
        assert status == 400
        assert is_refusal(reply)


def test_rest_needs_the_token(server: Lab) -> None:
    value = new_canary(21)
    status, reply = call(server, "POST", "keys", {"name": "NO_TOKEN", "value": value}, token=False)
    assert status == 403
    assert is_refusal(reply)
    assert leaked_forms(reply, value) == []
    assert call(server, "GET", "keys", token=False)[0] == 403
    assert call(server, "GET", quoted("connector", "ns", "id"), token=False)[0] == 403
    assert "NO_TOKEN" not in vault_store().keys()


def test_connector_keeps_secrets_manager_secrets_under_the_managers_id(server: Lab) -> None:
    value = new_canary(21)
    path = quoted("connector", SECRETS_MANAGER_NAMESPACE, SECRETS_MANAGER_ID)
    assert call(server, "GET", path)[0] == 404
    status, reply = call(server, "PUT", path, {"value": value})
    assert status == 204
    stored = vault_store(CONNECTOR_NAMESPACE).read(
        f"{SECRETS_MANAGER_NAMESPACE}:{SECRETS_MANAGER_ID}"
    )
    assert same(stored, value), "the connector's secret is not under <namespace>:<id>"

    status, reply = call(server, "GET", path)
    assert status == 200
    secret = json.loads(reply)
    assert (secret["namespace"], secret["id"]) == (SECRETS_MANAGER_NAMESPACE, SECRETS_MANAGER_ID)
    assert digest(secret["value"]) == digest(value), "the connector answered another value"
    # The manager hands fetch() only "<namespace>:<id>": a split at another colon reaches
    # the same secret.
    other_split = quoted("connector", "@jupyterlite/ai", "providers:openai")
    assert call(server, "GET", other_split)[0] == 200

    status, reply = call(server, "GET", quoted("connector", SECRETS_MANAGER_NAMESPACE))
    assert (status, json.loads(reply)) == (200, {"ids": [SECRETS_MANAGER_ID]})
    # The sidebar's listing shows the secret's name, never its value.
    status, listing = call(server, "GET", "keys")
    assert f"{SECRETS_MANAGER_NAMESPACE}:{SECRETS_MANAGER_ID}" in {
        k["name"] for k in json.loads(listing)["keys"] if k["namespace"] == CONNECTOR_NAMESPACE
    }
    assert leaked_forms(listing, value) == []

    assert call(server, "DELETE", path)[0] == 204
    assert call(server, "GET", path)[0] == 404
    assert call(server, "DELETE", path)[0] == 204  # already gone: still 204
    assert vault_store(CONNECTOR_NAMESPACE).keys() == []
    assert leaked_forms(server.log.read_bytes(), value) == [], "the server log holds the value"


def test_a_vault_the_server_cannot_unlock_answers_503_with_cause_and_remedy(
    vault_env: Path, isolated_jupyter: Path, tmp_path: Path
) -> None:
    vault_store().write("EXISTING", new_canary(21))  # a vault, created with the passphrase
    locked_env: dict[str, str | None] = {
        "JUPYTER_SECURE_STORAGE_BACKEND": "vault",
        "JUPYTER_SECURE_STORAGE_PASSPHRASE": None,
    }
    with jupyter_server(tmp_path, locked_env) as locked:
        status, reply = call(locked, "GET", "keys")
        assert status == 503
        assert is_refusal(reply)
        assert "passphrase" in json.loads(reply)["message"]
        value = new_canary(21)
        status, reply = call(locked, "POST", "keys", {"name": "NEW", "value": value})
        assert status == 503
        assert leaked_forms(reply, value) == [], "the 503 repeats the value"
    assert vault_store().keys() == ["EXISTING"]
    assert leaked_forms(locked.log.read_bytes(), value) == [], "the server log holds the value"


# --- the sidebar in JupyterLab ------------------------------------------------------------


def open_sidebar(page: Page, server: Lab) -> None:
    query = urllib.parse.urlencode({"token": server.token})
    page.goto(f"{server.url}/lab?{query}", timeout=UI_TIMEOUT_MS)
    tab = page.locator(f'.jp-SideBar .lm-TabBar-tab[data-id="{SIDEBAR_ID}"]')
    tab.wait_for(timeout=UI_TIMEOUT_MS)
    tab.click()
    page.locator(f"#{SIDEBAR_ID}").wait_for()


def add_key(page: Page, namespace: str, name: str, value: str) -> None:
    panel = page.locator(f"#{SIDEBAR_ID}")
    panel.locator(".jp-SecureStorage-namespace").fill(namespace)
    panel.locator(".jp-SecureStorage-name").fill(name)
    field = panel.locator(".jp-SecureStorage-value")
    field.fill(value)
    panel.locator(".jp-SecureStorage-submit").click()
    # Not expect(...).to_have_value(""): its failure message would print the value.
    wait_for(
        lambda: field.input_value() == "",
        30,
        "the value field to be emptied",
        pause=lambda: page.wait_for_timeout(100),
    )


def listed(page: Page, namespace: str, name: str) -> Any:
    return page.locator(
        f'#{SIDEBAR_ID} section[data-namespace="{namespace}"] li[data-name="{name}"]'
    )


@pytest.fixture
def exposed_app(isolated_jupyter: Path) -> None:
    """The page exposes its app as window.jupyterapp, so the test can ask which plugins
    activated. (Requested before ``lab``, so the server reads it at start.)"""
    config = {"LabApp": {"expose_app_in_browser": True}}
    (isolated_jupyter / "config" / "jupyter_server_config.json").write_text(json.dumps(config))


PLUGINS = (
    "jupyter-secure-storage:sidebar",
    "jupyter-secure-storage:status",
    "jupyter-secure-storage:connector",
    "jupyter-secrets-manager:manager",
)
ACTIVATED_PLUGINS = """async (ids) => {
  await window.jupyterapp.restored;
  return ids.filter(id => window.jupyterapp.isPluginActivated(id));
}"""


@pytest.mark.timeout(300)
def test_sidebar_adds_lists_and_deletes_keys_and_the_page_keeps_no_value(
    exposed_app: None,
    lab: Lab,  # noqa: F811 -- the fixture imported from test_browser
    vault_env: Path,
    tmp_path: Path,
) -> None:
    from playwright.sync_api import Route, sync_playwright

    canary = new_canary(21)
    second = new_canary(25)
    refused = new_canary(29)
    connector_value = new_canary(23)
    replies: list[tuple[str, bytes]] = []  # (request, reply body) of every API call
    console_errors: list[str] = []

    def recording_api_replies(route: Route) -> None:
        """Loopback only; API replies are fetched here so their bodies can be checked
        (Response.body() on a page's own response can wait forever)."""
        url = urllib.parse.urlsplit(route.request.url)
        if url.hostname != "127.0.0.1":
            route.abort()
        elif url.path.startswith(API):
            response = route.fetch()
            request = f"{route.request.method} {url.path} -> {response.status}"
            replies.append((request, response.body()))
            route.fulfill(response=response)
        else:
            route.continue_()

    with sync_playwright() as playwright:
        context = lab_browser_context(playwright)
        context.route("**/*", recording_api_replies)
        page = context.new_page()
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
        try:
            open_sidebar(page, lab)
            page.locator(".jp-SecureStorage-status").get_by_text("Secrets: vault").wait_for()

            # Add two keys through the form; both are listed, in their namespaces.
            add_key(page, "default", "OPENAI_API_KEY", canary)
            listed(page, "default", "OPENAI_API_KEY").wait_for()
            add_key(page, "team-a", "DATABASE_PASSWORD", second)
            listed(page, "team-a", "DATABASE_PASSWORD").wait_for()
            assert "vault" in listed(page, "default", "OPENAI_API_KEY").inner_text()
            assert same(vault_store().read("OPENAI_API_KEY"), canary), "vault lacks value 1"
            assert same(vault_store("team-a").read("DATABASE_PASSWORD"), second), "no value 2"
            # The sidebar beside JupyterLab's launcher, the status bar item below it.
            page.screenshot(
                # docs/img/lab-sidebar.png comes from test_lab_unlock.py (a notebook open).
                path=tmp_path / "lab-sidebar-launcher.png",
                clip={"x": 0, "y": 0, "width": 760, "height": 900},
                animations="disabled",
            )

            # A refused name: the server's cause and remedy are shown, the field emptied.
            add_key(page, "default", " padded name ", refused)
            error = page.locator(
                f"#{SIDEBAR_ID} .jp-SecureStorage-errorArea .jp-SecureStorage-error"
            )
            error.get_by_text("whitespace").wait_for()
            assert error.locator(".jp-SecureStorage-errorRemedy").inner_text().strip()
            assert " padded name " not in vault_store().keys()

            # Delete through the confirmation dialog.
            listed(page, "default", "OPENAI_API_KEY").locator(".jp-SecureStorage-delete").click()
            page.locator(".jp-Dialog").get_by_role("button", name="Delete").click()
            listed(page, "default", "OPENAI_API_KEY").wait_for(state="detached")
            assert vault_store().read("OPENAI_API_KEY") is None, "the key is still stored"
            assert listed(page, "team-a", "DATABASE_PASSWORD").count() == 1

            # Requests from the page itself: no XSRF header, no write; then the connector.
            from_page = page.evaluate(
                CONNECTOR_FROM_PAGE,
                {
                    "namespace": SECRETS_MANAGER_NAMESPACE,
                    "id": SECRETS_MANAGER_ID,
                    "value": connector_value,
                },
            )
            page_storage = page.evaluate(DUMP_PAGE_STORAGE).encode()
            cookies = json.dumps(context.cookies()).encode()
            page_html = page.content().encode()
            page_config = page.locator("#jupyter-config-data").text_content() or "{}"
            activated = page.evaluate(ACTIVATED_PLUGINS, list(PLUGINS))
        except BaseException:
            page.screenshot(path=tmp_path / "failure.png", full_page=True)
            print(f"debug screenshot: {tmp_path / 'failure.png'}; server log: {lab.log}")
            raise
        finally:
            context.close()
            context.browser.close()

    assert from_page["putWithoutXsrf"] == 403, "a cookie-only PUT without XSRF was accepted"
    assert (from_page["put"], from_page["get"], from_page["matches"]) == (204, 200, True)
    assert from_page["ids"] == [SECRETS_MANAGER_ID]
    assert (from_page["delete"], from_page["getAfterDelete"]) == (204, 404)

    # The extension was served, and beside jupyter-secrets-manager it replaced the
    # in-memory connector instead of fighting it (a second connector locks the manager).
    config = json.loads(page_config)
    assert "jupyter-secure-storage" in {e["name"] for e in config["federated_extensions"]}
    expected = PLUGINS if SECRETS_MANAGER_INSTALLED else PLUGINS[:3]
    assert sorted(activated) == sorted(expected), f"activated: {activated}"
    if SECRETS_MANAGER_INSTALLED:
        assert "jupyter-secrets-manager:connector" in config["disabledExtensions"]
    assert not [
        m for m in console_errors if "secrets manager" in m.lower() or "jupyter-secure-storage" in m
    ], "manager locked"

    # No value anywhere it could have landed, except the connector GET that returned it.
    places: dict[str, bytes] = {
        "the page's storage": page_storage,
        "the page's cookies": cookies,
        "the page's DOM": page_html,
        "the server's log": lab.log.read_bytes(),
    }
    connector_get = f"GET {API}/connector/{quoted(SECRETS_MANAGER_NAMESPACE, SECRETS_MANAGER_ID)}"
    for number, (request, body) in enumerate(replies):
        places[f"reply {number}, to {request}"] = body
    findings = [
        f"value {number} in {place} as forms {forms}"
        for number, value in enumerate((canary, second, refused, connector_value), 1)
        for place, blob in places.items()
        if (forms := leaked_forms(blob, value))
        and not (value is connector_value and place.endswith(f"to {connector_get} -> 200"))
    ]
    assert findings == [], "; ".join(findings)
    assert any(request.startswith(connector_get) for request, _ in replies), "no connector GET"
