"""Storage benchmarks: each backend operation against a bare baseline measured in the same run.

What is measured (every row compares ours with its baseline from this same run, as a ratio):

1. keyring ``read`` through ``SecureStorage`` vs a raw ``keyring.get_password`` on the same
   Secret Service, for items of the same length (the raw item is stored with
   ``keyring.set_password`` under a service of its own). The two are interleaved in rounds,
   alternating which goes first, so drift in the keystore daemon cancels out.
   Goal: ratio <= 1.05.
2. vault unlock: the first ``read`` after ``VaultBackend.lock()``, with the vault's own
   Argon2id parameters (the RFC 9106 defaults), vs the bare Argon2id derive with those
   parameters (``cryptography``'s ``Argon2id``). Reported only; no goal.
3. vault ``read`` once unlocked, 1,000 items of ~60 characters, vs a ``read`` from the
   ``memory`` backend through the same ``SecureStorage`` facade (the facade's own cost).
   Goal: <= 50 us per read.
4. vault durable ``write`` with 1,000 items vs the bare durable replace of a plain file of
   the same size (write a new temporary file, fsync it, rename it over the old one, fsync
   the directory -- what any durable replace costs). Goal: <= 5 ms per write.

Times are medians of per-operation ``time.perf_counter_ns`` readings. Every value stored
is random and nothing secret is printed. Vault files, lock files and Jupyter's data
directory live in a fresh temporary directory; keyring items go under a random service
prefix and are deleted afterwards.

Run it with::

    bash bench/run.sh                  # starts a throwaway Secret Service, then runs this
    .venv/bin/python bench/storage.py  # uses the Secret Service already reachable, if any

Without a reachable OS keystore the keyring row is skipped, with the reason printed
(``--require-keyring`` makes that an error). The table is printed as markdown and the
same rows are written to ``bench/results/storage.json``. ``--quick`` runs far fewer
iterations, to check the script itself.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import secrets
import statistics
import string
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import keyring
from common import format_ns, markdown_table
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from traitlets.config import Config

from jupyter_secure_storage.backends.keyring import KeyringBackend
from jupyter_secure_storage.backends.vault import VaultBackend, parse_vault
from jupyter_secure_storage.errors import SecureStorageError
from jupyter_secure_storage.paths import ENV_PASSPHRASE, ENV_VAULT
from jupyter_secure_storage.storage import SecureStorage

T = TypeVar("T")

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "storage.json"
NAMESPACE = "bench"
VALUE_LENGTH = 60
ITEM_COUNT = 1_000
_ALPHABET = string.ascii_letters + string.digits + "-_"

KEYRING_GOAL_RATIO = 1.05
READ_GOAL_NS = 50_000
WRITE_GOAL_NS = 5_000_000


@dataclass(frozen=True)
class Counts:
    """How many operations each measurement times."""

    keyring_rounds: int = 10
    keyring_per_round: int = 50
    unlocks: int = 7
    read_rounds: int = 20
    reads_per_round: int = 1_000
    write_rounds: int = 10
    writes_per_round: int = 20


QUICK = Counts(
    keyring_rounds=2,
    keyring_per_round=5,
    unlocks=2,
    read_rounds=2,
    reads_per_round=200,
    write_rounds=2,
    writes_per_round=5,
)


@dataclass
class Row:
    """One line of the table; times in nanoseconds (None when the row was skipped)."""

    measurement: str
    baseline_name: str
    ours_ns: float | None
    baseline_ns: float | None
    goal: str
    met: bool | None
    samples: int = 0
    skipped: str = ""

    @property
    def ratio(self) -> float | None:
        if self.ours_ns is None or not self.baseline_ns:
            return None
        return self.ours_ns / self.baseline_ns

    def cells(self) -> list[str]:
        if self.skipped:
            return [self.measurement, "skipped", "-", "-", self.goal, "skipped"]
        ratio = self.ratio
        met = "-" if self.met is None else ("yes" if self.met else "**NO**")
        return [
            self.measurement,
            format_ns(self.ours_ns),
            f"{format_ns(self.baseline_ns)} ({self.baseline_name})",
            "-" if ratio is None else f"{ratio:.2f}x",
            self.goal,
            met,
        ]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        data["ours"], data["baseline"] = self.cells()[1:3]
        return data


STORAGE_COLUMNS = ("measurement", "ours", "baseline", "ratio", "goal", "met?")


# --- helpers ---------------------------------------------------------------------------------


def random_value(length: int = VALUE_LENGTH) -> str:
    """A random test value (never printed)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def time_calls(operation: Callable[[T], object], arguments: Sequence[T]) -> list[int]:
    """Call ``operation`` once per argument; the duration of each call in ns."""
    clock = time.perf_counter_ns
    durations = [0] * len(arguments)
    for index, argument in enumerate(arguments):
        start = clock()
        operation(argument)
        durations[index] = clock() - start
    return durations


def interleaved(
    ours: Callable[[int], list[int]], baseline: Callable[[int], list[int]], rounds: int
) -> tuple[list[int], list[int]]:
    """Run both for ``rounds`` rounds, alternating which goes first; pooled durations."""
    ours_all: list[int] = []
    baseline_all: list[int] = []
    gc.collect()
    for round_number in range(rounds):
        if round_number % 2 == 0:
            ours_all += ours(round_number)
            baseline_all += baseline(round_number)
        else:
            baseline_all += baseline(round_number)
            ours_all += ours(round_number)
    return ours_all, baseline_all


def durable_replace(path: Path, data: bytes) -> None:
    """The bare durable file replace: new temporary file, fsync, rename, fsync the directory."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def check_value(store: SecureStorage, key: str, expected: str) -> None:
    secret = store.read(key)
    if secret is None or secret.reveal() != expected:
        raise RuntimeError(f"{store.backend_name}: {key!r} did not read back as written")


# --- 1. keyring ------------------------------------------------------------------------------


def bench_keyring(counts: Counts) -> tuple[Row, str]:
    """Our keyring read vs raw keyring.get_password; the row and the keyring backend's name."""
    measurement = (
        f"keyring `read` vs raw `keyring.get_password` ({VALUE_LENGTH}-char item, "
        f"{counts.keyring_rounds}x{counts.keyring_per_round} interleaved)"
    )
    goal = f"ratio <= {KEYRING_GOAL_RATIO:.2f}x"
    prefix = f"jss-bench-{secrets.token_hex(6)}"
    config = Config()
    config.KeyringBackend.service_prefix = prefix
    try:
        store = SecureStorage(backend="keyring", namespace=NAMESPACE, config=config)
        backend = store.backend_object
        if not isinstance(backend, KeyringBackend):
            raise RuntimeError(f"expected the keyring backend, got {type(backend).__name__}")
        ours_keyring = backend.keyring
    except SecureStorageError as error:
        reason = f"no usable OS keystore: {error.cause}"
        return Row(measurement, "", None, None, goal, None, skipped=reason), ""
    raw_keyring = keyring.get_keyring()
    backend_name = f"{type(ours_keyring).__module__}.{type(ours_keyring).__qualname__}"
    if raw_keyring is not ours_keyring:
        # keyring chained several backends; the raw call would go through the chain.
        backend_name += f" (raw calls go through {type(raw_keyring).__qualname__})"

    raw_service = f"{prefix}-raw"  # not under the prefix's '<prefix>/<namespace>' services
    key = "BENCH_KEYRING_TOKEN"
    ours_value, raw_value = random_value(), random_value()
    try:
        store.write(key, ours_value)
        keyring.set_password(raw_service, key, raw_value)
        check_value(store, key, ours_value)
        if keyring.get_password(raw_service, key) != raw_value:
            raise RuntimeError("the raw keyring item did not read back as written")
        keys = [key] * counts.keyring_per_round
        time_calls(store.read, keys[:5])  # warm-up
        time_calls(lambda k: keyring.get_password(raw_service, k), keys[:5])
        ours, raw = interleaved(
            lambda _: time_calls(store.read, keys),
            lambda _: time_calls(lambda k: keyring.get_password(raw_service, k), keys),
            counts.keyring_rounds,
        )
    finally:
        try:
            store.delete_all()
            keyring.delete_password(raw_service, key)
        except Exception as error:
            print(
                f"warning: could not remove the benchmark's keyring items under {prefix}* "
                f"({type(error).__name__}); delete them with your keystore's tool.",
                file=sys.stderr,
            )
    ours_ns, raw_ns = statistics.median(ours), statistics.median(raw)
    row = Row(
        measurement,
        "raw get_password",
        ours_ns,
        raw_ns,
        goal,
        ours_ns / raw_ns <= KEYRING_GOAL_RATIO,
        samples=len(ours),
    )
    return row, backend_name


# --- 2-4. vault ------------------------------------------------------------------------------


def fill(store: SecureStorage, keys: Sequence[str]) -> dict[str, str]:
    values = {key: random_value() for key in keys}
    for key, value in values.items():
        store.write(key, value)
    return values


def bench_unlock(store: SecureStorage, vault: VaultBackend, key: str, counts: Counts) -> Row:
    parsed = parse_vault(vault.file.read_bytes())
    params = next(slot.params for slot in parsed.slots if slot.kind == "passphrase")
    memory_kib, iterations, lanes = params["memory_kib"], params["iterations"], params["lanes"]
    passphrase = os.environ[ENV_PASSPHRASE].encode()

    def unlock(_: object) -> None:
        vault.lock()
        store.read(key)

    def derive(_: object) -> None:
        Argon2id(
            salt=os.urandom(16),
            length=32,
            iterations=iterations,
            lanes=lanes,
            memory_cost=memory_kib,
        ).derive(passphrase)

    ours, bare = interleaved(
        lambda _: time_calls(unlock, [None]),
        lambda _: time_calls(derive, [None]),
        counts.unlocks,
    )
    if not vault.is_unlocked:
        raise RuntimeError("the vault did not unlock")
    ours_ns, bare_ns = statistics.median(ours), statistics.median(bare)
    return Row(
        f"vault unlock: 1st `read` after `lock()`, {ITEM_COUNT:,} items, Argon2id "
        f"m={memory_kib // 1024} MiB t={iterations} p={lanes} (n={len(ours)})",
        "bare Argon2id derive",
        ours_ns,
        bare_ns,
        "- (report)",
        None,
        samples=len(ours),
    )


def bench_read(store: SecureStorage, memory: SecureStorage, keys: list[str], counts: Counts) -> Row:
    rng = secrets.SystemRandom()
    order = [rng.choice(keys) for _ in range(counts.reads_per_round)]
    store.read(order[0])  # both warm (and the vault unlocked) before timing
    memory.read(order[0])
    ours, facade = interleaved(
        lambda _: time_calls(store.read, order),
        lambda _: time_calls(memory.read, order),
        counts.read_rounds,
    )
    ours_ns = statistics.median(ours)
    return Row(
        f"vault `read` (unlocked), {ITEM_COUNT:,} items (n={len(ours):,})",
        "`memory` backend, same facade",
        ours_ns,
        statistics.median(facade),
        f"<= {format_ns(READ_GOAL_NS)}",
        ours_ns <= READ_GOAL_NS,
        samples=len(ours),
    )


def bench_write(
    store: SecureStorage, vault: VaultBackend, keys: list[str], scratch: Path, counts: Counts
) -> Row:
    rng = secrets.SystemRandom()
    plain_file = scratch / "plain.bin"
    plain_file.parent.mkdir(mode=0o700, exist_ok=True)
    data = os.urandom(vault.file.stat().st_size)
    durable_replace(plain_file, data)
    size = len(data)

    def ours(_: int) -> list[int]:
        writes = [(rng.choice(keys), random_value()) for _ in range(counts.writes_per_round)]
        return time_calls(lambda item: store.write(*item), writes)

    def bare_round(_: int) -> list[int]:
        return time_calls(
            lambda blob: durable_replace(plain_file, blob), [data] * counts.writes_per_round
        )

    ours_all, bare_all = interleaved(ours, bare_round, counts.write_rounds)
    if len(store.keys()) != len(keys):
        raise RuntimeError("the vault lost or gained keys while overwriting")
    ours_ns = statistics.median(ours_all)
    return Row(
        f"vault durable `write`, {ITEM_COUNT:,} items, file {size / 1024:.0f} KiB "
        f"(n={len(ours_all)})",
        "bare durable replace, same size",
        ours_ns,
        statistics.median(bare_all),
        f"<= {format_ns(WRITE_GOAL_NS)}",
        ours_ns <= WRITE_GOAL_NS,
        samples=len(ours_all),
    )


def bench_vault(scratch: Path, counts: Counts) -> list[Row]:
    vault_dir = scratch / "vault"
    os.environ[ENV_VAULT] = str(vault_dir / "bench.jssv")
    os.environ[ENV_PASSPHRASE] = secrets.token_urlsafe(24)
    store = SecureStorage(backend="vault", namespace=NAMESPACE, config=Config())
    vault = store.backend_object
    if not isinstance(vault, VaultBackend):
        raise RuntimeError(f"expected the vault backend, got {type(vault).__name__}")
    memory_config = Config()
    memory_config.MemoryBackend.store_name = f"bench-{secrets.token_hex(4)}"
    memory = SecureStorage(backend="memory", namespace=NAMESPACE, config=memory_config)

    keys = [f"BENCH_KEY_{number:04d}" for number in range(ITEM_COUNT)]
    print(f"filling the vault with {ITEM_COUNT:,} items ...", flush=True)
    values = fill(store, keys)
    fill(memory, keys)
    if len(store.keys()) != ITEM_COUNT:
        raise RuntimeError("the vault does not hold every item written")
    check_value(store, keys[-1], values[keys[-1]])

    print("vault unlock ...", flush=True)
    rows = [bench_unlock(store, vault, keys[0], counts)]
    print("vault read ...", flush=True)
    rows.append(bench_read(store, memory, keys, counts))
    print("vault write ...", flush=True)
    rows.append(bench_write(store, vault, keys, scratch / "plain", counts))
    vault.lock()
    return rows


# --- output ----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="few iterations (a smoke test)")
    parser.add_argument(
        "--require-keyring",
        action="store_true",
        help="fail instead of skipping the keyring row when no OS keystore is usable",
    )
    parser.add_argument("--output", type=Path, default=RESULTS_FILE, help="the JSON file")
    args = parser.parse_args(argv)
    counts = QUICK if args.quick else Counts()

    with tempfile.TemporaryDirectory(prefix="jss-bench-") as temporary:
        scratch = Path(temporary)
        # Lock files (the keyring index lock) go here, not into the user's Jupyter data dir.
        os.environ["JUPYTER_DATA_DIR"] = str(scratch / "jupyter-data")

        print("keyring read ...", flush=True)
        keyring_row, keyring_name = bench_keyring(counts)
        if keyring_row.skipped:
            print(f"SKIPPED the keyring row: {keyring_row.skipped}", flush=True)
            if args.require_keyring:
                print("--require-keyring was given: failing.", file=sys.stderr)
                return 1
        rows = [keyring_row, *bench_vault(scratch, counts)]

    table = markdown_table(rows, STORAGE_COLUMNS)
    print()
    print(
        f"Python {platform.python_version()} on {platform.platform()}, "
        f"{os.cpu_count()} CPUs; keyring backend: {keyring_name or 'none'}"
        + ("; QUICK run" if args.quick else "")
    )
    print()
    print(table)
    for row in rows:
        if row.skipped:
            print(f"\nkeyring row skipped: {row.skipped}")

    args.output.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "keyring_backend": keyring_name,
        "quick": args.quick,
        "counts": asdict(counts),
        "rows": [row.to_json() for row in rows],
    }
    args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
