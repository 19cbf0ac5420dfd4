"""A real kernel: loading from config at start, injection, opting out visibly, unloading.

Values are compared by hash inside the kernel or by membership here; none is printed.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

import nbformat
import pytest
from conftest import fast_kdf_config
from nbclient import NotebookClient

from jupyter_secure_storage import SecureStorage

MARKER = "[secret:OPT_CANARY]"


@pytest.fixture
def canary(vault_env: Path, isolated_jupyter: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    config = fast_kdf_config()
    (isolated_jupyter / "config" / "jupyter_secure_storage_config.json").write_text(
        json.dumps({"VaultBackend": dict(config.VaultBackend)})
    )
    monkeypatch.setenv("JUPYTER_SECURE_STORAGE_BACKEND", "vault")
    value = "opt-" + secrets.token_urlsafe(24)
    SecureStorage(backend="vault", config=fast_kdf_config()).write("OPT_CANARY", value)
    return value


def execute(cells: list[str], tmp_path: Path, extra_arguments: list[str] | None = None) -> Any:
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    client = NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        allow_errors=True,
        extra_arguments=extra_arguments or [],
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute(env={k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"})
    return notebook


def text_of(cell: Any) -> str:
    return json.dumps(cell.get("outputs", []))


def test_loaded_at_kernel_start_with_keys_injected_before_any_cell(
    canary: str, tmp_path: Path
) -> None:
    notebook = execute(
        [
            "import os, hashlib\n"
            "print(hashlib.sha256(os.environ['INJECTED_KEY'].encode()).hexdigest())",
            "print(os.environ['INJECTED_KEY'])",
            "%secure_status",
        ],
        tmp_path,
        extra_arguments=[
            "--InteractiveShellApp.extensions=['jupyter_secure_storage']",
            "--SecureStorageMagics.inject_env={'INJECTED_KEY': 'OPT_CANARY'}",
        ],
    )
    first, printed, status = (text_of(cell) for cell in notebook.cells)
    assert hashlib.sha256(canary.encode()).hexdigest() in first
    assert MARKER in printed
    assert canary not in printed
    assert "$INJECTED_KEY (from OPT_CANARY)" in status
    assert "redaction  : ON" in status


def test_opting_out_is_per_cell_or_global_and_always_visible(canary: str, tmp_path: Path) -> None:
    notebook = execute(
        [
            "%load_ext jupyter_secure_storage",
            "key = %secure_read OPT_CANARY\nvalue = key.reveal()",
            "%%secure_unredacted\nprint(value)",
            "print(value)",
            "%secure_status",
            "%secure_redaction off",
            "print(value)",
            "%secure_status",
            "%secure_redaction on",
            "print(value)",
            "%unload_ext jupyter_secure_storage",
            "print(value)",
        ],
        tmp_path,
    )
    outputs = [text_of(cell) for cell in notebook.cells]
    assert all(o.count('"output_type": "error"') == 0 for o in outputs)
    unredacted, redacted, status_on, off, while_off, status_off = outputs[2:8]
    back_on, redacted_again, unloaded, after_unload = outputs[8:]
    assert canary in unredacted
    assert "redaction is off for this cell" in unredacted
    assert canary not in redacted
    assert MARKER in redacted
    assert "cells run with %%secure_unredacted: In[3]" in status_on
    assert "OFF" in off
    assert canary in while_off
    assert "redaction  : OFF" in status_off
    assert "ON" in back_on
    assert MARKER in redacted_again
    assert canary not in redacted_again
    assert "error" not in unloaded
    # Unloading really undoes the hook: output is no longer touched.
    assert canary in after_unload
