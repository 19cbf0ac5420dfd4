"""``jupyter-secure-storage scan`` end to end, in subprocesses, on a generated tree.

The tree is a git repository with notebooks, scripts, JSON, a binary file, an oversized
file and ``.gitignore``'d files; tokens are made at test time (tests/scan_samples.py)
and stored values go through a real vault (the environment of tests/test_cli.py). No
output is ever allowed to hold a planted value.
"""

from __future__ import annotations

import base64
import io
import json
import os
import stat
import subprocess
import urllib.parse
from pathlib import Path

import nbformat
import pytest
from scan_samples import in_context, token
from test_cli import CLI, write
from test_cli import env as cli_env

from jupyter_secure_storage.scan import Finding
from jupyter_secure_storage.scan.files import Progress
from jupyter_secure_storage.scan.report import sarif

# The CLI tests' environment: a throwaway vault with cheap KDF costs and its passphrase.
env = cli_env

# A test value whose five forms all differ (its base64 holds "+" or "/").
STORED_VALUE = 'Zq7/p+w "quoted" \\ wörd&x=1 k3y-9TuV??'


def plant_notebook(path: Path, cells: list[str], outputs: list[str] | None = None) -> None:
    notebook = nbformat.v4.new_notebook()
    for index, source in enumerate(cells):
        cell = nbformat.v4.new_code_cell(source, execution_count=index + 1)
        if outputs and index < len(outputs):
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=outputs[index])]
        notebook.cells.append(cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, str(path))


def encodings(value: str) -> dict[str, str]:
    data = value.encode()
    return {
        "literal": value,
        "base64": base64.b64encode(data).decode(),
        "base64url": base64.urlsafe_b64encode(data).decode(),
        "url-quoted": urllib.parse.quote(value, safe=""),
        "escaped": json.dumps(value)[1:-1],
    }


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / ".gitignore").write_text("build/\n*.log\n!keep.log\n")
    (root / "nested").mkdir()
    (root / "nested" / ".gitignore").write_text("local.py\n")
    plant_notebook(
        root / "analysis.ipynb",
        ["import pandas as pd\n" + in_context("openai-api-key", token("openai-api-key", 1))],
        ["connected with " + token("aws-access-key-id", 1) + "\n"],
    )
    plant_notebook(root / "clean.ipynb", ["print('hello')"], ["hello\n"])
    (root / "settings.py").write_text(
        "DEBUG = True\n" + in_context("url-password", token("url-password", 1)) + "\n"
    )
    (root / "config.json").write_text(
        json.dumps({"github": token("github-token", 1), "name": "demo"}, indent=2) + "\n"
    )
    (root / "keep.log").write_text(in_context("stripe-api-key", token("stripe-api-key", 1)))
    (root / "nested" / "deploy.sh").write_text(
        "export HF_TOKEN=" + token("huggingface-token", 1) + "\n"
    )
    # Ignored: a build directory, a *.log, a nested .gitignore; and .git itself.
    (root / "build").mkdir()
    (root / "build" / "out.py").write_text(in_context("github-token", token("github-token", 2)))
    (root / "debug.log").write_text(in_context("github-token", token("github-token", 3)))
    (root / "nested" / "local.py").write_text(in_context("jwt", token("jwt", 3)))
    (root / ".git" / "hooks" / "token.txt").write_text(token("github-token", 4))
    # Skipped: a binary file (NUL bytes) holding a token.
    (root / "image.bin").write_bytes(b"\x89PNG\x00\x00" + token("github-token", 5).encode())
    return root


ALL_PLANTED = [
    ("openai-api-key", 1),
    ("aws-access-key-id", 1),
    ("url-password", 1),
    ("github-token", 1),
    ("stripe-api-key", 1),
    ("huggingface-token", 1),
    ("github-token", 2),
    ("github-token", 3),
    ("jwt", 3),
    ("github-token", 4),
    ("github-token", 5),
]


def assert_nothing_leaked(done: subprocess.CompletedProcess[str]) -> None:
    for value in (token(kind, seed) for kind, seed in ALL_PLANTED):
        assert value not in done.stdout
        assert value not in done.stderr


def scan(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "scan", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_json_lists_every_finding_outside_ignored_files_and_never_a_value(
    env: dict[str, str], tree: Path
) -> None:
    done = scan(env, tree, ".", "--format", "json")
    assert done.returncode == 1
    assert_nothing_leaked(done)
    findings = json.loads(done.stdout)
    found = sorted((Path(f["path"]).as_posix(), f["kind"]) for f in findings)
    assert found == [
        ("analysis.ipynb", "aws-access-key-id"),
        ("analysis.ipynb", "openai-api-key"),
        ("config.json", "github-token"),
        ("keep.log", "stripe-api-key"),
        ("nested/deploy.sh", "huggingface-token"),
        ("settings.py", "url-password"),
    ]
    for finding in findings:
        assert isinstance(finding["line"], int)
        assert finding["line"] >= 1
        assert len(finding["fingerprint"]) == 64
        if finding["path"].endswith(".ipynb"):
            assert finding["cell"] == 0
            assert finding["where"] in ("source", "outputs[0].text")
    by_kind = {f["kind"]: f for f in findings}
    assert by_kind["openai-api-key"]["line"] == 2  # line 2 of the cell's source
    assert by_kind["github-token"]["line"] == 2  # line 2 of config.json


def test_sarif_is_structurally_sarif_2_1_0(env: dict[str, str], tree: Path) -> None:
    done = scan(env, tree, ".", "--format", "sarif", "--no-stored")
    assert done.returncode == 1
    assert_nothing_leaked(done)
    log = json.loads(done.stdout)
    assert log["version"] == "2.1.0"
    assert log["$schema"].endswith("sarif-2.1.0.json")
    (sarif_run,) = log["runs"]
    rules = sarif_run["tool"]["driver"]["rules"]
    rule_ids = [rule["id"] for rule in rules]
    assert len(rule_ids) == len(set(rule_ids))
    assert sarif_run["tool"]["driver"]["name"] == "jupyter-secure-storage"
    results = sarif_run["results"]
    assert len(results) == 6
    for result in results:
        assert rule_ids[result["ruleIndex"]] == result["ruleId"]
        assert result["level"] == "error"
        assert result["message"]["text"]
        (location,) = result["locations"]
        physical = location["physicalLocation"]
        assert not physical["artifactLocation"]["uri"].startswith("/")
        assert physical["region"]["startLine"] >= 1
        assert physical["region"]["startColumn"] >= 1
        assert len(result["partialFingerprints"]["matchSha256/v1"]) == 64
    notebook = next(r for r in results if r["ruleId"] == "openai-api-key")
    assert notebook["locations"][0]["logicalLocations"][0]["name"] == "cell 0 source"


def test_the_table_names_path_line_cell_and_kind(env: dict[str, str], tree: Path) -> None:
    done = scan(env, tree, "analysis.ipynb", "settings.py", "--no-stored")
    assert done.returncode == 1
    assert_nothing_leaked(done)
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["PATH", "LINE", "CELL", "KIND", "NAME"]
    assert any(
        line.split()[:5] == ["analysis.ipynb", "2", "0", "source", "openai-api-key"]
        for line in lines
    )
    assert any(line.split()[:3] == ["settings.py", "2", "url-password"] for line in lines)
    assert "3 finding(s) in 2 file(s)" in done.stderr


def test_a_clean_tree_exits_0(env: dict[str, str], tmp_path: Path) -> None:
    plant_notebook(tmp_path / "clean" / "a.ipynb", ["x = 1"], ["1\n"])
    (tmp_path / "clean" / "b.py").write_text("print('hello')\n")
    done = scan(env, tmp_path / "clean", ".", "--no-stored")
    assert done.returncode == 0
    assert done.stdout == ""
    assert "no secrets found in 2 file(s)" in done.stderr


def test_paths_named_explicitly_are_scanned_even_when_ignored(
    env: dict[str, str], tree: Path
) -> None:
    done = scan(env, tree, "debug.log", "--format", "json", "--no-stored")
    assert done.returncode == 1
    assert [f["kind"] for f in json.loads(done.stdout)] == ["github-token"]


def test_fix_scrubs_in_place_keeps_files_valid_and_a_rescan_is_clean(
    env: dict[str, str], tree: Path
) -> None:
    (tree / "settings.py").chmod(0o640)
    before = nbformat.read(str(tree / "analysis.ipynb"), as_version=4)
    done = scan(env, tree, ".", "--fix", "--no-stored")
    assert done.returncode == 1  # there were findings; they are fixed now
    assert_nothing_leaked(done)
    assert "scrubbed 6 finding(s) in 5 file(s)" in done.stderr
    again = scan(env, tree, ".", "--no-stored")
    assert again.returncode == 0, again.stderr
    notebook = nbformat.read(str(tree / "analysis.ipynb"), as_version=4)
    nbformat.validate(notebook)
    assert "[redacted:openai-api-key]" in notebook.cells[0].source
    assert notebook.cells[0].source.startswith("import pandas as pd\n")
    assert "[redacted:aws-access-key-id]" in notebook.cells[0].outputs[0].text
    assert notebook.cells[0].execution_count == before.cells[0].execution_count
    raw = (tree / "analysis.ipynb").read_text()
    assert raw.endswith("}\n")
    assert raw.startswith('{\n "cells": [')  # nbformat's indent=1
    assert json.loads((tree / "config.json").read_text())["github"] == "[redacted:github-token]"
    assert "postgresql://analyst:[redacted:url-password]@db" in (tree / "settings.py").read_text()
    assert stat.S_IMODE((tree / "settings.py").stat().st_mode) == 0o640
    assert not list(tree.glob(".*.jss-tmp"))
    # Ignored and binary files were not touched.
    assert token("github-token", 2) in (tree / "build" / "out.py").read_text()


def test_fix_refuses_a_notebook_that_would_not_validate_and_leaves_it_unchanged(
    env: dict[str, str], tmp_path: Path
) -> None:
    notebook = {
        "cells": [
            {"cell_type": "code", "source": in_context("gitlab-token", token("gitlab-token"))}
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }  # a code cell without outputs, metadata or id: not valid nbformat
    path = tmp_path / "broken.ipynb"
    path.write_text(json.dumps(notebook))
    original = path.read_bytes()
    done = scan(env, tmp_path, "broken.ipynb", "--fix", "--no-stored")
    assert done.returncode == 2
    assert "was not fixed" in done.stderr
    assert "not valid nbformat" in done.stderr
    assert path.read_bytes() == original
    assert token("gitlab-token") not in done.stderr + done.stdout


def test_oversized_files_are_skipped_and_reported(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "big.txt").write_text("x" * 5000 + in_context("jwt", token("jwt")))
    done = scan(env, tmp_path, ".", "--max-size", "4096", "--no-stored")
    assert done.returncode == 0
    assert "skipped big.txt: larger than 4096 bytes" in done.stderr.replace("./", "")


def test_a_missing_path_is_refused_without_echoing_it(env: dict[str, str], tmp_path: Path) -> None:
    typed = token("openai-api-key", "typed")
    done = scan(env, tmp_path, ".", typed, "--no-stored")
    assert done.returncode == 2
    assert typed not in done.stderr + done.stdout
    assert "argument 2" in done.stderr


@pytest.mark.parametrize("size", ["0", "-1", "many", str(2 * 1024 * 1024 * 1024)])
def test_a_bad_max_size_is_a_usage_error(env: dict[str, str], tmp_path: Path, size: str) -> None:
    assert scan(env, tmp_path, ".", "--max-size", size).returncode == 2


def test_the_allowlist_file_accepts_a_finding_by_its_fingerprint(
    env: dict[str, str], tree: Path
) -> None:
    listed = json.loads(scan(env, tree, ".", "--format", "json", "--no-stored").stdout)
    rules = [f"fingerprint: {f['fingerprint']}" for f in listed if f["kind"] != "url-password"]
    (tree / ".jss-allowlist").write_text(
        "# accepted\n" + "\n".join(rules) + "\npath: settings.py\n"
    )
    done = scan(env, tree, ".", "--no-stored")
    assert done.returncode == 0, done.stdout
    (tree / ".jss-allowlist").write_text("regex: (unclosed\n")
    bad = scan(env, tree, ".", "--no-stored")
    assert bad.returncode == 2
    assert "line 1" in bad.stderr


def test_an_inline_marker_allows_a_line(env: dict[str, str], tmp_path: Path) -> None:
    line = in_context("google-api-key", token("google-api-key"))
    (tmp_path / "a.py").write_text(line + "  # jss: allow\n")
    assert scan(env, tmp_path, ".", "--no-stored").returncode == 0
    (tmp_path / "a.py").write_text(line + "\n")
    assert scan(env, tmp_path, ".", "--no-stored").returncode == 1


# --- stored values ------------------------------------------------------------------------


def test_stored_values_are_found_in_every_encoding_by_name(
    env: dict[str, str], tmp_path: Path
) -> None:
    write(env, "WAREHOUSE_PASSWORD", STORED_VALUE)
    forms = encodings(STORED_VALUE)
    plant_notebook(
        tmp_path / "n.ipynb",
        [f"x = '{form}'" for form in forms.values()],
        [f"{form}\n" for form in forms.values()],
    )
    done = scan(env, tmp_path, ".", "--format", "json")
    assert done.returncode == 1, done.stderr
    for form in forms.values():
        assert form not in done.stdout + done.stderr
    findings = json.loads(done.stdout)
    assert {f["kind"] for f in findings} == {"stored-value"}
    assert {f["name"] for f in findings} == {"WAREHOUSE_PASSWORD"}
    assert sorted(f["encoding"] for f in findings if f["where"] == "source") == sorted(forms)
    assert len(findings) == 2 * len(forms)
    # --fix puts the name in the marker.
    assert scan(env, tmp_path, ".", "--fix").returncode == 1
    notebook = nbformat.read(str(tmp_path / "n.ipynb"), as_version=4)
    assert notebook.cells[0].source == "x = '[secret:WAREHOUSE_PASSWORD]'"
    assert scan(env, tmp_path, ".").returncode == 0
    # --no-stored does not open the store: the value's forms are not found.
    plant_notebook(tmp_path / "n.ipynb", [STORED_VALUE])
    assert scan(env, tmp_path, ".", "--no-stored").returncode == 0


def test_a_locked_vault_is_skipped_with_a_warning_and_never_a_prompt(
    env: dict[str, str], tmp_path: Path
) -> None:
    write(env, "DB_PASSWORD", STORED_VALUE)
    locked = dict(env)
    del locked["JUPYTER_SECURE_STORAGE_PASSPHRASE"]
    (tmp_path / "a.py").write_text(
        f"password = '{STORED_VALUE}'\n" + in_context("github-token", token("github-token"))
    )
    done = scan(locked, tmp_path, ".", "--format", "json")
    assert done.returncode == 1
    assert [f["kind"] for f in json.loads(done.stdout)] == ["github-token"]
    warning = [line for line in done.stderr.splitlines() if "warning" in line]
    assert len(warning) == 1
    assert "stored values not checked" in warning[0]
    assert "JUPYTER_SECURE_STORAGE_PASSPHRASE" in warning[0]
    assert "--no-stored" in warning[0]
    assert STORED_VALUE not in done.stderr + done.stdout


# --- the progress bar ---------------------------------------------------------------------


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_shows_on_a_terminal_only_and_clears_itself() -> None:
    terminal = FakeTerminal()
    meter = Progress(3, terminal, delay=0)
    for _ in range(3):
        meter.advance()
    meter.close()
    shown = terminal.getvalue()
    assert "3/3 files" in shown
    assert shown.endswith("\r")
    pipe = io.StringIO()
    meter = Progress(3, pipe, delay=0)
    meter.advance(3)
    meter.close()
    assert pipe.getvalue() == ""


def test_fix_keeps_undecodable_bytes(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "latin1.py"
    path.write_bytes(b"# caf\xe9\n" + in_context("github-token", token("github-token")).encode())
    assert scan(env, tmp_path, ".", "--fix", "--no-stored").returncode == 1
    assert path.read_bytes().startswith(b"# caf\xe9\n")
    assert b"[redacted:github-token]" in path.read_bytes()
    assert os.access(path, os.R_OK)


def test_sarif_locations_are_uri_references() -> None:
    findings = [
        Finding("jwt", 0, 1, path="notes/a b.py", line=3, column=7),
        Finding("jwt", 0, 1, path="/srv/repo/x.ipynb", line=1, column=1, cell=2, where="source"),
    ]
    uris = [
        result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        for result in sarif(findings)["runs"][0]["results"]
    ]
    assert uris == ["notes/a%20b.py", "file:///srv/repo/x.ipynb"]


def test_a_reader_that_stops_early_gets_no_traceback(env: dict[str, str], tmp_path: Path) -> None:
    lines = [in_context("github-token", token("github-token", i)) for i in range(3000)]
    (tmp_path / "many.py").write_text("\n".join(lines) + "\n")
    process = subprocess.Popen(
        [*CLI, "scan", ".", "--no-stored", "--format", "json"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    assert process.stdout.readline().strip() == "["
    process.stdout.close()  # as `| head -1` does
    error = process.stderr.read()
    assert process.wait(timeout=120) == 1
    assert "Traceback" not in error
    assert "3000 finding(s)" in error
