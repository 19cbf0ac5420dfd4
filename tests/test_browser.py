"""The secret prompt widget in a real JupyterLab, typed into by a real Chromium.

A JupyterLab server runs on loopback with its own token, root, settings and workspace
directories, and widget state saving turned on. Its kernel stores into a throwaway vault
chosen through the environment. Debian's Chromium, driven by Playwright, opens a
notebook, runs ``prompt_secret("BROWSER_KEY")``, types a canary into the password field
and clicks Save, types a second one and presses Enter, shows ``SecretsPanel()``, runs a
cell that prints the SHA-256 of what the store holds, and saves the notebook.

Then: the saved notebook and its checkpoint hold no form of either canary although
widget state was saved; the printed hash and the vault read from this process prove the
store got the right value; nothing the kernel sent to the browser, nothing left in the
page, and no file the server, the kernel or JupyterLab wrote holds a canary. Two
screenshots of the widgets go to docs/img/.

A second test commits a value while the kernel is busy in another cell and saves at once:
the value then waits in the browser's widget model, where the kernel cannot blank it, and
JupyterLab sends it in the saved widget state -- the server extension's pre-save hook
(jupyter_secure_storage.server) must blank it before the file is written.

Needs ``/usr/bin/chromium`` (Debian's ``chromium``) and ``playwright`` from PyPI; without
them the tests skip, or fails under ``JSS_REQUIRE_BROWSER=1``. See docs/browser-test.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nbformat
import pytest
from conftest import REPO, fast_kdf_config
from test_kernel_leaks import leaked_forms

from jupyter_secure_storage import SecureStorage
from jupyter_secure_storage.testing import same

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    # Belt and braces for "loopback only": no host name resolves; the page uses an IP.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]
SCREENSHOTS = REPO / "docs" / "img"
KEY = "BROWSER_KEY"
PLACEHOLDER = "paste the value, then Enter or Save"
PASSWORD_INPUT = ".jupyter-widgets input[type=password]"
LAB_START_TIMEOUT = 180  # seconds; a first start on a 2-CPU machine takes 20-60 s
UI_TIMEOUT_MS = 180_000  # first JupyterLab load, kernel start, widget manager
STEP_TIMEOUT_MS = 60_000
BUSY_SECONDS = 12  # how long the busy-kernel test keeps the kernel busy
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")

CELLS = [
    f"from jupyter_secure_storage.widgets import prompt_secret, SecretsPanel\n"
    f'prompt_secret("{KEY}")',
    "SecretsPanel()",
    "import hashlib\nfrom jupyter_secure_storage import SecureStorage\n"
    f'print(hashlib.sha256(SecureStorage().read("{KEY}").reveal().encode()).hexdigest())',
]

# JupyterLab user settings written before the server starts.
LAB_SETTINGS = {
    # The setting under test: widget state goes into the notebook on save (default off).
    "@jupyter-widgets/jupyterlab-manager/plugin": {"saveState": True},
    # No news or update checks (they would reach the internet and pop up toasts).
    "@jupyterlab/apputils-extension/notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    # Only the test's explicit save writes the file.
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    # Start the notebook's kernel without a "Select Kernel" dialog.
    "@jupyterlab/notebook-extension/tracker": {"autoStartDefaultKernel": True},
}


def require_browser(reason: str) -> None:
    if os.environ.get("JSS_REQUIRE_BROWSER") == "1":
        pytest.fail(f"BROWSER TEST CANNOT RUN (JSS_REQUIRE_BROWSER=1): {reason}")
    pytest.skip(f"BROWSER TEST SKIPPED: {reason}; JSS_REQUIRE_BROWSER=1 makes this a failure")


@pytest.fixture
def chromium() -> Path:
    if not os.access(CHROMIUM, os.X_OK):
        require_browser(
            f"{CHROMIUM} is missing; install Debian's chromium "
            "(apt-get install chromium; scripts/test.sh does it)"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        require_browser("playwright is not installed (pip install playwright)")
    return CHROMIUM


@dataclass
class Lab:
    url: str
    token: str
    root: Path
    log: Path
    process: subprocess.Popen[bytes]
    opener: urllib.request.OpenerDirector = field(
        # No proxy, whatever the environment says: this talks to 127.0.0.1 only.
        default_factory=lambda: urllib.request.build_opener(urllib.request.ProxyHandler({}))
    )

    def api(self, path: str, method: str = "GET") -> Any:
        request = urllib.request.Request(  # noqa: S310 -- always http://127.0.0.1:<port>
            f"{self.url}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with self.opener.open(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def stop_kernels(self) -> None:
        """Shut every kernel down (they flush history and logs, and live in sessions of
        their own, so stopping the server's process group would not reach them)."""
        if self.process.poll() is None:
            for kernel in self.api("/api/kernels"):
                self.api(f"/api/kernels/{kernel['id']}", method="DELETE")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    pause: Callable[[], object] = lambda: time.sleep(0.2),
) -> None:
    """Poll ``condition``; fail naming ``what`` (never a value) when it stays false.

    With a page open, ``pause`` must be ``page.wait_for_timeout``: Playwright's sync API
    runs route handlers only inside its own calls, so a plain sleep would hold every
    request the page makes (the notebook save included) until the wait gives up.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        pause()


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    except ProcessLookupError:
        pass


@pytest.fixture
def lab(
    chromium: Path,
    vault_env: Path,
    isolated_jupyter: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Lab]:
    """A JupyterLab server on 127.0.0.1 whose kernels store into the test's vault."""
    config = fast_kdf_config()
    (isolated_jupyter / "config" / "jupyter_secure_storage_config.json").write_text(
        json.dumps({"VaultBackend": dict(config.VaultBackend)})
    )
    monkeypatch.setenv("JUPYTER_SECURE_STORAGE_BACKEND", "vault")
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    settings_dir = tmp_path / "lab" / "settings"
    workspaces_dir = tmp_path / "lab" / "workspaces"
    workspaces_dir.mkdir(parents=True)
    for name, values in LAB_SETTINGS.items():
        path = settings_dir / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    root = tmp_path / "root"
    root.mkdir()
    home = tmp_path / "home"
    home.mkdir()

    token = secrets.token_hex(24)
    port = free_port()
    # ipykernel stops capturing file descriptors when it sees PYTEST_CURRENT_TEST;
    # a user's kernel never does, so neither does this one.
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    for name in PROXY_VARIABLES:
        env.pop(name, None)
        env.pop(name.upper(), None)
    env |= {
        "JUPYTER_TOKEN": token,  # not in argv, where any local user could read it
        "JUPYTERLAB_SETTINGS_DIR": str(settings_dir),
        "JUPYTERLAB_WORKSPACES_DIR": str(workspaces_dir),
        "HOME": str(home),
    }
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--port-retries=0",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.terminals_enabled=False",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",
    ]
    if os.geteuid() == 0:  # CI containers run as root; Jupyter refuses that by default
        command.append("--allow-root")
    log = tmp_path / "jupyterlab.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, stopped as one
        )
    server = Lab(url=f"http://127.0.0.1:{port}", token=token, root=root, log=log, process=process)
    try:

        def started() -> bool:
            if process.poll() is not None:
                pytest.fail(f"JupyterLab exited with {process.returncode}; its log: {log}")
            try:
                query = urllib.parse.urlencode({"token": token})
                with server.opener.open(f"{server.url}/api/status?{query}", timeout=5) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for(started, LAB_START_TIMEOUT, f"JupyterLab to answer /api/status (log: {log})")
        yield server
    finally:
        with contextlib.suppress(OSError):
            server.stop_kernels()
        stop_process_group(process)


def write_notebook(path: Path, cells: list[str]) -> None:
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    nbformat.write(notebook, path)


def new_canary(nbytes: int) -> str:
    """A value to type, ending in characters whose base64, URL-quoted and JSON-escaped
    forms all differ from the raw value (so each form is really looked for)."""
    return "jss" + secrets.token_urlsafe(nbytes) + "/+=&'\"x"


# The forms test_kernel_leaks.encodings() produces, in its order.
FORMS = ("raw", "base64", "urlsafe-base64", "url-quoted", "url-quoted-plus", "json", "html", "repr")


def form_names(forms: list[int]) -> list[str]:
    return [FORMS[i] for i in forms]


def frame_kind(frame: bytes) -> str:
    """The message types and comm methods a websocket frame carries (no values)."""
    names = re.findall(rb'"(?:msg_type|method)":\s*"(\w+)"', frame)
    return ",".join(dict.fromkeys(n.decode() for n in names)) or "?"


def cell_text(cell: dict[str, Any]) -> str:
    return "".join(
        "".join(o.get("text", "")) for o in cell.get("outputs", []) if o["output_type"] == "stream"
    ).strip()


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def has_widget_state(path: Path) -> bool:
    notebook = read_json(path)
    return bool(notebook and notebook["metadata"].get("widgets"))


def saved_with_hash(path: Path) -> bool:
    """The file has cell 3's printed hash and widget state: the final save landed."""
    notebook = read_json(path)
    return bool(
        notebook
        and re.fullmatch(r"[0-9a-f]{64}", cell_text(notebook["cells"][2]))
        and notebook["metadata"].get("widgets")
    )


def checkpoint_of(path: Path) -> Path:
    return path.parent / ".ipynb_checkpoints" / f"{path.stem}-checkpoint{path.suffix}"


class KnownLeak(AssertionError):
    """A value committed while the kernel was busy reached the saved file."""


@dataclass
class Session:
    """A Chromium page showing a notebook, and what crossed the kernel's websocket."""

    page: Page
    received: list[bytes]  # kernel -> browser frames
    sent: list[bytes]  # browser -> kernel frames
    off_loopback: list[str]  # hosts of requests the page tried beyond 127.0.0.1

    def settle(self) -> None:
        # Not time.sleep: Playwright's sync API runs route handlers only inside its own
        # calls, so a plain sleep would hold every request the page makes.
        self.page.wait_for_timeout(200)

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        wait_for(condition, timeout, what, self.settle)

    def kernel_status(self, status: str) -> Locator:
        """The status bar's "Python 3 (ipykernel) | <status>" (before the kernel is up it
        reads "No Kernel | Initializing", and the toolbar's indicator already says idle)."""
        text = re.compile(rf"^Python 3 \(ipykernel\) \| {status}$")
        return self.page.locator(".jp-StatusBar-Widget").get_by_text(text)

    def cell(self, index: int) -> Locator:
        return self.page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").nth(index)

    def run_cell(self, index: int, *, wait: bool = True) -> Locator:
        """Ctrl+Enter in the cell's editor (runs it in place); wait for its [n]: prompt."""
        cell = self.cell(index)
        cell.locator(".jp-InputArea-editor .cm-content").click()
        self.page.keyboard.press("Control+Enter")
        if wait:
            prompt = cell.locator(".jp-InputArea-prompt").filter(has_text=re.compile(r"\[\d+\]"))
            prompt.wait_for(timeout=STEP_TIMEOUT_MS)
        return cell

    def prompt(self, index: int) -> Locator:
        """Run the cell; the first of its outputs that holds a password field."""
        cell = self.run_cell(index)
        # ipywidgets 8's PasswordView is a ".widget-text" holding <input type="password">
        # (there is no ".widget-password" class in its DOM).
        output = (
            cell.locator(".jp-OutputArea-output").filter(has=self.page.locator(PASSWORD_INPUT))
        ).first
        output.wait_for(timeout=UI_TIMEOUT_MS)  # the widget manager loads lazily
        return output

    def save_notebook(self, path: Path, landed: Callable[[Path], bool]) -> None:
        """The toolbar's save button (docmanager:save: save, then checkpoint); wait for
        the file and its checkpoint. Not Ctrl+S: with the cursor in a widget's text field
        ipywidgets stops the key event before JupyterLab sees it."""
        self.page.locator('.jp-NotebookPanel-toolbar [data-command="docmanager:save"]').click()
        self.wait_for(lambda: landed(path), 60, f"{path.name} to be saved")
        self.wait_for(lambda: landed(checkpoint_of(path)), 60, f"{path.name}'s checkpoint")

    def wait_blank(self, field: Locator, what: str) -> None:
        # Not expect(...).to_have_value(""): its failure message would print the value.
        self.wait_for(lambda: field.input_value() == "", STEP_TIMEOUT_MS / 1000, what)


def lab_browser_context(playwright: Any) -> Any:
    """Debian's Chromium, headless with the quiet offline flags, one 1280x900 context at 2x
    (the screenshots' size), every step bounded by STEP_TIMEOUT_MS."""
    browser = playwright.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
    )
    context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=2)
    context.set_default_timeout(STEP_TIMEOUT_MS)
    return context


@contextlib.contextmanager
def browser_session(lab: Lab, notebook: str, tmp_path: Path) -> Iterator[Session]:
    """Debian's Chromium on ``notebook`` in ``lab``, its kernel up; a screenshot of the
    page into tmp_path if anything fails."""
    from playwright.sync_api import Route, WebSocket, sync_playwright

    with sync_playwright() as playwright:
        context = lab_browser_context(playwright)
        page = context.new_page()
        session = Session(page=page, received=[], sent=[], off_loopback=[])

        def loopback_only(route: Route) -> None:
            host = urllib.parse.urlsplit(route.request.url).hostname or ""
            if host == "127.0.0.1":
                route.continue_()
            else:
                session.off_loopback.append(host)
                route.abort()

        def as_bytes(payload: str | bytes) -> bytes:
            return payload.encode() if isinstance(payload, str) else payload

        def on_websocket(ws: WebSocket) -> None:
            ws.on("framereceived", lambda payload: session.received.append(as_bytes(payload)))
            ws.on("framesent", lambda payload: session.sent.append(as_bytes(payload)))

        context.route("**/*", loopback_only)
        page.on("websocket", on_websocket)
        try:
            query = urllib.parse.urlencode({"token": lab.token})
            page.goto(f"{lab.url}/lab/tree/{notebook}?{query}", timeout=UI_TIMEOUT_MS)
            page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=UI_TIMEOUT_MS)
            session.kernel_status("Idle").wait_for(timeout=UI_TIMEOUT_MS)
            yield session
        except BaseException:
            page.screenshot(path=tmp_path / "failure.png", full_page=True)
            print(f"debug screenshot: {tmp_path / 'failure.png'}; server log: {lab.log}")
            raise
        finally:
            context.close()
            context.browser.close()


@pytest.mark.timeout(900)
def test_secret_prompt_in_jupyterlab_keeps_the_value_out_of_the_notebook(
    lab: Lab, vault_env: Path, tmp_path: Path
) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    # The setting took effect on the server: JupyterLab will save widget state.
    widget_settings = lab.api("/lab/api/settings/@jupyter-widgets/jupyterlab-manager:plugin")
    assert "saveState" in widget_settings["schema"]["properties"], "widget manager not installed"
    assert widget_settings["settings"].get("saveState") is True, "saveState is not on"

    notebook_path = lab.root / "prompt.ipynb"
    write_notebook(notebook_path, CELLS)
    checkpoint = checkpoint_of(notebook_path)
    # The README's screenshots are rewritten only on request (they hold a timestamp).
    shots = SCREENSHOTS if os.environ.get("JSS_UPDATE_SCREENSHOTS") == "1" else tmp_path
    # Two canaries of different lengths, so their "saved ... · N characters" differ.
    canary = new_canary(21)
    canary_by_enter = new_canary(30)
    assert len(canary) != len(canary_by_enter)
    canaries = (canary, canary_by_enter)
    findings: list[str] = []  # what went wrong, reported together at the end (no values)

    with browser_session(lab, notebook_path.name, tmp_path) as session:
        # 1. The prompt: type, screenshot (dots), Save. Everything happens in the first
        # output that holds a password field (a second one is a finding, below).
        prompt = session.prompt(0)
        field = prompt.locator(PASSWORD_INPUT)
        assert field.get_attribute("placeholder") == PLACEHOLDER
        assert KEY in prompt.inner_text()
        field.click()
        field.press_sequentially(canary, delay=10)
        assert field.input_value() == canary, "the field does not hold what was typed"
        assert field.get_attribute("type") == "password"
        shots.mkdir(parents=True, exist_ok=True)
        prompt.screenshot(path=shots / "secret-prompt.png", animations="disabled")
        # The name has the lock icon's glyph (CSS content) before "Save".
        prompt.get_by_role("button", name=re.compile(r"\bSave$")).click()
        prompt.get_by_text(f"saved {KEY} · {len(canary)} characters").wait_for()
        session.wait_blank(field, "the field to be blanked after Save")
        assert field.input_value() == ""
        shown = session.cell(0).locator(PASSWORD_INPUT).count()
        if shown != 1:
            findings.append(
                f'prompt_secret("{KEY}") as the last line of a cell showed {shown} '
                "password fields (display() plus the returned prompt as Out[n])"
            )

        # 2. Enter in the field saves too.
        field.click()
        field.press_sequentially(canary_by_enter, delay=10)
        field.press("Enter")
        status = prompt.get_by_text(f"saved {KEY} · {len(canary_by_enter)} characters")
        try:
            status.wait_for()
            saved_by_enter = True
        except PlaywrightTimeoutError:
            saved_by_enter = False
        assert saved_by_enter, "Enter in the password field did not save"
        session.wait_blank(field, "the field to be blanked after Enter")
        assert field.input_value() == ""

        # 3. The panel lists the name, never a value.
        panel = session.run_cell(1).locator(".jp-OutputArea-output").first
        panel.get_by_text(KEY).first.wait_for(timeout=UI_TIMEOUT_MS)
        panel.screenshot(path=shots / "secrets-panel.png", animations="disabled")

        # 4. The kernel reads the store and prints the hash; save the notebook.
        proof = session.run_cell(2).locator(".jp-OutputArea-output")
        proof.filter(has_text=re.compile(r"[0-9a-f]{64}")).wait_for()
        session.save_notebook(notebook_path, saved_with_hash)
        page_html = session.page.content().encode()
        page_text = session.page.locator("body").inner_text().encode()

    lab.stop_kernels()  # so the kernel's history and log output are on disk for the scan
    saved_bytes = notebook_path.read_bytes()
    saved = json.loads(saved_bytes)

    # The run was real: the kernel's store holds the value typed last, and so does the vault.
    expected = hashlib.sha256(canary_by_enter.encode()).hexdigest()
    assert cell_text(saved["cells"][2]) == expected, "cell 3 printed another value's hash"
    assert vault_env.exists(), "the kernel wrote no vault"
    stored = SecureStorage(backend="vault", config=fast_kdf_config()).read(KEY)
    assert same(stored, canary_by_enter), "the vault does not hold the value typed last"

    # Widget state was saved (saveState took effect), the prompt's among it, and blank.
    widget_state = saved["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]
    models = widget_state["state"]
    assert any(KEY in json.dumps(m["state"]) for m in models.values()), "no prompt state saved"
    passwords = [m["state"] for m in models.values() if m["model_name"] == "PasswordModel"]
    assert passwords, "no PasswordModel in the saved widget state"
    assert all(p.get("value", "") == "" for p in passwords), "a saved password value is not blank"

    # The browser did send the values to the kernel, so the checks below mean something.
    for value in canaries:
        assert any(leaked_forms(frame, value) for frame in session.sent), "a value never sent"
    assert session.off_loopback == [], f"requests off loopback: {sorted(set(session.off_loopback))}"

    # No form of either canary anywhere it could have landed. Every place is checked and
    # the findings reported together: a place, a canary's number and forms, never a value.
    places: dict[str, bytes] = {
        "the saved notebook": saved_bytes,
        "its saved widget state": json.dumps(models).encode(),
        "the checkpoint": checkpoint.read_bytes(),
        "the page's DOM at the end": page_html,
        "the page's text at the end": page_text,
    }
    for path in sorted(tmp_path.rglob("*")):
        if path.is_file() and path != vault_env:  # server log, history, settings, workspaces
            places[f"file {path.relative_to(tmp_path)}"] = path.read_bytes()
    assert any(name.endswith("history.sqlite") for name in places), "no IPython history"
    for number, frame in enumerate(session.received):
        places[f"kernel->browser websocket frame {number} ({frame_kind(frame)})"] = frame
    findings += [
        f"canary {number} found in {place} as {form_names(forms)}"
        for number, value in enumerate(canaries, 1)
        for place, blob in places.items()
        if (forms := leaked_forms(blob, value))
    ]
    assert findings == [], "; ".join(findings)


@pytest.mark.timeout(900)
def test_a_value_committed_while_the_kernel_is_busy_stays_out_of_a_save(
    lab: Lab, vault_env: Path, tmp_path: Path
) -> None:
    notebook_path = lab.root / "busy.ipynb"
    write_notebook(notebook_path, [CELLS[0], f"import time\ntime.sleep({BUSY_SECONDS})"])
    canary = new_canary(21)

    with browser_session(lab, notebook_path.name, tmp_path) as session:
        prompt = session.prompt(0)
        field = prompt.locator(PASSWORD_INPUT)
        session.run_cell(1, wait=False)
        session.kernel_status("Busy").wait_for()
        field.click()
        field.press_sequentially(canary, delay=10)
        field.press("Enter")
        session.save_notebook(notebook_path, has_widget_state)
        still_busy = session.kernel_status("Busy").count() == 1
        saved_while_busy = notebook_path.read_bytes()
        checkpoint_while_busy = checkpoint_of(notebook_path).read_bytes()
        assert still_busy, "the kernel was idle again before the save; raise BUSY_SECONDS"
        # The kernel catches up: the value is stored and the field blanked.
        session.kernel_status("Idle").wait_for(timeout=STEP_TIMEOUT_MS + BUSY_SECONDS * 1000)
        prompt.get_by_text(f"saved {KEY} · {len(canary)} characters").wait_for()
        session.wait_blank(field, "the field to be blanked once the kernel was idle")

    lab.stop_kernels()
    stored = SecureStorage(backend="vault", config=fast_kdf_config()).read(KEY)
    assert same(stored, canary), "the vault does not hold the value typed"
    leaks = {
        "the notebook": leaked_forms(saved_while_busy, canary),
        "its checkpoint": leaked_forms(checkpoint_while_busy, canary),
    }
    found = [f"{place} as {form_names(forms)}" for place, forms in leaks.items() if forms]
    if found:
        raise KnownLeak("saved while the kernel was busy, the canary is in " + "; ".join(found))
