"""Well-known token formats (OpenAI, GitHub, AWS, PEM keys, ...): the pattern detector.

How a text is scanned, in two steps, so that text without any token costs one pass of a
Rust automaton and nothing else:

1. **Prefilter.** One Aho-Corasick automaton (``ahocorasick-rs``, a DFA; already used by
   the kernel's redaction) finds every literal that a token starts with: ``sk-``,
   ``ghp_``, ``AKIA``, ``eyJ``, ``-----BEGIN``, ``://`` ... Most texts have none.
2. **Confirm.** At each candidate position one compiled regex -- the alternation of every
   pattern, each a named group -- is *matched* (``regex.match(text, pos)``), so only the
   branch whose literal prefix is there gets past its first character. Every repetition
   is bounded or over a character class disjoint from what follows it, so a match attempt
   is linear in the token's length (no catastrophic backtracking).

A match is then checked for being a placeholder rather than a token (see
:func:`placeholder_reason`): Shannon entropy of the variable part under the pattern's
threshold (which rises with the length of variable-length formats); a single character
class where tokens mix them (``XXXXXXXX...``); a run of 5 identical or 6 consecutive
characters (``xxxxx``, ``abcdef``, ``123456``); a placeholder word (``EXAMPLE``, as in
AWS's ``AKIAIOSFODNN7EXAMPLE``, ``placeholder``, ``your_``, ``dummy``, ``redacted``).
URLs with passwords are not held to entropy (passwords are short and human), only to a
list of placeholders (``***``, ``${VAR}``, ``<password>``, ``password``, ...). JWTs must
have a header that decodes to a JSON object with ``alg``.

Markers left by an earlier scrub (``[secret:NAME]``, ``[redacted:kind]``) hold none of
the literals, so they are never found again.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote

import ahocorasick_rs

from .findings import Finding

# Characters that may not touch a token on its left: a token is never the tail of a word
# (``task-...`` holds no OpenAI key) nor the middle of a base64 run (a PNG in an output).
_WORD_LEFT = r"(?<![A-Za-z0-9])"
_B64_LEFT = r"(?<![A-Za-z0-9+/_-])"
_B64URL_RIGHT = r"(?![A-Za-z0-9_-])"
_ALNUM_RIGHT = r"(?![A-Za-z0-9])"


@dataclass(frozen=True)
class Pattern:
    """One token format."""

    kind: str  # Finding.kind
    description: str
    keywords: tuple[str, ...]  # literals a match starts with (the prefilter's words)
    regex: str  # matched at the position of a keyword; group ``v`` is the variable part
    min_entropy: float = 0.0  # bits per character of ``v``; 0: not checked
    max_length: int = 0  # of ``v``; longer is not this token (the regex itself is unbounded)
    # The shortest ``v`` (0: the threshold is not scaled): longer random tokens have higher
    # entropy, so the threshold rises by 0.5 * log2(length / min_length), at most by 1 bit.
    min_length: int = 0
    mixed_case: bool = True  # tokens mix upper, lower and digits: one class only is a placeholder
    redact_value_only: bool = False  # the finding covers ``v`` only (a URL keeps its host)
    check: Callable[[re.Match[str], str], str | None] | None = field(default=None)


def _password_placeholder(match: re.Match[str], group: str) -> str | None:
    password = unquote(match.group(group))
    lowered = password.lower()
    if re.fullmatch(
        r"\*+|x+|\.{2,}|…|\$\{[^}]*\}|\$\(?[A-Za-z_][A-Za-z0-9_]*\)?|<[^>]*>|\{\{?[^}]*\}?\}"
        r"|%\([^)]*\)s|\[(?:redacted|secret)(?::[^\]]*)?\]|%s|\?",
        lowered,
    ):
        return "a template or masked password"
    if lowered in _PLACEHOLDER_PASSWORDS or lowered.startswith(("your", "my-", "my_")):
        return "a placeholder password"
    return None


_PLACEHOLDER_PASSWORDS = {
    "password",
    "passwd",
    "pass",
    "pwd",
    "secret",
    "changeme",
    "change_me",
    "mypassword",
    "password123",
    "pass123",
    "yourpassword",
    "user",
    "username",
    "token",
    "example",
}


def _jwt_header(match: re.Match[str], group: str) -> str | None:
    header = match.group(group).split(".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return "a header that is not base64url JSON"
    if not isinstance(decoded, dict) or "alg" not in decoded:
        return "a header without alg"
    return None


_PEM_HEAD = r"-----BEGIN (?:[A-Z0-9]+ ){0,4}PRIVATE KEY(?: BLOCK)?-----"
_PEM_TAIL = r"-----END (?:[A-Z0-9]+ ){0,4}PRIVATE KEY(?: BLOCK)?-----"

PATTERNS: tuple[Pattern, ...] = (
    Pattern(
        "anthropic-api-key",
        "Anthropic API key (sk-ant-api03-...)",
        ("sk-ant-",),
        _WORD_LEFT + r"sk-ant-[a-z]{3,8}[0-9]{2}-(?P<v>[A-Za-z0-9_-]{32,})" + _B64URL_RIGHT,
        min_entropy=4.0,
        max_length=400,
        min_length=32,
    ),
    Pattern(
        "openai-api-key",
        "OpenAI API key (sk-..., sk-proj-..., sk-svcacct-..., sk-admin-...)",
        ("sk-",),
        _WORD_LEFT
        + r"sk-(?:(?:proj|svcacct|admin|None)-)?(?P<v>[A-Za-z0-9_-]{32,})"
        + _B64URL_RIGHT,
        min_entropy=3.9,
        max_length=400,
        min_length=32,
    ),
    Pattern(
        "github-token",
        "GitHub token (ghp_, gho_, ghu_, ghs_, ghr_)",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
        _WORD_LEFT + r"gh[pousr]_(?P<v>[A-Za-z0-9]{36,})" + _ALNUM_RIGHT,
        min_entropy=3.8,
        max_length=251,
        min_length=36,
    ),
    Pattern(
        "github-fine-grained-token",
        "GitHub fine-grained personal access token (github_pat_...)",
        ("github_pat_",),
        _WORD_LEFT + r"github_pat_(?P<v>[A-Za-z0-9_]{60,})" + _ALNUM_RIGHT,
        min_entropy=4.0,
        max_length=244,
        min_length=60,
    ),
    Pattern(
        "gitlab-token",
        "GitLab personal access token (glpat-...)",
        ("glpat-",),
        _WORD_LEFT
        + r"glpat-(?P<v>[A-Za-z0-9_-]{20,}(?:\.[A-Za-z0-9_-]{2,80}){0,3})"
        + _B64URL_RIGHT,
        min_entropy=3.2,
        max_length=300,
        min_length=20,
    ),
    Pattern(
        "slack-token",
        "Slack token (xoxb-, xoxa-, xoxp-, xoxr-, xoxs-)",
        ("xoxb-", "xoxa-", "xoxp-", "xoxr-", "xoxs-"),
        _WORD_LEFT + r"xox[baprs]-(?P<v>[0-9A-Za-z-]{20,})" + _ALNUM_RIGHT,
        max_length=250,
        min_entropy=3.0,
        mixed_case=False,
    ),
    Pattern(
        "slack-webhook",
        "Slack incoming webhook URL",
        ("://hooks.slack.com/",),
        r"https?://hooks\.slack\.com/(?:services|workflows|triggers)/"
        r"(?P<v>[A-Za-z0-9_+-]{6,40}/[A-Za-z0-9_+-]{6,40}/[A-Za-z0-9_+-]{12,80})" + _ALNUM_RIGHT,
        min_entropy=3.5,
    ),
    Pattern(
        "aws-access-key-id",
        "AWS access key id (AKIA..., ASIA...)",
        ("AKIA", "ASIA"),
        _B64_LEFT + r"A(?:KI|SI)A(?P<v>[A-Z0-9]{16})" + _ALNUM_RIGHT,
        min_entropy=2.5,
        mixed_case=False,
    ),
    Pattern(
        "aws-secret-access-key",
        "AWS secret access key (40 characters after an AWS label, or near a key id)",
        (
            "secret_access_key",
            "SECRET_ACCESS_KEY",
            "SecretAccessKey",
            "secretAccessKey",
            "secret-access-key",
            "aws_secret",
            "AWS_SECRET",
            "aws-secret",
            "AwsSecret",
            "awsSecret",
        ),
        r"(?:(?i:secret[_-]?access[_-]?key)|(?i:aws[_-]?secret)[A-Za-z_-]{0,24})"
        r"""["']?\s{0,4}(?:=>|:=|[:=])\s{0,4}(?:b?["'])?"""
        r"(?P<v>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])",
        min_entropy=4.0,
        redact_value_only=True,
    ),
    Pattern(
        "google-api-key",
        "Google API key (AIza...)",
        ("AIza",),
        _B64_LEFT + r"AIza(?P<v>[0-9A-Za-z_-]{35})" + _B64URL_RIGHT,
        min_entropy=3.8,
    ),
    Pattern(
        "stripe-api-key",
        "Stripe secret or restricted key (sk_live_, rk_live_, sk_test_, rk_test_)",
        ("sk_live_", "rk_live_", "sk_test_", "rk_test_"),
        _WORD_LEFT + r"[sr]k_(?:live|test)_(?P<v>[0-9A-Za-z]{20,})" + _ALNUM_RIGHT,
        min_entropy=3.5,
        max_length=247,
        min_length=20,
    ),
    Pattern(
        "huggingface-token",
        "Hugging Face access token (hf_...)",
        ("hf_",),
        _WORD_LEFT + r"hf_(?P<v>[A-Za-z0-9]{34,})" + _ALNUM_RIGHT,
        min_entropy=3.8,
        max_length=40,
        min_length=34,
    ),
    Pattern(
        "jwt",
        "JSON Web Token (three base64url parts; the header is JSON with alg)",
        ("eyJ",),
        _B64_LEFT
        + r"(?P<v>eyJ[A-Za-z0-9_-]{8,4000}\.[A-Za-z0-9_-]{8,16000}\.[A-Za-z0-9_-]{16,2000})"
        + r"(?![A-Za-z0-9_.-])",
        check=_jwt_header,
    ),
    Pattern(
        "private-key",
        "PEM private key block (RSA, EC, DSA, OPENSSH, PGP, PKCS#8, encrypted)",
        ("-----BEGIN ",),
        # The whole block; or, when the block is split across quoted string pieces or has
        # no END line, the header and the base64 that follows it.
        _PEM_HEAD
        + r"(?:(?:(?:\r?\n|\\r?\\n)[A-Za-z-]{1,40}: [^\n\\]{0,200}){0,4}"
        + r"(?P<v>[A-Za-z0-9+/=\s\\]{0,20000})"
        + _PEM_TAIL
        + r"""|(?P<w>[A-Za-z0-9+/=\s"',\\]{64,20000})(?:"""
        + _PEM_TAIL
        + r")?)",
        min_entropy=4.5,
        mixed_case=False,
    ),
    Pattern(
        "url-password",
        "a password in a URL (scheme://user:password@host)",
        ("://",),
        r"[A-Za-z][A-Za-z0-9+.-]{0,31}://[^\s:/?#@\[\]\"'<>`]{0,128}:"
        r"(?P<v>[^\s/?#@\"'<>`]{1,256})@(?=[A-Za-z0-9\[])",
        mixed_case=False,
        redact_value_only=True,
        check=_password_placeholder,  # passwords are short and human: no entropy check
    ),
)

_PLACEHOLDER_WORDS = re.compile(r"example|placeholder|your[_-]|dummy|redacted", re.IGNORECASE)
_REPEATED = re.compile(r"(.)\1{4}")
_SURROGATES = re.compile("[\ud800-\udfff]")
_SCHEME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+.-")


def shannon_entropy(text: str) -> float:
    """Bits per character of ``text`` (0 for an empty text)."""
    if not text:
        return 0.0
    total = len(text)
    return -sum(n / total * math.log2(n / total) for n in Counter(text).values())


def _has_sequence(text: str, run: int = 6) -> bool:
    length = 1
    for previous, current in itertools.pairwise(text):
        length = length + 1 if ord(current) - ord(previous) == 1 else 1
        if length >= run:
            return True
    return False


def placeholder_reason(pattern: Pattern, variable: str) -> str | None:
    """Why ``variable`` (the part of a match after the fixed prefix) is not a real token."""
    if pattern.max_length and len(variable) > pattern.max_length:
        return "too long"
    if pattern.min_entropy:
        required = pattern.min_entropy
        if pattern.min_length and len(variable) > pattern.min_length:
            required += min(1.0, 0.5 * math.log2(len(variable) / pattern.min_length))
        if shannon_entropy(variable) < required:
            return "low entropy"
    if pattern.mixed_case:
        classes = (
            any(c.isupper() for c in variable)
            + any(c.islower() for c in variable)
            + any(c.isdigit() for c in variable)
        )
        if classes < 2:
            return "one character class"
    if _REPEATED.search(variable):
        return "a run of identical characters"
    if _has_sequence(variable):
        return "a run of consecutive characters"
    if _PLACEHOLDER_WORDS.search(variable):
        return "a placeholder word"
    return None


# The secret key that goes with an access key id is often a bare 40-character string on
# the next line or in the next field ("AccessKeyId": ..., "SecretAccessKey": ...).
_AWS_SECRET_NEAR = re.compile(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_AWS_NEAR_DISTANCE = 200


class PatternDetector:
    """A :class:`~jupyter_secure_storage.scan.findings.Detector` of well-known token formats."""

    def __init__(self, patterns: tuple[Pattern, ...] = PATTERNS) -> None:
        self.patterns = patterns
        self._kinds = {f"p{index}": pattern for index, pattern in enumerate(patterns)}
        branches = []
        for index, pattern in enumerate(patterns):
            # Group names must be unique in the alternation: ``v`` of pattern 3 is ``v3``.
            body = re.sub(r"\(\?P<([a-z])>", rf"(?P<\g<1>{index}>", pattern.regex)
            body = re.sub(r"\(\?P=([a-z])\)", rf"(?P=\g<1>{index})", body)
            branches.append(f"(?P<p{index}>{body})")
        self._regex = re.compile("|".join(branches))
        self.keywords = sorted({k for pattern in patterns for k in pattern.keywords})
        self._scheme_keywords = {
            i for i, keyword in enumerate(self.keywords) if keyword.startswith("://")
        }
        self._bytes_automaton = ahocorasick_rs.BytesAhoCorasick(
            [k.encode() for k in self.keywords], implementation=ahocorasick_rs.Implementation.DFA
        )
        self._text_automaton = ahocorasick_rs.AhoCorasick(
            self.keywords, implementation=ahocorasick_rs.Implementation.DFA
        )
        self._aws_id = next(
            (f"p{i}" for i, p in enumerate(patterns) if p.kind == "aws-access-key-id"), None
        )
        self._aws_secret = next((p for p in patterns if p.kind == "aws-secret-access-key"), None)

    @property
    def kinds(self) -> list[str]:
        return [pattern.kind for pattern in self.patterns]

    def _candidates(self, text: str) -> list[tuple[int, int]]:
        """``(position, keyword index)`` of every keyword, in order of position."""
        if text.isascii():
            hits = self._bytes_automaton.find_matches_as_indexes(
                text.encode("ascii"), overlapping=True
            )
        else:
            # Lone surrogates (undecodable bytes of a file) cannot reach the automaton; the
            # same-length stand-in keeps every offset.
            searched = _SURROGATES.sub("\ufffd", text)
            hits = self._text_automaton.find_matches_as_indexes(searched, overlapping=True)
        return sorted((start, index) for index, start, _end in hits)

    def find(self, text: str) -> list[Finding]:
        if len(text) < 8:
            return []
        candidates = self._candidates(text)
        if not candidates:
            return []
        findings: list[Finding] = []
        covered = 0  # the end of the last match: candidates inside it are part of it
        tried: set[int] = set()
        for position, keyword in candidates:
            start = position
            if keyword in self._scheme_keywords:
                start = self._scheme_start(text, position)
            if start < covered or start in tried:
                continue
            tried.add(start)
            match = self._regex.match(text, start)
            if match is None:
                continue
            group = match.lastgroup
            if group is None or group not in self._kinds:
                continue
            pattern = self._kinds[group]
            covered = match.end()
            finding = self._confirmed(pattern, group, match)
            if finding is None:
                continue
            findings.append(finding)
            if group == self._aws_id:
                findings.extend(self._aws_secret_near(text, finding))
        if len(findings) > 1:
            findings = sorted(set(findings), key=lambda f: (f.start, f.end))
        return findings

    @staticmethod
    def _scheme_start(text: str, position: int) -> int:
        start = position
        while start > 0 and position - start < 32 and text[start - 1] in _SCHEME_CHARS:
            start -= 1
        return start

    def _confirmed(self, pattern: Pattern, group: str, match: re.Match[str]) -> Finding | None:
        index = group[1:]
        value_group = "v" + index
        if match.group(value_group) is None and match.re.groupindex.get("w" + index):
            value_group = "w" + index
        variable = match.group(value_group)
        if variable is None:
            return None
        if pattern.kind == "private-key":
            body = re.sub(r"[^A-Za-z0-9+/]", "", variable.replace("\\n", ""))
            if len(body) < 64 or placeholder_reason(pattern, body):
                return None
        elif pattern.check is not None:
            if pattern.check(match, value_group):
                return None
        elif placeholder_reason(pattern, variable):
            return None
        if pattern.redact_value_only:
            return Finding(pattern.kind, match.start(value_group), match.end(value_group))
        return Finding(pattern.kind, match.start(group), match.end(group))

    def _aws_secret_near(self, text: str, key_id: Finding) -> list[Finding]:
        if self._aws_secret is None:
            return []
        window_start = max(0, key_id.start - _AWS_NEAR_DISTANCE)
        window_end = min(len(text), key_id.end + _AWS_NEAR_DISTANCE)
        found = []
        # Matched a little past the window so that a longer string is not cut to 40.
        for match in _AWS_SECRET_NEAR.finditer(text, window_start, window_end + 64):
            if match.start() >= window_end or key_id.start <= match.start() < key_id.end:
                continue
            if placeholder_reason(self._aws_secret, match.group()) is None:
                found.append(Finding(self._aws_secret.kind, match.start(), match.end()))
        return found
