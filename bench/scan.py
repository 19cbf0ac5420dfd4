"""Scan benchmark: ``jupyter-secure-storage scan`` vs ``detect-secrets scan`` 1.5 on one tree.

What is measured, all in one run:

1. A tree of 2,000 notebooks is generated from a fixed seed (``--quick``: 100): code and
   markdown cells, stream and HTML-table outputs, and plots as base64 PNG-sized blobs of
   random bytes (as incompressible as real PNGs), 20-200 KB per notebook (log-uniform).
   Clean notebooks also hold look-alikes that are *not* secrets: UUIDs, git and SHA-256
   hashes, ``sk-learn`` prose, ``AKIAIOSFODNN7EXAMPLE``, ``${PASSWORD}`` URLs,
   ``YOUR_API_KEY`` placeholders.
2. Planted secrets, recorded with their notebook, cell, place and line:
   * token formats in about 10% of the notebooks (1-3 each, every format the pattern
     detector knows, in a source line or a stream output), made by tests/scan_samples.py,
     written the ways notebooks hold them: ``TOKEN = "..."``, ``client = Client(api_key=
     "...")``, ``os.environ["SERVICE_TOKEN"] = "..."`` (detect-secrets' "indirect
     reference" filter drops every line of the form ``x = f(...)``, so it misses the
     second); URLs as ``create_engine("postgresql://...")`` or ``DATABASE_URL = "..."``;
   * stored values in about 5% of the notebooks: 20 values written into a throwaway
     **vault store** by this script (``SecureStorage(backend="vault")``, which keeps their
     fingerprints), each planted in one of five encodings (literal, base64, base64url,
     URL-quoted, JSON-escaped) in a source line or an output.
3. Both tools run as their command-line programs, in subprocesses, on the same tree with
   a warm page cache, interleaved for ``--rounds`` rounds (default 3); the time is the
   median wall time of a whole run (start-up included: ours also unlocks the vault with
   its default Argon2id costs). Ours: ``jupyter-secure-storage scan . --format json``
   with the vault named by ``JUPYTER_SECURE_STORAGE_*``; the baseline: ``detect-secrets
   scan --all-files .`` with its default plugins (what a person gets). Then, once,
   detect-secrets without its two high-entropy plugins (its formats and keywords only),
   reported beside it: the entropy plugins are where its false positives come from (every
   plot is a high-entropy string) and also where its finds of encoded values come from.
4. Recall and precision are counted per flagged line: a planted secret is found when a
   tool reports its line (ours: path, cell, place and line in the cell's text;
   detect-secrets: path and line of the .ipynb file); a flagged line with no planted
   secret is a false positive. Several findings on one line count once.

Goals (issue 6): throughput ratio >= 10x; recall on token formats >= detect-secrets';
100% recall on stored values in every encoding. Nothing secret is printed: the tokens and
values are fake, random, and only compared. Run it with ``bash bench/run.sh`` (which
installs detect-secrets 1.5.0 into the venv) or ``.venv/bin/python bench/scan.py
[--quick] [--rounds N] [--output FILE]``. Results: the table on stdout and
``bench/results/scan.json``. Exit status 1 when a check fails (not when a goal is missed).
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import math
import os
import platform
import random
import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from common import markdown_table  # noqa: E402
from scan_samples import KIND, MAKERS, in_context, token  # noqa: E402

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "scan.json"
SEED = 20261128
GOAL_RATIO = 10.0
PASSPHRASE = "bench passphrase for a throwaway vault"  # not a secret
ENCODINGS = ("literal", "base64", "base64url", "url-quoted", "escaped")
STORED_COUNT = 20


class CheckFailed(Exception):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


# --- the tree ----------------------------------------------------------------------------------


@dataclass
class Plant:
    path: str  # relative to the tree, posix
    cell: int
    where: str  # "source" or "outputs[0].text"
    line: int  # 1-based, in the cell's text
    file_line: int = 0  # 1-based, in the .ipynb file
    kind: str = ""  # a pattern kind, or "stored-value"
    encoding: str = ""  # for stored values
    value: str = field(default="", repr=False)


CODE = [
    "import numpy as np\nimport pandas as pd\nimport matplotlib.pyplot as plt",
    "df = pd.read_csv('data/sales_{n}.csv', parse_dates=['date'])\ndf.head()",
    "df.groupby('region')['revenue'].agg(['mean', 'sum', 'count'])",
    "fig, ax = plt.subplots(figsize=(8, 5))\nax.plot(df['date'], df['revenue'])\n"
    "ax.set_title('Revenue')\nplt.show()",
    "def clean(frame):\n    frame = frame.dropna(subset=['customer_id'])\n"
    "    frame['month'] = frame['date'].dt.to_period('M')\n    return frame\n\ndf = clean(df)",
    "from sklearn.model_selection import train_test_split\n"
    "X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state={n})",
    "model = RandomForestRegressor(n_estimators={n}, max_depth=8)\nmodel.fit(X_train, y_train)",
    "for epoch in range({n}):\n    loss = train_one_epoch(model, loader)\n"
    "    print(f'epoch {{epoch}}: loss={{loss:.4f}}')",
    "resp = requests.get('https://api.example.com/v1/items', params={{'page': {n}}})\n"
    "resp.raise_for_status()\nitems = resp.json()['items']",
    "api_key = os.environ['SERVICE_API_KEY']\nclient = Client(api_key=api_key)",
]
MARKDOWN = [
    "# Quarterly revenue analysis\n\nThis notebook loads the sales extract and looks at "
    "revenue by region.",
    "## Cleaning\n\nRows without a customer id are dropped; dates are parsed as UTC.",
    "We use scikit-learn (`sk-learn` in some old docs) for the model; see "
    "https://scikit-learn.org/stable/ for details.",
    "Set `OPENAI_API_KEY` in your environment, e.g. `export OPENAI_API_KEY=YOUR_API_KEY`.",
    "The AWS docs use `AKIAIOSFODNN7EXAMPLE` as an example access key id.",
    "Connect with `postgres://analyst:${DB_PASSWORD}@db.internal:5432/sales`.",
]


def decoys(rng: random.Random) -> list[str]:
    """Look-alikes that are not secrets (precision)."""
    hexes = "".join(rng.choice("0123456789abcdef") for _ in range(64))
    commit = "".join(rng.choice("0123456789abcdef") for _ in range(40))
    uuid = "-".join(
        "".join(rng.choice("0123456789abcdef") for _ in range(n)) for n in (8, 4, 4, 4, 12)
    )
    return [
        f"checksum = '{hexes}'",
        f"# built from commit {commit}",
        f"run_id = '{uuid}'",
        "token = getpass.getpass('API token: ')",
        "password = os.environ.get('DB_PASSWORD', '')",
        "OPENAI_API_KEY = 'sk-...'",
        "secret_key = 'changeme'",
    ]


def table_html(rng: random.Random, rows: int) -> str:
    body = "".join(
        "<tr>" + "".join(f"<td>{rng.uniform(0, 1e5):.2f}</td>" for _ in range(5)) + "</tr>\n"
        for _ in range(rows)
    )
    return f'<table border="1" class="dataframe">\n<tbody>\n{body}</tbody>\n</table>'


def stream_text(rng: random.Random, lines: int) -> str:
    return "".join(
        f"{i:>5}  {rng.choice(['north', 'south', 'east', 'west']):<6} "
        f"{rng.uniform(0, 1e4):>10.2f} {rng.randint(0, 500):>6}\n"
        for i in range(lines)
    )


def make_stored_values(rng: random.Random) -> dict[str, str]:
    alphabet = string.ascii_letters + string.digits + '!#$%&*+/=?@^_~" \\'
    values = {}
    for index in range(STORED_COUNT):
        while True:
            value = "".join(rng.choice(alphabet) for _ in range(rng.randint(24, 40)))
            # Every encoding must differ from the literal (so each is really tested).
            if '"' in value or "\\" in value:
                break
        values[f"BENCH_SECRET_{index:02d}"] = value
    return values


def encode(value: str, encoding: str) -> str:
    data = value.encode()
    return {
        "literal": lambda: value,
        "base64": lambda: base64.b64encode(data).decode(),
        "base64url": lambda: base64.urlsafe_b64encode(data).decode(),
        "url-quoted": lambda: urllib.parse.quote(value, safe=""),
        "escaped": lambda: json.dumps(value)[1:-1],
    }[encoding]()


STORED_CONTEXTS = (
    "password = '{}'",
    "headers = {{'Authorization': 'Basic {}'}}",
    "conn = connect(host='db.internal', secret='{}')",
    "url = 'https://api.example.com/v1/?token={}'",
)


def ordinary_cells(rng: random.Random) -> list[dict[str, Any]]:
    """The cells of a notebook without secrets: code, prose, tables, look-alikes."""
    cells: list[dict[str, Any]] = []
    for _ in range(rng.randint(6, 20)):
        if rng.random() < 0.3:
            cells.append(markdown_cell(rng.choice(MARKDOWN)))
            continue
        source = rng.choice(CODE).format(n=rng.randint(1, 500))
        if rng.random() < 0.3:
            source += "\n" + rng.choice(decoys(rng))
        outputs: list[dict[str, Any]] = []
        roll = rng.random()
        if roll < 0.4:
            outputs.append(stream_output(stream_text(rng, rng.randint(3, 40))))
        elif roll < 0.6:
            data = {"text/html": table_html(rng, rng.randint(5, 30)), "text/plain": "<DataFrame>"}
            outputs.append(
                {
                    "output_type": "execute_result",
                    "execution_count": len(cells) + 1,
                    "metadata": {},
                    "data": data,
                }
            )
        cells.append(code_cell(source, outputs, len(cells) + 1))
    return cells


def secrets_plan(
    rng: random.Random, number: int, stored: dict[str, str]
) -> list[tuple[str, str, str]]:
    """What to plant in notebook ``number``: (maker or "stored-value", value, encoding)."""
    plan: list[tuple[str, str, str]] = []
    roll = rng.random()
    if roll < 0.10:
        for _ in range(rng.randint(1, 3)):
            maker = rng.choice(sorted(MAKERS))
            plan.append((maker, token(maker, f"bench-{number}-{len(plan)}"), ""))
    elif roll < 0.15:
        for _ in range(rng.randint(1, 2)):
            encoding = rng.choice(ENCODINGS)
            value = stored[rng.choice(sorted(stored))]
            plan.append(("stored-value", encode(value, encoding), encoding))
    # Each value once per notebook (a base64 form without + or / is also the base64url one).
    return list({value: (kind, value, encoding) for kind, value, encoding in plan}.values())


def written(rng: random.Random, maker: str, value: str) -> str:
    """A line of code holding a token, in one of the ways notebooks hold them."""
    if maker == "url-password":
        return rng.choice(
            [
                in_context(maker, value),  # engine = create_engine("postgresql://...")
                f'DATABASE_URL = "postgresql://analyst:{value}@db.internal:5432/sales"',
            ]
        )
    if maker in ("aws-secret-access-key", "private-key"):
        return in_context(maker, value)
    return rng.choice(
        [
            in_context(maker, value),  # TOKEN = "..."
            f'client = Client(api_key="{value}")',
            f'os.environ["SERVICE_TOKEN"] = "{value}"',
        ]
    )


def plant(
    rng: random.Random, cells: list[dict[str, Any]], plan: list[tuple[str, str, str]], path: str
) -> list[Plant]:
    plants = []
    for maker, value, encoding in plan:
        index = rng.randrange(len(cells) + 1)
        line = rng.choice(STORED_CONTEXTS).format(value) if encoding else written(rng, maker, value)
        if rng.random() < 0.5:
            cell = code_cell(f"x = compute()\n{line}\nprint(x)", [], index + 1)
            where, text = "source", cell["source"]
        else:
            cell = code_cell("show_config()", [stream_output(f"config:\n{line}\n")], index + 1)
            where, text = "outputs[0].text", cell["outputs"][0]["text"]
        cells.insert(index, cell)
        line_number = text[: text.index(value)].count("\n") + 1
        kind = "stored-value" if encoding else KIND[maker]
        plants.append(Plant(path, index, where, line_number, 0, kind, encoding, value))
    # Cells inserted before earlier plants moved them down.
    for planted in plants:
        planted.cell = next(
            i
            for i, c in enumerate(cells)
            if planted.value in c["source"]
            or any(planted.value in o.get("text", "") for o in c.get("outputs", []))
        )
    return plants


def with_plots(rng: random.Random, notebook: dict[str, Any], target: int) -> str:
    """The notebook, with plots (random bytes: as incompressible as PNG) up to ``target``."""
    text = serialise(notebook)
    while len(text) < target:
        size = min(max(target - len(text), 2_000) * 3 // 4, 120_000)
        png = base64.b64encode(rng.randbytes(size)).decode()
        plot = {
            "output_type": "display_data",
            "metadata": {},
            "data": {"image/png": png, "text/plain": "<Figure size 640x480 with 1 Axes>"},
        }
        notebook["cells"].append(code_cell("plt.show()", [plot], len(notebook["cells"]) + 1))
        text = serialise(notebook)
    return text


def file_lines(plants: list[Plant], text: str) -> None:
    raw_lines = text.split("\n")
    for planted in plants:
        # A PEM block spans lines: its (unique) first body line, minus one, is the header's.
        lines = planted.value.split("\n")
        unique, offset = (lines[1], 1) if len(lines) > 1 else (lines[0], 0)
        escaped = json.dumps(unique)[1:-1]
        found = next(i for i, line in enumerate(raw_lines, 1) if escaped in line)
        planted.file_line = found - offset


def generate_tree(
    root: Path, count: int, stored: dict[str, str], seed: int
) -> tuple[list[Plant], int]:
    rng = random.Random(seed)
    plants: list[Plant] = []
    total = 0
    for number in range(count):
        relative = f"project-{number // 100:02d}/analysis-{number:04d}.ipynb"
        target = int(math.exp(rng.uniform(math.log(20_000), math.log(200_000))))
        cells = ordinary_cells(rng)
        mine = plant(rng, cells, secrets_plan(rng, number, stored), relative)
        notebook = {
            "cells": cells,
            "metadata": {
                "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                "language_info": {"name": "python", "version": "3.11.7"},
            },
            "nbformat": 4,
            "nbformat_minor": 5,
        }
        text = with_plots(rng, notebook, target)
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        total += len(text.encode("utf-8"))
        file_lines(mine, text)
        plants.extend(mine)
    return plants, total


def serialise(notebook: dict[str, Any]) -> str:
    """As nbformat writes a notebook: multi-line text as lists of lines, indent=1."""

    def split(value: Any) -> Any:
        return value.splitlines(keepends=True) if isinstance(value, str) else value

    copy = json.loads(json.dumps(notebook))
    for cell in copy["cells"]:
        cell["source"] = split(cell["source"])
        for output in cell.get("outputs", []):
            if output["output_type"] == "stream":
                output["text"] = split(output["text"])
            for mime, value in output.get("data", {}).items():
                if mime.startswith("text/"):
                    output["data"][mime] = split(value)
    return json.dumps(copy, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


_CELL_IDS = itertools.count()


def markdown_cell(text: str) -> dict[str, Any]:
    return {"cell_type": "markdown", "id": f"c{next(_CELL_IDS)}", "metadata": {}, "source": text}


def code_cell(source: str, outputs: list[dict[str, Any]], count: int) -> dict[str, Any]:
    return {
        "cell_type": "code",
        "execution_count": count,
        "id": f"c{next(_CELL_IDS)}",
        "metadata": {},
        "outputs": outputs,
        "source": source,
    }


def stream_output(text: str) -> dict[str, Any]:
    return {"output_type": "stream", "name": "stdout", "text": text}


# --- running the tools -----------------------------------------------------------------------


def write_vault(environment: dict[str, str], stored: dict[str, str]) -> None:
    """The stored values, written into the throwaway vault through the public API."""
    code = (
        "import json, sys\n"
        "from jupyter_secure_storage import SecureStorage\n"
        "store = SecureStorage(backend='vault')\n"
        "for name, value in json.load(sys.stdin).items():\n"
        "    store.write(name, value)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(stored),
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    check(done.returncode == 0, f"writing the vault failed: {done.stderr[-500:]}")


@dataclass
class ToolRun:
    seconds: float
    flagged: set[tuple[str, ...]]
    findings: int


def run_ours(tree: Path, environment: dict[str, str], values: list[str]) -> ToolRun:
    command = [sys.executable, "-m", "jupyter_secure_storage", "scan", ".", "--format", "json"]
    started = time.perf_counter()
    done = subprocess.run(
        command,
        cwd=tree,
        env=environment,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    seconds = time.perf_counter() - started
    check(done.returncode in (0, 1), f"our scan failed ({done.returncode}): {done.stderr[-800:]}")
    check("warning" not in done.stderr, "our scan did not open the vault: " + done.stderr[-500:])
    check(not any(value in done.stdout + done.stderr for value in values), "a value was shown")
    findings = json.loads(done.stdout)
    flagged = {
        (os.path.normpath(f["path"]), str(f.get("cell")), f.get("where", ""), str(f["line"]))
        for f in findings
    }
    return ToolRun(seconds, flagged, len(findings))


# detect-secrets without its generic high-entropy plugins: its token formats and keywords.
WITHOUT_ENTROPY = (
    "--disable-plugin",
    "Base64HighEntropyString",
    "--disable-plugin",
    "HexHighEntropyString",
)


def run_detect_secrets(tree: Path, environment: dict[str, str], *options: str) -> ToolRun:
    executable = shutil.which("detect-secrets", path=str(Path(sys.executable).parent))
    check(executable is not None, "detect-secrets is not installed (bash bench/run.sh does it)")
    started = time.perf_counter()
    done = subprocess.run(
        [str(executable), "scan", "--all-files", *options, "."],
        cwd=tree,
        env=environment,
        capture_output=True,
        text=True,
        timeout=7200,
        check=False,
    )
    seconds = time.perf_counter() - started
    check(done.returncode == 0, f"detect-secrets failed: {done.stderr[-800:]}")
    results = json.loads(done.stdout)["results"]
    flagged = {
        (os.path.normpath(path), str(item["line_number"]))
        for path, items in results.items()
        for item in items
    }
    return ToolRun(seconds, flagged, sum(len(items) for items in results.values()))


def warm(tree: Path) -> None:
    for path in tree.rglob("*.ipynb"):
        path.read_bytes()


# --- counting ----------------------------------------------------------------------------------


@dataclass
class Score:
    found: int
    planted: int

    @property
    def recall(self) -> float:
        return self.found / self.planted if self.planted else float("nan")


def ours_key(plant: Plant) -> tuple[str, ...]:
    return (os.path.normpath(plant.path), str(plant.cell), plant.where, str(plant.line))


def theirs_key(plant: Plant) -> tuple[str, ...]:
    return (os.path.normpath(plant.path), str(plant.file_line))


def score(plants: list[Plant], flagged: set[tuple[str, ...]], key: Any, select: Any) -> Score:
    chosen = [p for p in plants if select(p)]
    return Score(sum(key(p) in flagged for p in chosen), len(chosen))


def precision(plants: list[Plant], flagged: set[tuple[str, ...]], key: Any) -> tuple[float, int]:
    planted_lines = {key(p) for p in plants}
    true = len(flagged & planted_lines)
    return (true / len(flagged) if flagged else float("nan")), len(flagged) - true


# --- the table -----------------------------------------------------------------------------------


@dataclass
class Row:
    measurement: str
    ours: str
    baseline: str  # detect-secrets, default plugins
    bare: str  # detect-secrets without its high-entropy plugins
    ratio: str
    goal: str
    met: bool | None
    data: dict[str, Any] = field(default_factory=dict)

    def cells(self) -> list[str]:
        met = "-" if self.met is None else ("yes" if self.met else "**no**")
        return [self.measurement, self.ours, self.baseline, self.bare, self.ratio, self.goal, met]


COLUMNS = [
    "measurement",
    "ours",
    "detect-secrets 1.5.0, default plugins (baseline)",
    "detect-secrets, no entropy plugins",
    "ratio",
    "goal",
    "met?",
]


def percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1%}"


def recall_cell(result: Score) -> str:
    return f"{percent(result.recall)} ({result.found}/{result.planted})"


def build_rows(
    plants: list[Plant],
    total: int,
    ours: list[ToolRun],
    theirs: list[ToolRun],
    bare: list[ToolRun],
) -> list[Row]:
    medians = [statistics.median(r.seconds for r in runs) for runs in (ours, theirs, bare)]
    rates = [total / seconds / 1e6 for seconds in medians]
    ratio = rates[0] / rates[1]
    flagged = [ours[0].flagged, theirs[0].flagged, bare[0].flagged]
    keys = [ours_key, theirs_key, theirs_key]

    def scores(select: Any) -> list[Score]:
        return [score(plants, f, k, select) for f, k in zip(flagged, keys, strict=True)]

    rows = [
        Row(
            f"throughput ({total / 1e6:.0f} MB; median of {len(ours)}, {len(theirs)}, "
            f"{len(bare)} runs)",
            f"{rates[0]:.1f} MB/s ({medians[0]:.2f} s)",
            f"{rates[1]:.2f} MB/s ({medians[1]:.1f} s)",
            f"{rates[2]:.2f} MB/s ({medians[2]:.1f} s)",
            f"{ratio:.1f}x",
            f">= {GOAL_RATIO:.0f}x",
            ratio >= GOAL_RATIO,
            {"seconds": [[r.seconds for r in runs] for runs in (ours, theirs, bare)]},
        )
    ]
    patterns = scores(lambda p: p.kind != "stored-value")
    rows.append(
        Row(
            "recall, token formats",
            *(recall_cell(result) for result in patterns),
            "",
            ">= detect-secrets",
            patterns[0].recall >= max(patterns[1].recall, patterns[2].recall),
        )
    )
    for kind in sorted({p.kind for p in plants if p.kind != "stored-value"}):
        per_kind = scores(lambda p, k=kind: p.kind == k)
        rows.append(
            Row(
                f"  recall, {kind}",
                *(f"{r.found}/{r.planted}" for r in per_kind),
                "",
                "report",
                None,
            )
        )
    stored = scores(lambda p: p.kind == "stored-value")
    rows.append(
        Row(
            "recall, stored values (all encodings)",
            *(recall_cell(result) for result in stored),
            "",
            "100% in every encoding",
            stored[0].found == stored[0].planted,
        )
    )
    for encoding in ENCODINGS:
        per_encoding = scores(lambda p, e=encoding: p.encoding == e)
        rows.append(
            Row(
                f"  recall, stored {encoding}",
                *(f"{r.found}/{r.planted}" for r in per_encoding),
                "",
                "100%",
                (per_encoding[0].found == per_encoding[0].planted)
                if per_encoding[0].planted
                else None,
            )
        )
    cells = []
    for lines, key in zip(flagged, keys, strict=True):
        value, false = precision(plants, lines, key)
        cells.append(f"{percent(value)} ({false} false)")
    rows.append(
        Row(
            "precision (flagged lines that hold a planted secret)",
            *cells,
            "",
            "report",
            None,
        )
    )
    return rows


def timed_runs(
    tree: Path, environment: dict[str, str], rounds: int, values: list[str]
) -> tuple[list[ToolRun], list[ToolRun], list[ToolRun]]:
    """Ours and detect-secrets interleaved (alternating which goes first), then once more
    detect-secrets without its high-entropy plugins (what it finds by format)."""
    ours: list[ToolRun] = []
    theirs: list[ToolRun] = []
    for round_number in range(rounds):
        order = [0, 1] if round_number % 2 == 0 else [1, 0]
        for which in order:
            if which == 0:
                print(f"round {round_number + 1}: jupyter-secure-storage scan", flush=True)
                ours.append(run_ours(tree, environment, values))
            else:
                print(f"round {round_number + 1}: detect-secrets scan", flush=True)
                theirs.append(run_detect_secrets(tree, environment))
    check(all(r.flagged == ours[0].flagged for r in ours), "our findings changed between runs")
    print("detect-secrets scan without its entropy plugins", flush=True)
    bare = [run_detect_secrets(tree, environment, *WITHOUT_ENTROPY)]
    return ours, theirs, bare


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="100 notebooks, 1 round")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 3)")
    parser.add_argument("--notebooks", type=int, default=None, help="default 2000")
    parser.add_argument("--output", type=Path, default=RESULTS_FILE, help="the JSON file")
    args = parser.parse_args(argv)
    count = args.notebooks or (100 if args.quick else 2000)
    rounds = args.rounds or (1 if args.quick else 3)

    rng = random.Random(SEED)
    stored = make_stored_values(rng)
    try:
        with tempfile.TemporaryDirectory(prefix="jss-bench-scan-") as temporary:
            scratch = Path(temporary)
            tree = scratch / "tree"
            tree.mkdir()
            for sub in ("data", "config", "runtime"):
                (scratch / "jupyter" / sub).mkdir(parents=True)
            environment = {
                key: value
                for key, value in os.environ.items()
                if not key.startswith("JUPYTER_SECURE_STORAGE")
            }
            environment.update(
                JUPYTER_DATA_DIR=str(scratch / "jupyter" / "data"),
                JUPYTER_CONFIG_DIR=str(scratch / "jupyter" / "config"),
                JUPYTER_RUNTIME_DIR=str(scratch / "jupyter" / "runtime"),
                JUPYTER_SECURE_STORAGE_BACKEND="vault",
                JUPYTER_SECURE_STORAGE_VAULT=str(scratch / "bench.jssv"),
                JUPYTER_SECURE_STORAGE_PASSPHRASE=PASSPHRASE,
            )
            print(f"writing {STORED_COUNT} values into a throwaway vault ...", flush=True)
            write_vault(environment, stored)
            print(f"generating {count} notebooks ...", flush=True)
            plants, total = generate_tree(tree, count, stored, SEED + 1)
            check(all(p.file_line > 0 for p in plants), "a plant's file line was not found")
            warm(tree)
            values = [p.value for p in plants] + list(stored.values())
            ours, theirs, bare = timed_runs(tree, environment, rounds, values)
            rows = build_rows(plants, total, ours, theirs, bare)
    except CheckFailed as error:
        print(f"\nCHECK FAILED: {error}", file=sys.stderr)
        return 1

    kinds = defaultdict(int)
    for plant in plants:
        kinds[plant.kind] += 1
    versions = ", ".join(
        f"{name} {metadata.version(name)}" for name in ("detect-secrets", "ahocorasick-rs", "numpy")
    )
    print()
    print(
        f"Python {platform.python_version()} on {platform.platform()}, {os.cpu_count()} CPUs; "
        f"{versions}; {count} notebooks, {total / 1e6:.1f} MB, {len(plants)} planted "
        f"({sum(v for k, v in kinds.items() if k != 'stored-value')} token formats, "
        f"{kinds['stored-value']} stored values)" + ("; QUICK run" if args.quick else "")
    )
    print()
    print(markdown_table(rows, COLUMNS))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "notebooks": count,
                "bytes": total,
                "planted": dict(kinds),
                "quick": args.quick,
                "rows": [asdict(row) for row in rows],
            },
            indent=1,
        )
        + "\n"
    )
    print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
