"""Bridge benchmarks: reads from a paired device over a loopback relay, against the bare relay.

What is measured, in one run (every timed row has a baseline from this same run):

1. Time to pair: ``PairingAttempt`` (the host, its vault) with ``ReferenceDevice.pair`` (a
   device with a vault of its own), from creating the offer until both sides have stored
   the pairing; median of ``--pairings``. Baseline: the bare relay traffic a pairing needs
   (two fresh connections each subscribing, then three one-way messages), no Noise, no
   vaults. Reported only.
2. Read round trip: ``SecureStorage(backend="device").read`` -- the real synchronous path:
   ``DeviceBackend`` -> ``BridgeLoop`` -> ``DeviceClient`` with a new Noise session per
   request -- answered by a ``ReferenceDevice(AutoApprover)`` serving in a subprocess of
   its own (a phone is another machine). p50 and p99 over 1,000 reads; goals <= 15 ms and
   <= 50 ms. Baseline: a raw relay round trip with ``relay_client`` -- post a message of a
   request's size to a mailbox and receive it on another connection subscribed to it (no
   Noise, no device) -- 1,000 times. The two are interleaved in rounds, alternating which
   goes first, so drift on the machine hits both.
3. The relay with 1,000 idle paired connections: a helper process opens 1,000 WebSockets
   to the relay, each subscribed to a mailbox of its own (what 1,000 paired devices
   waiting for requests look like). The relay's resident memory (VmRSS) before and after,
   and the read round trip (and its baseline) again with them open.
4. The same with the relay on Redis Streams (``--redis``) against a throwaway
   ``redis-server`` on a free loopback port (``--save "" --appendonly no`` in a temporary
   directory); skipped, with the reason printed, when ``redis-server`` is not installed.

Everything runs on loopback in a temporary directory: the host's vault (fast Argon2id
parameters, via a config file in a temporary Jupyter config directory), the device's
vault, the relay (``python -m jupyter_secure_storage.bridge.relay --port 0``, memory store)
and Redis. Values and passphrases are random and never printed. Per-operation times are
``time.perf_counter_ns`` readings.

Run it with::

    .venv/bin/python bench/bridge.py            # about two minutes
    .venv/bin/python bench/bridge.py --quick    # a smoke test; its figures mean nothing

The table is printed as markdown and the same rows are written to
``bench/results/bridge.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import resource
import secrets
import select
import shutil
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil
from common import format_bytes, format_ns, markdown_table, percentile

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "bridge.json"
REPO = Path(__file__).resolve().parent.parent

P50_GOAL_NS = 15_000_000
P99_GOAL_NS = 50_000_000
VALUE_LENGTH = 60
KEY = "BENCH_DEVICE_TOKEN"
REQUEST_ENVELOPE_BYTES = 293  # a read request's envelope: 21 + 256-byte bucket + 16-byte tag
DEVICE_PASSPHRASE_ENV = "JUPYTER_SECURE_STORAGE_DEVICE_PASSPHRASE"  # a variable name
BUSY_WARNING = 0.05
_ALPHABET = string.ascii_letters + string.digits + "-_"


@dataclass(frozen=True)
class Counts:
    reads: int = 1_000  # per read measurement (ours, and as many baseline round trips)
    rounds: int = 10  # interleaved rounds the reads are split into
    pairings: int = 10
    idle: int = 1_000  # idle connections held open
    warmup: int = 20


QUICK = Counts(reads=40, rounds=2, pairings=2, idle=50, warmup=3)


@dataclass
class Row:
    """One line of the table. ``unit``: "ns" (times) or "B" (memory)."""

    measurement: str
    baseline_name: str
    value: float | None
    baseline: float | None
    goal: str
    met: bool | None
    unit: str = "ns"
    samples: int = 0
    skipped: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    def format(self, amount: float | None) -> str:
        return format_bytes(amount) if self.unit == "B" else format_ns(amount)

    def cells(self) -> list[str]:
        if self.skipped:
            return [self.measurement, "skipped", "-", "-", self.goal, "skipped"]
        ratio = self.ratio
        met = "-" if self.met is None else ("yes" if self.met else "**NO**")
        return [
            self.measurement,
            self.format(self.value),
            f"{self.format(self.baseline)} ({self.baseline_name})",
            "-" if ratio is None else f"{ratio:.2f}x",
            self.goal,
            met,
        ]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        data["value_text"], data["baseline_text"] = self.cells()[1:3]
        return data


# --- helpers -----------------------------------------------------------------------------------


def random_value(length: int = VALUE_LENGTH) -> str:
    """A random test value (never printed)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def raise_open_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65_536
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def rss_bytes(pid: int) -> int:
    """VmRSS of a process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def read_line(process: subprocess.Popen[str], prefix: str, what: str, timeout: float) -> str:
    """The first stdout line of ``process`` starting with ``prefix`` (others are skipped)."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([process.stdout], [], [], max(0.0, remaining))
        line = process.stdout.readline() if ready else ""
        if line.startswith(prefix):
            return line.strip()
        if not line and (not ready or process.poll() is not None or remaining <= 0):
            raise RuntimeError(f"{what} did not start (no {prefix!r} line); see its log")


class ForeignLoad:
    """The share of the machine's CPUs used by processes other than ours while timing."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.processes = [psutil.Process(pid) for pid in pids]
        self.start = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        times = psutil.cpu_times()
        busy = times.user + times.system + getattr(times, "nice", 0.0)
        busy += getattr(times, "steal", 0.0)
        ours = 0.0
        for process in self.processes:
            with contextlib.suppress(psutil.Error):
                ours += sum(process.cpu_times()[:4])  # user, system, children's too
        return time.monotonic(), busy, ours

    def fraction(self) -> float:
        now, busy, ours = self._sample()
        elapsed = (now - self.start[0]) * (psutil.cpu_count() or 1)
        other = (busy - self.start[1]) - (ours - self.start[2])
        return max(0.0, other / elapsed) if elapsed > 0 else 0.0


# --- processes ---------------------------------------------------------------------------------


class Process:
    """A helper subprocess whose stdout announces readiness; stderr goes to a log file."""

    def __init__(
        self,
        name: str,
        command: list[str],
        log: Path,
        env: dict[str, str],
        *,
        ends_with_stdin: bool = True,
    ) -> None:
        self.name = name
        self.command = command
        self.log = log
        self.env = env
        self.ends_with_stdin = ends_with_stdin  # else SIGTERM ends it
        self.process: subprocess.Popen[str] | None = None

    def start(self, ready_prefix: str, timeout: float = 60) -> str:
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                self.command,
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.PIPE,
                text=True,
                cwd=REPO,
                env=self.env,
            )
        try:
            return read_line(self.process, ready_prefix, self.name, timeout)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        process = self.process
        if process is None:
            return
        self.process = None
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()  # the helpers end when their stdin closes
        if not self.ends_with_stdin and process.poll() is None:
            process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def start_relay(scratch: Path, env: dict[str, str], *args: str) -> tuple[Process, str]:
    command = [sys.executable, "-m", "jupyter_secure_storage.bridge.relay", "--port", "0"]
    command += ["--log-level", "WARNING", *args]
    relay = Process("the relay", command, scratch / "relay.log", env, ends_with_stdin=False)
    line = relay.start("relay listening on ws")
    return relay, line.split()[-1]


class RedisServer:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
                "--protected-mode", "yes",
                "--maxclients", "10000",
            ],
            stdout=(self.directory / "redis.log").open("ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1) as probe,
            ):
                probe.sendall(b"PING\r\n")
                if probe.recv(16).startswith(b"+PONG"):
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not start; see {self.directory / 'redis.log'}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


@contextlib.contextmanager
def running(process: Process) -> Iterator[Process]:
    try:
        yield process
    finally:
        process.stop()


# --- the helpers' own modes (run as subprocesses of this script) --------------------------------


def fast_kdf_config() -> Any:
    from traitlets.config import Config

    config = Config()
    config.VaultBackend.kdf_memory_kib = 1024
    config.VaultBackend.kdf_iterations = 1
    config.VaultBackend.kdf_lanes = 1
    return config


def wait_for_stdin_eof(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    def watch() -> None:
        sys.stdin.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch, daemon=True).start()


def serve_device(state_dir: Path) -> int:
    """``--serve-device DIR``: a ReferenceDevice(AutoApprover) answering until stdin closes."""
    from jupyter_secure_storage.bridge.device import AutoApprover, DeviceState, ReferenceDevice

    def say(*parts: object) -> None:
        print(*parts, file=sys.stderr, flush=True)

    device = ReferenceDevice(
        DeviceState(state_dir, fast_kdf_config()), AutoApprover(), name="bench device", say=say
    )

    async def serve() -> None:
        stop = asyncio.Event()
        wait_for_stdin_eof(asyncio.get_running_loop(), stop)
        await device.serve(stop, ready=lambda: print("serving", flush=True))

    asyncio.run(serve())
    return 0


def hold_connections(url: str, count: int) -> int:
    """``--hold-connections URL N``: N relay connections, each subscribed, until stdin closes."""
    from jupyter_secure_storage.bridge.relay_client import RelayConnection

    raise_open_file_limit()

    async def hold() -> None:
        stop = asyncio.Event()
        wait_for_stdin_eof(asyncio.get_running_loop(), stop)
        gate = asyncio.Semaphore(32)  # the relay's listen backlog is 128

        async def one() -> RelayConnection:
            async with gate:
                connection = RelayConnection(url)
                await connection.connect()
                await connection.subscribe(secrets.token_bytes(32))
                return connection

        connections = await asyncio.gather(*(one() for _ in range(count)))
        print(f"holding {len(connections)}", flush=True)
        await stop.wait()
        for connection in connections:
            await connection.close()

    asyncio.run(hold())
    return 0


# --- the host side ------------------------------------------------------------------------------


def configure_host(scratch: Path) -> None:
    """Host vault and Jupyter directories in ``scratch``; fast Argon2id via a config file."""
    config_dir = scratch / "jupyter-config"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "jupyter_secure_storage_config.json").write_text(
        json.dumps({"VaultBackend": {"kdf_memory_kib": 1024, "kdf_iterations": 1, "kdf_lanes": 1}})
    )
    for name in ("JUPYTER_SECURE_STORAGE_BACKEND", "PYTHON_KEYRING_BACKEND"):
        os.environ.pop(name, None)
    os.environ.update(
        {
            "JUPYTER_CONFIG_DIR": str(config_dir),
            "JUPYTER_DATA_DIR": str(scratch / "jupyter-data"),
            "JUPYTER_RUNTIME_DIR": str(scratch / "jupyter-runtime"),
            # The host keeps its key and pairings here (never the OS keystore in a benchmark).
            "JUPYTER_SECURE_STORAGE_BACKEND": "vault",
            "JUPYTER_SECURE_STORAGE_VAULT": str(scratch / "host" / "host.jssv"),
            "JUPYTER_SECURE_STORAGE_PASSPHRASE": secrets.token_urlsafe(24),
            DEVICE_PASSPHRASE_ENV: secrets.token_urlsafe(24),
        }
    )


async def pair(relay_url: str, device: Any, label: str) -> tuple[int, Any]:
    """One pairing, both sides in this loop; its duration in ns and the host's record."""
    from jupyter_secure_storage.bridge.host import PairingAttempt

    start = time.perf_counter_ns()
    attempt = PairingAttempt(relay_url, label)
    device_side = asyncio.create_task(device.pair(attempt.offer.uri, timeout=30))
    await attempt.wait_for_device(30)
    record = await attempt.finish(True)
    await device_side
    elapsed = time.perf_counter_ns() - start
    if record is None:
        raise RuntimeError("the pairing was not stored")
    return elapsed, record


def new_device(directory: Path, name: str) -> Any:
    from jupyter_secure_storage.bridge.device import AutoApprover, DeviceState, ReferenceDevice

    return ReferenceDevice(
        DeviceState(directory, fast_kdf_config()),
        AutoApprover(),
        name=name,
        say=lambda *_: None,
    )


async def raw_pairing_traffic(url: str) -> int:
    """What a pairing needs of the relay alone: two connections, two subs, three messages."""
    from jupyter_secure_storage.bridge.relay_client import RelayConnection

    start = time.perf_counter_ns()
    to_host, to_device = secrets.token_bytes(32), secrets.token_bytes(32)
    async with RelayConnection(url) as host, RelayConnection(url) as device:
        await host.subscribe(to_host)
        await device.subscribe(to_device)
        await device.post(to_host, os.urandom(373), ttl=600)  # pair-init's size
        await host.receive(to_host, 10)
        await host.post(to_device, os.urandom(325), ttl=600)  # pair-resp
        await device.receive(to_device, 10)
        await host.post(to_device, os.urandom(293), ttl=600)  # pair-final
        await device.receive(to_device, 10)
    return time.perf_counter_ns() - start


def bench_pairing(url: str, scratch: Path, counts: Counts, label: str) -> Row:
    from jupyter_secure_storage.bridge.host import HostKeystore

    device = new_device(scratch / "pairing-device", "pairing bench device")
    ours: list[int] = []
    bare: list[int] = []
    keystore = HostKeystore()
    for number in range(counts.pairings + 1):  # the first is a warm-up
        elapsed, record = asyncio.run(pair(url, device, f"bench host {number}"))
        bare_elapsed = asyncio.run(raw_pairing_traffic(url))
        keystore.forget(record.name)
        if number:
            ours.append(elapsed)
            bare.append(bare_elapsed)
    value, baseline = statistics.median(ours), statistics.median(bare)
    return Row(
        f"time to pair, {label} (PairingAttempt + ReferenceDevice.pair, both vaults; "
        f"median of {len(ours)})",
        "bare relay traffic of a pairing",
        value,
        baseline,
        "- (report)",
        None,
        samples=len(ours),
        extra={"ours_ns": ours, "baseline_ns": bare},
    )


class RawRoundTrip:
    """The baseline: post to a mailbox, receive it on another subscribed connection."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.cap = secrets.token_bytes(32)
        self.sender: Any = None
        self.receiver: Any = None

    async def open(self) -> None:
        from jupyter_secure_storage.bridge.relay_client import RelayConnection

        self.sender, self.receiver = RelayConnection(self.url), RelayConnection(self.url)
        await self.sender.connect()
        await self.receiver.connect()
        await self.receiver.subscribe(self.cap)

    async def times(self, count: int) -> list[int]:
        durations = []
        for _ in range(count):
            data = os.urandom(REQUEST_ENVELOPE_BYTES)
            start = time.perf_counter_ns()
            await self.sender.post(self.cap, data, ttl=60)
            delivery = await self.receiver.receive(self.cap, 10)
            durations.append(time.perf_counter_ns() - start)
            if delivery.data != data:
                raise RuntimeError("the relay delivered something else")
        return durations

    async def close(self) -> None:
        await self.sender.close()
        await self.receiver.close()


@dataclass
class ReadTimes:
    ours: list[int]
    baseline: list[int]


def time_reads(store: Any, raw: RawRoundTrip, expected: str, counts: Counts) -> ReadTimes:
    """``counts.reads`` bridge reads and raw round trips, interleaved in rounds."""
    from jupyter_secure_storage.bridge.host import BridgeLoop

    bridge_loop = BridgeLoop.get()
    per_round = max(1, counts.reads // counts.rounds)
    clock = time.perf_counter_ns
    ours: list[int] = []
    baseline: list[int] = []

    def our_round() -> None:
        found = []
        for _ in range(per_round):
            start = clock()
            secret = store.read(KEY)
            ours.append(clock() - start)
            found.append(secret)
        if any(s is None or s.reveal() != expected for s in found):
            raise RuntimeError("a read through the device did not return the stored value")

    def raw_round() -> None:
        baseline.extend(bridge_loop.run(raw.times(per_round), 120))

    gc.collect()
    for number in range(counts.rounds):
        first, second = (our_round, raw_round) if number % 2 == 0 else (raw_round, our_round)
        first()
        second()
    return ReadTimes(ours, baseline)


def read_rows(label: str, times: ReadTimes) -> list[Row]:
    rows = []
    for name, fraction, goal in (("p50", 0.50, P50_GOAL_NS), ("p99", 0.99, P99_GOAL_NS)):
        value = percentile(times.ours, fraction)
        rows.append(
            Row(
                f"read round trip {name}, {label} (n={len(times.ours):,})",
                f"raw relay post+receive {name}",
                value,
                percentile(times.baseline, fraction),
                f"<= {format_ns(goal)}",
                value <= goal,
                samples=len(times.ours),
            )
        )
    return rows


@dataclass
class Scenario:
    """One relay (memory or Redis) and everything measured against it."""

    label: str
    relay_args: tuple[str, ...]
    counts: Counts
    rows: list[Row] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    def pids(self, served: Served) -> list[int]:
        """Our processes (their CPU time is not "other processes'")."""
        redis = self.notes.get("redis_pid")
        return [os.getpid(), served.relay.pid, served.device.pid, *([redis] if redis else [])]


def rss_row(what: str, baseline_name: str, after: int, before: int, idle: int) -> Row:
    return Row(
        f"{what} (+{(after - before) / idle / 1024:.1f} KiB each)",
        baseline_name,
        after,
        before,
        "- (report)",
        None,
        unit="B",
    )


@dataclass
class Served:
    """A relay with a paired device serving, and the host's store reading from it."""

    url: str
    relay: Process
    device: Process
    store: Any
    value: str
    raw: RawRoundTrip


def idle_phase(scenario: Scenario, served: Served, scratch: Path, env: dict[str, str]) -> None:
    """Open the idle connections; the relay's (and Redis's) memory; reads with them open."""
    counts, label, relay = scenario.counts, scenario.label, served.relay
    before = rss_bytes(relay.pid)
    redis_pid = scenario.notes.get("redis_pid")
    redis_before = rss_bytes(redis_pid) if redis_pid else 0
    print(f"[{label}] opening {counts.idle:,} idle connections ...", flush=True)
    holder = Process(
        "the idle connections",
        [sys.executable, __file__, "--hold-connections", served.url, str(counts.idle)],
        scratch / "idle.log",
        env,
    )
    holder.start("holding", timeout=300)
    with running(holder):
        time.sleep(2.0)  # let the relay settle (follow tasks, buffers)
        after = rss_bytes(relay.pid)
        scenario.rows.append(
            rss_row(
                f"relay RSS with {counts.idle:,} idle subscribed connections, {label}",
                "relay RSS before them",
                after,
                before,
                counts.idle,
            )
        )
        scenario.notes.update(relay_rss_before=before, relay_rss_after=after)
        if redis_pid:
            scenario.rows.append(
                rss_row(
                    f"redis-server RSS with them ({counts.idle:,} blocked XREADs)",
                    "redis-server RSS before them",
                    rss_bytes(redis_pid),
                    redis_before,
                    counts.idle,
                )
            )
        print(f"[{label}] {counts.reads:,} reads with them open ...", flush=True)
        load = ForeignLoad([*scenario.pids(served), holder.pid])
        times = time_reads(served.store, served.raw, served.value, counts)
        scenario.notes["foreign_cpu"].append(load.fraction())
        scenario.rows += read_rows(f"{label}, {counts.idle:,} idle open", times)
        scenario.notes["relay_rss_end"] = rss_bytes(relay.pid)


def run_scenario(scenario: Scenario, scratch: Path, env: dict[str, str]) -> None:
    from jupyter_secure_storage.bridge.host import BridgeLoop
    from jupyter_secure_storage.storage import SecureStorage

    counts, label = scenario.counts, scenario.label
    scratch.mkdir(parents=True, exist_ok=True)
    relay, url = start_relay(scratch, env, *scenario.relay_args)
    with running(relay):
        print(f"[{label}] relay at {url}; timing {counts.pairings} pairings ...", flush=True)
        scenario.rows.append(bench_pairing(url, scratch, counts, label))

        # The device that answers the reads: paired here, then served by a subprocess.
        device_dir = scratch / "served-device"
        _, record = asyncio.run(pair(url, new_device(device_dir, "bench device"), "bench host"))
        device = Process(
            "the device",
            [sys.executable, __file__, "--serve-device", str(device_dir)],
            scratch / "device.log",
            env,
        )
        device.start("serving")
        with running(device):
            config = fast_kdf_config()
            config.DeviceBackend.device = record.name
            config.DeviceBackend.timeout = 30.0
            store = SecureStorage(backend="device", namespace="bench", config=config)
            served = Served(url, relay, device, store, random_value(), RawRoundTrip(url))
            store.write(KEY, served.value)
            for _ in range(counts.warmup):
                store.read(KEY)
            bridge_loop = BridgeLoop.get()
            bridge_loop.run(served.raw.open(), 30)
            try:
                print(f"[{label}] {counts.reads:,} reads + baseline ...", flush=True)
                load = ForeignLoad(scenario.pids(served))
                times = time_reads(store, served.raw, served.value, counts)
                scenario.notes["foreign_cpu"] = [load.fraction()]
                scenario.rows += read_rows(label, times)
                idle_phase(scenario, served, scratch, env)
            finally:
                bridge_loop.run(served.raw.close(), 30)


def run_redis(scratch: Path, env: dict[str, str], counts: Counts) -> Scenario:
    redis = RedisServer(scratch / "redis").start()
    try:
        scenario = Scenario("Redis relay", ("--redis", redis.url), counts)
        assert redis.process is not None
        scenario.notes["redis_pid"] = redis.process.pid
        run_scenario(scenario, scratch / "redis-relay", env)
        return scenario
    finally:
        redis.stop()


# --- output ------------------------------------------------------------------------------------


def print_report(rows: Sequence[Row], scenarios: Sequence[Scenario], quick: bool) -> None:
    print()
    print(
        f"Python {platform.python_version()} on {platform.platform()}, {os.cpu_count()} CPUs"
        + ("; QUICK run" if quick else "")
    )
    print()
    print(markdown_table(rows))
    busiest = max(
        (f for scenario in scenarios for f in scenario.notes.get("foreign_cpu", [])), default=0.0
    )
    print(f"\nother processes' share of the CPUs while timing reads: at most {busiest:.1%}")
    if busiest > BUSY_WARNING:
        print(
            f"WARNING: other processes used up to {busiest:.0%} of the CPUs while reads were "
            "timed; the figures are noisier than on an idle machine."
        )
    for row in rows:
        if row.skipped:
            print(f"\nskipped: {row.measurement}: {row.skipped}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="few iterations (a smoke test)")
    parser.add_argument("--skip-redis", action="store_true", help="only the memory relay")
    parser.add_argument("--output", type=Path, default=RESULTS_FILE, help="the JSON file")
    parser.add_argument("--serve-device", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--hold-connections", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_device:
        return serve_device(args.serve_device)
    if args.hold_connections:
        return hold_connections(args.hold_connections[0], int(args.hold_connections[1]))
    counts = QUICK if args.quick else Counts()
    raise_open_file_limit()

    scenarios = [Scenario("memory relay", (), counts)]
    skipped: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="jss-bench-bridge-") as temporary:
        scratch = Path(temporary)
        configure_host(scratch)
        env = dict(os.environ)
        run_scenario(scenarios[0], scratch / "memory", env)
        redis_reason = ""
        if args.skip_redis:
            redis_reason = "--skip-redis was given"
        elif shutil.which("redis-server") is None:
            redis_reason = "redis-server is not installed (Debian: apt-get install redis-server)"
        if redis_reason:
            print(f"SKIPPED the Redis rows: {redis_reason}", flush=True)
            skipped.append(
                Row("relay on Redis Streams", "", None, None, "-", None, skipped=redis_reason)
            )
        else:
            scenarios.append(run_redis(scratch, env, counts))

    rows = [row for scenario in scenarios for row in scenario.rows] + skipped
    print_report(rows, scenarios, args.quick)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "quick": args.quick,
        "counts": asdict(counts),
        "goals_ns": {"p50": P50_GOAL_NS, "p99": P99_GOAL_NS},
        "notes": {scenario.label: scenario.notes for scenario in scenarios},
        "rows": [row.to_json() for row in rows],
    }
    args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
