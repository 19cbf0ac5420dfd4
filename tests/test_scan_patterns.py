"""The pattern detector: every token format found, placeholders dropped, allowlists honoured.

The tokens are made at test time from a seed (tests/scan_samples.py) and are never
printed: assertions compare, and pytest runs with --assert=plain.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import pytest
from scan_samples import KIND, MAKERS, in_context, token

from jupyter_secure_storage.errors import AllowlistError
from jupyter_secure_storage.scan import Scanner
from jupyter_secure_storage.scan.allowlist import Allowlist, MatchedFinding, fingerprint
from jupyter_secure_storage.scan.patterns import PATTERNS, PatternDetector, shannon_entropy

DETECTOR = PatternDetector()


def kinds_in(text: str) -> list[str]:
    return [finding.kind for finding in DETECTOR.find(text)]


@pytest.mark.parametrize("maker", sorted(MAKERS))
@pytest.mark.parametrize("seed", range(5))
def test_each_format_is_found_where_it_is_written(maker: str, seed: int) -> None:
    value = token(maker, seed)
    line = in_context(maker, value)
    findings = DETECTOR.find(line)
    assert [finding.kind for finding in findings] == [KIND[maker]]
    assert value in line[findings[0].start : findings[0].end]


@pytest.mark.parametrize("maker", sorted(MAKERS))
def test_scrubbing_leaves_a_marker_and_no_token(maker: str) -> None:
    value = token(maker, "scrub")
    text = "before\n" + in_context(maker, value) + "\nafter"
    scrubbed, findings = Scanner([DETECTOR]).scrub_text(text)
    assert len(findings) == 1
    assert value not in scrubbed
    assert f"[redacted:{KIND[maker]}]" in scrubbed
    assert scrubbed.startswith("before\n")
    assert scrubbed.endswith("\nafter")
    # The marker is not a token: scrubbing again changes nothing.
    assert Scanner([DETECTOR]).scrub_text(scrubbed) == (scrubbed, [])


def test_every_pattern_has_a_sample_and_a_distinct_kind() -> None:
    kinds = [pattern.kind for pattern in PATTERNS]
    assert len(kinds) == len(set(kinds))
    assert set(kinds) == set(KIND.values())


@pytest.mark.parametrize(
    "text",
    [
        "sk-learn-classification-pipeline-tutorial-v2",  # a word, not a key
        "sk-learn_RandomForestClassifier_v2_final_model_2024",  # words: entropy below 48's
        "sk-Preprocessing_Pipeline_Version2_Final_2024_Q3",
        "sk-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "OPENAI_API_KEY=sk-your-openai-api-key-goes-here-0123",
        "sk-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ",  # a sequence
        "ghp_XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
        "ghp_000000000000000000000000000000000000",
        "glpat-xxxxxxxxxxxxxxxxxxxx",
        "xoxb-XXXXXXXXXXXX-XXXXXXXXXXXXX-XXXXXXXXXXXXXXXXXXXXXXXX",
        "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
        "AKIAIOSFODNN7EXAMPLE",  # AWS's documentation key id
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "AIzaXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
        "sk_live_XXXXXXXXXXXXXXXXXXXXXXXX",
        "hf_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "from huggingface_hub import hf_hub_download",
        "eyJub3QiOiJqc29uIGFsZyJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJlc2lnbmF0dXJl",
        "-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----",
        "postgres://user:password@localhost/db",
        "postgres://user:${DB_PASSWORD}@localhost/db",
        "postgres://user:$DB_PASSWORD@localhost/db",
        "https://user:***@example.com/",
        "mysql://admin:<password>@db:3306/x",
        "redis://:{password}@cache:6379/0",
        "https://example.com:8443/path?q=1",
        "see https://example.com/a@b and mailto:x@y.z",
        "task-aBcD3fGh1jKlMn0pQrStUvWxYz12345678abcdXYZ",  # sk- inside a word
    ],
)
def test_placeholders_and_look_alikes_are_not_findings(text: str) -> None:
    assert kinds_in(text) == []


def test_a_jwt_needs_a_json_header_with_alg() -> None:
    value = token("jwt", 1)
    assert kinds_in(value) == ["jwt"]
    header = base64.urlsafe_b64encode(b'{"typ":"JWT"}').rstrip(b"=").decode()
    assert kinds_in(header + value[value.index(".") :]) == []


def test_a_url_keeps_its_user_and_host_and_loses_the_password() -> None:
    password = token("url-password", 3)
    text = f"DATABASE_URL=postgresql://analyst:{password}@db.internal:5432/sales"
    scrubbed, _ = Scanner([DETECTOR]).scrub_text(text)
    assert scrubbed == (
        "DATABASE_URL=postgresql://analyst:[redacted:url-password]@db.internal:5432/sales"
    )


def test_an_aws_secret_key_is_found_beside_its_key_id_without_a_label() -> None:
    key_id, secret = token("aws-access-key-id", 5), token("aws-secret-access-key", 5)
    document = json.dumps({"Credentials": {"AccessKeyId": key_id, "Other": secret}}, indent=1)
    assert sorted(kinds_in(document)) == ["aws-access-key-id", "aws-secret-access-key"]
    # Alone, a 40-character base64 string is not called an AWS key.
    assert kinds_in(json.dumps({"checksum": secret})) == []


@pytest.mark.parametrize("label", ["AWS_SECRET_ACCESS_KEY=", '"SecretAccessKey": "', "awsSecret: "])
def test_an_aws_secret_key_after_a_label_is_found_and_the_label_kept(label: str) -> None:
    secret = token("aws-secret-access-key", label)
    text = label + secret
    findings = DETECTOR.find(text)
    assert [f.kind for f in findings] == ["aws-secret-access-key"]
    assert text[findings[0].start : findings[0].end] == secret


def test_a_private_key_is_found_whole_in_json_escaped_and_split_forms() -> None:
    pem = token("private-key", 2)
    for text in (
        json.dumps({"key": pem}),  # "\n" escapes in a JSON file
        "KEY = (\n" + "\n".join(f'    "{line}\\n"' for line in pem.splitlines()) + "\n)",
    ):
        findings = DETECTOR.find(text)
        assert [f.kind for f in findings] == ["private-key"]
        body = pem.splitlines()[1:-1]
        covered = text[findings[0].start : findings[0].end]
        assert all(line in covered for line in body)


def test_an_encrypted_pem_with_headers_is_one_finding() -> None:
    pem = token("private-key", 4).replace("BEGIN PRIVATE", "BEGIN RSA PRIVATE")
    pem = pem.replace("END PRIVATE", "END RSA PRIVATE")
    lines = pem.splitlines()
    pem = "\n".join(
        [lines[0], "Proc-Type: 4,ENCRYPTED", "DEK-Info: AES-128-CBC,0A1B2C3D4E5F", "", *lines[1:]]
    )
    findings = DETECTOR.find("x = '''" + pem + "'''")
    assert [f.kind for f in findings] == ["private-key"]
    assert findings[0].end - findings[0].start == len(pem)


def test_tokens_inside_base64_data_are_not_found() -> None:
    # An AWS key id or Google key prefix can occur by chance in a base64 PNG.
    blob = base64.b64encode(os.urandom(3000)).decode()
    text = blob[:1000] + token("aws-access-key-id", 1) + blob[1000:2000] + "AIza" + blob[2000:]
    assert kinds_in(text) == []


def test_offsets_are_characters_in_text_that_is_not_ascii() -> None:
    value = token("github-token", 9)
    text = "clé = «" + value + "» # ключ"
    findings = DETECTOR.find(text)
    assert text[findings[0].start : findings[0].end] == value


def test_entropy_is_in_bits_per_character() -> None:
    assert shannon_entropy("") == 0
    assert shannon_entropy("aaaa") == 0
    assert shannon_entropy("abcd") == 2


@pytest.mark.parametrize(
    "text",
    [
        "sk-" * 100_000,
        "sk-a" * 100_000,
        "eyJ" * 100_000,
        "eyJ" + "a" * 200_000 + "." + "b" * 200_000,
        "://" * 100_000,
        "x://u:" + "p:" * 100_000,
        "-----BEGIN PRIVATE KEY-----" * 20_000,
        "-----BEGIN PRIVATE KEY-----\n" + "A" * 1_000_000,
        "aws_secret_access_key=" * 20_000,
        "AKIA" * 100_000,
        "glpat-" + "a." * 100_000,
        "https://hooks.slack.com/services/" * 10_000,
    ],
    ids=lambda text: repr(text[:12]),
)
def test_hostile_input_is_scanned_in_linear_time(text: str) -> None:
    started = time.perf_counter()
    DETECTOR.find(text)
    assert time.perf_counter() - started < 2.0


# --- the allowlist ------------------------------------------------------------------------


@pytest.mark.parametrize("maker", sorted(MAKERS))
@pytest.mark.parametrize("marker", ["  # jss: allow", "  # pragma: allowlist secret"])
def test_an_inline_marker_allows_the_line(maker: str, marker: str) -> None:
    value = token(maker, "inline")
    allowed = Allowlist().filter(DETECTOR)
    line = in_context(maker, value)
    if maker == "private-key":  # a multi-line finding: the marker on its first line
        first, rest = line.split("\n", 1)
        marked = first + marker + "\n" + rest
    else:
        marked = line + marker
    assert allowed.find(marked) == []
    assert [f.kind for f in allowed.find(line + "\nother = 1" + marker)] == [KIND[maker]]


def test_findings_carry_the_fingerprint_of_their_match() -> None:
    value = token("stripe-api-key", 1)
    findings = Allowlist().filter(DETECTOR).find(f"stripe.api_key = '{value}'")
    assert len(findings) == 1
    assert isinstance(findings[0], MatchedFinding)
    assert findings[0].fingerprint == fingerprint(value)
    assert value not in json.dumps(findings[0].to_json())


def test_the_allowlist_file_allows_by_fingerprint_regex_and_kind(tmp_path: Path) -> None:
    first, second = token("github-token", 1), token("github-token", 2)
    jwt = token("jwt", 1)
    key_id = token("aws-access-key-id", 1)
    allowlist = Allowlist.parse(
        "# accepted findings\n"
        f"fingerprint: {fingerprint(first)}  # the CI token of the demo\n"
        f"regex: {key_id[:8]}[A-Z0-9]{{12}}\n"
        "kind: jwt\n",
        base=tmp_path,
    )
    detector = allowlist.filter(DETECTOR)
    assert [f.kind for f in detector.find(f"{first} {second} {jwt} {key_id}")] == ["github-token"]
    assert detector.find(f"a = '{second}'")[0].fingerprint == fingerprint(second)


def test_allowlist_path_globs_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / ".jss-allowlist").write_text(
        "path: docs/**   # the tutorials\npath: *.example.ipynb\nkind: jwt # demo tokens\n"
    )
    allowlist = Allowlist.discover(tmp_path)
    assert allowlist.skips(tmp_path / "docs" / "a" / "b.ipynb")
    assert allowlist.skips(tmp_path / "n" / "x.example.ipynb")
    assert not allowlist.skips(tmp_path / "src" / "b.ipynb")
    assert not allowlist.skips(tmp_path.parent / "docs" / "b.ipynb")
    assert allowlist.kinds == {"jwt"}  # comments after a rule are not part of it


@pytest.mark.parametrize(
    "line",
    ["sk-live-value-pasted-here", "fingerprint: abc", "regex: (unclosed", "colour: blue", "path:"],
)
def test_a_bad_allowlist_line_is_a_typed_error_that_does_not_echo_it(line: str) -> None:
    with pytest.raises(AllowlistError) as raised:
        Allowlist.parse("kind: jwt\n" + line + "\n", source="x/.jss-allowlist")
    assert "line 2" in raised.value.cause
    if line != "path:":  # the list of directives in the message names "path:" itself
        assert line not in str(raised.value)


def test_text_with_lone_surrogates_is_scanned() -> None:
    # Undecodable bytes of a file arrive as lone surrogates (surrogateescape).
    value = token("github-token", 10)
    text = "caf\udce9 = '" + value + "'"
    findings = DETECTOR.find(text)
    assert text[findings[0].start : findings[0].end] == value
