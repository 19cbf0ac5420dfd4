"""The unlock agent: what a read costs through it, beside its baselines from the same run.

1. ``SecureStorage.read`` through the agent (a ``jupyter-secure-storage agent`` process,
   unlocked) vs an in-process read of the same vault unlocked in this process
   (``c.VaultBackend.use_agent = False``), 100 keys, reads interleaved in rounds.
   p50 and p99. Goal: at most 1 ms extra at p50.
2. ``jupyter-secure-storage read KEY`` as scripts call it (``$(... read KEY)``): a whole
   process, wall time and peak RSS (``wait4``'s ``ru_maxrss``), with the agent unlocked,
   vs ``python -c pass`` (the interpreter alone), and vs the same command without an agent
   (the passphrase in the environment: Argon2id with the RFC 9106 parameters every call).
   Goal: at most 60 ms wall and 40 MiB peak with the agent.

The vault uses the default Argon2id parameters (64 MiB, 3 passes, 4 lanes), so the
no-agent row costs what a real one does. Everything lives in a fresh temporary folder
(vault, Jupyter dirs, the agent's socket); values are random and never printed.
``JUPYTER_SECURE_STORAGE_BACKEND=vault`` is set for the commands, as a headless server's
scripts would have it (``auto`` would first probe for an OS keystore).

Run: ``.venv/bin/python bench/agent.py`` (``--quick`` for a smoke run). The table is
printed as markdown and written to ``bench/results/agent.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from common import format_bytes, format_ns, markdown_table, percentile
from traitlets.config import Config

from jupyter_secure_storage import SecureStorage

PASSPHRASE = "bench passphrase, thrown away"  # protects a temporary vault only
RESULTS = Path(__file__).resolve().parent / "results" / "agent.json"


@dataclass
class Row:
    measurement: str
    value: str
    baseline: str
    ratio: float | None
    goal: str
    met: bool | None
    raw: dict[str, float]

    def cells(self) -> list[str]:
        met = "-" if self.met is None else ("yes" if self.met else "**NO**")
        ratio = "-" if self.ratio is None else f"{self.ratio:.2f}x"
        return [self.measurement, self.value, self.baseline, ratio, self.goal, met]


def environment(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER_SECURE_STORAGE")}
    env.update(
        JUPYTER_DATA_DIR=str(root / "data"),
        JUPYTER_CONFIG_DIR=str(root / "config"),
        JUPYTER_RUNTIME_DIR=str(root / "runtime"),
        JUPYTER_SECURE_STORAGE_BACKEND="vault",
        JUPYTER_SECURE_STORAGE_VAULT=str(root / "vault.jssv"),
        JUPYTER_SECURE_STORAGE_AGENT_SOCKET=str(root / "agent" / "agent.sock"),
    )
    return env


# A small launcher process starts each measured command and reports its wall time and
# peak RSS: a child forked from this (large) process would count this process's pages
# in its ru_maxrss until it execs. The command's stdout goes to a file (argv[1]).
_LAUNCHER = """
import os, sys, time
actions = [(os.POSIX_SPAWN_OPEN, 1, sys.argv[1], os.O_WRONLY | os.O_TRUNC, 0)]
started = time.perf_counter()
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ, file_actions=actions)
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - started, usage.ru_maxrss * 1024, os.waitstatus_to_exitcode(status))
"""


def run_measured(command: list[str], env: dict[str, str]) -> tuple[float, int, bytes]:
    """Wall seconds, peak RSS in bytes, and stdout of one whole process."""
    handle, name = tempfile.mkstemp(prefix="jss-bench-out-")
    os.close(handle)
    output = Path(name)
    try:
        report = subprocess.run(
            [sys.executable, "-S", "-c", _LAUNCHER, str(output), *command],
            env=env,
            capture_output=True,
            check=True,
        )
        elapsed, peak, code = report.stdout.decode().split()
        if int(code) != 0:
            raise SystemExit(f"{command[2:]} failed with exit code {code}")
        return float(elapsed), int(peak), output.read_bytes()
    finally:
        output.unlink()


def median(pairs: list[tuple[float, int]], index: int) -> float:
    return float(sorted(p[index] for p in pairs)[len(pairs) // 2])


def build_rows(
    agent_ns: list[float],
    local_ns: list[float],
    with_agent: list[tuple[float, int]],
    bare: list[tuple[float, int]],
    old: list[tuple[float, int]],
) -> list[Row]:
    rows = []
    for label, fraction in (("p50", 0.5), ("p99", 0.99)):
        ours, base = percentile(agent_ns, fraction), percentile(local_ns, fraction)
        goal_met = (ours - base) <= 1e6 if label == "p50" else None
        rows.append(
            Row(
                f"`SecureStorage.read` through the agent, {label}",
                format_ns(ours),
                f"{format_ns(base)} (in-process unlocked vault)",
                ours / base,
                "<= +1 ms at p50" if label == "p50" else "report",
                goal_met,
                {"ours_ns": ours, "baseline_ns": base},
            )
        )
    agent_wall, agent_peak = median(with_agent, 0), median(with_agent, 1)
    bare_wall, bare_peak = median(bare, 0), median(bare, 1)
    old_wall, old_peak = median(old, 0), median(old, 1)
    rows += [
        Row(
            "`jupyter-secure-storage read KEY`, agent unlocked: wall (median)",
            format_ns(agent_wall * 1e9),
            f"{format_ns(bare_wall * 1e9)} (`python -c pass`); "
            f"{format_ns(old_wall * 1e9)} without the agent",
            agent_wall / bare_wall,
            "<= 60 ms",
            agent_wall <= 0.060,
            {"ours_s": agent_wall, "bare_s": bare_wall, "no_agent_s": old_wall},
        ),
        Row(
            "`jupyter-secure-storage read KEY`, agent unlocked: peak RSS (median)",
            format_bytes(agent_peak),
            f"{format_bytes(bare_peak)} (`python -c pass`); "
            f"{format_bytes(old_peak)} without the agent",
            agent_peak / bare_peak,
            "<= 40 MiB",
            agent_peak <= 40 * 1024 * 1024,
            {"ours_bytes": agent_peak, "bare_bytes": bare_peak, "no_agent_bytes": old_peak},
        ),
    ]
    return rows


def interleaved_reads(
    direct: SecureStorage, values: dict[str, str], rounds: int, per_round: int
) -> tuple[list[float], list[float]]:
    """Per-read nanoseconds through the agent and in this process, in alternating rounds."""
    through = SecureStorage(backend="vault")
    keys = sorted(values)
    agent_ns: list[float] = []
    local_ns: list[float] = []
    os.environ["JUPYTER_SECURE_STORAGE_PASSPHRASE"] = PASSPHRASE
    direct.read(keys[0])  # unlock in this process once
    del os.environ["JUPYTER_SECURE_STORAGE_PASSPHRASE"]
    through.read(keys[0])
    for round_number in range(rounds):
        order = [(through, agent_ns), (direct, local_ns)]
        if round_number % 2:
            order.reverse()
        for store, samples in order:
            for i in range(per_round):
                key = keys[i % len(keys)]
                started = time.perf_counter_ns()
                secret = store.read(key)
                samples.append(time.perf_counter_ns() - started)
                assert secret is not None
                assert secret.reveal() == values[key]
    return agent_ns, local_ns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few iterations (a smoke run)")
    options = parser.parse_args()
    rounds, per_round, processes = (3, 50, 3) if options.quick else (20, 200, 15)

    with tempfile.TemporaryDirectory(prefix="jss-bench-agent-") as folder:
        root = Path(folder)
        for sub in ("data", "config", "runtime"):
            (root / sub).mkdir()
        (root / "agent").mkdir(mode=0o700)
        env = environment(root)
        os.environ.update(env)
        cli = [sys.executable, "-m", "jupyter_secure_storage"]

        # A vault of 100 keys, written in this process with the passphrase.
        values = {f"KEY_{i:03d}": secrets.token_urlsafe(40) for i in range(100)}
        os.environ["JUPYTER_SECURE_STORAGE_PASSPHRASE"] = PASSPHRASE
        direct_config = Config()
        direct_config.VaultBackend.use_agent = False
        direct = SecureStorage(backend="vault", config=direct_config)
        for key, value in values.items():
            direct.write(key, value)
        del os.environ["JUPYTER_SECURE_STORAGE_PASSPHRASE"]

        # Without an agent: every command derives the key (the passphrase in its env).
        no_agent = dict(env, JUPYTER_SECURE_STORAGE_PASSPHRASE=PASSPHRASE)
        bare: list[tuple[float, int]] = []
        old: list[tuple[float, int]] = []
        for _ in range(processes):
            elapsed, peak, _ = run_measured([sys.executable, "-c", "pass"], env)
            bare.append((elapsed, peak))
            elapsed, peak, out = run_measured([*cli, "read", "KEY_007"], no_agent)
            assert out.decode() == values["KEY_007"]
            old.append((elapsed, peak))

        agent = subprocess.Popen(
            [*cli, "agent"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        try:
            assert agent.stdout is not None
            agent.stdout.readline()
            unlocked = subprocess.run(
                [*cli, "unlock", "--stdin"], input=PASSPHRASE + "\n", env=env, text=True,
                capture_output=True, check=True,
            )  # fmt: skip
            del unlocked
            agent_ns, local_ns = interleaved_reads(direct, values, rounds, per_round)
            with_agent: list[tuple[float, int]] = []
            for _ in range(processes):
                elapsed, peak, out = run_measured([*cli, "read", "KEY_007"], env)
                assert out.decode() == values["KEY_007"]
                with_agent.append((elapsed, peak))
        finally:
            agent.terminate()
            agent.wait(20)

    rows = build_rows(agent_ns, local_ns, with_agent, bare, old)
    print(markdown_table(rows))
    print(
        f"\n{len(agent_ns)} reads each way in {rounds} interleaved rounds; "
        f"{processes} processes per command row. {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs."
    )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps([asdict(row) for row in rows], indent=2) + "\n")


if __name__ == "__main__":
    main()
