"""Stored values found in text by keyed fingerprint: the matcher and the records the
storage layer keeps beside the values.

Values are compared, never printed (pytest runs with --assert=plain).
"""

from __future__ import annotations

import base64
import html
import json
import multiprocessing
import random
import secrets
import string
import urllib.parse
from pathlib import Path

import pytest
from conftest import fast_kdf_config, keyring_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from traitlets.config import Config

from jupyter_secure_storage import SecureStorage
from jupyter_secure_storage.backends.memory import MemoryBackend
from jupyter_secure_storage.scan import STORED, Scanner
from jupyter_secure_storage.scan.known import (
    _CHUNK,
    FINGERPRINT_NAMESPACE,
    MASTER_KEY,
    RECORD_PREFIX,
    KnownValues,
)
from jupyter_secure_storage.storage import INTERNAL_NAMESPACES

MASTER = bytes(range(32))


def filler(size: int, seed: int = 0) -> str:
    rnd = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + ' \n{}[]":,.=+/-_%'
    return "".join(rnd.choice(alphabet) for _ in range(size))


def spans(found: list, text: str) -> list[tuple[str, str | None, str | None]]:
    return [(text[f.start : f.end], f.name, f.encoding) for f in found]


# --- the matcher ------------------------------------------------------------------------------


def encodings_of(value: str) -> dict[str, str]:
    data = value.encode()
    return {
        "literal": value,
        "base64": base64.b64encode(data).decode(),
        "base64url": base64.urlsafe_b64encode(data).decode().rstrip("="),
        "url-quoted": urllib.parse.quote(value, safe=""),
        "json": json.dumps(value)[1:-1],
        "html": html.escape(value),
    }


@pytest.mark.parametrize("encoding", list(encodings_of("x")))
def test_each_encoding_is_found_where_it_is(encoding: str) -> None:
    value = "tok/" + secrets.token_urlsafe(24) + '+"&<x>?=é'
    known = KnownValues.from_values({value: "API_KEY"}, MASTER)
    form = encodings_of(value)[encoding]
    text = filler(3000) + form + filler(2000, 1)
    found = known.find(text)
    assert len(found) == 1
    assert found[0].kind == STORED
    assert found[0].name == "API_KEY"
    assert text[found[0].start : found[0].end] == form


def test_base64_of_a_value_inside_longer_bytes_is_found() -> None:
    """``Authorization: Basic base64(user:token)``: the token's bits at any alignment."""
    value = secrets.token_hex(20)
    known = KnownValues.from_values({value: "TOKEN"}, MASTER)
    for prefix in ("u:", "us:", "use:"):
        header = base64.b64encode((prefix + value).encode()).decode()
        found = known.find("Authorization: Basic " + header)
        assert len(found) == 1, prefix
        assert found[0].name == "TOKEN"


def test_short_and_long_values_and_several_anchor_lengths() -> None:
    values = {"abc123": "SHORT", "0123456789abc": "MID", secrets.token_hex(40): "LONG"}
    known = KnownValues.from_values(values, MASTER)
    text = "".join(f"{filler(500, i)} {value} " for i, value in enumerate(values))
    found = known.find(text)
    assert sorted(f.name for f in found if f.encoding == "literal") == ["LONG", "MID", "SHORT"]


def test_offsets_are_characters_in_non_ascii_text() -> None:
    value = secrets.token_urlsafe(30)
    known = KnownValues.from_values({value: "K"}, MASTER)
    text = "ünïcødé 🎉 " * 50 + value + " ✓"
    (found,) = known.find(text)
    assert text[found.start : found.end] == value


@pytest.mark.parametrize("where", [_CHUNK - 1, _CHUNK - 8, _CHUNK, _CHUNK + 3, "end", "start"])
def test_values_across_chunk_boundaries_and_at_the_ends(where: int | str) -> None:
    value = secrets.token_urlsafe(33)
    known = KnownValues.from_values({value: "K"}, MASTER)
    if where == "start":
        text = value + filler(_CHUNK * 2)
    elif where == "end":
        text = filler(_CHUNK * 2) + value
    else:
        assert isinstance(where, int)
        text = filler(where) + value + filler(_CHUNK)
    assert spans(known.find(text), text) == [(value, "K", "literal")]


def test_no_false_positives_on_megabytes_of_text() -> None:
    values = {secrets.token_urlsafe(24): f"K{i}" for i in range(200)}
    values["short6"] = "SHORT"
    known = KnownValues.from_values(values, MASTER)
    assert known.find(filler(3_000_000, 7)) == []


def test_every_occurrence_is_found() -> None:
    value = secrets.token_hex(16)
    known = KnownValues.from_values({value: "K"}, MASTER)
    text = (filler(100) + value) * 50
    assert len(known.find(text)) == 50


def test_find_many_matches_find_and_never_spans_two_texts() -> None:
    value = secrets.token_urlsafe(24)
    known = KnownValues.from_values({value: "K"}, MASTER)
    texts = ["", filler(40), filler(10) + value, value[:10], value[10:], value, "x"]
    batched = known.find_many(texts)
    assert [spans(b, t) for b, t in zip(batched, texts, strict=True)] == [
        spans(known.find(t), t) for t in texts
    ]
    assert [len(b) for b in batched] == [0, 0, 1, 0, 0, 1, 0]


def test_another_master_key_finds_nothing() -> None:
    value = secrets.token_urlsafe(24)
    mine = KnownValues.from_values({value: "K"}, MASTER)
    other = KnownValues.from_values({value + "x": "K"}, secrets.token_bytes(32))
    assert mine.find(value)
    assert other.find(value) == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    value=st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
        min_size=6,
        max_size=80,
    ),
    before=st.text(max_size=300),
    after=st.text(max_size=300),
)
def test_any_value_is_found_at_its_place(value: str, before: str, after: str) -> None:
    known = KnownValues.from_values({value: "K"}, MASTER)
    text = before + value + after
    found = known.find(text)
    assert any(f.start <= len(before) and f.end >= len(before) + len(value) for f in found)
    for finding in found:  # every finding is a real form of the value
        assert finding.name == "K"


def test_scanner_scrubs_a_notebook_in_one_batch() -> None:
    value = secrets.token_urlsafe(30)
    known = KnownValues.from_values({value: "OPENAI"}, MASTER)
    notebook = {
        "cells": [
            {"cell_type": "code", "source": ["x = 1\n", f"print('{value}')\n"], "outputs": []},
            {
                "cell_type": "code",
                "source": "y",
                "outputs": [{"output_type": "stream", "name": "stdout", "text": [value, "\n"]}],
            },
        ],
        "metadata": {"widgets": {"state": {"m": {"state": {"value": value, value: "key too"}}}}},
    }
    findings = Scanner([known]).scan_notebook(notebook, scrub=True)
    assert sorted((f.cell, f.where) for f in findings if f.cell is not None) == [
        (0, "source"),
        (1, "outputs[0].text"),
    ]
    assert value not in json.dumps(notebook)
    assert notebook["cells"][0]["source"] == ["x = 1\n", "print('[secret:OPENAI]')\n"]
    state = notebook["metadata"]["widgets"]["state"]["m"]["state"]
    assert state == {"value": "[secret:OPENAI]", "[secret:OPENAI]": "key too"}


# --- the records the storage layer keeps ------------------------------------------------------


def memory_store(namespace: str = "default") -> SecureStorage:
    return SecureStorage(backend="memory", namespace=namespace)


def test_a_write_is_found_a_delete_is_forgotten() -> None:
    store = memory_store()
    first, second = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    store.write("OPENAI_API_KEY", first)
    known = KnownValues.from_store(store)
    assert spans(known.find(f"key={first}"), f"key={first}") == [
        (first, "OPENAI_API_KEY", "literal")
    ]
    store.write("OPENAI_API_KEY", second)
    known = KnownValues.from_store(store)
    assert known.find(first) == []
    assert len(known.find(second)) == 1
    store.delete("OPENAI_API_KEY")
    assert KnownValues.from_store(store).find(second) == []


def test_namespaces_are_labelled_and_delete_all_forgets_one_namespace() -> None:
    default, other = memory_store(), memory_store("team")
    a, b = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    default.write("A", a)
    other.write("B", b)
    text = f"{a} {b}"
    assert sorted(f.name for f in KnownValues.from_store(default).find(text)) == ["A", "team/B"]
    other.delete_all()
    assert [f.name for f in KnownValues.from_store(default).find(text)] == ["A"]


def test_records_hold_no_value_in_any_form_and_are_hidden() -> None:
    store = memory_store()
    value = "sk-" + secrets.token_urlsafe(30)
    store.write("K", value)
    backend = store.backend_object
    raw = backend.get(FINGERPRINT_NAMESPACE, RECORD_PREFIX + "default") or ""
    assert raw
    for form in encodings_of(value).values():
        assert form not in raw
    assert value[:12] not in raw
    assert FINGERPRINT_NAMESPACE in backend.list_namespaces()
    assert store.namespaces() == ["default"]
    assert set(INTERNAL_NAMESPACES) & set(store.namespaces()) == set()
    assert store.keys() == ["K"]


def test_the_master_key_is_made_once() -> None:
    store = memory_store()
    store.write("A", secrets.token_urlsafe(20))
    backend = store.backend_object
    master = backend.get(FINGERPRINT_NAMESPACE, MASTER_KEY)
    store.write("B", secrets.token_urlsafe(20))
    assert backend.get(FINGERPRINT_NAMESPACE, MASTER_KEY) == master


def test_fingerprints_can_be_switched_off() -> None:
    config = Config()
    config.SecureStorage.fingerprints = False
    store = SecureStorage(backend="memory", config=config)
    store.write("A", secrets.token_urlsafe(20))
    assert FINGERPRINT_NAMESPACE not in store.backend_object.list_namespaces()


def test_a_failing_fingerprint_write_never_undoes_the_value(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = memory_store()
    original = MemoryBackend.set

    def refuse_fingerprints(self: MemoryBackend, namespace: str, key: str, value: str) -> None:
        if namespace == FINGERPRINT_NAMESPACE:
            raise OSError("disk full")
        original(self, namespace, key, value)

    monkeypatch.setattr(MemoryBackend, "set", refuse_fingerprints)
    value = secrets.token_urlsafe(20)
    store.write("A", value)
    stored = store.read("A")
    assert stored is not None
    assert stored.reveal() == value
    assert "fingerprints" in caplog.text
    assert value not in caplog.text


def test_vault_records_survive_reopening(vault_env: Path) -> None:
    config = fast_kdf_config()
    value = secrets.token_urlsafe(24)
    SecureStorage(backend="vault", config=config).write("K", value)
    from jupyter_secure_storage.backends import vault as vault_module

    vault_module._OPEN.clear()
    known = KnownValues.from_store(SecureStorage(backend="vault", config=config))
    assert [f.name for f in known.find(value)] == ["K"]


def _write_many(worker: int) -> None:
    config = fast_kdf_config()
    store = SecureStorage(backend="vault", config=config)
    for index in range(15):
        store.write(f"W{worker}_{index}", f"value-{worker}-{index}-" + "q" * 20)


@pytest.mark.slow
def test_concurrent_writers_keep_every_fingerprint(vault_env: Path) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_many, args=(w,)) for w in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    config = fast_kdf_config()
    known = KnownValues.from_store(SecureStorage(backend="vault", config=config))
    text = " ".join(f"value-{w}-{i}-" + "q" * 20 for w in range(3) for i in range(15))
    assert len({f.name for f in known.find(text)}) == 45


def test_keyring_records_on_the_real_secret_service(keyring_prefix: str) -> None:
    store = SecureStorage(backend="keyring", config=keyring_config(keyring_prefix))
    value = secrets.token_urlsafe(24)
    store.write("GH_TOKEN", value)
    known = KnownValues.from_store(SecureStorage(backend="keyring", config=store.config))
    assert [f.name for f in known.find(f"token: {value}")] == ["GH_TOKEN"]
    assert store.namespaces() == ["default"]


def test_a_text_over_sixteen_mebibytes_is_scanned_whole() -> None:
    value = secrets.token_urlsafe(30)
    known = KnownValues.from_values({value: "K"}, MASTER)
    block = filler(1 << 20, 3)
    text = block * 17 + value + block
    (found,) = known.find(text)
    assert (found.start, found.end) == (17 << 20, (17 << 20) + len(value))


def test_core_anchor_hash_is_the_scanners_vectorised_hash() -> None:
    # The core hashes one anchor at write time in plain Python; the scanner hashes every
    # position of a text with numpy. A single bit of difference would hide every value.
    from jupyter_secure_storage.known_values import anchor_hash, anchor_keys
    from jupyter_secure_storage.scan.known import _keys, _Workspace

    keys = anchor_keys(MASTER)
    text = bytes(range(256)) * 2 + "é€𝄞".encode()
    workspace = _Workspace(len(text))
    low, high = workspace.load(text, len(text))
    for length in range(1, 17):
        vectorised = workspace.hash(low, high, length, _keys(MASTER)).tolist()
        plain = [anchor_hash(text[i : i + length], keys) for i in range(len(text) - length)]
        assert vectorised[: len(plain)] == plain, f"anchor length {length}"


def test_the_facade_hides_the_namespace_the_fingerprints_live_in() -> None:
    # storage.py names it without importing known_values (reads never load it).
    from jupyter_secure_storage.known_values import FINGERPRINT_NAMESPACE as CORE_NAME

    assert CORE_NAME == FINGERPRINT_NAMESPACE
    assert CORE_NAME in INTERNAL_NAMESPACES
