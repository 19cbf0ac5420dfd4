"""Showing a pairing offer to a person: a QR code as terminal text or inline SVG, or a file.

An offer (docs/bridge-protocol.md §3) holds a one-time secret, so what shows it must
not outlive the pairing attempt: ``jupyter-secure-storage pair`` prints it only to a
terminal, ``%secure_pair`` replaces its display once a device has answered, and an
offer file is written with mode 0600 and removed when the attempt ends. The helpers
both front ends share (the default label, checking a relay URL, the offer file, and
running a pairing step on the bridge loop) live here too.

QR codes use `segno <https://segno.readthedocs.io>`_ at error correction level M, with
no boost, so a code stays as small as it can be (an offer URI is 250-300 characters,
depending on the relay URL and the label: a version 11-13 code, 61-69 modules a side).
The code shows the web companion's link (``Offer.companion_link``: the page beside the
relay, the offer in the URL fragment), some 25-60 characters longer than the URI, so a
phone's camera opens the page; the reference device takes either form.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import html
import os
import socket
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import segno

from ..errors import PairingError, RelayUnreachableError

ERROR_LEVEL = "m"
MAX_LABEL = 64  # docs/bridge-protocol.md §3: the offer's `l`
MAX_RELAY_URL = 256  # §3: the offer's `r`
T = TypeVar("T")


# --- QR codes ----------------------------------------------------------------------------------


def make_qr(uri: str) -> segno.QRCode:
    """The QR code of ``uri``: level M exactly (no boost), never a Micro QR code."""
    return segno.make(uri, error=ERROR_LEVEL, boost_error=False, micro=False)


def terminal_text(uri: str, border: int = 2, invert: bool = False) -> str:
    """The code as text, two modules a character (Unicode half blocks).

    Light modules are drawn and dark ones left as the background, which suits the usual
    dark terminal; ``invert=True`` draws the dark modules instead (light backgrounds).
    """
    rows = [[bool(module) for module in row] for row in make_qr(uri).matrix_iter(border=border)]
    if len(rows) % 2:
        rows.append([False] * len(rows[0]))  # below the quiet zone: light, as the border is
    glyphs = {(True, True): "█", (True, False): "▀", (False, True): "▄", (False, False): " "}
    lines = []
    for top, bottom in zip(rows[::2], rows[1::2], strict=True):
        drawn = [
            (a, b) if invert else (not a, not b) for a, b in zip(top, bottom, strict=True)
        ]  # True: draw this half
        lines.append("".join(glyphs[pair] for pair in drawn))
    return "\n".join(lines) + "\n"


def svg(uri: str, scale: int = 4) -> str:
    """The code as an inline ``<svg>`` element (no XML declaration), dark on white."""
    inline: str = make_qr(uri).svg_inline(
        scale=scale,
        border=4,
        dark="#000",
        light="#fff",
        title="jupyter-secure-storage pairing offer",
    )
    return inline


class OfferDisplay:
    """A pairing offer for a notebook: the QR code, how to use it, the URI to copy.

    Rich front ends show the HTML (the SVG inside it); ``text/plain`` carries the code as
    text for terminal IPython. ``%secure_pair`` replaces this display with an
    :class:`OfferClosed` once the attempt ends, so the offer does not stay in the notebook.
    """

    def __init__(
        self, uri: str, label: str, relay: str, expires: int, link: str | None = None
    ) -> None:
        self.uri = uri
        self.label = label
        self.relay = relay
        self.expires = expires
        # The web companion's link (protocol.Offer.companion_link): what the QR code holds
        # when given, so a phone's camera opens the page; the reference device takes either.
        self.link = link

    @property
    def scanned(self) -> str:
        return self.link or self.uri

    @property
    def problem(self) -> str | None:
        from .protocol import passkey_problem

        return passkey_problem(self.relay)

    def _expiry(self) -> str:
        return time.strftime("%H:%M:%S", time.localtime(self.expires))

    def _repr_svg_(self) -> str:
        return svg(self.scanned)

    def _repr_html_(self) -> str:
        return (
            '<div class="jss-pairing-offer">'
            f"<div>{svg(self.scanned)}</div>"
            "<p>Scan this code with the device that will keep your secrets, or give it "
            "the offer below. This computer shows itself as "
            f"<b>{html.escape(self.label)}</b>; relay <code>{html.escape(self.relay)}</code>. "
            f"The offer works once and expires at {self._expiry()}.</p>"
            + (
                "<p>A phone's camera opens the web companion from this code (over HTTPS; "
                "see docs/web-companion.md).</p>"
                if self.link
                else ""
            )
            + (
                f"<p><b>Note:</b> {html.escape(self.problem)}</p>"
                if self.link and self.problem
                else ""
            )
            + '<p><code style="user-select: all; word-break: break-all">'
            f"{html.escape(self.uri)}</code></p>"
            "<p><small>This display is replaced once a device answers: the offer holds a "
            "one-time secret and must not stay in the notebook.</small></p>"
            "</div>"
        )

    def __repr__(self) -> str:
        return (
            f"Pairing offer for {self.label} via {self.relay} (works once; expires at "
            f"{self._expiry()}). Scan the code, or give the device this offer:\n"
            f"{terminal_text(self.scanned)}{self.uri}"
            + (f"\nNote: {self.problem}" if self.link and self.problem else "")
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


class OfferClosed:
    """What replaces an :class:`OfferDisplay`: a line of text, no offer."""

    def __init__(self, message: str = "pairing offer closed") -> None:
        self.message = message

    def _repr_html_(self) -> str:
        return f"<i>{html.escape(self.message)}</i>"

    def __repr__(self) -> str:
        return self.message

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.message)


# --- what both front ends share -------------------------------------------------------------


def default_label() -> str:
    """``user@hostname``, as a device shows this computer (at most 64 characters)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        user = "jupyter"
    return f"{user}@{socket.gethostname()}"[:MAX_LABEL]


def check_label(label: str) -> str:
    """The label, or ValueError saying why it cannot name this computer."""
    label = label.strip()
    if not label or len(label) > MAX_LABEL or any(ord(c) < 32 or ord(c) == 127 for c in label):
        raise ValueError(f"the label must be 1-{MAX_LABEL} characters without control characters")
    return label


def check_relay_url(url: str) -> str:
    """The relay URL, or ValueError: a ``ws://`` or ``wss://`` URL of at most 256 characters."""
    url = url.strip()
    if not url.startswith(("ws://", "wss://")) or len(url) > MAX_RELAY_URL or " " in url:
        raise ValueError(
            "the relay must be a ws:// or wss:// URL of at most 256 characters, e.g. "
            "ws://127.0.0.1:8765/relay (`jupyter-secure-storage relay` prints its own)"
        )
    return url


def write_offer_file(path: Path, uri: str) -> None:
    """Write ``uri`` to ``path`` atomically with mode 0600 (a reader never sees half of it)."""
    path = path.expanduser()
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )  # mkstemp creates the file with mode 0600
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(uri + "\n")
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def remove_offer_file(path: Path, uri: str) -> None:
    """Remove the offer file if it still holds ``uri`` (never another attempt's offer)."""
    path = path.expanduser()
    with contextlib.suppress(OSError, UnicodeDecodeError):
        if path.read_text(encoding="ascii").strip() == uri:
            path.unlink()


def run_pairing_step(coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
    """Run a pairing coroutine on the bridge loop; cancel it if this thread stops waiting.

    Unlike ``BridgeLoop.run`` this cancels the coroutine on any interruption (Ctrl-C, a
    kernel interrupt), so an abandoned attempt does not keep listening for a device;
    and it turns the relay client's own error into :class:`RelayUnreachableError`.
    """
    from .host import BridgeLoop
    from .relay_client import RelayError

    future = asyncio.run_coroutine_threadsafe(coroutine, BridgeLoop.get().loop)
    try:
        return future.result(timeout + 5)
    except TimeoutError:
        future.cancel()
        raise PairingError(
            f"The pairing step did not finish within {timeout:g} s.", "Pair again."
        ) from None
    except RelayError as error:
        raise RelayUnreachableError(f"The relay failed during pairing ({error}).") from error
    except BaseException:
        future.cancel()
        raise
