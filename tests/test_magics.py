"""The magics and the history guard on a real InteractiveShell (real kernels: test_kernel_leaks)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import StdinNotImplementedError, UsageError
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from jupyter_secure_storage import Secret, SecureStorage
from jupyter_secure_storage.kernel.extension import loaded_state
from jupyter_secure_storage.kernel.magics import NameTable, looks_like_a_value
from jupyter_secure_storage.testing import canary, same


def make_shell(tmp_path: Path, history: bool = False, **config_values: Any) -> InteractiveShell:
    config = Config()
    config.SecureStorage.backend = "memory"
    config.HistoryManager.enabled = history
    config.HistoryManager.hist_file = str(tmp_path / "history.sqlite")
    for dotted, value in config_values.items():
        section, name = dotted.split("__")
        config[section][name] = value
    return InteractiveShell.instance(config=config)


@pytest.fixture
def shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[InteractiveShell]:
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    instance = make_shell(tmp_path)
    instance.run_line_magic("load_ext", "jupyter_secure_storage")
    yield instance
    instance.run_line_magic("unload_ext", "jupyter_secure_storage")
    InteractiveShell.clear_instance()


@pytest.fixture
def store() -> SecureStorage:
    return SecureStorage(backend="memory")


def answer_prompts_with(shell: InteractiveShell, value: str) -> list[str]:
    state = loaded_state(shell)
    assert state is not None
    asked: list[str] = []

    def prompt(text: str) -> str:
        asked.append(text)
        return value

    state.magics.prompt_function = prompt
    return asked


def run(shell: InteractiveShell, code: str) -> Any:
    return shell.run_cell(code, store_history=True)


# --- loading ---------------------------------------------------------------


def test_loading_registers_every_magic_and_unloading_removes_them(tmp_path: Path) -> None:
    shell = make_shell(tmp_path)
    try:
        history = shell.history_manager
        shell.run_line_magic("load_ext", "jupyter_secure_storage")
        line_magics = shell.magics_manager.magics["line"]
        for name in ("secure_write", "secure_read", "secure_env", "secure_delete"):
            assert name in line_magics
        assert "secure_list" in line_magics
        assert "secure_status" in line_magics
        assert "secure_unredacted" in shell.magics_manager.magics["cell"]
        assert "store_inputs" in history.__dict__
        shell.run_line_magic("unload_ext", "jupyter_secure_storage")
        assert "secure_read" not in shell.magics_manager.magics["line"]
        assert "secure_unredacted" not in shell.magics_manager.magics["cell"]
        assert "store_inputs" not in history.__dict__
        assert loaded_state(shell) is None
    finally:
        InteractiveShell.clear_instance()


def test_magics_have_real_help(shell: InteractiveShell) -> None:
    for name in ("secure_read", "secure_write", "secure_env", "secure_list"):
        doc = shell.magics_manager.magics["line"][name].__doc__
        assert f"%{name}" in doc
        assert "options:" in doc or "positional arguments" in doc


def test_magics_are_configurable_through_config(shell: InteractiveShell) -> None:
    state = loaded_state(shell)
    assert state is not None
    assert state.magics in shell.configurables
    assert state.redactor in shell.configurables


# --- write ---------------------------------------------------------------


def test_secure_write_prompts_and_stores(
    shell: InteractiveShell, store: SecureStorage, capsys: pytest.CaptureFixture[str]
) -> None:
    value = canary()
    asked = answer_prompts_with(shell, value)
    result = run(shell, "%secure_write OPENAI_API_KEY")
    assert result.success
    assert same(store.read("OPENAI_API_KEY"), value)
    assert len(asked) == 1
    out = capsys.readouterr().out
    assert f"saved OPENAI_API_KEY · {len(value)} characters" in out
    assert value not in out


@pytest.mark.parametrize("line", ["KEY {v}", "KEY={v}", "KEY -n team {v}", "KEY  {v} more"])
def test_a_value_on_the_magic_line_is_refused_and_kept_out_of_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str
) -> None:
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    shell = make_shell(tmp_path, history=True)
    try:
        shell.run_line_magic("load_ext", "jupyter_secure_storage")
        value = canary()
        result = run(shell, f"%secure_write {line.format(v=value)}")
        assert isinstance(result.error_in_exec, UsageError)
        assert value not in str(result.error_in_exec)
        assert SecureStorage(backend="memory").keys() == []
        assert all(value not in entry for entry in shell.user_ns["In"])
        assert all(value not in entry for entry in shell.history_manager.input_hist_raw)
        assert value not in shell.user_ns["_i"]
        shell.history_manager.writeout_cache()
        with sqlite3.connect(tmp_path / "history.sqlite") as db:
            rows = db.execute("select source, source_raw from history").fetchall()
        assert rows
        assert all(value not in source + raw for source, raw in rows)
    finally:
        shell.run_line_magic("unload_ext", "jupyter_secure_storage")
        shell.history_manager.end_session()
        InteractiveShell.clear_instance()


def test_a_registered_value_typed_into_code_is_kept_out_of_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    shell = make_shell(tmp_path, history=True)
    try:
        shell.run_line_magic("load_ext", "jupyter_secure_storage")
        value = canary()
        Secret(value, "PASTED")  # known to the registry, e.g. read earlier
        run(shell, f"token = {value!r}")
        assert shell.user_ns["token"] == value  # the code itself still ran as written
        assert all(value not in entry for entry in shell.user_ns["In"])
        assert "[secret:PASTED]" in shell.user_ns["In"][-1]
    finally:
        shell.run_line_magic("unload_ext", "jupyter_secure_storage")
        shell.history_manager.end_session()
        InteractiveShell.clear_instance()


def test_secure_write_without_stdin_explains_how_to_provision(
    shell: InteractiveShell, store: SecureStorage
) -> None:
    state = loaded_state(shell)
    assert state is not None

    def no_stdin(_text: str) -> str:
        raise StdinNotImplementedError(
            "raw_input was called, but this frontend does not support input requests."
        )

    state.magics.prompt_function = no_stdin
    result = run(shell, "%secure_write OPENAI_API_KEY")
    assert isinstance(result.error_in_exec, UsageError)
    message = str(result.error_in_exec)
    assert "jupyter-secure-storage write" in message
    assert "JUPYTER_SECURE_STORAGE_PASSPHRASE" in message
    assert store.keys() == []


def test_an_empty_entry_stores_nothing(shell: InteractiveShell, store: SecureStorage) -> None:
    answer_prompts_with(shell, "")
    result = run(shell, "%secure_write EMPTY")
    assert isinstance(result.error_in_exec, UsageError)
    assert store.keys() == []


def test_an_invalid_key_is_a_usage_error(shell: InteractiveShell) -> None:
    answer_prompts_with(shell, canary())
    result = run(shell, "%secure_write -n 'bad namespace' KEY")
    assert isinstance(result.error_in_exec, UsageError)


def test_a_mistyped_option_is_named_with_the_nearest_option(shell: InteractiveShell) -> None:
    result = run(shell, "%secure_write KEY --widgte")
    assert isinstance(result.error_in_exec, UsageError)
    message = str(result.error_in_exec)
    assert "unknown option --widgte; did you mean --widget?" in message
    assert "not shown" not in message  # not taken for a value typed on the line


def test_a_value_after_dashes_is_still_not_echoed(shell: InteractiveShell) -> None:
    pasted = "--" + canary()  # mixed case and digits: a token, not an option name
    result = run(shell, f"%secure_read NAME {pasted}")
    assert isinstance(result.error_in_exec, UsageError)
    assert pasted not in str(result.error_in_exec)
    assert "not shown" in str(result.error_in_exec)


# --- read and environment ---------------------------------------------------------------


def test_secure_read_returns_a_secret(shell: InteractiveShell, store: SecureStorage) -> None:
    value = canary()
    store.write("API_KEY", value)
    run(shell, "key = %secure_read API_KEY")
    key = shell.user_ns["key"]
    assert isinstance(key, Secret)
    assert same(key, value)


def test_secure_read_of_a_missing_key_names_it(shell: InteractiveShell) -> None:
    result = run(shell, "%secure_read NOT_THERE")
    assert isinstance(result.error_in_exec, UsageError)
    assert "NOT_THERE" in str(result.error_in_exec)


def test_a_value_pasted_as_a_key_is_not_echoed(shell: InteractiveShell) -> None:
    pasted = "sk-proj-" + canary()
    result = run(shell, f"%secure_read {pasted}")
    assert isinstance(result.error_in_exec, UsageError)
    assert pasted not in str(result.error_in_exec)
    extra = run(shell, f"%secure_read NAME {pasted}")
    assert isinstance(extra.error_in_exec, UsageError)
    assert pasted not in str(extra.error_in_exec)


def test_secure_read_env_sets_the_variable(
    shell: InteractiveShell, store: SecureStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JSS_TEST_TARGET", raising=False)
    monkeypatch.delenv("JSS_TEST_KEY", raising=False)
    value = canary()
    store.write("JSS_TEST_KEY", value)
    run(shell, "%secure_read JSS_TEST_KEY --env JSS_TEST_TARGET")
    assert os.environ.get("JSS_TEST_TARGET") == value
    run(shell, "%secure_read JSS_TEST_KEY --env")
    assert os.environ.get("JSS_TEST_KEY") == value


def test_secure_env_is_all_or_nothing(
    shell: InteractiveShell, store: SecureStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("JSS_A", "JSS_B"):
        monkeypatch.delenv(name, raising=False)
    first, second = canary(), canary()
    store.write("a", first)
    store.write("b", second)
    failed = run(shell, "%secure_env a=JSS_A missing=JSS_B")
    assert isinstance(failed.error_in_exec, UsageError)
    assert "JSS_A" not in os.environ
    run(shell, "%secure_env a=JSS_A b=JSS_B")
    assert os.environ.get("JSS_A") == first
    assert os.environ.get("JSS_B") == second


def test_secure_env_refuses_a_bad_variable_name(
    shell: InteractiveShell, store: SecureStorage
) -> None:
    store.write("a", canary())
    result = run(shell, "%secure_env a=1BAD")
    assert isinstance(result.error_in_exec, UsageError)


# --- delete, list, status ---------------------------------------------------------------


def test_secure_delete(shell: InteractiveShell, store: SecureStorage) -> None:
    store.write("GONE", canary())
    run(shell, "%secure_delete GONE")
    assert store.keys() == []
    assert run(shell, "%secure_delete GONE").success


def test_secure_list_shows_names_only(shell: InteractiveShell, store: SecureStorage) -> None:
    values = [canary(), canary()]
    store.write("A_KEY", values[0])
    store.write("B_KEY", values[1])
    result = run(shell, "%secure_list")
    table = result.result
    assert isinstance(table, NameTable)
    assert table.names() == ["A_KEY", "B_KEY"]
    shown = repr(table) + table._repr_html_()
    assert "default" in shown
    assert all(value not in shown for value in values)


def test_secure_status_reports_backend_and_redaction(
    shell: InteractiveShell, store: SecureStorage
) -> None:
    Secret(canary(), "COUNTED")
    report = repr(run(shell, "%secure_status").result)
    assert "backend    : memory" in report
    assert "namespace  : default" in report
    assert "redaction" in report
    assert "value(s) registered" in report


# --- injection at load ---------------------------------------------------------------


def test_inject_env_fills_the_environment_before_any_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.delenv("JSS_INJECTED", raising=False)
    monkeypatch.delenv("JSS_NOT_INJECTED", raising=False)
    value = canary()
    SecureStorage(backend="memory").write("openai", value)
    shell = make_shell(
        tmp_path,
        SecureStorageMagics__inject_env={"JSS_INJECTED": "openai", "JSS_NOT_INJECTED": "absent"},
    )
    try:
        with caplog.at_level("WARNING"):
            shell.run_line_magic("load_ext", "jupyter_secure_storage")
        assert os.environ.get("JSS_INJECTED") == value
        assert "JSS_NOT_INJECTED" not in os.environ
        assert any("$JSS_NOT_INJECTED not set" in r.getMessage() for r in caplog.records)
        assert all(value not in r.getMessage() for r in caplog.records)
        report = repr(shell.run_line_magic("secure_status", ""))
        assert "$JSS_INJECTED (from openai)" in report
    finally:
        shell.run_line_magic("unload_ext", "jupyter_secure_storage")
        InteractiveShell.clear_instance()


# --- telling keys from values ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["sk-proj-abc123", "ghp_ABCdef123", "AKIAABCDEFGHIJKLMNOP", "aB3dE5gH7jK9mN1pQ3sT5vX7"]
)
def test_values_are_told_from_key_names(text: str) -> None:
    assert looks_like_a_value(text)


@pytest.mark.parametrize("text", ["OPENAI_API_KEY", "openai", "team.prod.db-password", "HF_TOKEN"])
def test_key_names_are_not_mistaken_for_values(text: str) -> None:
    assert not looks_like_a_value(text)
