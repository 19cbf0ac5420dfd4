"""The vault file: faults leave the bytes untouched, concurrent writers and crashes lose nothing."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import PASSPHRASE, fast_kdf_config

from jupyter_secure_storage import SecureStorage
from jupyter_secure_storage.backends import vault as vault_module
from jupyter_secure_storage.backends.vault import VaultBackend, parse_vault
from jupyter_secure_storage.errors import (
    SecureStorageError,
    UnsupportedVaultVersionError,
    VaultCorruptedError,
    VaultLockedError,
    WeakPassphraseError,
    WrongPassphraseError,
)
from jupyter_secure_storage.testing import canary, same

FIXTURES = Path(__file__).parent / "fixtures"


def vault_store(namespace: str = "default") -> SecureStorage:
    return SecureStorage(backend="vault", namespace=namespace, config=fast_kdf_config())


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def forget_unlocked_keys() -> None:
    """As a new process would start: no cached key, no cached contents."""
    vault_module._OPEN.clear()


@pytest.fixture
def filled_vault(vault_env: Path) -> tuple[Path, dict[str, str]]:
    values = {f"KEY_{i}": canary() for i in range(3)}
    store = vault_store()
    for key, value in values.items():
        store.write(key, value)
    forget_unlocked_keys()
    return vault_env, values


# --- the file on disk --------------------------------------------------------------------


def test_vault_file_is_private_to_its_owner(vault_env: Path) -> None:
    vault_store().write("K", canary())
    assert stat.S_IMODE(vault_env.stat().st_mode) == 0o600
    assert stat.S_IMODE(vault_env.parent.stat().st_mode) == 0o700


def test_vault_file_holds_neither_values_nor_key_names(vault_env: Path) -> None:
    value = canary()
    vault_store().write("NAME_THAT_IS_SECRET_TOO", value)
    raw = vault_env.read_bytes()
    assert value.encode() not in raw
    assert b"NAME_THAT_IS_SECRET_TOO" not in raw
    assert raw.startswith(b"JSSVAULT")


def test_reading_a_missing_vault_neither_asks_nor_creates(
    vault_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_SECURE_STORAGE_VAULT", str(vault_path))
    store = vault_store()
    assert store.read("ANY") is None
    assert store.keys() == []
    store.delete("ANY")
    assert not vault_path.exists()


def test_no_temporary_files_are_left_behind(vault_env: Path) -> None:
    store = vault_store()
    for i in range(5):
        store.write(f"K{i}", canary())
    assert sorted(p.name for p in vault_env.parent.iterdir()) == ["test.jssv", "test.jssv.lock"]


def test_a_stale_temporary_from_a_dead_writer_is_cleaned_up(vault_env: Path) -> None:
    store = vault_store()
    store.write("K", canary())
    stale = vault_env.with_name(f".{vault_env.name}.999999.deadbeef.tmp")
    stale.write_bytes(b"half-written")
    store.write("K2", canary())
    assert not stale.exists()


# --- wrong passphrase, damage, truncation, newer versions: typed errors, bytes untouched ------


def test_wrong_passphrase_leaves_vault_untouched(
    filled_vault: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = filled_vault
    before = digest(path)
    monkeypatch.setenv("JUPYTER_SECURE_STORAGE_PASSPHRASE", "not the passphrase")
    with pytest.raises(WrongPassphraseError) as raised:
        vault_store().read("KEY_0")
    assert "JUPYTER_SECURE_STORAGE_PASSPHRASE" in str(raised.value)
    with pytest.raises(WrongPassphraseError):
        vault_store().write("NEW", canary())
    with pytest.raises(WrongPassphraseError):
        vault_store().delete_all()
    assert digest(path) == before
    assert "not the passphrase" not in str(raised.value)


def test_right_passphrase_still_opens_after_a_wrong_one(
    filled_vault: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _path, values = filled_vault
    monkeypatch.setenv("JUPYTER_SECURE_STORAGE_PASSPHRASE", "not the passphrase")
    with pytest.raises(WrongPassphraseError):
        vault_store().keys()
    monkeypatch.setenv("JUPYTER_SECURE_STORAGE_PASSPHRASE", PASSPHRASE)
    assert same(vault_store().read("KEY_1"), values["KEY_1"])


def _header_end(raw: bytes) -> int:
    return 14 + struct.unpack(">I", raw[10:14])[0]


def _flip(raw: bytes, position: int) -> bytes:
    return raw[:position] + bytes([raw[position] ^ 0x01]) + raw[position + 1 :]


@pytest.mark.parametrize(
    "where",
    ["magic", "version-low", "header-json", "checksum", "body-start", "body-middle", "tag"],
)
def test_a_flipped_byte_is_a_typed_error_and_the_file_is_untouched(
    filled_vault: tuple[Path, dict[str, str]], where: str
) -> None:
    path, _ = filled_vault
    raw = path.read_bytes()
    header_end = _header_end(raw)
    position = {
        "magic": 0,
        "version-low": 9,
        "header-json": 20,
        "checksum": header_end + 5,
        "body-start": header_end + 32,
        "body-middle": header_end + 32 + (len(raw) - header_end - 32) // 2,
        "tag": len(raw) - 1,
    }[where]
    damaged = _flip(raw, position)
    path.write_bytes(damaged)
    expected = UnsupportedVaultVersionError if where == "version-low" else VaultCorruptedError
    if where == "version-low":
        # Flipping the low bit of version 1 gives 0: that is damage, not a newer format.
        expected = VaultCorruptedError
    with pytest.raises(expected) as raised:
        vault_store().read("KEY_0")
    assert raised.value.remedy
    with pytest.raises(SecureStorageError):
        vault_store().write("KEY_0", canary())
    assert path.read_bytes() == damaged


@pytest.mark.parametrize("keep", [0, 5, 13, 40, -1, -17, -300])
def test_truncation_is_reported_as_truncation_and_the_file_is_untouched(
    filled_vault: tuple[Path, dict[str, str]], keep: int
) -> None:
    path, _ = filled_vault
    raw = path.read_bytes()
    truncated = raw[:keep] if keep >= 0 else raw[: len(raw) + keep]
    path.write_bytes(truncated)
    with pytest.raises(VaultCorruptedError) as raised:
        vault_store().keys()
    assert "truncated" in raised.value.cause or "not a jupyter-secure-storage vault" in str(
        raised.value
    )
    with pytest.raises(VaultCorruptedError):
        vault_store().write("NEW", canary())
    assert path.read_bytes() == truncated


def test_trailing_garbage_is_damage(filled_vault: tuple[Path, dict[str, str]]) -> None:
    path, _ = filled_vault
    path.write_bytes(path.read_bytes() + b"extra")
    with pytest.raises(VaultCorruptedError, match="after the end"):
        vault_store().keys()


def test_a_file_that_is_not_a_vault_is_named_as_such(vault_env: Path) -> None:
    vault_env.parent.mkdir(parents=True)
    vault_env.write_text("OPENAI_API_KEY=sk-this-is-a-dotenv-file\n")
    before = digest(vault_env)
    with pytest.raises(VaultCorruptedError, match="not a jupyter-secure-storage vault"):
        vault_store().read("OPENAI_API_KEY")
    with pytest.raises(VaultCorruptedError):
        vault_store().write("OPENAI_API_KEY", canary())
    assert digest(vault_env) == before


def test_a_newer_format_version_asks_for_an_upgrade_and_is_untouched(
    filled_vault: tuple[Path, dict[str, str]],
) -> None:
    path, _ = filled_vault
    raw = bytearray(path.read_bytes())
    raw[8:10] = struct.pack(">H", 2)
    path.write_bytes(bytes(raw))
    with pytest.raises(UnsupportedVaultVersionError) as raised:
        vault_store().keys()
    assert "pip install -U jupyter-secure-storage" in raised.value.remedy
    with pytest.raises(UnsupportedVaultVersionError):
        vault_store().write("K", canary())
    assert path.read_bytes() == bytes(raw)


def test_a_consistent_but_rewritten_header_fails_authentication(
    filled_vault: tuple[Path, dict[str, str]],
) -> None:
    """Someone who edits the header and fixes its checksum still cannot get past the AEAD."""
    path, _ = filled_vault
    raw = path.read_bytes()
    header_end = _header_end(raw)
    header = json.loads(raw[14:header_end])
    header["cipher_note"] = "tampered"
    new_header = json.dumps(header, separators=(",", ":")).encode()
    prefix = raw[:10] + struct.pack(">I", len(new_header)) + new_header
    tampered = prefix + hashlib.sha256(prefix).digest() + raw[header_end + 32 :]
    path.write_bytes(tampered)
    with pytest.raises(VaultCorruptedError, match="fail authentication"):
        vault_store().keys()
    assert path.read_bytes() == tampered


# --- passphrases ----------------------------------------------------------------------------


def test_no_passphrase_and_no_prompt_names_the_unattended_remedies(
    vault_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_SECURE_STORAGE_VAULT", str(vault_path))
    with pytest.raises(VaultLockedError) as raised:
        vault_store().write("K", canary())
    assert "JUPYTER_SECURE_STORAGE_PASSPHRASE" in str(raised.value)
    assert not vault_path.exists()


def test_an_existing_vault_without_passphrase_is_locked_not_wiped(
    filled_vault: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = filled_vault
    before = digest(path)
    monkeypatch.delenv("JUPYTER_SECURE_STORAGE_PASSPHRASE")
    with pytest.raises(VaultLockedError):
        vault_store().read("KEY_0")
    assert digest(path) == before


def test_a_short_passphrase_creates_no_vault(
    vault_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_SECURE_STORAGE_VAULT", str(vault_path))
    monkeypatch.setenv("JUPYTER_SECURE_STORAGE_PASSPHRASE", "short")
    with pytest.raises(WeakPassphraseError) as raised:
        vault_store().write("K", canary())
    assert isinstance(raised.value, ValueError)
    assert not vault_path.exists()


def test_a_prompted_passphrase_creates_then_opens_the_vault(vault_path: Path) -> None:
    asked: list[str] = []

    def prompt(text: str) -> str:
        asked.append(text)
        return "typed passphrase 123"

    backend = VaultBackend(path=str(vault_path), config=fast_kdf_config())
    backend.prompt_function = prompt
    store = SecureStorage(backend=backend)
    value = canary()
    store.write("K", value)
    assert len(asked) == 2  # new passphrase, then its confirmation
    forget_unlocked_keys()
    assert same(store.read("K"), value)
    assert len(asked) == 3
    assert all("Passphrase" in a or "passphrase" in a for a in asked)


def test_two_different_new_passphrases_create_nothing(vault_path: Path) -> None:
    answers = iter(["first passphrase", "second passphrase"])
    backend = VaultBackend(path=str(vault_path), config=fast_kdf_config())
    backend.prompt_function = lambda _text: next(answers)
    with pytest.raises(WeakPassphraseError, match="differ"):
        SecureStorage(backend=backend).write("K", canary())
    assert not vault_path.exists()


def test_prompt_off_means_locked_error_not_a_hang(
    filled_vault: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _path, _ = filled_vault
    monkeypatch.delenv("JUPYTER_SECURE_STORAGE_PASSPHRASE")
    config = fast_kdf_config()
    config.VaultBackend.prompt = False
    with pytest.raises(VaultLockedError, match="prompting is off"):
        SecureStorage(backend="vault", config=config).keys()


# --- processes --------------------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys
    from traitlets.config import Config
    from jupyter_secure_storage import SecureStorage
    config = Config()
    config.VaultBackend.kdf_memory_kib = 1024
    config.VaultBackend.kdf_iterations = 1
    config.VaultBackend.kdf_lanes = 1
    store = SecureStorage(backend="vault", config=config)
    name, count = sys.argv[1], int(sys.argv[2])
    for i in range(count):
        store.write(f"{name}-{i}", f"value-{name}-{i}")
        print(f"{name}-{i}", flush=True)
    """
)


def test_four_processes_writing_fifty_keys_each_end_with_all_two_hundred(
    vault_env: Path,
) -> None:
    vault_store().write("seed", "seed")  # the vault exists before the race
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, f"writer{n}", "50"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=os.environ.copy(),
        )
        for n in range(4)
    ]
    for writer in writers:
        _, errors = writer.communicate(timeout=240)
        assert writer.returncode == 0, errors.decode()[-2000:]
    forget_unlocked_keys()
    store = vault_store()
    keys = store.keys()
    assert len(keys) == 201
    everything = store.read_all()
    assert all(
        everything[f"writer{n}-{i}"].reveal() == f"value-writer{n}-{i}"
        for n in range(4)
        for i in range(50)
    )


def test_first_writes_racing_to_create_the_vault_lose_nothing(vault_env: Path) -> None:
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, f"creator{n}", "5"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for n in range(3)
    ]
    for writer in writers:
        _, errors = writer.communicate(timeout=120)
        assert writer.returncode == 0, errors.decode()[-2000:]
    forget_unlocked_keys()
    assert len(vault_store().keys()) == 15


def test_a_writer_killed_mid_loop_leaves_every_acknowledged_write(vault_env: Path) -> None:
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, "victim", "100000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert writer.stdout is not None
    acknowledged = []
    deadline = time.monotonic() + 60
    while len(acknowledged) < 40 and time.monotonic() < deadline:
        line = writer.stdout.readline().decode().strip()
        if line:
            acknowledged.append(line)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=30)
    assert len(acknowledged) >= 40
    forget_unlocked_keys()
    store = vault_store()
    present = set(store.keys())
    assert set(acknowledged) <= present
    for name in acknowledged:
        assert same(store.read(name), f"value-{name}")
    # And the vault still takes writes afterwards.
    store.write("after-the-crash", "ok")
    assert same(store.read("after-the-crash"), "ok")


def test_a_reader_sees_another_processs_write(vault_env: Path) -> None:
    store = vault_store()
    store.write("mine", "1")
    assert store.keys() == ["mine"]
    subprocess.run([sys.executable, "-c", WRITER, "other", "1"], check=True, capture_output=True)
    assert store.keys() == ["mine", "other-0"]
    assert same(store.read("other-0"), "value-other-0")


# --- the format stays readable ---------------------------------------------------------------


def test_a_version_one_vault_written_earlier_still_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tests/fixtures/vault-v1.jssv was written by version 0.1.0; later versions must read it."""
    copy = tmp_path / "old.jssv"
    copy.write_bytes((FIXTURES / "vault-v1.jssv").read_bytes())
    monkeypatch.setenv("JUPYTER_SECURE_STORAGE_VAULT", str(copy))
    monkeypatch.setenv("JUPYTER_SECURE_STORAGE_PASSPHRASE", "fixture passphrase v1")
    store = SecureStorage(backend="vault")
    assert store.keys() == ["FIXTURE_TOKEN", "unicode-é-😀"]
    assert same(store.read("FIXTURE_TOKEN"), "fixture-value-not-a-real-token")
    assert same(store.read("unicode-é-😀"), "välue ✓")
    assert SecureStorage(backend="vault", namespace="other").keys() == ["OTHER"]


def test_parse_vault_reports_structure_without_a_passphrase(
    filled_vault: tuple[Path, dict[str, str]],
) -> None:
    path, _ = filled_vault
    parsed = parse_vault(path.read_bytes())
    assert [slot.kind for slot in parsed.slots] == ["passphrase"]
    assert parsed.slots[0].params["kdf"] == "argon2id"
    assert len(parsed.body_nonce) == 12


# --- the vault key kept in the OS keystore ----------------------------------------------


@pytest.mark.secret_service
@pytest.mark.usefixtures("secret_service")
def test_a_vault_with_its_key_in_the_keystore_opens_without_a_passphrase(
    vault_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = fast_kdf_config()
    config.VaultBackend.key_in_keyring = True
    value = canary()
    SecureStorage(backend="vault", config=config).write("K", value)
    assert [slot.kind for slot in parse_vault(vault_env.read_bytes()).slots] == [
        "passphrase",
        "keyring",
    ]
    forget_unlocked_keys()
    monkeypatch.delenv("JUPYTER_SECURE_STORAGE_PASSPHRASE")
    assert same(SecureStorage(backend="vault", config=config).read("K"), value)


@pytest.mark.secret_service
@pytest.mark.usefixtures("secret_service")
def test_turning_on_key_in_keyring_adds_a_slot_to_an_existing_vault(
    filled_vault: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, values = filled_vault
    config = fast_kdf_config()
    config.VaultBackend.key_in_keyring = True
    assert SecureStorage(backend="vault", config=config).keys() == sorted(values)
    assert "keyring" in [slot.kind for slot in parse_vault(path.read_bytes()).slots]
    forget_unlocked_keys()
    monkeypatch.delenv("JUPYTER_SECURE_STORAGE_PASSPHRASE")
    assert same(SecureStorage(backend="vault", config=config).read("KEY_2"), values["KEY_2"])
    # When the keystore loses that key (another machine, a reset keyring), the
    # passphrase slot still opens the vault.
    vault_id = parse_vault(path.read_bytes()).vault_id
    cleared = subprocess.run(
        ["secret-tool", "clear", "service", vault_module.KEYRING_KEY_SERVICE, "username", vault_id],
        check=False,
    )
    assert cleared.returncode == 0
    forget_unlocked_keys()
    with pytest.raises(VaultLockedError):
        vault_store().read("KEY_0")
    monkeypatch.setenv("JUPYTER_SECURE_STORAGE_PASSPHRASE", PASSPHRASE)
    assert same(vault_store().read("KEY_0"), values["KEY_0"])


def test_key_in_keyring_without_a_usable_keystore_warns_once_and_keeps_working(
    vault_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import keyring
    from keyring.backends import fail

    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        config = fast_kdf_config()
        config.VaultBackend.key_in_keyring = True
        store = SecureStorage(backend="vault", config=config)
        value = canary()
        with caplog.at_level("WARNING"):
            store.write("K", value)
            for _ in range(3):
                assert same(store.read("K"), value)
    finally:
        keyring.set_keyring(previous)
    warnings = [r for r in caplog.records if "OS keystore" in r.getMessage()]
    assert len(warnings) == 1
    assert [slot.kind for slot in parse_vault(vault_env.read_bytes()).slots] == ["passphrase"]
