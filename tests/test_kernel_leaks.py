"""The leak suite: a real kernel shows a stored canary in 30 ways; nothing leaves it whole.

A canary is written to a vault chosen through the environment, a notebook reads it
with ``%secure_read`` and then tries every usual way to show it -- results, print,
stderr, one character at a time, logging, warnings, exceptions, Verbose tracebacks,
HTML/JSON/Markdown displays and updates, subprocesses, ``os.system``, C-level
``os.write``, base64 and URL-quoted forms, widget state. nbclient runs it in a real
ipykernel and saves it. The saved notebook (outputs and widget state), IPython's
``history.sqlite`` and the kernel's own terminal must hold neither the canary nor any
encoding of it -- and the run must provably be real: the cells ran, the secret was
read (its hash is printed), and the redaction markers are where the leaks were.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import secrets
import urllib.parse
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import fast_kdf_config
from nbclient import NotebookClient

from jupyter_secure_storage import SecureStorage

MARKER = "[secret:LEAK_CANARY]"

# Each entry: (what it tries, the cell's code, whether the marker must appear in its outputs).
LEAKS: list[tuple[str, str, bool]] = [
    ("cell result", "value", True),
    ("print", "print(value)", True),
    ("stderr", "import sys\nprint(value, file=sys.stderr)", True),
    (
        "one character at a time with flushes",
        "import time\nfor ch in value:\n"
        "    print(ch, end='', flush=True)\n    time.sleep(0.002)\nprint()",
        True,
    ),
    (
        "logging",
        "import logging\nlogging.getLogger('leaky').warning('token=%s', value)",
        True,
    ),
    ("warnings", "import warnings\nwarnings.warn('token ' + value)", True),
    ("exception message", "raise RuntimeError('auth failed for ' + value)", True),
    (
        "Verbose traceback locals",
        "%xmode Verbose\ndef call_api(api_key):\n    return 1 / 0\ncall_api(value)",
        True,
    ),
    ("back to Context tracebacks", "%xmode Context", False),
    (
        "HTML display",
        "from IPython.display import HTML, JSON, Markdown, display\n"
        "display(HTML('<pre>' + value + '</pre>'))",
        True,
    ),
    ("JSON display", "display(JSON({'api_key': value}))", True),
    ("Markdown display", "display(Markdown('`' + value + '`'))", True),
    (
        "display update",
        "handle = display('placeholder', display_id=True)\nhandle.update(value)",
        True,
    ),
    (
        "os.system with the value in the environment",
        "import os\nos.environ['LEAK_VAR'] = value\nos.system('echo $LEAK_VAR')",
        True,
    ),
    (
        "subprocess output captured from the file descriptors",
        "import subprocess, sys\nsubprocess.run([sys.executable, '-c', "
        "\"import os; print(os.environ['LEAK_VAR'])\"])",
        True,
    ),
    ("C-level write to fd 1", "os.write(1, (value + '\\n').encode())", True),
    (
        "base64",
        "import base64\nprint(base64.b64encode(value.encode()).decode())",
        True,
    ),
    (
        "URL-safe base64 inside Basic credentials",
        "print(base64.urlsafe_b64encode(('user:' + value).encode()).decode())",
        True,
    ),
    (
        "URL-quoted",
        "import urllib.parse\n"
        "print(urllib.parse.quote(value, safe=''), urllib.parse.quote_plus(value))",
        True,
    ),
    ("JSON-escaped", "import json\nprint(json.dumps({'api_key': value}))", True),
    ("dict repr result", "{'api_key': value, 'retries': 3}", True),
    ("list print", "print([value, value])", True),
    ("f-string header", "print(f'Authorization: Bearer {value}')", True),
    ("%secure_env then !echo", "%secure_env LEAK_CANARY=LEAK_ENV\n!echo $LEAK_ENV", True),
    (
        "ipywidgets Label",
        "import ipywidgets as widgets\nlabel = widgets.Label(value=value)\ndisplay(label)",
        True,
    ),
    # The two below show no value in their output; their widget state is checked below.
    ("ipywidgets Password", "password = widgets.Password(value=value)\ndisplay(password)", False),
    ("Text widget updated later", "box = widgets.Text()\ndisplay(box)\nbox.value = value", False),
    (
        "an object whose repr holds it",
        "class Client:\n    def __repr__(self):\n        return f'Client(key={value!r})'\nClient()",
        True,
    ),
    ("the Secret itself", "key", False),
    ("the Secret printed", "print(key, repr(key), f'{key}')", False),
]


def encodings(value: str) -> list[str]:
    data = value.encode()
    return [
        value,
        base64.b64encode(data).decode(),
        base64.urlsafe_b64encode(data).decode(),
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value),
        json.dumps(value)[1:-1],
        html.escape(value),
        repr(value)[1:-1],
    ]


def leaked_forms(blob: bytes, value: str) -> list[int]:
    """Indexes (never the forms themselves) of the encodings of ``value`` found in ``blob``."""
    return [i for i, form in enumerate(encodings(value)) if form.encode() in blob]


@pytest.fixture
def kernel_env(
    vault_env: Path, isolated_jupyter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    config = fast_kdf_config()
    (isolated_jupyter / "config" / "jupyter_secure_storage_config.json").write_text(
        json.dumps({"VaultBackend": dict(config.VaultBackend)})
    )
    monkeypatch.setenv("JUPYTER_SECURE_STORAGE_BACKEND", "vault")
    ipython_dir = tmp_path / "ipython"
    monkeypatch.setenv("IPYTHONDIR", str(ipython_dir))
    return ipython_dir


def build_notebook() -> nbformat.NotebookNode:
    cells = [
        "%load_ext jupyter_secure_storage",
        "key = %secure_read LEAK_CANARY\nvalue = key.reveal()",
        "import hashlib\nprint('proof', hashlib.sha256(value.encode()).hexdigest(), len(value))",
    ]
    cells += [code for _, code, _ in LEAKS]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    return notebook


def outputs_text(cell: Any) -> str:
    return json.dumps(cell.get("outputs", []))


@pytest.mark.timeout(600)
def test_a_canary_shown_thirty_ways_leaves_no_trace(
    kernel_env: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    canary = "jss" + secrets.token_urlsafe(24) + "/+=&'\"x"
    SecureStorage(backend="vault", config=fast_kdf_config()).write("LEAK_CANARY", canary)

    notebook = build_notebook()
    client = NotebookClient(
        notebook,
        timeout=180,
        kernel_name="python3",
        allow_errors=True,
        store_widget_state=True,
        # nbclient keeps history in memory by default; a person's kernel writes a file.
        ipython_hist_file=str(tmp_path / "history.sqlite"),
        resources={"metadata": {"path": str(tmp_path)}},
    )
    # ipykernel stops capturing file descriptors when it sees PYTEST_CURRENT_TEST;
    # a user's kernel never does, so neither does this one.
    kernel_environment = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    client.execute(env=kernel_environment)
    saved = tmp_path / "leaks.ipynb"
    nbformat.write(notebook, saved)
    terminal = capfd.readouterr()

    # The run was real: every cell ran, the secret read was the canary.
    assert all(cell.get("execution_count") for cell in notebook.cells)
    proof = outputs_text(notebook.cells[2])
    expected = hashlib.sha256(canary.encode()).hexdigest()
    assert expected in proof
    assert f" {len(canary)}" in proof

    # Each leak cell shows the marker where the value would have been.
    missing_marker = [
        what
        for (what, _, wants_marker), cell in zip(LEAKS, notebook.cells[3:], strict=True)
        if wants_marker and MARKER not in outputs_text(cell)
    ]
    assert missing_marker == [], f"no redaction marker in: {missing_marker}"
    assert notebook.metadata.get("widgets"), "widget state was not saved"
    models = notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    hidden = [m["model_name"] for m in models.values() if m["state"].get("value") == MARKER]
    assert sorted(hidden) == ["LabelModel", "PasswordModel", "TextModel"], hidden

    # And nothing leaked: the saved notebook, IPython's history, the kernel's terminal.
    assert leaked_forms(saved.read_bytes(), canary) == []
    history = tmp_path / "history.sqlite"
    assert history.exists(), "IPython wrote no history.sqlite"
    history_bytes = history.read_bytes()
    assert b"secure_read LEAK_CANARY" in history_bytes
    assert leaked_forms(history_bytes, canary) == []
    echoed = (terminal.out + terminal.err).encode()
    assert leaked_forms(echoed, canary) == []
