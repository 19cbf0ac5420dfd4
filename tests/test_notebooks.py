"""Every notebook in notebooks/ runs in a real kernel on the vault; its saved result holds no value.

Before a run, every key the notebooks use is provisioned with a fresh canary (as a
person would with ``jupyter-secure-storage write``); after it, every value the vault
holds -- including any the notebook created itself -- must be absent, in every common
encoding, from the executed notebook as saved to disk.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import urllib.parse
from pathlib import Path

import nbformat
import pytest
from conftest import REPO, fast_kdf_config
from nbclient import NotebookClient

from jupyter_secure_storage import SecureStorage

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
PROVISIONED = ["DEMO_API_KEY"]


def forms(value: str) -> list[bytes]:
    data = value.encode()
    return [
        form.encode()
        for form in (
            value,
            base64.b64encode(data).decode(),
            base64.urlsafe_b64encode(data).decode(),
            urllib.parse.quote(value, safe=""),
            json.dumps(value)[1:-1],
        )
    ]


@pytest.fixture
def notebook_env(vault_env: Path, isolated_jupyter: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = fast_kdf_config()
    (isolated_jupyter / "config" / "jupyter_secure_storage_config.json").write_text(
        json.dumps({"VaultBackend": dict(config.VaultBackend)})
    )
    monkeypatch.setenv("JUPYTER_SECURE_STORAGE_BACKEND", "vault")


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS, "notebooks/ holds no notebook"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
@pytest.mark.usefixtures("notebook_env")
def test_notebook_runs_and_its_saved_result_holds_no_value(path: Path, tmp_path: Path) -> None:
    store = SecureStorage(backend="vault", config=fast_kdf_config())
    for key in PROVISIONED:
        store.write(key, "canary-" + secrets.token_urlsafe(24))

    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        store_widget_state=True,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    environment = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    client.execute(env=environment)  # raises CellExecutionError on any error
    saved = tmp_path / path.name
    nbformat.write(notebook, saved)
    nbformat.validate(nbformat.read(saved, as_version=4))

    assert all(cell.get("execution_count") for cell in notebook.cells if cell.cell_type == "code")
    blob = saved.read_bytes()
    values = [
        secret.reveal()
        for namespace in store.namespaces()
        for secret in SecureStorage(backend=store.backend_object, namespace=namespace)
        .read_all()
        .values()
    ]
    assert values, "the vault holds no values after the run"
    leaks = [i for i, value in enumerate(values) for form in forms(value) if form in blob]
    assert leaks == [], f"{len(leaks)} stored value(s) found in the saved notebook"
