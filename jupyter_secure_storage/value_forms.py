"""The forms a value can take in text: the literal and its common encodings.

Shared by the kernel's output redaction and by the keyed fingerprints the storage layer
keeps for the save guard and the scanner, so both look for exactly the same forms: the
value itself, its standard and URL-safe base64 at each of the three byte alignments (so
it is found inside a longer base64 string such as HTTP Basic credentials), its
URL-percent encodings, its JSON-, HTML- and Python-repr-escaped forms, and each long line
of a multi-line value (PEM keys).
"""

from __future__ import annotations

import base64
import html
import json
import re
import urllib.parse

LARGE_VALUE = 16384  # characters; bigger values are matched as pieces of their literal text
LARGE_PIECE = 1024
_LOWER_HEX = re.compile(r"%[0-9A-F]{2}")


def _base64_inside(data: bytes, alphabet: str) -> set[str]:
    """The base64 characters that depend only on ``data``, for each of the 3 alignments.

    A value inside a longer byte string (``b"user:" + token``) is encoded at an offset;
    the characters fully inside the value's bits are the same whatever surrounds it.
    """
    forms = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + data + b"\0\0")
        if alphabet == "urlsafe":
            encoded = encoded.translate(bytes.maketrans(b"+/", b"-_"))
        first = -(-8 * offset // 6)
        last = 8 * (offset + len(data)) // 6
        forms.add(encoded[first:last].decode("ascii"))
    # The whole encoding of the value alone, padding included.
    whole = (
        base64.urlsafe_b64encode(data) if alphabet == "urlsafe" else base64.b64encode(data)
    ).decode("ascii")
    forms.add(whole)
    forms.add(whole.rstrip("="))
    return forms


def encoded_forms(value: str, min_length: int = 6) -> set[str]:
    """Every form of ``value`` the redaction looks for (shorter than ``min_length``: dropped).

    A value over ``LARGE_VALUE`` characters (bigger than any real credential) is looked
    for as consecutive ``LARGE_PIECE``-character pieces of its literal text, so printing
    it hides it piece by piece without an automaton the size of its encodings.
    """
    if len(value) < min_length:
        return set()
    if len(value) > LARGE_VALUE:
        pieces = {value[i : i + LARGE_PIECE] for i in range(0, len(value), LARGE_PIECE)}
        pieces.add(value[-LARGE_PIECE:])
        return {piece for piece in pieces if len(piece) >= min_length}
    data = value.encode("utf-8")
    forms = {value}
    forms |= _base64_inside(data, "standard")
    forms |= _base64_inside(data, "urlsafe")
    for quoted in (
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote(value),
        urllib.parse.quote_plus(value),
    ):
        forms.add(quoted)
        forms.add(_LOWER_HEX.sub(lambda m: m.group(0).lower(), quoted))
    forms.add(json.dumps(value)[1:-1])
    forms.add(json.dumps(value, ensure_ascii=False)[1:-1])
    forms.add(html.escape(value))
    forms.add(html.escape(value, quote=False))
    forms.add(repr(value)[1:-1])
    if "\n" in value:
        forms.update(line.strip() for line in value.splitlines() if len(line.strip()) >= 16)
    return {form for form in forms if len(form) >= min_length}


__all__ = ["LARGE_PIECE", "LARGE_VALUE", "encoded_forms"]
