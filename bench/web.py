"""Web companion benchmark: reads answered by the page in Chromium, beside the reference device.

What is measured, in one run: the read round trip of
``SecureStorage(backend="device").read`` -- the real synchronous host path, a new Noise
session per request -- answered by

- **the web companion** (web/, served by the relay at ``/device/``) in Debian's Chromium,
  driven by Playwright, with a CDP virtual authenticator holding its passkey (PRF). The
  key was approved once with *Approve this key for 15 minutes*, so the reads need no click
  and no new assertion: the page answers from IndexedDB with the value key it kept for
  that time. This is the "approval remembered" path.
- **the reference device** (``ReferenceDevice(AutoApprover)``, a vault of its own, serving
  in a subprocess: ``bench/bridge.py --serve-device``), the baseline.

Both are paired with the same host through the same relay on loopback
(``python -m jupyter_secure_storage.bridge.relay --host localhost``: the page needs a
``localhost`` origin for WebAuthn), hold the same random value, and are read ``--reads``
times (default 200) in interleaved rounds, alternating which goes first, so drift on the
machine hits both. p50 and p99 of each; the page's goals are those of the bridge
(p50 <= 15 ms, p99 <= 50 ms). Every read is checked against the value; nothing secret is
printed. No request leaves loopback (Chromium resolves no other name).

Run it with::

    .venv/bin/python bench/web.py            # about a minute
    .venv/bin/python bench/web.py --quick    # a smoke test; its figures mean nothing

Needs /usr/bin/chromium, playwright and the built page (npm ci && npm run build in web/).
The table is printed as markdown and written to ``bench/results/web.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import re
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bridge as bench  # bench/bridge.py: rows, helpers, the relay and the reference device

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "web.json"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost",
]
KEY = "BENCH_WEB_TOKEN"
STEP_MS = 30_000


@dataclass(frozen=True)
class Counts:
    reads: int = 200
    rounds: int = 10
    warmup: int = 10


QUICK = Counts(reads=20, rounds=2, warmup=2)


def device_store(name: str) -> Any:
    from jupyter_secure_storage.storage import SecureStorage

    config = bench.fast_kdf_config()
    config.DeviceBackend.device = name
    config.DeviceBackend.timeout = 30.0
    return SecureStorage(backend="device", namespace="default", config=config)


class WebPhone:
    """Chromium on the page, a virtual authenticator, requests limited to loopback."""

    def __init__(self, profile: Path) -> None:
        from playwright.sync_api import sync_playwright

        self.playwright = sync_playwright().start()
        self.context = self.playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_FLAGS,
        )
        self.context.set_default_timeout(STEP_MS)
        self.off_loopback: list[str] = []
        self.context.route("**/*", self._loopback_only)
        self.page = self.context.pages[0] if self.context.pages else self.context.new_page()
        cdp = self.context.new_cdp_session(self.page)
        cdp.send("WebAuthn.enable", {"enableUI": False})
        options = {
            "protocol": "ctap2",
            "ctap2Version": "ctap2_1",
            "transport": "internal",
            "hasResidentKey": True,
            "hasUserVerification": True,
            "isUserVerified": True,
            "hasPrf": True,
            "automaticPresenceSimulation": True,
        }
        cdp.send("WebAuthn.addVirtualAuthenticator", {"options": options})

    def _loopback_only(self, route: Any) -> None:
        host = urllib.parse.urlsplit(route.request.url).hostname or ""
        if host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            self.off_loopback.append(host)
            route.abort()

    def wait_host(self, call: Callable[[], Any], timeout: float = 60) -> Any:
        """Run a host call in a thread while Playwright keeps serving the page."""
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            future = pool.submit(call)
            deadline = time.monotonic() + timeout
            while not future.done():
                if time.monotonic() > deadline:
                    raise RuntimeError("the host call did not finish")
                self.page.wait_for_timeout(20)
            return future.result()

    def click(self, selector: str) -> None:
        self.page.locator(selector).click()

    def close(self) -> None:
        self.context.close()
        self.playwright.stop()


def pair_page(phone: WebPhone, relay_url: str) -> str:
    """Pair the page with the host (codes compared); the device's name on the host."""
    from jupyter_secure_storage.bridge.host import PairingAttempt
    from jupyter_secure_storage.bridge.qr import run_pairing_step

    attempt = PairingAttempt(relay_url, "bench host")
    phone.page.goto(attempt.offer.companion_link())
    phone.click("#create-passkey")
    phone.page.locator("#status").filter(has_text=re.compile("^Unlocked")).wait_for()

    def host_side() -> Any:
        pending = run_pairing_step(attempt.wait_for_device(60), 60)
        return pending, run_pairing_step(attempt.finish(True), 15)

    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(host_side)
        phone.click("#pair")
        while not future.done():
            phone.page.wait_for_timeout(20)
        pending, record = future.result()
    if phone.page.locator("#code").inner_text() != pending.code or record is None:
        raise RuntimeError("pairing the page failed (codes differ or nothing stored)")
    phone.page.locator("#pair-status").filter(has_text=re.compile("^Paired")).wait_for()
    return str(record.name)


def approve(phone: WebPhone, op: str, button: str) -> None:
    phone.page.locator(f'#requests .request[data-op="{op}"][data-key="{KEY}"] .{button}').click()


def time_reads(stores: dict[str, Any], value: str, counts: Counts) -> dict[str, list[int]]:
    per_round = max(1, counts.reads // counts.rounds)
    clock = time.perf_counter_ns
    times: dict[str, list[int]] = {name: [] for name in stores}

    def one_round(name: str) -> None:
        store, found = stores[name], []
        for _ in range(per_round):
            start = clock()
            secret = store.read(KEY)
            times[name].append(clock() - start)
            found.append(secret)
        if any(s is None or s.reveal() != value for s in found):
            raise RuntimeError(f"a read through {name} did not return the stored value")

    gc.collect()
    order = list(stores)
    for number in range(counts.rounds):
        for name in order if number % 2 == 0 else reversed(order):
            one_round(name)
    return times


def rows_for(times: dict[str, list[int]]) -> list[bench.Row]:
    rows = []
    web, reference = times["web companion"], times["reference device"]
    for name, fraction, goal in (
        ("p50", 0.50, bench.P50_GOAL_NS),
        ("p99", 0.99, bench.P99_GOAL_NS),
    ):
        value = bench.percentile(web, fraction)
        rows.append(
            bench.Row(
                f"read round trip {name}, web companion in Chromium, approval remembered "
                f"(n={len(web):,})",
                f"reference device {name}",
                value,
                bench.percentile(reference, fraction),
                f"<= {bench.format_ns(goal)}",
                value <= goal,
                samples=len(web),
            )
        )
    return rows


def run(counts: Counts, scratch: Path) -> tuple[list[bench.Row], dict[str, Any]]:
    bench.configure_host(scratch)
    env = dict(os.environ)
    relay, url = bench.start_relay(scratch, env, "--host", "localhost")
    notes: dict[str, Any] = {"relay": url}
    with bench.running(relay):
        # The baseline: the reference device, paired here, served by a subprocess.
        device_dir = scratch / "reference-device"
        _, record = asyncio.run(
            bench.pair(url, bench.new_device(device_dir, "reference device"), "bench host")
        )
        device = bench.Process(
            "the reference device",
            [sys.executable, bench.__file__, "--serve-device", str(device_dir)],
            scratch / "device.log",
            env,
        )
        device.start("serving")
        phone = WebPhone(scratch / "chromium-profile")
        try:
            with bench.running(device):
                value = bench.random_value()
                reference = device_store(record.name)
                reference.write(KEY, value)
                print(f"relay at {url}; pairing the web companion ...", flush=True)
                web = device_store(pair_page(phone, url))
                # The one write and the first read are approved in the page; the read "for
                # 15 minutes", which the timed reads then rely on.
                import concurrent.futures

                with concurrent.futures.ThreadPoolExecutor(1) as pool:
                    written = pool.submit(web.write, KEY, value)
                    approve(phone, "write", "approve-once")
                    phone.wait_host(written.result)
                    first = pool.submit(web.read, KEY)
                    approve(phone, "read", "approve-minutes")
                    if phone.wait_host(first.result).reveal() != value:
                        raise RuntimeError("the page returned another value")
                stores = {"web companion": web, "reference device": reference}
                for _ in range(counts.warmup):
                    for store in stores.values():
                        store.read(KEY)
                print(f"{counts.reads} reads from each, interleaved ...", flush=True)
                load = bench.ForeignLoad([os.getpid(), relay.pid, device.pid])
                times = time_reads(stores, value, counts)
                notes["foreign_cpu"] = load.fraction()
                notes["pending_questions_after"] = phone.page.locator("#requests .request").count()
        finally:
            notes["off_loopback"] = sorted(set(phone.off_loopback))
            phone.close()
    if notes["off_loopback"]:
        raise RuntimeError(f"the page made requests off loopback: {notes['off_loopback']}")
    if notes["pending_questions_after"]:
        raise RuntimeError("a timed read asked the owner: the approval was not remembered")
    return rows_for(times), {**notes, "times_ns": times}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="few iterations (a smoke test)")
    parser.add_argument("--reads", type=int, default=None, help="reads from each (default 200)")
    parser.add_argument("--output", type=Path, default=RESULTS_FILE, help="the JSON file")
    args = parser.parse_args(argv)
    counts = QUICK if args.quick else Counts()
    if args.reads:
        counts = Counts(reads=args.reads, rounds=counts.rounds, warmup=counts.warmup)
    if not os.access(CHROMIUM, os.X_OK):
        print(f"cannot run: {CHROMIUM} is missing (Debian: apt-get install chromium)")
        return 1
    from jupyter_secure_storage.bridge.relay import WEB_STATIC

    if not (WEB_STATIC / "index.html").exists():
        print("cannot run: the web companion is not built (npm ci && npm run build in web/)")
        return 1
    with tempfile.TemporaryDirectory(prefix="jss-bench-web-") as temporary:
        rows, notes = run(counts, Path(temporary))
    print()
    print(
        f"Python {platform.python_version()} on {platform.platform()}, {os.cpu_count()} CPUs"
        + ("; QUICK run" if args.quick else "")
    )
    print()
    print(bench.markdown_table(rows))
    print(f"\nother processes' share of the CPUs while timing reads: {notes['foreign_cpu']:.1%}")
    if notes["foreign_cpu"] > bench.BUSY_WARNING:
        print("WARNING: the machine was busy while reads were timed; the figures are noisy.")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "quick": args.quick,
        "counts": {"reads": counts.reads, "rounds": counts.rounds, "warmup": counts.warmup},
        "notes": notes,
        "rows": [row.to_json() for row in rows],
    }
    args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
