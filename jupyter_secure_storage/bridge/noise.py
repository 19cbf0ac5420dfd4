"""The Noise Protocol Framework (revision 34) for one suite: ``25519_ChaChaPoly_SHA256``.

The three objects of the specification's section 5 -- :class:`CipherState`,
:class:`SymmetricState` and :class:`HandshakeState` -- built on ``cryptography``'s X25519
and ChaCha20-Poly1305 and on ``hashlib``/``hmac`` for SHA-256 and Noise's own HKDF.
Handshake patterns come from a table of the one-way and fundamental interactive patterns,
written as the specification draws them, plus the ``pskN`` modifiers of section 9; the
``fallback`` modifier and the deferred patterns are not supported. ``tests/test_noise.py``
runs every public cacophony test vector for this suite against it, byte for byte.

Choices the specification leaves open, made here on purpose:

* A DH whose output is all zeros (a low-order or otherwise invalid public key) raises
  :class:`NoiseInvalidPublicKeyError` instead of going on with a zero secret (section 12.1
  allows both).
* :meth:`HandshakeState.read_message` is all-or-nothing: a message that is too short,
  fails to decrypt or carries an invalid key leaves the handshake exactly as it was, so a
  forged message injected by a relay is dropped and the genuine one can still be read. A
  failure while *writing* ends the handshake, as the specification says.
* A transport :class:`CipherState` refuses to decrypt a message longer than 65535 bytes
  or to encrypt a plaintext that would make one.

No error message ever contains key, PSK or payload bytes.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal, overload

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from ..errors import SecureStorageError

DHLEN = 32
HASHLEN = 32
KEYLEN = 32
PSKLEN = 32
TAG_LEN = 16
MAX_MESSAGE_LEN = 65535
MAX_NONCE = 2**64 - 1  # reserved: never used to encrypt a message (section 5.1)
SUITE = "25519_ChaChaPoly_SHA256"
MAX_PROTOCOL_NAME_LEN = 255

PrivateKeyInput = X25519PrivateKey | bytes


# --- errors ----------------------------------------------------------------------------


class NoiseError(SecureStorageError):
    """Base of every error raised by the Noise layer."""


class NoiseProtocolNameError(NoiseError, ValueError):
    """A protocol name that is malformed or names something this module does not implement."""

    default_remedy = (
        f"Use Noise_<pattern>_{SUITE} with a one-way or fundamental interactive pattern "
        "(N, K, X, NN, NK, NX, KN, KK, KX, XN, XK, XX, IN, IK, IX) and optional pskN "
        "modifiers, e.g. Noise_IKpsk1_" + SUITE + "."
    )


class NoiseKeyError(NoiseError, ValueError):
    """A key or PSK the pattern needs is missing, has the wrong size, or is not used by it."""


class NoiseHandshakeError(NoiseError):
    """A handshake used out of order: the wrong turn, after it ended or failed, or too early."""


class NoiseMessageLengthError(NoiseError, ValueError):
    """A message shorter than its pattern requires, or longer than 65535 bytes."""


class NoiseDecryptError(NoiseError):
    """A ciphertext failed authentication."""

    default_remedy = (
        "Drop the message: it was altered, forged or replayed, or the peers do not share "
        "the same keys, PSK and prologue."
    )


class NoiseInvalidPublicKeyError(NoiseError):
    """A peer public key whose DH output is all zeros (a low-order point)."""

    default_remedy = "Drop the message: an honest peer never sends such a key."


class NoiseNonceError(NoiseError):
    """A nonce that cannot be used: 2^64-1 is reserved, so the CipherState is exhausted."""

    default_remedy = "Run a new handshake; this CipherState must not be used again."


# --- crypto functions (section 4, section 12) ------------------------------------------


def generate_keypair() -> X25519PrivateKey:
    """``GENERATE_KEYPAIR()``: a fresh X25519 key pair."""
    return X25519PrivateKey.generate()


def public_key_bytes(private_key: X25519PrivateKey) -> bytes:
    """The 32-byte public key of a key pair, as Noise puts it on the wire."""
    return private_key.public_key().public_bytes_raw()


def dh(private_key: X25519PrivateKey, public_key: bytes) -> bytes:
    """``DH()``: X25519, refusing public keys that give an all-zero shared secret."""
    _require_length(public_key, DHLEN, "a DH public key")
    try:
        shared = private_key.exchange(X25519PublicKey.from_public_bytes(public_key))
    except ValueError:
        # cryptography refuses all-zero outputs itself; the check below keeps that explicit.
        shared = bytes(DHLEN)
    if hmac.compare_digest(shared, bytes(DHLEN)):
        raise NoiseInvalidPublicKeyError("The peer's public key is a low-order point.")
    return shared


def _hmac_sha256(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


@overload
def hkdf(
    chaining_key: bytes, input_key_material: bytes, num_outputs: Literal[2]
) -> tuple[bytes, bytes]: ...
@overload
def hkdf(
    chaining_key: bytes, input_key_material: bytes, num_outputs: Literal[3]
) -> tuple[bytes, bytes, bytes]: ...
def hkdf(
    chaining_key: bytes, input_key_material: bytes, num_outputs: Literal[2, 3]
) -> tuple[bytes, bytes] | tuple[bytes, bytes, bytes]:
    """``HKDF()`` of section 4.3 (RFC 5869 with ``chaining_key`` as salt and empty info)."""
    temp_key = _hmac_sha256(chaining_key, input_key_material)
    output1 = _hmac_sha256(temp_key, b"\x01")
    output2 = _hmac_sha256(temp_key, output1 + b"\x02")
    if num_outputs == 2:
        return output1, output2
    return output1, output2, _hmac_sha256(temp_key, output2 + b"\x03")


def _nonce(n: int) -> bytes:
    # ChaChaPoly (section 12.3): 32 bits of zeros, then n as 64-bit little-endian.
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "little")


def _require_length(value: object, size: int, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        raise NoiseKeyError(f"{what} must be {size} bytes.")


# --- CipherState (section 5.1) ---------------------------------------------------------


class CipherState:
    """A cipher key ``k`` (possibly empty) and a 64-bit nonce ``n``."""

    __slots__ = ("_aead", "_n")

    def __init__(self, key: bytes | None = None) -> None:
        self._aead: ChaCha20Poly1305 | None = None
        self._n = 0
        self.initialize_key(key)

    def initialize_key(self, key: bytes | None) -> None:
        """``InitializeKey(key)``: set ``k`` (``None`` means empty) and ``n = 0``."""
        if key is not None:
            _require_length(key, KEYLEN, "a cipher key")
        self._aead = None if key is None else ChaCha20Poly1305(key)
        self._n = 0

    def has_key(self) -> bool:
        """``HasKey()``."""
        return self._aead is not None

    @property
    def nonce(self) -> int:
        """The nonce the next encryption or decryption will use."""
        return self._n

    def set_nonce(self, nonce: int) -> None:
        """``SetNonce(nonce)``, for transports that carry ``n`` with each message."""
        if isinstance(nonce, bool) or not isinstance(nonce, int) or not 0 <= nonce <= MAX_NONCE:
            raise NoiseNonceError("A Noise nonce is an integer from 0 to 2^64-1.", remedy="")
        self._n = nonce

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        """``EncryptWithAd()``: encrypt under ``n`` and advance it; plaintext when no key."""
        if self._aead is None:
            return plaintext
        self._check_nonce()
        if len(plaintext) > MAX_MESSAGE_LEN - TAG_LEN:
            raise NoiseMessageLengthError(
                f"A plaintext of {len(plaintext)} bytes does not fit in a Noise message.",
                remedy=f"Send at most {MAX_MESSAGE_LEN - TAG_LEN} bytes per message.",
            )
        ciphertext = self._aead.encrypt(_nonce(self._n), plaintext, ad)
        self._n += 1
        return ciphertext

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        """``DecryptWithAd()``: on failure ``n`` is not advanced and nothing changes."""
        if self._aead is None:
            return ciphertext
        self._check_nonce()
        if not TAG_LEN <= len(ciphertext) <= MAX_MESSAGE_LEN:
            raise NoiseMessageLengthError(
                f"A ciphertext of {len(ciphertext)} bytes cannot be a Noise message "
                f"({TAG_LEN} to {MAX_MESSAGE_LEN} bytes).",
                remedy="Drop the message.",
            )
        try:
            plaintext = self._aead.decrypt(_nonce(self._n), ciphertext, ad)
        except InvalidTag:
            raise NoiseDecryptError("A Noise message failed authentication.") from None
        self._n += 1
        return plaintext

    def rekey(self) -> None:
        """``Rekey()``: ``k = REKEY(k)``, the specification's default; ``n`` is kept."""
        if self._aead is None:
            raise NoiseKeyError("Rekey needs a CipherState that has a key.")
        self._aead = ChaCha20Poly1305(
            self._aead.encrypt(_nonce(MAX_NONCE), bytes(KEYLEN), b"")[:KEYLEN]
        )

    def copy(self) -> CipherState:
        """An independent CipherState with the same key and nonce."""
        twin = CipherState()
        twin._aead = self._aead  # an AEAD object never changes its key, so sharing is safe
        twin._n = self._n
        return twin

    def _check_nonce(self) -> None:
        if self._n >= MAX_NONCE:
            raise NoiseNonceError("This CipherState has used every nonce.")


class _OneWayCipherState(CipherState):
    """The unused direction of a one-way pattern (section 7.4): any use is an error."""

    __slots__ = ()

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        raise NoiseHandshakeError(
            "A one-way pattern carries messages from the initiator to the responder only."
        )

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        return self.encrypt_with_ad(ad, ciphertext)

    def rekey(self) -> None:
        self.encrypt_with_ad(b"", b"")


# --- SymmetricState (section 5.2) ------------------------------------------------------


class SymmetricState:
    """The chaining key ``ck``, the handshake hash ``h`` and the handshake's CipherState.

    Constructing one is ``InitializeSymmetric(protocol_name)``.
    """

    __slots__ = ("_cipher", "_ck", "_h")

    def __init__(self, protocol_name: bytes) -> None:
        if len(protocol_name) <= HASHLEN:
            h = protocol_name.ljust(HASHLEN, b"\x00")
        else:
            h = hashlib.sha256(protocol_name).digest()
        self._h = h
        self._ck = h
        self._cipher = CipherState()

    def copy(self) -> SymmetricState:
        """An independent SymmetricState in the same state."""
        twin = object.__new__(SymmetricState)
        twin._h = self._h
        twin._ck = self._ck
        twin._cipher = self._cipher.copy()
        return twin

    def has_key(self) -> bool:
        """Whether the handshake CipherState has a key (later payloads are encrypted)."""
        return self._cipher.has_key()

    def mix_key(self, input_key_material: bytes) -> None:
        """``MixKey()``."""
        self._ck, temp_k = hkdf(self._ck, input_key_material, 2)
        self._cipher.initialize_key(temp_k)

    def mix_hash(self, data: bytes) -> None:
        """``MixHash()``: ``h = HASH(h || data)``."""
        self._h = hashlib.sha256(self._h + data).digest()

    def mix_key_and_hash(self, input_key_material: bytes) -> None:
        """``MixKeyAndHash()``, used for PSKs."""
        self._ck, temp_h, temp_k = hkdf(self._ck, input_key_material, 3)
        self.mix_hash(temp_h)
        self._cipher.initialize_key(temp_k)

    def get_handshake_hash(self) -> bytes:
        """``GetHandshakeHash()``: ``h``."""
        return self._h

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        """``EncryptAndHash()``."""
        ciphertext = self._cipher.encrypt_with_ad(self._h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        """``DecryptAndHash()``."""
        plaintext = self._cipher.decrypt_with_ad(self._h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        """``Split()``: (initiator-to-responder, responder-to-initiator) CipherStates."""
        temp_k1, temp_k2 = hkdf(self._ck, b"", 2)
        return CipherState(temp_k1), CipherState(temp_k2)


# --- handshake patterns (sections 7 and 9) ---------------------------------------------

# Copied from sections 7.4 and 7.5 as drawn there: pre-messages above "...", then the
# messages, which alternate starting with the initiator ("->").
_BASE_PATTERNS = {
    "N": """
        <- s
        ...
        -> e, es
    """,
    "K": """
        -> s
        <- s
        ...
        -> e, es, ss
    """,
    "X": """
        <- s
        ...
        -> e, es, s, ss
    """,
    "NN": """
        -> e
        <- e, ee
    """,
    "NK": """
        <- s
        ...
        -> e, es
        <- e, ee
    """,
    "NX": """
        -> e
        <- e, ee, s, es
    """,
    "KN": """
        -> s
        ...
        -> e
        <- e, ee, se
    """,
    "KK": """
        -> s
        <- s
        ...
        -> e, es, ss
        <- e, ee, se
    """,
    "KX": """
        -> s
        ...
        -> e
        <- e, ee, se, s, es
    """,
    "XN": """
        -> e
        <- e, ee
        -> s, se
    """,
    "XK": """
        <- s
        ...
        -> e, es
        <- e, ee
        -> s, se
    """,
    "XX": """
        -> e
        <- e, ee, s, es
        -> s, se
    """,
    "IN": """
        -> e, s
        <- e, ee, se
    """,
    "IK": """
        <- s
        ...
        -> e, es, s, ss
        <- e, ee, se
    """,
    "IX": """
        -> e, s
        <- e, ee, se, s, es
    """,
}
_DH_TOKENS = frozenset({"ee", "es", "se", "ss"})
_BASE_NAME_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")  # section 8.1
_TOKENS = _DH_TOKENS | {"e", "s", "psk"}


@dataclass(frozen=True)
class HandshakePattern:
    """A handshake pattern with its modifiers applied: what each message carries."""

    name: str  # the pattern name section, e.g. "IKpsk1"
    initiator_premessage: tuple[str, ...]
    responder_premessage: tuple[str, ...]
    messages: tuple[tuple[str, ...], ...]  # messages[0] is the initiator's

    @property
    def one_way(self) -> bool:
        """A single message, initiator to responder (N, K, X and their modifiers)."""
        return len(self.messages) == 1

    @property
    def psk_count(self) -> int:
        return sum(tokens.count("psk") for tokens in self.messages)


def _parse_drawing(name: str, drawing: str) -> HandshakePattern:
    lines = [line.strip() for line in drawing.strip().splitlines()]
    pre_lines, message_lines = ([], lines)
    if "..." in lines:
        cut = lines.index("...")
        pre_lines, message_lines = lines[:cut], lines[cut + 1 :]
    premessages: dict[str, tuple[str, ...]] = {"->": (), "<-": ()}
    for line in pre_lines:
        arrow, _, rest = line.partition(" ")
        premessages[arrow] = tuple(tok.strip() for tok in rest.split(","))
    messages = []
    for index, line in enumerate(message_lines):
        arrow, _, rest = line.partition(" ")
        if arrow != ("->" if index % 2 == 0 else "<-"):
            raise AssertionError(f"pattern table: {name} does not alternate")
        messages.append(tuple(tok.strip() for tok in rest.split(",")))
    return HandshakePattern(name, premessages["->"], premessages["<-"], tuple(messages))


def _check_validity(pattern: HandshakePattern) -> None:
    """Section 7.3's key rules and section 9.3's PSK rule, for patterns built here."""
    sent = {True: set(pattern.initiator_premessage), False: set(pattern.responder_premessage)}
    if not sent[True] | sent[False] <= {"s"}:
        raise NoiseProtocolNameError(f"{pattern.name}: only 's' may appear in a pre-message.")
    psk_seen = False
    for index, tokens in enumerate(pattern.messages):
        sender = index % 2 == 0
        for tok in tokens:
            if tok not in _TOKENS:
                raise NoiseProtocolNameError(f"{pattern.name}: unknown token {tok!r}.")
            if tok in ("e", "s"):
                if tok in sent[sender]:
                    raise NoiseProtocolNameError(f"{pattern.name}: '{tok}' sent twice.")
                if tok == "s" and psk_seen and "e" not in sent[sender]:
                    raise NoiseProtocolNameError(f"{pattern.name} breaks the PSK rule (9.3).")
                sent[sender].add(tok)
            elif tok == "psk":
                psk_seen = True
            elif tok[0] not in sent[True] or tok[1] not in sent[False]:
                raise NoiseProtocolNameError(f"{pattern.name}: '{tok}' before its keys.")
        if psk_seen and "e" not in sent[sender]:
            raise NoiseProtocolNameError(f"{pattern.name} breaks the PSK rule (9.3).")


@lru_cache(maxsize=64)
def _pattern_from_section(section: str) -> HandshakePattern:
    end = 0
    while end < len(section) and (section[end] in _BASE_NAME_CHARACTERS):
        end += 1
    base, modifier_text = section[:end], section[end:]
    if base not in _BASE_PATTERNS:
        raise NoiseProtocolNameError(f"Handshake pattern {base or section!r} is not supported.")
    modifiers = modifier_text.split("+") if modifier_text else []
    if modifiers != sorted(set(modifiers)):
        raise NoiseProtocolNameError(
            f"Modifiers in {section!r} must be distinct and sorted (section 8.1)."
        )
    drawn = _parse_drawing(base, _BASE_PATTERNS[base])
    messages = [list(tokens) for tokens in drawn.messages]
    for modifier in modifiers:
        number = modifier[3:]
        if not (
            modifier.startswith("psk")
            and number.isascii()
            and number.isdigit()
            and str(int(number)) == number
        ):
            raise NoiseProtocolNameError(
                f"Pattern modifier {modifier!r} is not supported (only psk0, psk1, ...)."
            )
        position = int(number)
        if position == 0:
            messages[0].insert(0, "psk")  # psk0: start of the first message
        elif position <= len(messages):
            messages[position - 1].append("psk")  # pskN: end of the N-th message
        else:
            raise NoiseProtocolNameError(
                f"{modifier!r} needs a message {position} but {base} has {len(messages)}."
            )
    pattern = HandshakePattern(
        section,
        drawn.initiator_premessage,
        drawn.responder_premessage,
        tuple(tuple(tokens) for tokens in messages),
    )
    _check_validity(pattern)
    return pattern


def parse_protocol_name(protocol_name: str) -> HandshakePattern:
    """The handshake pattern of ``Noise_<pattern>_25519_ChaChaPoly_SHA256``."""
    if not isinstance(protocol_name, str) or not protocol_name.isascii():
        raise NoiseProtocolNameError("A Noise protocol name is an ASCII string.")
    if len(protocol_name) > MAX_PROTOCOL_NAME_LEN:
        raise NoiseProtocolNameError("A Noise protocol name is at most 255 bytes.")
    prefix, suffix = "Noise_", "_" + SUITE
    if not protocol_name.startswith(prefix) or protocol_name.count("_") != 4:
        raise NoiseProtocolNameError(f"{protocol_name!r} is not a Noise protocol name.")
    if not protocol_name.endswith(suffix):
        raise NoiseProtocolNameError(
            f"{protocol_name!r} uses another suite; only {SUITE} is implemented."
        )
    return _pattern_from_section(protocol_name[len(prefix) : -len(suffix)])


# --- HandshakeState (section 5.3) ------------------------------------------------------


@dataclass(frozen=True)
class NoiseTransport:
    """The local side's transport CipherStates after ``Split()``, and what the handshake proved.

    ``send`` encrypts what this side sends, ``receive`` decrypts what the peer sent (the
    initiator sends with Split's first CipherState, the responder with its second), so a
    message reflected back to its sender never decrypts.
    """

    send: CipherState = field(repr=False)
    receive: CipherState = field(repr=False)
    handshake_hash: bytes = field(repr=False)
    remote_static: bytes | None

    def encrypt(self, plaintext: bytes) -> bytes:
        """A transport message: ``send.encrypt_with_ad(b"", plaintext)``."""
        return self.send.encrypt_with_ad(b"", plaintext)

    def decrypt(self, ciphertext: bytes) -> bytes:
        """The payload of the peer's transport message; nothing changes if it fails."""
        return self.receive.decrypt_with_ad(b"", ciphertext)


def _private_key(value: PrivateKeyInput | None, what: str) -> X25519PrivateKey | None:
    if value is None or isinstance(value, X25519PrivateKey):
        return value
    _require_length(value, DHLEN, what)
    return X25519PrivateKey.from_private_bytes(value)


def _public_key(value: bytes | None, what: str) -> bytes | None:
    if value is not None:
        _require_length(value, DHLEN, what)
    return value


class HandshakeState:
    """One side of a Noise handshake; create it with :meth:`initialize`.

    ``write_message(payload)`` and ``read_message(message)`` take turns as the pattern
    says; once :attr:`is_complete`, :meth:`transport` gives the transport CipherStates
    and :attr:`handshake_hash` the channel binding value ``h``.
    """

    def __init__(
        self,
        protocol_name: str,
        *,
        initiator: bool,
        prologue: bytes = b"",
        s: PrivateKeyInput | None = None,
        e: PrivateKeyInput | None = None,
        rs: bytes | None = None,
        re: bytes | None = None,
        psks: Sequence[bytes] = (),
    ) -> None:
        """``Initialize()``; see :meth:`initialize`."""
        pattern = parse_protocol_name(protocol_name)
        self._protocol_name = protocol_name
        self._pattern = pattern
        self._initiator = bool(initiator)
        self._s = _private_key(s, "The static private key (s)")
        self._e = _private_key(e, "The ephemeral private key (e)")
        self._rs = _public_key(rs, "The peer's static public key (rs)")
        self._re = _public_key(re, "The peer's ephemeral public key (re)")
        for psk in psks:
            _require_length(psk, PSKLEN, "A PSK")
        self._psks = tuple(psks)
        self._check_keys()

        symmetric = SymmetricState(protocol_name.encode("ascii"))
        symmetric.mix_hash(prologue)
        for premessage, theirs in (
            (pattern.initiator_premessage, not self._initiator),
            (pattern.responder_premessage, self._initiator),
        ):
            for _token in premessage:  # only "s" (checked when the pattern was built)
                symmetric.mix_hash(
                    self._remote_static_public() if theirs else self._static_public()
                )
        self._symmetric = symmetric
        self._index = 0  # the next message of the pattern
        self._psks_used = 0
        self._failed = False
        self._transport: NoiseTransport | None = None

    @classmethod
    def initialize(
        cls,
        protocol_name: str,
        *,
        initiator: bool,
        prologue: bytes = b"",
        s: PrivateKeyInput | None = None,
        e: PrivateKeyInput | None = None,
        rs: bytes | None = None,
        re: bytes | None = None,
        psks: Sequence[bytes] = (),
    ) -> HandshakeState:
        """``Initialize(handshake_pattern, initiator, prologue, s, e, rs, re)`` plus PSKs.

        ``protocol_name`` is the full name, e.g. ``Noise_IKpsk1_25519_ChaChaPoly_SHA256``.
        ``s`` and ``e`` are key pairs (:class:`X25519PrivateKey` or 32 raw private bytes);
        ``e`` is only given by tests that need a fixed ephemeral, otherwise one is generated
        when the pattern sends it. ``rs`` and ``re`` are 32-byte public keys, given only
        when the pattern has them in a pre-message. ``psks`` are 32-byte secrets, one per
        ``psk`` token, in the order the tokens occur. Keys a pattern needs but lacks, or
        has no use for, raise :class:`NoiseKeyError`.
        """
        return cls(
            protocol_name,
            initiator=initiator,
            prologue=prologue,
            s=s,
            e=e,
            rs=rs,
            re=re,
            psks=psks,
        )

    # -- what the handshake knows -------------------------------------------------------

    @property
    def protocol_name(self) -> str:
        return self._protocol_name

    @property
    def pattern(self) -> HandshakePattern:
        return self._pattern

    @property
    def initiator(self) -> bool:
        return self._initiator

    @property
    def is_complete(self) -> bool:
        """Every handshake message has been written or read; :meth:`transport` is ready."""
        return self._transport is not None

    @property
    def remote_static(self) -> bytes | None:
        """The peer's static public key (``rs``), once known: given, or read in a message."""
        return self._rs

    @property
    def handshake_hash(self) -> bytes:
        """``GetHandshakeHash()``: ``h`` after the last message, for channel binding."""
        return self.transport().handshake_hash

    @property
    def max_payload_length(self) -> int:
        """The largest payload the next handshake message can carry within 65535 bytes."""
        tokens = self._next_message(writing=self._my_turn())
        return MAX_MESSAGE_LEN - self._message_length(tokens, 0)

    def transport(self) -> NoiseTransport:
        """This side's (send, receive) CipherStates from ``Split()``, once complete."""
        if self._transport is None:
            raise NoiseHandshakeError(
                "The handshake is not complete: there are no transport keys yet."
            )
        return self._transport

    # -- messages -----------------------------------------------------------------------

    def write_message(self, payload: bytes = b"") -> bytes:
        """``WriteMessage()``: the next handshake message, carrying ``payload``.

        A payload too large for a 65535-byte message raises
        :class:`NoiseMessageLengthError` and changes nothing; any other failure (an
        invalid peer key) ends the handshake.
        """
        tokens = self._next_message(writing=True)
        length = self._message_length(tokens, len(payload))
        if length > MAX_MESSAGE_LEN:
            raise NoiseMessageLengthError(
                f"This handshake message would be {length} bytes; Noise allows {MAX_MESSAGE_LEN}.",
                remedy=f"Send a payload of at most {self.max_payload_length} bytes.",
            )
        symmetric = self._symmetric
        out = bytearray()
        try:
            for tok in tokens:
                if tok == "e":
                    if self._e is None:
                        self._e = generate_keypair()
                    public = public_key_bytes(self._e)
                    out += public
                    symmetric.mix_hash(public)
                    if self._pattern.psk_count:
                        symmetric.mix_key(public)
                elif tok == "s":
                    out += symmetric.encrypt_and_hash(self._static_public())
                elif tok == "psk":
                    symmetric.mix_key_and_hash(self._psks[self._psks_used])
                    self._psks_used += 1
                else:
                    symmetric.mix_key(self._dh(tok, self._re, self._rs))
            out += symmetric.encrypt_and_hash(payload)
        except Exception:
            self._failed = True
            raise
        self._advance(symmetric)
        return bytes(out)

    def read_message(self, message: bytes) -> bytes:
        """``ReadMessage()``: the payload of the peer's next handshake message.

        All or nothing: if the message is the wrong length, fails to decrypt or carries an
        invalid key, the error is raised and this HandshakeState is unchanged, so the
        message can be dropped and the genuine one read.
        """
        tokens = self._next_message(writing=False)
        minimum = self._message_length(tokens, 0)
        if not minimum <= len(message) <= MAX_MESSAGE_LEN:
            raise NoiseMessageLengthError(
                f"A handshake message of {len(message)} bytes; this one must be "
                f"{minimum} to {MAX_MESSAGE_LEN} bytes.",
                remedy="Drop the message.",
            )
        symmetric = self._symmetric.copy()
        re, rs, psks_used = self._re, self._rs, self._psks_used
        offset = 0
        for tok in tokens:
            if tok == "e":
                re = bytes(message[offset : offset + DHLEN])
                offset += DHLEN
                symmetric.mix_hash(re)
                if self._pattern.psk_count:
                    symmetric.mix_key(re)
            elif tok == "s":
                size = DHLEN + (TAG_LEN if symmetric.has_key() else 0)
                rs = symmetric.decrypt_and_hash(bytes(message[offset : offset + size]))
                offset += size
            elif tok == "psk":
                symmetric.mix_key_and_hash(self._psks[psks_used])
                psks_used += 1
            else:
                symmetric.mix_key(self._dh(tok, re, rs))
        payload = symmetric.decrypt_and_hash(bytes(message[offset:]))
        self._re, self._rs, self._psks_used = re, rs, psks_used
        self._advance(symmetric)
        return payload

    # -- internals ----------------------------------------------------------------------

    def _my_turn(self) -> bool:
        return (self._index % 2 == 0) == self._initiator

    def _next_message(self, *, writing: bool) -> tuple[str, ...]:
        if self._failed:
            raise NoiseHandshakeError(
                "This handshake failed earlier and cannot continue.",
                remedy="Start a new handshake.",
            )
        if self._transport is not None:
            raise NoiseHandshakeError(
                "The handshake is complete.",
                remedy="Use transport() to encrypt and decrypt further messages.",
            )
        if writing != self._my_turn():
            peer = "this side" if self._my_turn() else "the peer"
            raise NoiseHandshakeError(
                f"Out of turn: message {self._index + 1} of {self._pattern.name} "
                f"is written by {peer}."
            )
        return self._pattern.messages[self._index]

    def _message_length(self, tokens: tuple[str, ...], payload_length: int) -> int:
        has_key = self._symmetric.has_key()
        length = 0
        for tok in tokens:
            if tok == "e":
                length += DHLEN
                has_key = has_key or self._pattern.psk_count > 0
            elif tok == "s":
                length += DHLEN + (TAG_LEN if has_key else 0)
            else:
                has_key = True
        return length + payload_length + (TAG_LEN if has_key else 0)

    def _dh(self, tok: str, re: bytes | None, rs: bytes | None) -> bytes:
        # A DH token names the initiator's key, then the responder's.
        mine, theirs = (tok[0], tok[1]) if self._initiator else (tok[1], tok[0])
        private = self._e if mine == "e" else self._s
        public = re if theirs == "e" else rs
        if private is None or public is None:  # the pattern checks make this unreachable
            raise NoiseHandshakeError(f"'{tok}' came before its keys.")
        return dh(private, public)

    def _static_public(self) -> bytes:
        if self._s is None:  # _check_keys makes this unreachable
            raise NoiseKeyError("This side has no static key pair (s).")
        return public_key_bytes(self._s)

    def _remote_static_public(self) -> bytes:
        if self._rs is None:  # _check_keys makes this unreachable
            raise NoiseKeyError("The peer's static public key (rs) is missing.")
        return self._rs

    def _advance(self, symmetric: SymmetricState) -> None:
        self._symmetric = symmetric
        self._index += 1
        if self._index < len(self._pattern.messages):
            return
        first, second = symmetric.split()
        if self._pattern.one_way:
            unused = _OneWayCipherState()
            send, receive = (first, unused) if self._initiator else (unused, first)
        else:
            send, receive = (first, second) if self._initiator else (second, first)
        self._transport = NoiseTransport(send, receive, symmetric.get_handshake_hash(), self._rs)
        # Section 5: only h survives the handshake. Forgetting e is what gives forward secrecy.
        self._e = None
        self._psks = ()

    def _check_keys(self) -> None:
        pattern = self._pattern
        me, peer = (0, 1) if self._initiator else (1, 0)
        role = "initiator" if self._initiator else "responder"
        name = pattern.name
        premessages = (pattern.initiator_premessage, pattern.responder_premessage)
        sends: tuple[set[str], set[str]] = (set(), set())
        dh_keys: tuple[set[str], set[str]] = (set(), set())
        for index, tokens in enumerate(pattern.messages):
            for tok in tokens:
                if tok in ("e", "s"):
                    sends[index % 2].add(tok)
                elif tok in _DH_TOKENS:
                    dh_keys[0].add(tok[0])
                    dh_keys[1].add(tok[1])

        if "s" in premessages[me] or "s" in sends[me] or "s" in dh_keys[me]:
            if self._s is None:
                raise NoiseKeyError(f"{name} needs the {role}'s static key pair (s).")
        elif self._s is not None:
            raise NoiseKeyError(f"{name} has no use for a static key pair on the {role} side.")
        if "s" in premessages[peer]:
            if self._rs is None:
                raise NoiseKeyError(
                    f"{name} needs the peer's static public key (rs) in advance, as {role}."
                )
        elif self._rs is not None:
            raise NoiseKeyError(
                f"{name} gives the {role} no peer static key in advance (rs): the peer "
                "sends it in the handshake, or has none."
            )
        if self._e is not None and "e" not in sends[me]:
            raise NoiseKeyError(f"The {role} of {name} sends no ephemeral key (e).")
        if self._re is not None:
            raise NoiseKeyError(
                f"{name} takes no peer ephemeral key in advance (re); it arrives in a message."
            )
        if len(self._psks) != pattern.psk_count:
            raise NoiseKeyError(
                f"{name} needs {pattern.psk_count} PSK(s); {len(self._psks)} given."
            )
