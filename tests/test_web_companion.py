"""The web companion (web/, served at /device/) as a phone: Debian's Chromium, a passkey.

A real relay runs on loopback and serves the built page. The Python host makes a pairing
offer; Chromium, driven by Playwright, opens the offer's web link (the offer in the URL
fragment) on ``http://localhost`` -- a secure context, so WebAuthn works -- with a CDP
virtual authenticator (CTAP2, internal transport, resident keys, user verification, PRF)
standing in for the phone's platform keystore. The page creates a passkey, pairs, shows
the confirmation code (compared with the host's), and answers ``backend="device"``: the
test clicks Approve once, Approve this key for N minutes, or Reject in the page.

Then what the issue asks for: writes, lists, reads and deletes arrive; Reject is the host's
typed "rejected on the device" error; a closed page is the offline error; a reload keeps
the values and needs the passkey again; another passkey cannot open them; IndexedDB and
the profile's files hold no form of a value; and a relay that tampers with, replays or
delays requests gets nothing from the page. No request leaves loopback.

Needs /usr/bin/chromium, playwright and the built page (``npm ci && npm run build`` in
web/; scripts/test.sh does it); without them the tests skip, or fail under
JSS_REQUIRE_BROWSER=1. Values are compared, never printed (pytest runs --assert=plain).
"""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import os
import re
import secrets
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
from adversarial_relay import AdversarialRelay, Posted
from conftest import REPO, fast_kdf_config
from test_bridge_e2e import DEVICE_PASSPHRASE, RelayProcess
from test_browser import CHROMIUM, require_browser
from test_browser import CHROMIUM_FLAGS as BROWSER_FLAGS
from test_kernel_leaks import leaked_forms

from jupyter_secure_storage import SecureStorage
from jupyter_secure_storage.bridge import protocol
from jupyter_secure_storage.bridge.host import (
    BridgeLoop,
    DeviceClient,
    HostKeystore,
    PairingAttempt,
)
from jupyter_secure_storage.bridge.qr import run_pairing_step
from jupyter_secure_storage.bridge.relay import WEB_STATIC, companion_handlers
from jupyter_secure_storage.errors import DeviceDeniedError, DeviceOfflineError
from jupyter_secure_storage.testing import same

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, CDPSession, Locator, Page

pytestmark = pytest.mark.browser

# test_browser.py's flags, but localhost resolves too: WebAuthn refuses IP-address origins.
CHROMIUM_FLAGS = [
    *(flag for flag in BROWSER_FLAGS if not flag.startswith("--host-resolver-rules=")),
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost",
]
LOOPBACK = ("127.0.0.1", "localhost")
SCREENSHOTS = REPO / "docs" / "img"
STEP_MS = 30_000
HOST_LABEL = "alice @ laptop"
T = TypeVar("T")


@pytest.fixture
def chromium() -> Path:
    if not os.access(CHROMIUM, os.X_OK):
        require_browser(f"{CHROMIUM} is missing; install Debian's chromium")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        require_browser("playwright is not installed (pip install playwright)")
    if not (WEB_STATIC / "index.html").exists():
        require_browser(
            f"the web companion is not built ({WEB_STATIC}); npm ci && npm run build in web/"
        )
    return CHROMIUM


def localhost(url: str) -> str:
    """The same relay URL with ``localhost`` for ``127.0.0.1``: the page's origin must be a
    domain for WebAuthn, and a loopback host keeps it a secure context without TLS."""
    return url.replace("://127.0.0.1:", "://localhost:")


@pytest.fixture
def host_env(vault_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_SECURE_STORAGE_DEVICE_PASSPHRASE", DEVICE_PASSPHRASE)
    monkeypatch.setenv("JUPYTER_SECURE_STORAGE_BACKEND", "vault")  # the host's pairing record


@pytest.fixture(scope="module")
def relay() -> Iterator[RelayProcess]:
    process = RelayProcess().start()
    yield process
    process.stop()


def device_store(timeout: float = 20) -> SecureStorage:
    config = fast_kdf_config()
    config.DeviceBackend.timeout = timeout
    return SecureStorage(backend="device", config=config)


# --- the phone: a page, a virtual authenticator, and the host's calls beside it -------------------


@dataclass
class Phone:
    context: BrowserContext
    page: Page
    profile: Path
    off_loopback: list[str]
    pool: concurrent.futures.ThreadPoolExecutor
    cdp: CDPSession | None = None
    authenticator: str = ""
    shots: Path = field(default_factory=Path)

    # --- the passkey's home ----------------------------------------------------------------------

    def add_authenticator(self) -> str:
        self.cdp = self.context.new_cdp_session(self.page)
        self.cdp.send("WebAuthn.enable", {"enableUI": False})
        answer = self.cdp.send(
            "WebAuthn.addVirtualAuthenticator",
            {
                "options": {
                    "protocol": "ctap2",
                    "ctap2Version": "ctap2_1",
                    "transport": "internal",
                    "hasResidentKey": True,
                    "hasUserVerification": True,
                    "isUserVerified": True,
                    "hasPrf": True,
                    "automaticPresenceSimulation": True,
                }
            },
        )
        self.authenticator = str(answer["authenticatorId"])
        return self.authenticator

    def credentials(self) -> list[dict[str, Any]]:
        assert self.cdp is not None
        answer = self.cdp.send("WebAuthn.getCredentials", {"authenticatorId": self.authenticator})
        return list(answer["credentials"])

    # --- waiting without blocking Playwright ------------------------------------------------------

    def settle(self, ms: int = 50) -> None:
        self.page.wait_for_timeout(ms)

    def host(self, call: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run a host call in a thread: it blocks until the page answers, which may need a click."""
        return self.pool.submit(call)

    def result(self, future: concurrent.futures.Future[T], timeout: float = 60) -> T:
        deadline = time.monotonic() + timeout
        while not future.done():
            assert time.monotonic() < deadline, "the host call did not finish"
            self.settle()
        return future.result()

    # --- the page ---------------------------------------------------------------------------------

    def text(self, selector: str) -> str:
        return self.page.locator(selector).inner_text()

    def wait_text(self, selector: str, pattern: str) -> None:
        self.page.locator(selector).filter(has_text=re.compile(pattern)).wait_for(timeout=STEP_MS)

    def create_passkey(self) -> None:
        self.page.locator("#create-passkey").click()
        self.wait_text("#status", "^Unlocked")

    def unlock(self) -> None:
        self.page.locator("#unlock").click()
        self.wait_text("#status", "^Unlocked")

    def request(self, op: str, key: str) -> Locator:
        card = self.page.locator(f'#requests .request[data-op="{op}"][data-key="{key}"]')
        card.wait_for(timeout=STEP_MS)
        return card

    def answer(self, op: str, key: str, button: str, *, shot: str | None = None) -> None:
        card = self.request(op, key)
        if shot:
            self.page.screenshot(path=self.shots / shot)
        card.locator(f".{button}").click()

    def pending_requests(self) -> int:
        return self.page.locator("#requests .request").count()

    def indexeddb_dump(self) -> bytes:
        """Every record of the page's IndexedDB, as the test sees it (bytes as base64)."""
        dumped: str = self.page.evaluate(
            """async () => {
              const db = await new Promise((ok, fail) => {
                const r = indexedDB.open("jss-web-companion");
                r.onsuccess = () => ok(r.result); r.onerror = () => fail(r.error);
              });
              const out = {};
              for (const name of db.objectStoreNames) {
                const t = db.transaction(name, "readonly").objectStore(name);
                const [keys, values] = await Promise.all([t.getAllKeys(), t.getAll()].map(
                  (r) => new Promise((ok, fail) => {
                    r.onsuccess = () => ok(r.result); r.onerror = () => fail(r.error);
                  })));
                out[name] = keys.map((k, i) => [k, values[i]]);
              }
              db.close();
              const b64 = (u8) => btoa(String.fromCharCode(...u8));
              return JSON.stringify(out, (k, v) => v instanceof Uint8Array ? {bytes: b64(v)} : v);
            }"""
        )
        return dumped.encode()

    def ciphertexts(self) -> list[bytes]:
        """The decoded bytes of every stored ciphertext (plain text hides nothing in base64)."""
        blobs = re.findall(rb'"bytes":"([A-Za-z0-9+/=]*)"', self.indexeddb_dump())
        return [base64.b64decode(blob) for blob in blobs]


@contextlib.contextmanager
def phone(chromium: Path, tmp_path: Path, name: str = "phone") -> Iterator[Phone]:
    from playwright.sync_api import Route, sync_playwright

    profile = tmp_path / f"{name}-profile"
    with sync_playwright() as playwright, concurrent.futures.ThreadPoolExecutor(2) as pool:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(chromium),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 390, "height": 780},
            device_scale_factor=2,
        )
        context.set_default_timeout(STEP_MS)
        off_loopback: list[str] = []

        def loopback_only(route: Route) -> None:
            host = urllib.parse.urlsplit(route.request.url).hostname or ""
            if host in LOOPBACK:
                route.continue_()
            else:
                off_loopback.append(host)
                route.abort()

        context.route("**/*", loopback_only)
        page = context.pages[0] if context.pages else context.new_page()
        shots = SCREENSHOTS if os.environ.get("JSS_UPDATE_SCREENSHOTS") == "1" else tmp_path
        shots.mkdir(parents=True, exist_ok=True)
        device = Phone(context, page, profile, off_loopback, pool, shots=shots)
        device.add_authenticator()
        try:
            yield device
        except BaseException:
            with contextlib.suppress(Exception):
                page.screenshot(path=tmp_path / "failure.png", full_page=True)
                print(f"debug screenshot: {tmp_path / 'failure.png'}")
            raise
        finally:
            context.close()
        assert off_loopback == [], f"requests off loopback: {sorted(set(off_loopback))}"


def pair(
    device: Phone,
    relay_url: str,
    *,
    shot: str | None = None,
    welcome: str | None = None,
    paste: bool = False,
) -> str:
    """Open the offer's web link (or the bare page, and paste the offer's URI), create the
    passkey, pair; the codes must match. The device's name on the host."""
    attempt = PairingAttempt(localhost(relay_url), HOST_LABEL)
    link = attempt.offer.companion_link()
    assert link.startswith("http://localhost:")
    assert "/device/#" in link
    device.page.goto(link.split("#")[0] if paste else link)
    assert "#" not in device.page.url, "the offer stayed in the address bar"
    if welcome:
        device.page.locator("#create-passkey").wait_for()
        device.page.screenshot(path=device.shots / welcome)
    device.create_passkey()
    if paste:
        assert device.page.locator("#pairing").is_hidden()
        device.page.locator("#paste-offer").fill("not an offer")
        device.page.locator("#paste-pair").click()
        device.wait_text("#paste-error", "not a pairing offer")
        device.page.locator("#paste-offer").fill(attempt.offer.uri)
        device.page.locator("#paste-pair").click()
        assert device.page.locator("#paste-offer").input_value() == ""
    assert device.text("#offer-label") == HOST_LABEL
    waiting = device.host(lambda: run_pairing_step(attempt.wait_for_device(60), 60))
    device.page.locator("#pair").click()
    device.page.locator("#code").filter(has_text=re.compile(r"^\d{3} \d{3}$")).wait_for()
    pending = device.result(waiting)
    assert device.text("#code") == pending.code, "the page and the host show different codes"
    if shot:
        device.page.screenshot(path=device.shots / shot)
    record = device.result(device.host(lambda: run_pairing_step(attempt.finish(True), 15)))
    assert record is not None
    device.wait_text("#pair-status", "^Paired with")
    device.page.locator(f'#pairing-list li[data-pairing="{record.pairing}"]').wait_for()
    return record.name


def write(device: Phone, key: str, value: str, *, shot: str | None = None) -> None:
    done = device.host(lambda: device_store().write(key, value))
    device.answer("write", key, "approve-once", shot=shot)
    device.result(done)


def profile_bytes(path: Path) -> bytes:
    """A profile file's bytes; nothing if Chromium removed it meanwhile (journals, locks)."""
    try:
        return path.read_bytes()
    except OSError:
        return b""


def value_canary() -> str:
    return "jss-web-" + secrets.token_urlsafe(24)


# --- the main path --------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_pair_then_write_list_read_delete_with_approvals(
    chromium: Path, relay: RelayProcess, host_env: None, tmp_path: Path
) -> None:
    value = value_canary()
    with phone(chromium, tmp_path) as device:
        name = pair(device, relay.url, shot="web-pairing.png", welcome="web-passkey.png")
        assert [r.name for r in HostKeystore().devices()] == [name]
        assert name == "web-companion"

        write(device, "OPENAI_API_KEY", value, shot="web-approve-write.png")
        device.page.locator('#key-list li[data-key="OPENAI_API_KEY"]').wait_for()
        assert device_store().keys() == ["OPENAI_API_KEY"]  # list asks nobody
        assert device.pending_requests() == 0

        read = device.host(lambda: device_store().read("OPENAI_API_KEY"))
        device.answer("read", "OPENAI_API_KEY", "approve-once", shot="web-approve-read.png")
        assert same(device.result(read), value), "the read did not return the value written"

        # Approve this key for some minutes: the next reads need no click.
        read = device.host(lambda: device_store().read("OPENAI_API_KEY"))
        device.answer("read", "OPENAI_API_KEY", "approve-minutes")
        assert same(device.result(read), value)
        for _ in range(3):
            again = device.host(lambda: device_store().read("OPENAI_API_KEY"))
            assert same(device.result(again, 20), value)
            assert device.pending_requests() == 0
        assert device_store().read("MISSING") is None  # a missing key: no question either

        deleted = device.host(lambda: device_store().delete("OPENAI_API_KEY"))
        device.answer("delete", "OPENAI_API_KEY", "approve-once")
        device.result(deleted)
        assert device_store().keys() == []
        assert device.page.locator("#key-list li").count() == 0
        assert not any(leaked_forms(blob, value) for blob in [device.indexeddb_dump()])


@pytest.mark.timeout(300)
def test_reject_is_the_typed_rejected_on_the_device_error(
    chromium: Path, relay: RelayProcess, host_env: None, tmp_path: Path
) -> None:
    with phone(chromium, tmp_path) as device:
        pair(device, relay.url)
        write(device, "TOKEN", value_canary())
        read = device.host(lambda: device_store().read("TOKEN"))
        device.answer("read", "TOKEN", "reject")
        with pytest.raises(DeviceDeniedError) as raised:
            device.result(read)
        assert "rejected on the device" in raised.value.cause
        assert "Approve the request on the device" in raised.value.remedy
        refused = device.host(lambda: device_store().write("OTHER", "x"))
        device.answer("write", "OTHER", "reject")
        with pytest.raises(DeviceDeniedError):
            device.result(refused)
        assert device_store().keys() == ["TOKEN"]


@pytest.mark.timeout(300)
def test_a_closed_page_is_the_offline_error(
    chromium: Path, relay: RelayProcess, host_env: None, tmp_path: Path
) -> None:
    with phone(chromium, tmp_path) as device:
        pair(device, relay.url)
        device.page.close()
        started = time.monotonic()
        with pytest.raises(DeviceOfflineError) as raised:
            device_store(timeout=3).read("ANY")
        assert time.monotonic() - started < 15
        assert "did not answer" in raised.value.cause


@pytest.mark.timeout(300)
def test_reload_keeps_values_encrypted_and_needs_the_passkey_again(
    chromium: Path, relay: RelayProcess, host_env: None, tmp_path: Path
) -> None:
    value = value_canary()
    with phone(chromium, tmp_path) as device:
        pair(device, relay.url)
        write(device, "KEPT", value)
        device.page.reload()
        device.page.locator("#unlock").wait_for()
        assert device.page.locator("#create-passkey").is_hidden()
        assert device.page.locator("#key-list li").count() == 0  # locked: not even names
        with pytest.raises(DeviceOfflineError):
            device_store(timeout=2).read("KEPT")  # a locked page serves nobody
        device.unlock()
        read = device.host(lambda: device_store().read("KEPT"))
        device.answer("read", "KEPT", "approve-once")
        assert same(device.result(read), value), "the value did not survive the reload"

        # What the browser keeps: ciphertext only, in IndexedDB and in the profile's files.
        dump = device.indexeddb_dump()
        assert b'"values"' in dump, "no values stored?"
        assert b'"state"' in dump, "no state stored?"
        assert leaked_forms(dump, value) == [], "a form of the value is in IndexedDB"
        assert b"KEPT" not in dump, "a key name is in IndexedDB"
        for blob in device.ciphertexts():
            assert leaked_forms(blob, value) == []
        files = [p for p in device.profile.rglob("*") if p.is_file()]
        assert files
        leaks = [
            str(p.relative_to(device.profile))
            for p in files
            if leaked_forms(profile_bytes(p), value)
        ]
        assert leaks == [], f"a form of the value is in the profile: {leaks}"


# In the page: create a passkey (with PRF) on the current authenticator and make the
# stored passkey record name it.
OTHER_PASSKEY = """async () => {
  const created = await navigator.credentials.create({publicKey: {
    rp: {name: "someone else"},
    user: {id: crypto.getRandomValues(new Uint8Array(16)), name: "other", displayName: "other"},
    challenge: crypto.getRandomValues(new Uint8Array(32)),
    pubKeyCredParams: [{type: "public-key", alg: -7}],
    authenticatorSelection: {residentKey: "required", userVerification: "required"},
    extensions: {prf: {}},
  }});
  const id = btoa(String.fromCharCode(...new Uint8Array(created.rawId)))
    .replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
  const db = await new Promise((ok, fail) => {
    const r = indexedDB.open("jss-web-companion");
    r.onsuccess = () => ok(r.result); r.onerror = () => fail(r.error);
  });
  const store = db.transaction("meta", "readwrite").objectStore("meta");
  const meta = await new Promise((ok) => {
    const r = store.get("passkey"); r.onsuccess = () => ok(r.result);
  });
  meta.credentialId = id;
  await new Promise((ok) => { const r = store.put(meta, "passkey"); r.onsuccess = ok; });
  db.close();
}"""


@pytest.mark.timeout(300)
def test_another_passkey_cannot_open_the_values(
    chromium: Path, relay: RelayProcess, host_env: None, tmp_path: Path
) -> None:
    with phone(chromium, tmp_path) as device:
        pair(device, relay.url)
        write(device, "MINE", value_canary())
        assert len(device.credentials()) == 1
        assert device.cdp is not None
        device.cdp.send(
            "WebAuthn.removeVirtualAuthenticator", {"authenticatorId": device.authenticator}
        )
        # Another authenticator holding another passkey for this site (with PRF), and the
        # page's record pointed at it: what someone with a copy of the browser's data and
        # a passkey of their own would try.
        device.add_authenticator()
        device.page.evaluate(OTHER_PASSKEY)
        assert len(device.credentials()) == 1
        before = device.indexeddb_dump()
        device.page.reload()
        device.page.locator("#unlock").click()
        device.wait_text("#lock-error", "cannot open the secrets")
        assert "Nothing was deleted" in device.text("#lock-error")
        assert device.page.locator("#key-list li").count() == 0
        assert device.indexeddb_dump() == before, "a failed unlock changed the stored data"


@pytest.mark.timeout(300)
def test_delete_on_the_phone_forget_this_computer_and_unpair_from_the_host(
    chromium: Path, relay: RelayProcess, host_env: None, tmp_path: Path
) -> None:
    with phone(chromium, tmp_path) as device:
        pair(device, relay.url)
        write(device, "LOCAL", value_canary())
        write(device, "OTHER", value_canary())
        # Delete on the phone: two taps, no computer involved.
        delete = device.page.locator('#key-list li[data-key="LOCAL"] .delete-key')
        delete.click()
        delete.click()
        device.page.locator('#key-list li[data-key="LOCAL"]').wait_for(state="detached")
        assert device_store().keys() == ["OTHER"]

        # Forget this computer: its next request is refused as unknown, also after a reload.
        device.page.locator("#pairing-list .forget").click()
        device.page.locator("#pairing-list li").wait_for(state="detached")
        with pytest.raises(DeviceDeniedError) as raised:
            device.result(device.host(lambda: device_store(timeout=10).read("OTHER")))
        assert "does not recognise this computer" in raised.value.cause
        device.page.reload()
        device.unlock()
        with pytest.raises(DeviceDeniedError):
            device.result(device.host(lambda: device_store(timeout=10).keys()))

    # Unpair from the host: the phone asks, then both sides forget.
    with phone(chromium, tmp_path, "second-phone") as device:
        HostKeystore().forget(HostKeystore().device().name)
        pair(device, relay.url, paste=True)  # as from a page opened on the home screen
        from jupyter_secure_storage.bridge.backend import DeviceBackend

        unpairing = device.host(lambda: DeviceBackend(config=fast_kdf_config()).unpair())
        device.answer("unpair", "", "approve-once")
        device.result(unpairing)
        assert HostKeystore().devices() == []
        device.page.locator("#pairing-list li").wait_for(state="detached")


@pytest.mark.timeout(300)
def test_the_page_reconnects_after_a_relay_restart(
    chromium: Path, host_env: None, tmp_path: Path
) -> None:
    relay = RelayProcess().start()
    restarted: RelayProcess | None = None
    value = value_canary()
    try:
        with phone(chromium, tmp_path) as device:
            pair(device, relay.url)
            write(device, "SURVIVES", value)
            relay.stop()
            device.settle(500)
            restarted = RelayProcess(port=relay.port).start()  # same address, empty memory
            deadline = time.monotonic() + 30
            while device.page.locator("#log li", has_text="Connected to").count() < 2:
                assert time.monotonic() < deadline, "the page did not reconnect"
                device.settle(200)
            read = device.host(lambda: device_store().read("SURVIVES"))
            device.answer("read", "SURVIVES", "approve-once")
            assert same(device.result(read), value)
    finally:
        relay.stop()
        if restarted is not None:
            restarted.stop()


@pytest.mark.timeout(120)
def test_on_an_ip_address_the_page_explains_instead_of_failing(
    chromium: Path, relay: RelayProcess, tmp_path: Path
) -> None:
    with phone(chromium, tmp_path) as device:
        page_url = protocol.companion_url(relay.url)
        assert page_url.startswith("http://127.0.0.1:")
        device.page.goto(page_url)
        device.wait_text("#status", "Passkeys do not work on an IP address")
        assert device.page.locator("#create-passkey").is_hidden()


@pytest.mark.timeout(300)
def test_a_pairing_refused_on_the_computer_stores_nothing(
    chromium: Path, relay: RelayProcess, host_env: None, tmp_path: Path
) -> None:
    with phone(chromium, tmp_path) as device:
        attempt = PairingAttempt(localhost(relay.url), HOST_LABEL)
        device.page.goto(attempt.offer.companion_link())
        device.create_passkey()
        waiting = device.host(lambda: run_pairing_step(attempt.wait_for_device(60), 60))
        device.page.locator("#pair").click()
        device.result(waiting)
        assert (
            device.result(device.host(lambda: run_pairing_step(attempt.finish(False), 15))) is None
        )
        device.wait_text("#pair-status", "rejected the pairing")
        assert device.page.locator("#pairing-list li").count() == 0
        assert HostKeystore().devices() == []


# --- a relay that cheats --------------------------------------------------------------------------


class ServingAdversary(AdversarialRelay):
    """The adversarial relay (tests/adversarial_relay.py) serving the page too."""

    def start(self) -> ServingAdversary:
        super().start()
        port = self.url.rsplit(":", 1)[1].split("/")[0]
        assert self._server is not None
        # tornado lets handlers be added to a running application's default host.
        self._server.request_callback.add_handlers(  # type: ignore[union-attr]
            ".*$", companion_handlers("/relay")
        )
        self.url = f"ws://127.0.0.1:{port}/relay"
        return self


@pytest.fixture
def adversary() -> Iterator[ServingAdversary]:
    relay = ServingAdversary().start()
    yield relay
    relay.stop()


def flip_first(kind: int, box: str) -> Callable[[Posted], list[tuple[str, bytes]]]:
    done: list[bool] = []

    def tamper(posted: Posted) -> list[tuple[str, bytes]]:
        if posted.kind == kind and posted.box == box and not done:
            done.append(True)
            changed = bytearray(posted.data)
            changed[-1] ^= 1
            return [(posted.box, bytes(changed))]
        return [(posted.box, posted.data)]

    return tamper


@pytest.mark.timeout(300)
def test_tampered_replayed_and_expired_requests_get_nothing_from_the_page(
    chromium: Path, adversary: ServingAdversary, host_env: None, tmp_path: Path
) -> None:
    value = value_canary()
    with phone(chromium, tmp_path) as device:
        pair(device, adversary.url)
        write(device, "GUARDED", value)
        record = HostKeystore().device()
        h2d_box = protocol.mailbox_id(protocol.unb64u(record.h2d, 32))

        # Tampered: one bit of the request changes; the page drops the session and asks nothing.
        adversary.store.tamper = flip_first(protocol.KIND_DATA, h2d_box)
        with pytest.raises(DeviceOfflineError):
            device.result(device.host(lambda: device_store(timeout=4).read("GUARDED")))
        assert device.pending_requests() == 0, "a tampered request reached the owner"
        adversary.reset()

        # A real read, recorded by the relay ...
        read = device.host(lambda: device_store().read("GUARDED"))
        device.answer("read", "GUARDED", "approve-once")
        assert same(device.result(read), value)
        recorded = [p for p in adversary.store.posts if p.box == h2d_box]
        assert [p.kind for p in recorded] == [
            protocol.KIND_OPEN,
            protocol.KIND_DATA,
            protocol.KIND_DATA,
        ]
        replies_before = sum(
            1 for p in adversary.store.posts if p.kind == protocol.KIND_DATA and p.box != h2d_box
        )
        # ... replayed: the open gets a fresh accept, the request does not decrypt under it.
        for posted in recorded:
            device.result(
                device.host(lambda p=posted: adversary.call(adversary.store.put(p.box, p.data)))
            )
        device.settle(1500)
        replies_after = sum(
            1 for p in adversary.store.posts if p.kind == protocol.KIND_DATA and p.box != h2d_box
        )
        assert replies_after == replies_before, "the page answered a replayed request"
        assert device.pending_requests() == 0, "a replayed request reached the owner"

        # A forged open with a low-order ephemeral key: no accept, only the unknown-host hint.
        d2h_box = protocol.mailbox_id(protocol.unb64u(record.d2h, 32))
        forged = protocol.encode_envelope(
            protocol.KIND_OPEN, secrets.token_bytes(16), bytes(32) + secrets.token_bytes(48)
        )
        posts_before = len(adversary.store.posts)
        device.result(device.host(lambda: adversary.call(adversary.store.put(h2d_box, forged))))
        deadline = time.monotonic() + 10
        while not any(p.box == d2h_box for p in adversary.store.posts[posts_before:]):
            assert time.monotonic() < deadline, "no unknown-host notice for a forged open"
            device.settle(100)
        answered = [p.kind for p in adversary.store.posts[posts_before:]]
        assert answered == [protocol.KIND_NOTICE], "a forged open got more than a notice"

        # Expired (or from the future): refused without asking; the same id gets the same answer.
        client = DeviceClient(record, HostKeystore().host_key())
        for issued in (int(time.time()) - 3600, int(time.time()) + 3600):
            old = protocol.new_request("read", key="GUARDED", now=issued)
            answer = device.result(
                device.host(lambda r=old: BridgeLoop.get().run(client.request(r, 15), 15))
            )
            assert answer["ok"] is False
            assert answer["error"] == "expired"
            assert device.pending_requests() == 0

        # A host retry (same id, new session) is answered from the cache, without a question;
        # the same id for another operation is refused.
        request = protocol.new_request("read", key="GUARDED")
        first = device.host(lambda: BridgeLoop.get().run(client.request(request, 20), 20))
        device.answer("read", "GUARDED", "approve-once")
        assert device.result(first)["value"] == value, "the read did not return the value"
        again = device.result(
            device.host(lambda: BridgeLoop.get().run(client.request(request, 20), 20))
        )
        assert again["value"] == value, "the retry did not get the same answer"
        assert device.pending_requests() == 0
        reused = protocol.new_request("delete", key="GUARDED", request_id=request.id)
        refused = device.result(
            device.host(lambda: BridgeLoop.get().run(client.request(reused, 20), 20))
        )
        assert refused["ok"] is False
        assert refused["error"] == "bad-request"
        assert device_store().keys() == ["GUARDED"]
