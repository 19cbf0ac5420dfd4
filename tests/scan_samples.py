"""Fake tokens of every format the pattern detector knows, made at test time from a seed.

Nothing token-like is committed: golden notebooks and the benchmark hold slots
(``{{token:openai-api-key}}``) that are filled from here, so no file in the repository
looks like a credential to a push-protection scanner. The tokens are random (high
entropy, mixed case) and therefore match the formats; none was ever issued by anyone.
"""

from __future__ import annotations

import base64
import json
import random
import string
from collections.abc import Callable

ALNUM = string.ascii_letters + string.digits
B64URL = ALNUM + "-_"
B64 = ALNUM + "+/"
UPPER_DIGITS = string.ascii_uppercase + string.digits


def _pick(rng: random.Random, alphabet: str, count: int) -> str:
    # Random draws can, rarely, look like a placeholder (a run of 5 identical or 6
    # consecutive characters, one character class): draw again until they do not.
    while True:
        text = "".join(rng.choice(alphabet) for _ in range(count))
        runs = any(text[i] == text[i + 1] == text[i + 2] == text[i + 3] for i in range(count - 3))
        steps = any(
            all(ord(text[i + j + 1]) - ord(text[i + j]) == 1 for j in range(4))
            for i in range(count - 5)
        )
        mixed = sum(
            (
                any(c.isupper() for c in text),
                any(c.islower() for c in text),
                any(c.isdigit() for c in text),
            )
        )
        lowered = text.lower()
        words = any(w in lowered for w in ("example", "placeholder", "your", "dummy", "redacted"))
        if not runs and not steps and (mixed >= 2 or alphabet.isdigit()) and not words:
            return text


def _jwt(rng: random.Random) -> str:
    def part(data: dict[str, object]) -> str:
        raw = json.dumps(data, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header = part({"alg": "HS256", "typ": "JWT"})
    payload = part(
        {"sub": _pick(rng, ALNUM, 12), "iat": rng.randrange(1_600_000_000, 1_800_000_000)}
    )
    return f"{header}.{payload}.{_pick(rng, B64URL, 43)}"


def _pem(rng: random.Random) -> str:
    body = base64.b64encode(rng.randbytes(600)).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN PRIVATE KEY-----\n" + "\n".join(lines) + "\n-----END PRIVATE KEY-----"


MAKERS: dict[str, Callable[[random.Random], str]] = {
    "openai-api-key": lambda r: "sk-proj-" + _pick(r, B64URL, 120),
    "openai-api-key-legacy": lambda r: "sk-" + _pick(r, ALNUM, 48),
    "anthropic-api-key": lambda r: "sk-ant-api03-" + _pick(r, B64URL, 93) + "AA",
    "github-token": lambda r: (
        r.choice(["ghp_", "gho_", "ghu_", "ghs_", "ghr_"]) + _pick(r, ALNUM, 36)
    ),
    "github-fine-grained-token": lambda r: (
        "github_pat_" + _pick(r, ALNUM, 22) + "_" + _pick(r, ALNUM, 59)
    ),
    "gitlab-token": lambda r: "glpat-" + _pick(r, B64URL, 20),
    "slack-token": lambda r: (
        "xoxb-"
        + _pick(r, string.digits, 12)
        + "-"
        + _pick(r, string.digits, 13)
        + "-"
        + _pick(r, ALNUM, 24)
    ),
    "slack-webhook": lambda r: (
        "https://hooks.slack.com/services/T"
        + _pick(r, UPPER_DIGITS, 10)
        + "/B"
        + _pick(r, UPPER_DIGITS, 10)
        + "/"
        + _pick(r, ALNUM, 24)
    ),
    "aws-access-key-id": lambda r: "AKIA" + _pick(r, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16),
    "aws-secret-access-key": lambda r: _pick(r, B64, 40),
    "google-api-key": lambda r: "AIza" + _pick(r, B64URL, 35),
    "stripe-api-key": lambda r: "sk_live_" + _pick(r, ALNUM, 99),
    "huggingface-token": lambda r: "hf_" + _pick(r, string.ascii_letters, 34),
    "jwt": _jwt,
    "private-key": _pem,
    "url-password": lambda r: _pick(r, ALNUM, 16),
}

# The kind each maker's token is reported as.
KIND = {name: name.removesuffix("-legacy") for name in MAKERS}


def token(kind: str, seed: int | str = 0) -> str:
    """A fake token of ``kind`` (a key of MAKERS), the same for the same seed."""
    return MAKERS[kind](random.Random(f"{kind}/{seed}"))


def in_context(kind: str, value: str) -> str:
    """A line of code that holds ``value`` the way such a token is usually written."""
    if kind == "aws-secret-access-key":
        return f'aws_secret_access_key = "{value}"'
    if kind == "url-password":
        return f'engine = create_engine("postgresql://analyst:{value}@db.internal:5432/sales")'
    if kind == "private-key":
        return f'KEY = """{value}"""'
    return f'TOKEN = "{value}"'
