"""Save guard benchmark: what the pre-save scrub adds to a notebook save.

The Jupyter server serialises every notebook it saves (``nbformat.writes``: JSON with
indent 1) and writes it; the save guard (``SaveGuard.check``) runs before that on the
same model. Measured in one run, interleaved, on generated notebooks of about 1 MB and
10 MB (code cells, stream output, base64 PNG-sized plots of random bytes, a widget-state
block), with 100 values stored in a throwaway vault (so their fingerprints exist) and
none of them in the notebook (the common case: nothing to scrub):

- ours: ``SaveGuard.check`` on a fresh copy of the model (stored values by fingerprint
  and token formats; the fingerprints are cached, as between two saves);
- baseline: ``nbformat.writes`` of the same notebook -- what every save costs anyway.

The ratio says how much slower a save's CPU work becomes. Nothing secret is printed.
Usage: ``.venv/bin/python bench/save_guard.py [--quick] [--output FILE]``.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS_FILE = Path(__file__).parent / "results" / "save_guard.json"


def make_notebook(target_bytes: int, seed: int) -> dict[str, Any]:
    import nbformat

    rng = random.Random(seed)
    notebook = nbformat.v4.new_notebook()
    size = 0
    index = 0
    while size < target_bytes:
        source = "\n".join(
            f"result_{index}_{i} = compute(data[{i}], alpha={rng.random():.4f})" for i in range(8)
        )
        cell = nbformat.v4.new_code_cell(source)
        text = "".join(f"epoch {i}: loss={rng.random():.6f}\n" for i in range(40))
        png = base64.b64encode(rng.randbytes(rng.randrange(20_000, 60_000))).decode()
        cell.outputs = [
            nbformat.v4.new_output("stream", name="stdout", text=text),
            nbformat.v4.new_output(
                "display_data", data={"image/png": png, "text/plain": "<Figure>"}
            ),
        ]
        notebook.cells.append(cell)
        size += len(source) + len(text) + len(png)
        index += 1
    notebook.metadata["widgets"] = {
        "application/vnd.jupyter.widget-state+json": {
            "version_major": 2,
            "version_minor": 0,
            "state": {
                f"m{i}": {"model_name": "FloatSliderModel", "state": {"value": rng.random()}}
                for i in range(50)
            },
        }
    }
    return dict(notebook)


def timed(function: Any, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few rounds (a smoke test)")
    parser.add_argument("--output", type=Path, default=RESULTS_FILE)
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else 15

    scratch = Path(tempfile.mkdtemp(prefix="jss-bench-save-"))
    os.environ["JUPYTER_DATA_DIR"] = str(scratch / "data")
    os.environ["JUPYTER_CONFIG_DIR"] = str(scratch / "config")
    os.environ["JUPYTER_SECURE_STORAGE_BACKEND"] = "vault"
    os.environ["JUPYTER_SECURE_STORAGE_VAULT"] = str(scratch / "bench.jssv")
    os.environ["JUPYTER_SECURE_STORAGE_PASSPHRASE"] = "bench passphrase, not a secret"

    import nbformat
    from traitlets.config import Config

    from jupyter_secure_storage import SecureStorage
    from jupyter_secure_storage.server.save_guard import SaveGuard

    rng = random.Random(7)
    store = SecureStorage()
    for i in range(100):
        store.write(
            f"BENCH_KEY_{i}", "".join(rng.choices("abcdefghijkmnpqrstuvwxyz0123456789", k=40))
        )
    config = Config()
    config.SaveGuard.reload_seconds = 3600.0  # cached between saves, as in a running server
    guard = SaveGuard(config=config)

    rows = []
    for label, target in (("1 MB", 1_000_000), ("10 MB", 10_000_000)):
        notebook = make_notebook(target, seed=target)
        size = len(nbformat.writes(nbformat.from_dict(notebook)))
        guard.check({"type": "notebook", "content": copy.deepcopy(notebook)}, "warm.ipynb")
        ours: list[float] = []
        base: list[float] = []
        for _ in range(rounds):
            model = {"type": "notebook", "content": copy.deepcopy(notebook)}
            ours += timed(lambda model=model: guard.check(model, "n.ipynb"), 1)
            node = nbformat.from_dict(copy.deepcopy(notebook))
            base += timed(lambda node=node: nbformat.writes(node), 1)
        found = guard.check({"type": "notebook", "content": copy.deepcopy(notebook)}, "n.ipynb")
        if found:
            print(f"unexpected findings in the clean {label} notebook: {len(found)}")
            return 1
        ours_median, base_median = statistics.median(ours), statistics.median(base)
        rows.append(
            {
                "measurement": (
                    f"save guard on a clean {label} notebook ({size / 1e6:.1f} MB saved)"
                ),
                "ours_s": ours_median,
                "baseline_s": base_median,
                "ratio": ours_median / base_median,
                "throughput_mb_s": size / 1e6 / ours_median,
                "rounds": rounds,
            }
        )

    print(f"Python {platform.python_version()} on {platform.platform()}, {os.cpu_count()} CPUs")
    print()
    print(
        "| measurement | ours (SaveGuard.check) "
        "| baseline (nbformat.writes, same notebook) | ratio |"
    )
    print("|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['measurement']} | {row['ours_s'] * 1e3:.1f} ms "
            f"({row['throughput_mb_s']:.0f} MB/s) | {row['baseline_s'] * 1e3:.1f} ms | "
            f"{row['ratio']:.2f}x |"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
