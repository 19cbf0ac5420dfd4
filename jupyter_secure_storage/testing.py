"""One behaviour suite for every backend, built-in or third-party (after keyring's
BackendBasicTests).

A backend's tests subclass :class:`StorageBehaviour` and provide a ``make_store``
fixture: a function ``make_store(namespace) -> SecureStorage`` on a fresh, empty
store that the fixture cleans up afterwards::

    from jupyter_secure_storage.testing import StorageBehaviour

    class TestMyBackend(StorageBehaviour):
        @pytest.fixture
        def make_store(self, tmp_path):
            def make(namespace="default"):
                return SecureStorage(backend=MyBackend(root=tmp_path), namespace=namespace)
            return make

Values used here are test data; failures compare and never print them.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import Any

import pytest

from .errors import (
    InvalidKeyError,
    InvalidValueError,
    InvalidValueTypeError,
    SecureStorageError,
    ValueTooLargeError,
)
from .secret import Secret, secret_registry
from .storage import SecureStorage

MakeStore = Callable[..., SecureStorage]

# Awkward text a keystore must return unchanged: accents, CJK, right-to-left,
# combining marks, astral-plane emoji, quotes, backslashes, newlines, tabs.
AWKWARD_KEYS = [
    "OPENAI_API_KEY",
    "clé-ümlaut-ß",
    "键/名字",
    "מפתח العربية",
    "e\u0301-combining",
    "emoji-😀-🔑",
    "with space inside",
    "quote'\"\\back#slash",
    "a.b:c@d#e/f",
]
AWKWARD_VALUES = [
    "sk-" + "A" * 48,
    "päss wörd ñ € 中文 😀 𝕏",
    "line one\nline two\r\n\ttabbed",
    '{"json": [1, 2, "three"], "nested": {"k": "v"}}',
    "'single' \"double\" `back` \\slash",
    "\u200b zero-width and \u202e bidi override",
    "\x1bjss:chunks:v1:3:deadbeef",  # looks like the keyring backend's own marker
    " leading and trailing spaces ",
]


def canary() -> str:
    """A fresh random value to look for."""
    return "canary-" + secrets.token_urlsafe(24)


def same(secret: Secret | None, expected: str) -> bool:
    """Compare without ever putting the value into an assertion message."""
    return secret is not None and secret.reveal() == expected


class StorageBehaviour:
    """What every backend must do. Subclasses provide the ``make_store`` fixture."""

    #: The "huge value" test writes about this many characters; a subclass whose
    #: store is slow per item (many small chunks) may lower it.
    huge_value_length = 200_000

    @pytest.fixture
    def store(self, make_store: MakeStore) -> SecureStorage:
        return make_store("default")

    # --- the basic operations -----------------------------------------------------------

    def test_write_then_read_returns_a_secret_with_the_value(self, store: SecureStorage) -> None:
        value = canary()
        store.write("API_TOKEN", value)
        result = store.read("API_TOKEN")
        assert isinstance(result, Secret)
        assert same(result, value)
        assert result.name == "API_TOKEN"

    def test_read_of_a_missing_key_is_none(self, store: SecureStorage) -> None:
        assert store.read("NEVER_WRITTEN") is None
        assert not store.contains_key("NEVER_WRITTEN")

    def test_contains_key_after_write(self, store: SecureStorage) -> None:
        store.write("PRESENT", canary())
        assert store.contains_key("PRESENT")

    def test_write_replaces_the_previous_value(self, store: SecureStorage) -> None:
        first, second = canary(), canary()
        store.write("ROTATED", first)
        store.write("ROTATED", second)
        assert same(store.read("ROTATED"), second)
        assert store.keys() == ["ROTATED"]

    def test_write_none_deletes(self, store: SecureStorage) -> None:
        store.write("GONE", canary())
        store.write("GONE", None)
        assert store.read("GONE") is None
        assert "GONE" not in store.keys()

    def test_delete_removes_only_that_key(self, store: SecureStorage) -> None:
        kept = canary()
        store.write("KEEP", kept)
        store.write("DROP", canary())
        store.delete("DROP")
        assert store.read("DROP") is None
        assert same(store.read("KEEP"), kept)
        assert store.keys() == ["KEEP"]

    def test_delete_of_a_missing_key_is_not_an_error(self, store: SecureStorage) -> None:
        store.delete("NEVER_WRITTEN")
        assert store.keys() == []

    def test_keys_lists_names_sorted(self, store: SecureStorage) -> None:
        for name in ("B_KEY", "A_KEY", "C_KEY"):
            store.write(name, canary())
        assert store.keys() == ["A_KEY", "B_KEY", "C_KEY"]

    def test_read_all_returns_every_value_as_secrets(self, store: SecureStorage) -> None:
        values = {f"KEY_{i}": canary() for i in range(5)}
        for key, value in values.items():
            store.write(key, value)
        everything = store.read_all()
        assert sorted(everything) == sorted(values)
        assert all(isinstance(s, Secret) for s in everything.values())
        assert all(same(everything[k], v) for k, v in values.items())

    def test_delete_all_empties_the_namespace(self, store: SecureStorage) -> None:
        for i in range(4):
            store.write(f"KEY_{i}", canary())
        store.delete_all()
        assert store.keys() == []
        assert store.read_all() == {}
        assert store.read("KEY_0") is None

    def test_empty_store_lists_nothing(self, store: SecureStorage) -> None:
        assert store.keys() == []
        assert store.read_all() == {}
        store.delete_all()  # nothing to delete is not an error

    def test_entries_list_names_with_their_last_change(self, store: SecureStorage) -> None:
        import time

        before = time.time() - 2
        store.write("B_KEY", canary())
        store.write("A_KEY", canary())
        entries = store.entries()
        assert [e.name for e in entries] == ["A_KEY", "B_KEY"]
        assert all(e.namespace == store.namespace for e in entries)
        stamps = [e.modified for e in entries if e.modified is not None]
        assert all(before <= stamp.timestamp() <= time.time() + 2 for stamp in stamps)

    # --- namespaces ---------------------------------------------------------------------

    def test_namespaces_are_isolated(self, make_store: MakeStore) -> None:
        team_a, team_b = make_store("team-a"), make_store("team-b")
        value_a, value_b = canary(), canary()
        team_a.write("SHARED_NAME", value_a)
        team_b.write("SHARED_NAME", value_b)
        team_b.write("ONLY_B", canary())
        assert same(team_a.read("SHARED_NAME"), value_a)
        assert same(team_b.read("SHARED_NAME"), value_b)
        assert team_a.keys() == ["SHARED_NAME"]
        assert team_a.read("ONLY_B") is None

    def test_delete_all_leaves_other_namespaces_alone(self, make_store: MakeStore) -> None:
        team_a, team_b = make_store("team-a"), make_store("team-b")
        kept = canary()
        team_a.write("K", canary())
        team_b.write("K", kept)
        team_a.delete_all()
        assert team_a.keys() == []
        assert same(team_b.read("K"), kept)

    def test_namespaces_lists_those_holding_keys(self, make_store: MakeStore) -> None:
        team_a, team_b = make_store("team-a"), make_store("team-b")
        team_a.write("K", canary())
        team_b.write("K", canary())
        try:
            listed = team_a.namespaces()
        except NotImplementedError:
            pytest.skip("this backend cannot list namespaces")
        assert {"team-a", "team-b"} <= set(listed)
        team_b.delete("K")
        assert "team-b" not in team_a.namespaces()

    def test_two_instances_on_one_store_see_each_other(self, make_store: MakeStore) -> None:
        writer, reader = make_store("default"), make_store("default")
        value = canary()
        writer.write("SEEN", value)
        assert same(reader.read("SEEN"), value)
        assert reader.keys() == ["SEEN"]

    # --- awkward input that must round-trip -------------------------------------------------

    @pytest.mark.parametrize("key", AWKWARD_KEYS)
    def test_unicode_keys_round_trip(self, store: SecureStorage, key: str) -> None:
        value = canary()
        store.write(key, value)
        assert same(store.read(key), value)
        assert store.keys() == [key]
        store.delete(key)
        assert store.keys() == []

    @pytest.mark.parametrize("index", range(len(AWKWARD_VALUES)))
    def test_awkward_values_round_trip(self, store: SecureStorage, index: int) -> None:
        value = AWKWARD_VALUES[index]
        store.write("AWKWARD", value)
        assert same(store.read("AWKWARD"), value)
        assert same(store.read_all()["AWKWARD"], value)

    def test_empty_value_is_stored_and_read_back_empty(self, store: SecureStorage) -> None:
        store.write("EMPTY", "")
        result = store.read("EMPTY")
        assert result is not None
        assert result.reveal() == ""
        assert store.contains_key("EMPTY")

    def test_huge_value_round_trips_whole(self, store: SecureStorage) -> None:
        # Mixed-width characters so any byte-based splitting is exercised.
        value = ("x" * 997 + "é€😀") * max(1, self.huge_value_length // 1000)
        store.write("HUGE", value)
        assert same(store.read("HUGE"), value)

    def test_value_over_the_limit_is_refused_and_the_old_value_kept(
        self, store: SecureStorage
    ) -> None:
        old = canary()
        store.write("LIMITED", old)
        with pytest.raises(ValueTooLargeError):
            store.write("LIMITED", "y" * (store.max_value_length + 1))
        assert same(store.read("LIMITED"), old)

    # --- bad input: typed errors, nothing stored, nothing echoed ------------------------------

    @pytest.mark.parametrize(
        "bad_key",
        ["", "line\nbreak", "nul\x00byte", "tab\tkey", "x" * 256, " padded", "padded ", "\u2028"],
        ids=["empty", "newline", "nul", "tab", "too-long", "lead-space", "trail-space", "lsep"],
    )
    def test_invalid_keys_are_refused_without_being_echoed(
        self, store: SecureStorage, bad_key: str
    ) -> None:
        with pytest.raises(InvalidKeyError) as raised:
            store.write(bad_key, canary())
        if len(bad_key.strip()) > 3:
            assert bad_key not in str(raised.value)
        assert raised.value.remedy
        assert store.keys() == []

    @pytest.mark.parametrize("bad_key", [None, 42, b"BYTES_KEY", ["list"]])
    def test_non_str_keys_are_refused(self, store: SecureStorage, bad_key: Any) -> None:
        with pytest.raises(InvalidKeyError):
            store.read(bad_key)
        with pytest.raises(InvalidKeyError):
            store.write(bad_key, "value")
        assert store.keys() == []

    @pytest.mark.parametrize("bad_value", [42, 3.5, b"bytes-value", ["a"], {"k": "v"}, object()])
    def test_non_str_values_are_refused_and_the_old_value_kept(
        self, store: SecureStorage, bad_value: Any
    ) -> None:
        old = canary()
        store.write("TYPED", old)
        with pytest.raises(InvalidValueTypeError) as raised:
            store.write("TYPED", bad_value)
        assert isinstance(raised.value, TypeError)
        assert isinstance(raised.value, SecureStorageError)
        assert same(store.read("TYPED"), old)

    def test_lone_surrogates_are_refused(self, store: SecureStorage) -> None:
        with pytest.raises(InvalidValueError):
            store.write("SURROGATE", "abc\udc80def")
        assert store.read("SURROGATE") is None

    def test_a_secret_can_be_written_as_a_value(self, store: SecureStorage) -> None:
        value = canary()
        store.write("ORIGINAL", value)
        original = store.read("ORIGINAL")
        assert original is not None
        store.write("COPY", original)
        assert same(store.read("COPY"), value)

    # --- listeners --------------------------------------------------------------------------

    def test_listeners_fire_on_write_delete_and_delete_all(self, store: SecureStorage) -> None:
        heard: list[str | None] = []
        store.register_listener(
            "WATCHED", lambda s: heard.append(None if s is None else s.reveal())
        )
        value = canary()
        store.write("WATCHED", value)
        store.write("OTHER", canary())
        store.delete("WATCHED")
        store.write("WATCHED", value)
        store.delete_all()
        assert heard == [value, None, value, None]

    def test_unregistered_listeners_stay_quiet(self, store: SecureStorage) -> None:
        heard: list[object] = []

        def listener(secret: Secret | None) -> None:
            heard.append(secret)

        store.register_listener("K", listener)
        store.unregister_listener("K", listener)
        store.write("K", canary())
        store.register_listener("K", listener)
        store.unregister_all_listeners_for_key("K")
        store.write("K", canary())
        store.register_listener("K", listener)
        store.unregister_all_listeners()
        store.delete("K")
        assert heard == []

    def test_listeners_hear_other_instances_on_the_same_store(self, make_store: MakeStore) -> None:
        watcher, writer = make_store("default"), make_store("default")
        heard: list[bool] = []
        watcher.register_listener("K", lambda s: heard.append(s is not None))
        writer.write("K", canary())
        writer.delete("K")
        assert heard == [True, False]

    def test_a_failing_listener_does_not_undo_the_write(self, store: SecureStorage) -> None:
        def broken(secret: Secret | None) -> None:
            raise RuntimeError("listener bug")

        value = canary()
        store.register_listener("K", broken)
        store.write("K", value)
        assert same(store.read("K"), value)

    # --- async twins -------------------------------------------------------------------------

    def test_async_twins_do_what_the_sync_methods_do(self, store: SecureStorage) -> None:
        value = canary()

        async def scenario() -> list[object]:
            await store.awrite("ASYNC", value)
            results: list[object] = [
                await store.acontains_key("ASYNC"),
                await store.aread("ASYNC"),
                await store.akeys(),
                await store.aread_all(),
            ]
            await store.adelete("ASYNC")
            results.append(await store.aread("ASYNC"))
            await store.awrite("ASYNC2", value)
            await store.adelete_all()
            results.append(await store.akeys())
            return results

        present, read, keys, everything, after_delete, after_delete_all = asyncio.run(scenario())
        assert present is True
        assert isinstance(read, Secret)
        assert same(read, value)
        assert keys == ["ASYNC"]
        assert isinstance(everything, dict)
        assert same(everything["ASYNC"], value)
        assert after_delete is None
        assert after_delete_all == []

    # --- the redaction registry ---------------------------------------------------------------

    def test_written_and_read_values_are_announced(self, store: SecureStorage) -> None:
        written = canary()
        store.write("ANNOUNCED", written)
        assert written in secret_registry
