"""Redaction benchmark: what ``%load_ext jupyter_secure_storage`` costs a kernel printing a lot.

What is measured, all in one run:

1. A real ipykernel (kernel name ``python3``, this interpreter, started with
   ``jupyter_client``) runs a cell that prints 80,000 lines of 100 bytes (8 MB) that were
   generated in an earlier, untimed cell from a fixed seed, so every variant prints the very
   same bytes. The time is from sending ``execute_request`` until ``status: idle`` for it,
   while this process drains IOPub and keeps every stream text received. Variants:

   a. baseline: no extension (the 50 ``Secret`` objects are still created, so the only
      difference is ``%load_ext``);
   b. ``%load_ext jupyter_secure_storage`` and 50 random 40-character values registered
      with ``Secret(value, f"KEY_{i}")``; no line holds a secret. Goal: b/a <= 1.10x;
   c. as b, but 1% of the lines hold one of the 50 values (reported only).

   One kernel per variant, started once and warmed up with one untimed run; the timed runs
   are interleaved in rounds that cycle through every order of the three variants, so drift
   on the machine falls on all of them alike. Reusing the kernel across rounds measures the
   steady state of a notebook that prints a lot (kernel start-up and the one-off matcher
   build are not what a user pays per cell). What each kernel sent is checked after every
   run: a and b deliver exactly the printed text (same SHA-256 as the text generated here),
   c delivers one ``[secret:KEY_i]`` per planted line, the right names, and no value --
   so the benchmark cannot pass with redaction switched off.
2. The matcher alone, in this process, on the same 8 MB text: ``Matcher`` (Aho-Corasick),
   ``Matcher(..., use_automaton=False)`` (``str.find`` per pattern) and one ``re``
   alternation of all the patterns, in MB/s, each checked to give the same redacted text.

Times are medians of ``time.perf_counter_ns`` readings; the kernel's CPU time per run and
the share of the CPUs that other processes took during the timed rounds are reported too
(over 5%: a warning, the kernel timings are then unreliable on a small machine). The
values are random, made from a fixed seed in the kernel and here, and never printed. The
kernels use the ``memory`` backend and temporary Jupyter and IPython directories; the
``python3`` kernelspec is written to a temporary ``JUPYTER_PATH`` so the kernel runs this
interpreter. No Secret Service is needed.

Run it with::

    .venv/bin/python bench/redaction.py                 # the full run (under a minute)
    .venv/bin/python bench/redaction.py --quick         # 0.8 MB, 2 rounds: a smoke test
    .venv/bin/python bench/redaction.py --skip-kernels  # only the in-process matchers

The table is printed as markdown and the same rows are written to
``bench/results/redaction.json``. The exit status is 1 when a check fails (not when a goal
is missed).
"""

from __future__ import annotations

import argparse
import ast
import gc
import hashlib
import itertools
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
from common import COLUMNS, markdown_table
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

from jupyter_secure_storage.kernel.redaction import DEFAULT_REPLACEMENT, Matcher

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "redaction.json"
GOAL_RATIO = 1.10
BUSY_WARNING = 0.05  # share of all CPUs used by other processes while timing
SECRET_COUNT = 50
SECRET_LENGTH = 40
LINE_BYTES = 100  # printed bytes per line, the newline included
SECRET_EVERY = 100  # variant c: one line in this many holds a value
SEED = 20_240_611
KERNEL_NAME = "python3"
MARKER = re.compile(r"\[secret:([^\]]*)\]")
PRINT_CELL = "for _bench_line in _bench_lines:\n    print(_bench_line)\n"

# Executed both in the kernel (setup cell) and here, so both sides build the same values and
# lines without sending either over the wire. Nothing here prints.
WORKLOAD_SOURCE = '''
import base64 as _bench_b64
import random as _bench_random


def bench_values(count, length, seed):
    rng = _bench_random.Random(seed)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return ["".join(rng.choice(alphabet) for _ in range(length)) for _ in range(count)]


def bench_lines(count, line_bytes, seed, values=(), every=0):
    """``count`` lines of ``line_bytes - 1`` characters: a number and random base64 text.

    With ``every``, line ``i`` with ``i % every == every // 2`` carries a value in its middle.
    """
    width = line_bytes - 1 - 8
    rng = _bench_random.Random(seed)
    raw = _bench_b64.b64encode(rng.randbytes(count * width * 3 // 4 + 3)).decode("ascii")
    lines = []
    for i in range(count):
        body = raw[i * width : (i + 1) * width]
        if every and i % every == every // 2:
            value = values[(i // every) % len(values)]
            body = body[:20] + value + body[20 + len(value) :]
        lines.append(f"{i:07d} {body}")
    return lines
'''


@dataclass(frozen=True)
class Workload:
    """The size of the printing cell, and how many timed rounds."""

    lines: int = 80_000
    rounds: int = 6  # every order of the three variants once
    matcher_repeats: int = 5
    regex_repeats: int = 3


QUICK = Workload(lines=8_000, rounds=2, matcher_repeats=2, regex_repeats=1)


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    load_extension: bool
    secret_every: int  # 0: no line holds a value


VARIANTS = (
    Variant("a", "baseline: no extension", load_extension=False, secret_every=0),
    Variant("b", "extension + 50 secrets, no secret in output", True, 0),
    Variant("c", "extension + 50 secrets, 1% of lines hold one", True, SECRET_EVERY),
)


@dataclass
class Run:
    """What one timed execution delivered."""

    wall_ns: int
    kernel_cpu_s: float
    stream_messages: int
    stream_chars: int
    stream_bytes: int
    sha256: str
    markers: int
    other_streams: int


@dataclass
class Row:
    measurement: str
    value: str
    baseline: str
    ratio: float | None
    goal: str
    met: bool | None
    data: dict[str, Any] = field(default_factory=dict)

    def cells(self) -> list[str]:
        met = "-" if self.met is None else ("yes" if self.met else "**NO**")
        ratio = "-" if self.ratio is None else f"{self.ratio:.2f}x"
        return [self.measurement, self.value, self.baseline, ratio, self.goal, met]


class CheckFailed(RuntimeError):
    """The benchmark did not measure what it claims to (wrong bytes, no redaction...)."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


# --- the workload, here -------------------------------------------------------------------


def workload_functions() -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(compile(WORKLOAD_SOURCE, "<bench workload>", "exec"), namespace)  # noqa: S102
    return namespace


def printed_text(lines: Sequence[str]) -> str:
    return "".join(f"{line}\n" for line in lines)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ForeignLoad:
    """How busy the machine was with processes other than ``pids`` (share of all its CPUs)."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.processes = [psutil.Process(pid) for pid in pids]
        self.start = self._sample()

    def _sample(self) -> tuple[float, float, float]:
        # user + system (+ steal, time taken by the hypervisor): not irq/softirq, where the
        # kernel's own loopback traffic lands without being charged to any process.
        times = psutil.cpu_times()
        busy = times.user + times.system + getattr(times, "nice", 0.0)
        busy += getattr(times, "steal", 0.0)
        ours = sum(sum(p.cpu_times()[:2]) for p in self.processes)
        return time.monotonic(), busy, ours

    def fraction(self) -> float:
        """CPU used by other processes since construction, over elapsed time x CPUs."""
        now, busy, ours = self._sample()
        elapsed = (now - self.start[0]) * (psutil.cpu_count() or 1)
        other = (busy - self.start[1]) - (ours - self.start[2])
        return max(0.0, other / elapsed) if elapsed > 0 else 0.0


# --- kernels --------------------------------------------------------------------------------


def write_kernelspec(jupyter_path: Path) -> Path:
    """A ``python3`` kernelspec running this interpreter, in a directory put on JUPYTER_PATH."""
    spec_dir = jupyter_path / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (bench)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    return spec_dir


class BenchKernel:
    """One kernel for one variant, with a blocking client that drains IOPub."""

    def __init__(self, variant: Variant, env: dict[str, str], cwd: Path, log: Path) -> None:
        self.variant = variant
        self.log_path = log
        # The kernel's own stdout/stderr (start-up warnings) go to a log file, not the table.
        self._log = log.open("wb")
        self.manager = KernelManager(kernel_name=KERNEL_NAME)
        self.manager.start_kernel(env=env, cwd=str(cwd), stdout=self._log, stderr=self._log)
        self.client = self.manager.blocking_client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=120)
        self.pid = int(self.expression("__import__('os').getpid()"))

    def log_tail(self, size: int = 2_000) -> str:
        self._log.flush()
        return self.log_path.read_bytes()[-size:].decode("utf-8", "replace")

    def shutdown(self) -> None:
        try:
            self.client.stop_channels()
            self.manager.shutdown_kernel(now=False)
        finally:
            self._log.close()

    def execute(
        self,
        code: str,
        user_expressions: dict[str, str] | None = None,
        timeout: float = 600.0,
    ) -> tuple[int, list[dict[str, Any]], dict[str, Any]]:
        """Run ``code``: (ns until ``status: idle``, its IOPub messages, the execute_reply)."""
        client = self.client
        start = time.perf_counter_ns()
        msg_id = client.execute(code, user_expressions=user_expressions or {})
        messages: list[dict[str, Any]] = []
        while True:
            message = client.get_iopub_msg(timeout=timeout)
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            if message["msg_type"] == "status":
                if message["content"]["execution_state"] == "idle":
                    break
                continue
            messages.append(message)
        elapsed = time.perf_counter_ns() - start
        while True:
            reply = client.get_shell_msg(timeout=timeout)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        content = reply["content"]
        if content["status"] != "ok":
            name = content.get("ename", "?")
            raise CheckFailed(f"kernel {self.variant.key}: a cell failed with {name}")
        return elapsed, messages, content

    def expression(self, expression: str) -> Any:
        """The value of a Python expression in the kernel (it must evaluate to a literal)."""
        _, _, reply = self.execute("", user_expressions={"x": expression})
        result = reply["user_expressions"]["x"]
        if result["status"] != "ok":
            raise CheckFailed(f"kernel {self.variant.key}: {expression!r} raised")
        return ast.literal_eval(result["data"]["text/plain"])

    def setup(self, workload: Workload) -> None:
        variant = self.variant
        if variant.load_extension:
            self.execute("%load_ext jupyter_secure_storage")
        code = "\n".join(
            [
                WORKLOAD_SOURCE,
                "from jupyter_secure_storage import Secret as _BenchSecret",
                f"_bench_values = bench_values({SECRET_COUNT}, {SECRET_LENGTH}, {SEED})",
                "_bench_secrets = [_BenchSecret(v, f'KEY_{i}') for i, v in "
                "enumerate(_bench_values)]",
                f"_bench_lines = bench_lines({workload.lines}, {LINE_BYTES}, {SEED + 1}, "
                f"_bench_values, {variant.secret_every})",
                "del _bench_values",
            ]
        )
        _, messages, _ = self.execute(code)
        check(
            not [m for m in messages if m["msg_type"] in {"stream", "error"}],
            f"kernel {variant.key}: the setup cell printed something",
        )
        state = self.expression(
            "[__import__('sys').executable, len(__import__('jupyter_secure_storage')"
            ".secret.secret_registry), __import__('jupyter_secure_storage.kernel.extension', "
            "fromlist=['_']).loaded_state(get_ipython()) is not None]"
        )
        executable, registered, loaded = state
        check(executable == sys.executable, f"kernel {variant.key} runs {executable}")
        check(registered == SECRET_COUNT, f"kernel {variant.key}: {registered} values registered")
        check(loaded == variant.load_extension, f"kernel {variant.key}: extension loaded={loaded}")
        if variant.load_extension:
            installed = self.expression(
                "__import__('jupyter_secure_storage.kernel.extension', fromlist=['_'])"
                ".loaded_state(get_ipython()).session_guard.installed"
            )
            check(installed is True, f"kernel {variant.key}: the session guard is not installed")

    def cpu_seconds(self) -> float:
        return float(self.expression("__import__('time').process_time()"))

    def timed_print(self) -> tuple[Run, str]:
        """One timed run of the printing cell, and the stream text it delivered."""
        cpu_before = self.cpu_seconds()
        wall_ns, messages, _ = self.execute(PRINT_CELL)
        cpu_after = self.cpu_seconds()
        parts: list[str] = []
        other = 0
        for message in messages:
            if message["msg_type"] == "stream" and message["content"]["name"] == "stdout":
                parts.append(message["content"]["text"])
            elif message["msg_type"] != "execute_input":
                other += 1
        text = "".join(parts)
        return Run(
            wall_ns=wall_ns,
            kernel_cpu_s=cpu_after - cpu_before,
            stream_messages=len(parts),
            stream_chars=len(text),
            stream_bytes=len(text.encode("utf-8")),
            sha256=sha256(text),
            markers=len(MARKER.findall(text)),
            other_streams=other,
        ), text


@dataclass
class Expected:
    """What each variant must deliver."""

    clean_text: str
    clean_sha: str
    secret_text_redacted: str
    secret_sha: str
    planted: Counter[str]
    values: list[str]


def verify(variant: Variant, run: Run, text: str, expected: Expected) -> None:
    check(run.other_streams == 0, f"{variant.key}: {run.other_streams} unexpected messages")
    if variant.secret_every == 0:
        check(
            run.sha256 == expected.clean_sha and run.markers == 0,
            f"{variant.key}: received {run.stream_bytes:,} bytes, not the "
            f"{len(expected.clean_text):,} printed",
        )
        return
    received = Counter(MARKER.findall(text))
    check(
        received == expected.planted,
        f"{variant.key}: {sum(received.values())} markers received, "
        f"{sum(expected.planted.values())} planted (or with the wrong names)",
    )
    check(
        not any(value in text for value in expected.values),
        f"{variant.key}: a registered value reached the client",
    )
    check(
        run.sha256 == expected.secret_sha,
        f"{variant.key}: the redacted text differs from redacting the printed text at once",
    )


# --- 1. kernels -----------------------------------------------------------------------------


def bench_kernels(
    workload: Workload, scratch: Path, expected: Expected
) -> tuple[dict[str, list[Run]], dict[str, Any]]:
    jupyter_path = scratch / "jupyter-path"
    write_kernelspec(jupyter_path)
    overrides = {
        "JUPYTER_PATH": str(jupyter_path),
        "JUPYTER_DATA_DIR": str(scratch / "jupyter-data"),
        "JUPYTER_CONFIG_DIR": str(scratch / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(scratch / "jupyter-runtime"),
        "IPYTHONDIR": str(scratch / "ipython"),
        "JUPYTER_SECURE_STORAGE_BACKEND": "memory",
    }
    os.environ.update(overrides)  # the kernelspec lookup and connection files, here too
    spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    check(spec.argv[0] == sys.executable, f"the python3 kernelspec runs {spec.argv[0]}")
    env = dict(os.environ)
    cwd = scratch / "cwd"
    cwd.mkdir()

    kernels: dict[str, BenchKernel] = {}
    try:
        for variant in VARIANTS:
            print(f"starting kernel {variant.key} ({variant.label}) ...", flush=True)
            kernel = BenchKernel(variant, env, cwd, scratch / f"kernel-{variant.key}.log")
            kernels[variant.key] = kernel
            kernel.setup(workload)
            warm, text = kernel.timed_print()  # warm-up, not counted
            verify(variant, warm, text, expected)
        runs: dict[str, list[Run]] = {v.key: [] for v in VARIANTS}
        pids = [os.getpid()] + [k.pid for k in kernels.values()]
        foreign = ForeignLoad(pids)
        orders = itertools.cycle(itertools.permutations(VARIANTS))
        for round_number in range(workload.rounds):
            order = next(orders)
            timings = []
            for variant in order:
                gc.collect()
                run, text = kernels[variant.key].timed_print()
                verify(variant, run, text, expected)
                runs[variant.key].append(run)
                timings.append(f"{variant.key} {run.wall_ns / 1e9:.2f} s")
            print(f"round {round_number + 1}/{workload.rounds}: {', '.join(timings)}", flush=True)
        other_cpu = foreign.fraction()
        scrubbed = {
            key: kernel.expression(
                "__import__('jupyter_secure_storage.kernel.extension', fromlist=['_'])"
                ".loaded_state(get_ipython()).session_guard.messages_scrubbed"
            )
            for key, kernel in kernels.items()
            if kernel.variant.load_extension
        }
    except CheckFailed:
        for key, kernel in kernels.items():
            print(f"--- kernel {key} log (tail) ---\n{kernel.log_tail()}", file=sys.stderr)
        raise
    finally:
        for kernel in kernels.values():
            kernel.shutdown()
    if other_cpu > BUSY_WARNING:
        print(
            f"WARNING: other processes used {other_cpu:.0%} of the CPUs during the timed rounds;"
            " the kernel timings are unreliable, rerun on an idle machine.",
            flush=True,
        )
    return runs, {
        "messages_scrubbed": scrubbed,
        "kernelspec_argv": spec.argv,
        "other_processes_cpu_fraction": other_cpu,
    }


# --- 2. the matcher alone -------------------------------------------------------------------


def regex_redactor(patterns: dict[str, str]) -> Callable[[str], str]:
    """One ``re`` alternation of every pattern, longest first."""
    alternation = re.compile(
        "|".join(re.escape(p) for p in sorted(patterns, key=lambda p: (-len(p), p)))
    )

    def replace(match: re.Match[str]) -> str:
        return DEFAULT_REPLACEMENT.format(name=patterns[match.group(0)])

    return lambda text: alternation.sub(replace, text)


def time_redact(redact: Callable[[str], str], text: str, repeats: int) -> float:
    durations = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter_ns()
        redact(text)
        durations.append(time.perf_counter_ns() - start)
    return statistics.median(durations)


def bench_matchers(
    workload: Workload, names_by_value: dict[str, str], expected: Expected, secret_text: str
) -> list[Row]:
    automaton = Matcher(names_by_value)
    finder = Matcher(names_by_value, use_automaton=False)
    check(automaton.kind == "aho-corasick", f"the default matcher is {automaton.kind}")
    check(finder.kind == "str.find", f"the fallback matcher is {finder.kind}")
    candidates: list[tuple[str, Callable[[str], str], int]] = [
        ("`Matcher` (Aho-Corasick, ahocorasick-rs)", automaton.redact, workload.matcher_repeats),
        (
            "`Matcher(use_automaton=False)` (str.find per pattern)",
            finder.redact,
            workload.matcher_repeats,
        ),
        (
            "one `re` alternation of all patterns",
            regex_redactor(automaton.patterns),
            workload.regex_repeats,
        ),
    ]
    text = expected.clean_text
    megabytes = len(text.encode("utf-8")) / 1e6
    rows: list[Row] = []
    base_ns = 0.0
    for index, (name, redact, repeats) in enumerate(candidates):
        check(redact(text) == text, f"{name} changed text that holds no secret")
        check(
            redact(secret_text) == expected.secret_text_redacted,
            f"{name} redacts the 1% text differently from the default matcher",
        )
        ns = time_redact(redact, text, repeats)
        speed = megabytes / (ns / 1e9)
        if index == 0:
            base_ns = ns
        rows.append(
            Row(
                f"matcher alone: {name}, {len(automaton)} patterns, {megabytes:.1f} MB "
                f"(median of {repeats})",
                f"{speed:,.0f} MB/s ({ns / 1e6:,.0f} ms)",
                "-" if index == 0 else f"{megabytes / (base_ns / 1e9):,.0f} MB/s (Aho-Corasick)",
                None if index == 0 else ns / base_ns,
                "- (report; ratio = time vs Aho-Corasick)",
                None,
                {"ns": ns, "mb_per_s": speed, "megabytes": megabytes, "repeats": repeats},
            )
        )
        print(f"{name}: {speed:,.0f} MB/s", flush=True)
    return rows


# --- output ---------------------------------------------------------------------------------


def kernel_rows(runs: dict[str, list[Run]], expected: Expected) -> list[Row]:
    def median_s(key: str) -> float:
        return statistics.median(r.wall_ns for r in runs[key]) / 1e9

    def cpu_s(key: str) -> float:
        return statistics.median(r.kernel_cpu_s for r in runs[key])

    base = median_s("a")
    megabytes = len(expected.clean_text.encode("utf-8")) / 1e6
    lines = expected.clean_text.count("\n")
    rows = []
    for variant in VARIANTS:
        own = runs[variant.key]
        wall = median_s(variant.key)
        messages = statistics.median(r.stream_messages for r in own)
        walls = [r.wall_ns / 1e9 for r in own]
        detail = (
            f"{wall:.3f} s ({min(walls):.3f}..{max(walls):.3f}), {megabytes / wall:.1f} MB/s; "
            f"kernel CPU {cpu_s(variant.key):.2f} s"
        )
        data = {
            "wall_s": walls,
            "median_wall_s": wall,
            "kernel_cpu_s": [r.kernel_cpu_s for r in own],
            "stream_messages": [r.stream_messages for r in own],
            "stream_bytes": [r.stream_bytes for r in own],
            "markers": [r.markers for r in own],
        }
        name = (
            f"kernel, print {lines:,} lines / {megabytes:.1f} MB, {variant.key}) {variant.label}"
            f" (median of {len(own)}, ~{messages:.0f} stream msgs)"
        )
        if variant.key == "a":
            rows.append(Row(name, detail, "-", None, "-", None, data))
            continue
        ratio = wall / base
        goal = f"ratio <= {GOAL_RATIO:.2f}x" if variant.key == "b" else "- (report)"
        met = ratio <= GOAL_RATIO if variant.key == "b" else None
        rows.append(Row(name, detail, f"{base:.3f} s (a)", ratio, goal, met, data))
    planted = sum(expected.planted.values())
    received = [r.markers for r in runs["c"]]
    rows.append(
        Row(
            "c) `[secret:` markers received per run (redaction was active)",
            f"{min(received)}..{max(received)}",
            f"{planted} planted",
            None,
            "= planted, names right, no value received",
            all(n == planted for n in received),
        )
    )
    same = {r.sha256 for key in ("a", "b") for r in runs[key]} == {expected.clean_sha}
    rows.append(
        Row(
            "a) and b) stream text received = text printed (SHA-256, every run)",
            f"{runs['b'][0].stream_bytes:,} bytes",
            f"{len(expected.clean_text.encode('utf-8')):,} bytes printed",
            None,
            "identical",
            same,
        )
    )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small workload, 2 rounds")
    parser.add_argument("--output", type=Path, default=RESULTS_FILE, help="the JSON file")
    parser.add_argument(
        "--skip-kernels", action="store_true", help="only the in-process matcher benchmark"
    )
    args = parser.parse_args(argv)
    workload = QUICK if args.quick else Workload()

    functions = workload_functions()
    values: list[str] = functions["bench_values"](SECRET_COUNT, SECRET_LENGTH, SEED)
    names_by_value = {value: f"KEY_{i}" for i, value in enumerate(values)}
    clean_lines = functions["bench_lines"](workload.lines, LINE_BYTES, SEED + 1, values, 0)
    secret_lines = functions["bench_lines"](
        workload.lines, LINE_BYTES, SEED + 1, values, SECRET_EVERY
    )
    clean_text, secret_text = printed_text(clean_lines), printed_text(secret_lines)
    check(
        len(clean_text.encode("utf-8")) == workload.lines * LINE_BYTES,
        "the lines are not the intended size",
    )
    redacted = Matcher(names_by_value).redact(secret_text)
    planted = Counter(
        names_by_value[value]
        for line in secret_lines
        for value in values
        if value in line  # 1 per planted line
    )
    expected = Expected(clean_text, sha256(clean_text), redacted, sha256(redacted), planted, values)
    check(sum(planted.values()) == workload.lines // SECRET_EVERY, "wrong number planted")

    rows: list[Row] = []
    extra: dict[str, Any] = {}
    runs: dict[str, list[Run]] = {}
    try:
        if not args.skip_kernels:
            with tempfile.TemporaryDirectory(prefix="jss-bench-redaction-") as temporary:
                runs, extra = bench_kernels(workload, Path(temporary), expected)
            rows += kernel_rows(runs, expected)
        print("matchers in-process ...", flush=True)
        rows += bench_matchers(workload, names_by_value, expected, secret_text)
    except CheckFailed as error:
        print(f"\nCHECK FAILED: {error}", file=sys.stderr)
        return 1

    versions = ", ".join(
        f"{name} {metadata.version(name)}"
        for name in ("ipykernel", "jupyter_client", "pyzmq", "ahocorasick-rs")
    )
    print()
    print(
        f"Python {platform.python_version()} on {platform.platform()}, {os.cpu_count()} CPUs; "
        f"{versions}" + ("; QUICK run" if args.quick else "")
    )
    if "other_processes_cpu_fraction" in extra:
        print(
            "other processes' share of the CPUs during the timed rounds: "
            f"{extra['other_processes_cpu_fraction']:.1%}"
        )
    print()
    print(markdown_table(rows))

    args.output.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "versions": versions,
        "quick": args.quick,
        "workload": asdict(workload),
        "secrets": SECRET_COUNT,
        "secret_length": SECRET_LENGTH,
        "line_bytes": LINE_BYTES,
        "secret_every": SECRET_EVERY,
        "runs": {key: [asdict(run) for run in own] for key, own in runs.items()},
        **extra,
        "rows": [
            {
                **asdict(row),
                "cells": dict(zip(COLUMNS, row.cells(), strict=True)),
            }
            for row in rows
        ],
    }
    args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
