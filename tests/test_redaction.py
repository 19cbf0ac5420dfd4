"""The matcher and the session guard: whole, encoded and chunked values never get through.

The guard is tested on a real ``jupyter_client`` Session whose messages go to a
recording socket, then are deserialized as a front end would.
"""

from __future__ import annotations

import base64
import html
import itertools
import json
import re
import secrets
import urllib.parse
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jupyter_client.session import Session

from jupyter_secure_storage.kernel.redaction import Matcher, RedactionEngine, encoded_forms
from jupyter_secure_storage.kernel.session_guard import SessionGuard
from jupyter_secure_storage.secret import SecretRegistry

SECRET = "sk-proj-" + "Ab3/De+Fg=Hi&Jk\"Lm'No\\Pq" + "9z"
SECOND = "hf_" + "QrStUvWxYz0123456789abcd"


def all_forms_of(value: str) -> list[str]:
    data = value.encode()
    return [
        value,
        base64.b64encode(data).decode(),
        base64.urlsafe_b64encode(data).decode(),
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value),
        re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), urllib.parse.quote(value, safe="")),
        json.dumps(value)[1:-1],
        html.escape(value),
        repr(value)[1:-1],
    ]


def visible(text: str, value: str) -> bool:
    """Whether ``value`` or a common encoding of it can be read in ``text``."""
    forms = all_forms_of(value)
    return any(form in text for form in forms if len(form) >= 6)


@pytest.fixture
def matcher() -> Matcher:
    return Matcher({SECRET: "OPENAI_API_KEY", SECOND: "HF_TOKEN"})


# --- forms and matching ---------------------------------------------------------------


@pytest.mark.parametrize("index", range(9))
def test_every_common_encoding_is_redacted(matcher: Matcher, index: int) -> None:
    form = all_forms_of(SECRET)[index]
    redacted = matcher.redact(f"before {form} after")
    assert not visible(redacted, SECRET)
    assert redacted.startswith("before ")
    assert redacted.endswith(" after")
    assert "[secret:OPENAI_API_KEY]" in redacted


@pytest.mark.parametrize("prefix", ["", "u", "us", "user:", "Bearer ", "x" * 7])
def test_base64_inside_a_longer_value_is_found_at_every_alignment(
    matcher: Matcher, prefix: str
) -> None:
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        encoded = encode((prefix + SECRET + "!trailer").encode()).decode()
        redacted = matcher.redact(encoded)
        assert "[secret:OPENAI_API_KEY]" in redacted
        assert len(redacted) < len(encoded)


def test_short_values_are_not_redacted() -> None:
    matcher = Matcher({"12345": "PIN"}, min_length=6)
    assert matcher.redact("code 12345") == "code 12345"
    assert encoded_forms("12345", min_length=6) == set()


def test_lines_of_a_multi_line_value_are_found_alone() -> None:
    pem_body = [secrets.token_urlsafe(48) for _ in range(3)]
    key = "-----BEGIN PRIVATE KEY-----\n" + "\n".join(pem_body) + "\n-----END PRIVATE KEY-----"
    matcher = Matcher({key: "DEPLOY_KEY"})
    assert pem_body[1] not in matcher.redact(f"line: {pem_body[1]}")


def test_overlapping_hits_become_one_span_named_by_the_longest() -> None:
    long_value = "abcdefghijklmnopqrstuvwxyz"
    matcher = Matcher({long_value: "LONG", "mnopqrstuv": "INNER"})
    assert matcher.redact(f"<{long_value}>") == "<[secret:LONG]>"


def test_plain_text_passes_unchanged(matcher: Matcher) -> None:
    text = "Nothing to see here: 1234567890 abcdefghij sk-other-value\n" * 3
    assert matcher.redact(text) == text


def test_both_matchers_agree(matcher: Matcher) -> None:
    fallback = Matcher({SECRET: "OPENAI_API_KEY", SECOND: "HF_TOKEN"}, use_automaton=False)
    text = f"x {SECRET} y {base64.b64encode(SECOND.encode()).decode()} z {SECRET[:-1]}"
    assert fallback.kind == "str.find"
    assert fallback.redact(text) == matcher.redact(text)
    assert fallback.partial_tail("abc sk-pro") == matcher.partial_tail("abc sk-pro")


def test_partial_tail_is_the_longest_possible_start(matcher: Matcher) -> None:
    assert matcher.partial_tail("output sk-pro") == len("sk-pro")
    assert matcher.partial_tail("output done\n") == 0


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    before=st.text(max_size=40),
    after=st.text(max_size=40),
    which=st.sampled_from(range(9)),
)
def test_a_form_surrounded_by_any_text_is_hidden(
    matcher: Matcher, before: str, after: str, which: int
) -> None:
    form = all_forms_of(SECRET)[which]
    assert form not in matcher.redact(before + form + after)


# --- the engine follows the registry ------


def test_engine_rebuilds_when_a_value_is_registered() -> None:
    registry = SecretRegistry()
    engine = RedactionEngine(registry)
    assert engine.redact(f"x {SECRET}") == f"x {SECRET}"
    registry.announce(SECRET, "LATE")
    assert engine.redact(f"x {SECRET}") == "x [secret:LATE]"


def test_scrub_reaches_nested_content_and_keys() -> None:
    registry = SecretRegistry()
    registry.announce(SECRET, "K")
    engine = RedactionEngine(registry)
    content = {"data": {"text/html": [f"<b>{SECRET}</b>"], SECRET: 1}, "n": 3, "t": (SECRET,)}
    scrubbed = engine.scrub(content)
    assert SECRET not in json.dumps(scrubbed)
    assert scrubbed["n"] == 3
    assert content["data"]["text/html"] == [f"<b>{SECRET}</b>"]  # the original is not mutated


# --- the session guard ---------------------------------------------------------------


class RecordingSocket:
    """Stands in for the IOPub socket: keeps what Session.send serialized."""

    def __init__(self) -> None:
        self.frames: list[list[bytes]] = []

    def send_multipart(self, frames: list[Any], **_: Any) -> None:
        self.frames.append([bytes(f) for f in frames])


class Harness:
    def __init__(self, values: dict[str, str], enabled: bool = True) -> None:
        self.registry = SecretRegistry()
        for value, name in values.items():
            self.registry.announce(value, name)
        self.session = Session(key=b"test-key")
        self.socket = RecordingSocket()
        self.enabled = enabled
        self.guard = SessionGuard(
            self.session, RedactionEngine(self.registry), lambda _parent: self.enabled
        )
        self.guard.install()
        self.parent = self.session.msg("execute_request", {"code": ""})

    def stream(self, text: str, name: str = "stdout") -> None:
        message = self.session.msg("stream", {"name": name, "text": text}, parent=self.parent)
        self.session.send(self.socket, message, ident=b"stream." + name.encode())

    def send(self, msg_type: str, content: dict[str, Any]) -> None:
        self.session.send(self.socket, msg_type, content, parent=self.parent)

    def received(self) -> list[dict[str, Any]]:
        reader = Session(key=b"test-key")  # a fresh one: deserialize refuses replays
        messages = []
        for frames in self.socket.frames:
            _, parts = reader.feed_identities(frames)
            messages.append(reader.deserialize(parts))
        return messages

    def front_end_outputs(self) -> list[tuple[str, str]]:
        """Outputs as a front end builds them: consecutive same-name streams joined."""
        outputs: list[tuple[str, str]] = []
        for message in self.received():
            kind = message["header"]["msg_type"]
            content = message["content"]
            if kind == "stream":
                if outputs and outputs[-1][0] == "stream:" + content["name"]:
                    outputs[-1] = (outputs[-1][0], outputs[-1][1] + content["text"])
                else:
                    outputs.append(("stream:" + content["name"], content["text"]))
            elif kind != "status":
                outputs.append((kind, json.dumps(content)))
        return outputs


def test_a_value_written_one_character_at_a_time_is_never_whole() -> None:
    harness = Harness({SECRET: "OPENAI_API_KEY"})
    harness.stream("token: ")
    for char in SECRET:
        harness.stream(char)
    harness.stream("\n")
    harness.send("status", {"execution_state": "idle"})
    outputs = harness.front_end_outputs()
    assert outputs == [("stream:stdout", "token: [secret:OPENAI_API_KEY]\n")]


def test_held_text_is_sent_before_a_display_and_at_idle_in_order() -> None:
    harness = Harness({SECRET: "OPENAI_API_KEY"})
    harness.stream("ends with sk-")  # could be the start of the secret: held back
    assert harness.front_end_outputs() == [("stream:stdout", "ends with ")]
    harness.send("display_data", {"data": {"text/plain": "a picture"}, "metadata": {}})
    harness.stream("more sk-p")
    harness.send("status", {"execution_state": "idle"})
    kinds = [(kind, text) for kind, text in harness.front_end_outputs()]
    assert kinds[0] == ("stream:stdout", "ends with sk-")
    assert kinds[1][0] == "display_data"
    assert kinds[2] == ("stream:stdout", "more sk-p")


def test_every_message_type_is_scrubbed() -> None:
    harness = Harness({SECRET: "OPENAI_API_KEY"})
    harness.send("execute_result", {"data": {"text/plain": repr(SECRET)}, "metadata": {}})
    harness.send("display_data", {"data": {"text/html": f"<i>{html.escape(SECRET)}</i>"}})
    harness.send("update_display_data", {"data": {"application/json": {"k": SECRET}}})
    harness.send("error", {"ename": "E", "evalue": SECRET, "traceback": [f"x = {SECRET!r}"]})
    harness.send("comm_msg", {"comm_id": "c", "data": {"state": {"value": SECRET}}})
    harness.send("execute_input", {"code": f"key = {SECRET!r}"})
    raw = b"".join(b"".join(frames) for frames in harness.socket.frames).decode()
    assert not visible(raw, SECRET)
    assert raw.count("[secret:OPENAI_API_KEY]") >= 6


def test_when_disabled_messages_pass_unchanged() -> None:
    harness = Harness({SECRET: "OPENAI_API_KEY"}, enabled=False)
    harness.stream(SECRET)
    harness.send("execute_result", {"data": {"text/plain": SECRET}})
    received = harness.received()
    assert received[0]["content"]["text"] == SECRET
    assert received[1]["content"]["data"]["text/plain"] == SECRET


def test_uninstall_restores_send_and_flushes_held_text() -> None:
    harness = Harness({SECRET: "OPENAI_API_KEY"})
    harness.stream("tail sk-")
    harness.guard.uninstall()
    assert "send" not in harness.session.__dict__
    assert harness.front_end_outputs() == [("stream:stdout", "tail sk-")]
    harness.stream(SECRET)  # after unload: nothing is redacted any more
    assert harness.received()[-1]["content"]["text"] == SECRET


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    before=st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=30),
    after=st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=30),
    which=st.sampled_from([0, 1, 2, 6, 7, 8]),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=12),
)
def test_no_chunking_of_any_form_lets_it_through(
    before: str, after: str, which: int, cuts: list[int]
) -> None:
    harness = Harness({SECRET: "OPENAI_API_KEY"})
    text = before + all_forms_of(SECRET)[which] + after
    points = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    for start, end in itertools.pairwise(points):
        harness.stream(text[start:end])
    harness.send("status", {"execution_state": "idle"})
    joined = "".join(text for kind, text in harness.front_end_outputs() if kind == "stream:stdout")
    assert all_forms_of(SECRET)[which] not in joined
    # Chunked output may differ from redacting the whole at once by a character or two
    # around a match (a shorter form matched first), never by showing a form.
    assert "[secret:OPENAI_API_KEY]" in joined


# --- long and huge values ----------------------------------------------------------------


def test_the_start_of_a_long_value_is_held_whole() -> None:
    long_value = secrets.token_urlsafe(400)  # ~530 characters: its forms are long patterns
    matcher = Matcher({long_value: "LONG"})
    assert matcher.partial_tail("output: " + long_value[:300]) == 300
    assert matcher.partial_tail("output: " + long_value[:10]) == 10
    assert matcher.partial_tail("output: done\n") == 0


def test_a_huge_value_is_hidden_piece_by_piece_without_a_huge_matcher() -> None:
    huge = secrets.token_urlsafe(150_000)  # 200,000 characters
    matcher = Matcher({huge: "HUGE"})
    assert len(matcher) < 300  # pieces of the literal, not every encoding of it
    redacted = matcher.redact("head " + huge + " tail")
    assert redacted.startswith("head [secret:HUGE]")
    assert redacted.endswith("[secret:HUGE] tail")
    assert all(huge[i : i + 64] not in redacted for i in range(0, len(huge) - 64, 4999))
    assert matcher.partial_tail("x" + huge[:5000]) >= 5000 % 1024


def test_a_huge_registered_value_keeps_the_engine_small_and_quick() -> None:
    registry = SecretRegistry()
    registry.announce(secrets.token_urlsafe(750_000), "ONE_MEGABYTE")
    registry.announce(SECRET, "OPENAI_API_KEY")
    engine = RedactionEngine(registry)
    assert engine.redact(f"key={SECRET}") == "key=[secret:OPENAI_API_KEY]"
