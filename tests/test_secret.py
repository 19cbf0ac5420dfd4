"""Secret: never shows its value, refuses to be saved, and tells the registry about itself."""

from __future__ import annotations

import copy
import io
import json
import logging
import pickle
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from jupyter_secure_storage import Secret, SecureStorageError, secret_registry
from jupyter_secure_storage.errors import InvalidValueTypeError, SecretSerializationError
from jupyter_secure_storage.secret import SecretRegistry
from jupyter_secure_storage.testing import canary


@pytest.fixture
def value() -> str:
    return canary()


@pytest.fixture
def secret(value: str) -> Secret:
    return Secret(value, "OPENAI_API_KEY")


# --- showing ---------------------------------------------------------------


def test_repr_str_and_format_show_a_mask(secret: Secret, value: str) -> None:
    shown = [
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret!r}",
        f"{secret:>40}",
        "%s" % secret,  # noqa: UP031 -- the old formatting path must mask too
        "{}".format(secret),  # noqa: UP032
        str([secret]),
        str({"key": secret}),
        secret._repr_html_(),
    ]
    assert all(value not in text for text in shown)
    assert "OPENAI_API_KEY" in repr(secret)
    assert "********" in str(secret)


def test_logging_a_secret_logs_the_mask(secret: Secret, value: str) -> None:
    stream = io.StringIO()
    logger = logging.getLogger("test_secret_logging")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        logger.warning("token is %s and %r", secret, secret)
    finally:
        logger.removeHandler(handler)
    assert "********" in stream.getvalue()
    assert value not in stream.getvalue()


def test_reveal_returns_the_plain_str(secret: Secret, value: str) -> None:
    assert type(secret.reveal()) is str
    assert secret.reveal() == value


@pytest.fixture
def shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[InteractiveShell]:
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    config = Config()
    config.HistoryManager.enabled = False
    instance = InteractiveShell.instance(config=config)
    yield instance
    InteractiveShell.clear_instance()


def test_ipython_display_shows_no_value(
    shell: InteractiveShell, secret: Secret, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    formats, _ = shell.display_formatter.format(secret)
    assert formats
    assert all(value not in str(text) for text in formats.values())
    shell.user_ns["token"] = secret
    shell.run_cell("token")
    shell.run_cell("[token, {'k': token}]")
    shell.run_cell("print(token)")
    out = capsys.readouterr().out
    assert "OPENAI_API_KEY" in out
    assert value not in out


def test_verbose_traceback_locals_show_no_value(
    shell: InteractiveShell, secret: Secret, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    shell.user_ns["token"] = secret
    shell.run_cell("%xmode Verbose")
    result = shell.run_cell("def call(api_key):\n    raise RuntimeError('refused')\ncall(token)")
    assert isinstance(result.error_in_exec, RuntimeError)
    captured = capsys.readouterr()
    assert "api_key" in captured.out + captured.err  # the locals really were shown
    assert value not in captured.out + captured.err


def test_store_magic_refuses_a_secret(
    shell: InteractiveShell, secret: Secret, value: str, tmp_path: Path
) -> None:
    shell.user_ns["token"] = secret
    shell.run_line_magic("load_ext", "storemagic")
    result = shell.run_cell("%store token")
    assert isinstance(result.error_in_exec, SecretSerializationError)
    saved = [p.read_bytes() for p in (tmp_path / "ipython").rglob("*") if p.is_file()]
    assert all(value.encode() not in data for data in saved)


# --- refusing to be saved ---------------------------------------------------------------


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickling_raises_at_every_protocol(secret: Secret, protocol: int) -> None:
    with pytest.raises(SecretSerializationError) as raised:
        pickle.dumps(secret, protocol=protocol)
    assert isinstance(raised.value, TypeError)
    assert isinstance(raised.value, SecureStorageError)


def test_pickling_a_container_holding_a_secret_raises(secret: Secret) -> None:
    with pytest.raises(SecretSerializationError):
        pickle.dumps({"config": [secret]})


def test_json_refuses_a_secret(secret: Secret, value: str) -> None:
    with pytest.raises(TypeError) as raised:
        json.dumps({"key": secret})
    assert value not in str(raised.value)


def test_copy_and_deepcopy_give_the_same_object(secret: Secret) -> None:
    assert copy.copy(secret) is secret
    assert copy.deepcopy({"k": secret})["k"] is secret


def test_secret_is_immutable(secret: Secret) -> None:
    with pytest.raises(AttributeError):
        secret._value = "changed"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del secret._value  # type: ignore[misc]


# --- comparing ---------------------------------------------------------------


def test_equality_with_str_and_secret(secret: Secret, value: str) -> None:
    assert secret == value
    assert secret == Secret(value, "OTHER_NAME")
    assert secret != value + "x"
    assert secret != Secret("different")
    assert secret != 42
    assert hash(secret) == hash(value)
    assert {secret: 1}[value] == 1


def test_len_and_bool(value: str) -> None:
    assert len(Secret(value)) == len(value)
    assert bool(Secret(value))
    assert not Secret("")


@pytest.mark.parametrize("bad", [b"bytes", 42, None, ["x"]])
def test_a_secret_holds_only_str(bad: object) -> None:
    with pytest.raises(InvalidValueTypeError):
        Secret(bad)  # type: ignore[arg-type]


# --- the registry ---------------------------------------------------------------


def test_every_secret_created_is_announced(value: str) -> None:
    assert value not in secret_registry
    Secret(value, "ANNOUNCED")
    assert value in secret_registry
    assert "ANNOUNCED" in secret_registry.names()


def test_registry_version_grows_once_per_new_value() -> None:
    registry = SecretRegistry()
    heard: list[str] = []
    registry.subscribe(lambda name, _value: heard.append(name))
    first, second = canary(), canary()
    registry.announce(first, "A")
    registry.announce(first, "A-again")
    registry.announce(second, "B")
    assert registry.version == 2
    assert len(registry) == 2
    assert heard == ["A", "B"]
    assert registry.values() == {first: "A", second: "B"}


def test_unsubscribed_callbacks_are_not_called() -> None:
    registry = SecretRegistry()
    heard: list[str] = []

    def callback(name: str, _value: str) -> None:
        heard.append(name)

    registry.subscribe(callback)
    registry.unsubscribe(callback)
    registry.announce(canary(), "A")
    assert heard == []


def test_registry_announcements_from_threads_are_all_kept() -> None:
    registry = SecretRegistry()
    values = [canary() for _ in range(400)]

    def announce(chunk: list[str]) -> None:
        for item in chunk:
            registry.announce(item, "T")

    threads = [threading.Thread(target=announce, args=(values[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(registry) == 400
    assert registry.version == 400
