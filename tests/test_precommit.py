"""The pre-commit hooks, run by pre-commit itself in a throwaway git repository, offline.

The hooks are the ones declared in .pre-commit-hooks.yaml (checked with pre-commit's own
manifest schema), turned into a ``repo: local`` config with ``language: system`` and this
venv's ``jupyter-secure-storage`` as the entry, so no network is needed (``language:
python`` would make pre-commit build a venv from PyPI). Commits go through ``git commit``
and the hook script that ``pre-commit install`` writes, as they would for a person.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import REPO
from pre_commit.clientlib import load_manifest
from scan_samples import in_context, token
from test_cli import env as cli_env
from test_cli import write
from test_scan_cli import STORED_VALUE, plant_notebook

env = cli_env  # a throwaway vault with cheap KDF costs, unlocked by its passphrase variable
ENTRY_POINT = Path(sys.executable).parent / "jupyter-secure-storage"
HOOK_IDS = ["jupyter-secure-storage-scan", "jupyter-secure-storage-scan-fix"]


def manifest() -> dict[str, dict[str, object]]:
    return {hook["id"]: hook for hook in load_manifest(str(REPO / ".pre-commit-hooks.yaml"))}


def test_the_manifest_declares_the_scan_hook_and_its_fix_variant() -> None:
    hooks = manifest()
    assert sorted(hooks) == HOOK_IDS
    assert hooks["jupyter-secure-storage-scan"]["entry"] == "jupyter-secure-storage scan"
    assert hooks["jupyter-secure-storage-scan-fix"]["entry"] == "jupyter-secure-storage scan --fix"
    for hook in hooks.values():
        assert hook["language"] == "python"
        assert hook["types"] == ["text"]


@pytest.fixture
def repository(tmp_path: Path, env: dict[str, str]) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "project"
    root.mkdir()
    environment = dict(env)
    environment.update(
        PRE_COMMIT_HOME=str(tmp_path / "pre-commit-cache"),
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="Test",
        GIT_AUTHOR_EMAIL="test@example.invalid",
        GIT_COMMITTER_NAME="Test",
        GIT_COMMITTER_EMAIL="test@example.invalid",
    )
    git(root, environment, "init", "-q")
    return root, environment


def git(root: Path, environment: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=root, env=environment, capture_output=True, text=True, timeout=120
    )


def install_hook(root: Path, environment: dict[str, str], hook_id: str) -> None:
    hook = manifest()[hook_id]
    command = str(hook["entry"]).split(" ", 1)
    local = {
        "id": hook_id,
        "name": hook["name"],
        "entry": " ".join([str(ENTRY_POINT), *command[1:]]),
        "language": "system",
        "types": hook["types"],
    }
    # YAML is a superset of JSON: the config is written as JSON.
    config = {"repos": [{"repo": "local", "hooks": [local]}]}
    (root / ".pre-commit-config.yaml").write_text(json.dumps(config, indent=1))
    done = subprocess.run(
        [sys.executable, "-m", "pre_commit", "install"],
        cwd=root,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    git(root, environment, "add", ".pre-commit-config.yaml")
    assert git(root, environment, "commit", "-q", "-m", "config").returncode == 0


def commits(root: Path, environment: dict[str, str]) -> int:
    return int(git(root, environment, "rev-list", "--count", "HEAD").stdout.strip())


def test_a_commit_with_a_token_is_blocked_and_a_clean_commit_passes(
    repository: tuple[Path, dict[str, str]],
) -> None:
    root, environment = repository
    install_hook(root, environment, "jupyter-secure-storage-scan")
    value = token("github-token", "hook")
    (root / "deploy.py").write_text(in_context("github-token", value) + "\n")
    git(root, environment, "add", "deploy.py")
    blocked = git(root, environment, "commit", "-m", "add deploy script")
    assert blocked.returncode != 0
    assert "github-token" in blocked.stdout + blocked.stderr
    assert value not in blocked.stdout + blocked.stderr
    assert commits(root, environment) == 1

    (root / "deploy.py").write_text("import os\nTOKEN = os.environ['GITHUB_TOKEN']\n")
    git(root, environment, "add", "deploy.py")
    passed = git(root, environment, "commit", "-m", "add deploy script")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert commits(root, environment) == 2


def test_a_stored_value_in_a_notebook_output_blocks_the_commit(
    repository: tuple[Path, dict[str, str]],
) -> None:
    root, environment = repository
    write(environment, "WAREHOUSE_PASSWORD", STORED_VALUE)
    install_hook(root, environment, "jupyter-secure-storage-scan")
    plant_notebook(root / "report.ipynb", ["connect()"], [f"connected as {STORED_VALUE}\n"])
    git(root, environment, "add", "report.ipynb")
    blocked = git(root, environment, "commit", "-m", "report")
    output = blocked.stdout + blocked.stderr
    assert blocked.returncode != 0
    assert "WAREHOUSE_PASSWORD" in output
    assert STORED_VALUE not in output
    assert commits(root, environment) == 1


def test_the_fix_hook_scrubs_the_notebook_and_stops_the_commit_for_review(
    repository: tuple[Path, dict[str, str]],
) -> None:
    root, environment = repository
    install_hook(root, environment, "jupyter-secure-storage-scan-fix")
    value = token("openai-api-key", "hook")
    plant_notebook(root / "chat.ipynb", [in_context("openai-api-key", value)])
    git(root, environment, "add", "chat.ipynb")
    blocked = git(root, environment, "commit", "-m", "chat")
    assert blocked.returncode != 0
    assert commits(root, environment) == 1
    notebook = nbformat.read(str(root / "chat.ipynb"), as_version=4)
    nbformat.validate(notebook)
    assert notebook.cells[0].source == 'TOKEN = "[redacted:openai-api-key]"'
    # Staging the scrubbed notebook lets the commit through.
    git(root, environment, "add", "chat.ipynb")
    passed = git(root, environment, "commit", "-m", "chat")
    assert passed.returncode == 0, passed.stdout + passed.stderr
