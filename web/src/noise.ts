// The Noise Protocol Framework (revision 34) for the suite 25519_ChaChaPoly_SHA256:
// CipherState, SymmetricState and HandshakeState (section 5), the one-way and fundamental
// interactive patterns (section 7) and the pskN modifiers (section 9). Primitives come from
// the audited @noble packages. Checked against every cacophony vector of the suite
// (web/test/noise.test.ts), as the Python core is.
//
// Choices made on purpose, the same as jupyter_secure_storage/bridge/noise.py:
// - a DH whose output is all zeros (a low-order public key) is an error;
// - readMessage is all-or-nothing: a message that fails leaves the handshake as it was,
//   so a forged message injected by the relay is dropped and the real one still reads;
// - no error message carries key or payload bytes.

import { chacha20poly1305 } from "@noble/ciphers/chacha.js";
import { x25519 } from "@noble/curves/ed25519.js";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";

export const DHLEN = 32;
export const HASHLEN = 32;
export const TAGLEN = 16;
export const MAX_MESSAGE = 65535;
const SUITE = "_25519_ChaChaPoly_SHA256";

export class NoiseError extends Error {
  override name = "NoiseError";
}

export interface KeyPair {
  secretKey: Uint8Array;
  publicKey: Uint8Array;
}

export function keyPairFromSecret(secretKey: Uint8Array): KeyPair {
  return { secretKey: secretKey.slice(), publicKey: x25519.getPublicKey(secretKey) };
}

export function generateKeyPair(): KeyPair {
  return keyPairFromSecret(crypto.getRandomValues(new Uint8Array(32)));
}

export function dh(pair: KeyPair, publicKey: Uint8Array): Uint8Array {
  if (publicKey.length !== DHLEN) throw new NoiseError("a DH public key must be 32 bytes");
  let shared: Uint8Array;
  try {
    shared = x25519.getSharedSecret(pair.secretKey, publicKey);
  } catch {
    throw new NoiseError("invalid public key (low order)");
  }
  if (shared.every((b) => b === 0)) throw new NoiseError("invalid public key (low order)");
  return shared;
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** Noise's HKDF (section 4.3): two or three 32-byte outputs. */
export function noiseHkdf(chainingKey: Uint8Array, ikm: Uint8Array, outputs: 2 | 3): Uint8Array[] {
  const tempKey = hmac(sha256, chainingKey, ikm);
  const out1 = hmac(sha256, tempKey, Uint8Array.of(1));
  const out2 = hmac(sha256, tempKey, concat(out1, Uint8Array.of(2)));
  if (outputs === 2) return [out1, out2];
  return [out1, out2, hmac(sha256, tempKey, concat(out2, Uint8Array.of(3)))];
}

function nonceBytes(n: bigint): Uint8Array {
  const nonce = new Uint8Array(12);
  new DataView(nonce.buffer).setBigUint64(4, n, true);
  return nonce;
}

const MAX_NONCE = 2n ** 64n - 1n;

export class CipherState {
  private k: Uint8Array | null;
  private n = 0n;

  constructor(key: Uint8Array | null = null) {
    this.k = key;
  }

  hasKey(): boolean {
    return this.k !== null;
  }

  /** @internal snapshot for all-or-nothing reads */
  save(): [Uint8Array | null, bigint] {
    return [this.k, this.n];
  }

  restore([k, n]: [Uint8Array | null, bigint]): void {
    this.k = k;
    this.n = n;
  }

  encrypt(ad: Uint8Array, plaintext: Uint8Array): Uint8Array {
    if (this.k === null) return plaintext.slice();
    if (this.n >= MAX_NONCE) throw new NoiseError("nonce exhausted: run a new handshake");
    if (plaintext.length + TAGLEN > MAX_MESSAGE) throw new NoiseError("message too long");
    const out = chacha20poly1305(this.k, nonceBytes(this.n), ad).encrypt(plaintext);
    this.n += 1n;
    return out;
  }

  decrypt(ad: Uint8Array, ciphertext: Uint8Array): Uint8Array {
    if (this.k === null) return ciphertext.slice();
    if (this.n >= MAX_NONCE) throw new NoiseError("nonce exhausted: run a new handshake");
    if (ciphertext.length > MAX_MESSAGE) throw new NoiseError("message too long");
    if (ciphertext.length < TAGLEN) throw new NoiseError("message too short");
    let out: Uint8Array;
    try {
      out = chacha20poly1305(this.k, nonceBytes(this.n), ad).decrypt(ciphertext);
    } catch {
      throw new NoiseError("decryption failed (altered, forged or replayed message)");
    }
    this.n += 1n;
    return out;
  }
}

class SymmetricState {
  ck: Uint8Array;
  h: Uint8Array;
  cipher = new CipherState();

  constructor(protocolName: string) {
    const name = new TextEncoder().encode(protocolName);
    if (name.length <= HASHLEN) {
      this.h = new Uint8Array(HASHLEN);
      this.h.set(name);
    } else {
      this.h = sha256(name);
    }
    this.ck = this.h;
  }

  mixKey(ikm: Uint8Array): void {
    const [ck, k] = noiseHkdf(this.ck, ikm, 2) as [Uint8Array, Uint8Array];
    this.ck = ck;
    this.cipher = new CipherState(k);
  }

  mixHash(data: Uint8Array): void {
    this.h = sha256(concat(this.h, data));
  }

  mixKeyAndHash(ikm: Uint8Array): void {
    const [ck, th, k] = noiseHkdf(this.ck, ikm, 3) as [Uint8Array, Uint8Array, Uint8Array];
    this.ck = ck;
    this.mixHash(th);
    this.cipher = new CipherState(k);
  }

  encryptAndHash(plaintext: Uint8Array): Uint8Array {
    const ciphertext = this.cipher.encrypt(this.h, plaintext);
    this.mixHash(ciphertext);
    return ciphertext;
  }

  decryptAndHash(ciphertext: Uint8Array): Uint8Array {
    const plaintext = this.cipher.decrypt(this.h, ciphertext);
    this.mixHash(ciphertext);
    return plaintext;
  }

  split(): [CipherState, CipherState] {
    const [k1, k2] = noiseHkdf(this.ck, new Uint8Array(0), 2) as [Uint8Array, Uint8Array];
    return [new CipherState(k1), new CipherState(k2)];
  }
}

type Token = "e" | "s" | "ee" | "es" | "se" | "ss" | "psk";

interface Pattern {
  pre: { initiator: boolean; responder: boolean }; // a pre-message "s" from that side
  messages: Token[][];
}

// Section 7.4 (one-way) and 7.5 (interactive), as the specification writes them.
const PATTERNS: Record<string, Pattern> = {
  N: { pre: { initiator: false, responder: true }, messages: [["e", "es"]] },
  K: { pre: { initiator: true, responder: true }, messages: [["e", "es", "ss"]] },
  X: { pre: { initiator: false, responder: true }, messages: [["e", "es", "s", "ss"]] },
  NN: { pre: { initiator: false, responder: false }, messages: [["e"], ["e", "ee"]] },
  NK: { pre: { initiator: false, responder: true }, messages: [["e", "es"], ["e", "ee"]] },
  NX: { pre: { initiator: false, responder: false }, messages: [["e"], ["e", "ee", "s", "es"]] },
  KN: { pre: { initiator: true, responder: false }, messages: [["e"], ["e", "ee", "se"]] },
  KK: { pre: { initiator: true, responder: true }, messages: [["e", "es", "ss"], ["e", "ee", "se"]] },
  KX: {
    pre: { initiator: true, responder: false },
    messages: [["e"], ["e", "ee", "se", "s", "es"]],
  },
  XN: { pre: { initiator: false, responder: false }, messages: [["e"], ["e", "ee"], ["s", "se"]] },
  XK: {
    pre: { initiator: false, responder: true },
    messages: [["e", "es"], ["e", "ee"], ["s", "se"]],
  },
  XX: {
    pre: { initiator: false, responder: false },
    messages: [["e"], ["e", "ee", "s", "es"], ["s", "se"]],
  },
  IN: { pre: { initiator: false, responder: false }, messages: [["e", "s"], ["e", "ee", "se"]] },
  IK: {
    pre: { initiator: false, responder: true },
    messages: [["e", "es", "s", "ss"], ["e", "ee", "se"]],
  },
  IX: {
    pre: { initiator: false, responder: false },
    messages: [["e", "s"], ["e", "ee", "se", "s", "es"]],
  },
};

/** The pattern of a protocol name such as Noise_IKpsk1_25519_ChaChaPoly_SHA256. */
export function parseProtocolName(name: string): { pattern: Pattern; psks: number; oneWay: boolean } {
  const match = /^Noise_([A-Z]{1,2})((?:psk\d)(?:\+psk\d)*)?_25519_ChaChaPoly_SHA256$/.exec(name);
  if (!match || !name.endsWith(SUITE)) throw new NoiseError(`unsupported protocol name`);
  const base = PATTERNS[match[1] as string];
  if (!base) throw new NoiseError(`unsupported handshake pattern`);
  const messages = base.messages.map((m) => [...m]);
  const modifiers = match[2] ? match[2].split("+").map((m) => Number(m.slice(3))) : [];
  for (const n of modifiers) {
    if (n === 0) (messages[0] as Token[]).unshift("psk");
    else if (n - 1 < messages.length) (messages[n - 1] as Token[]).push("psk");
    else throw new NoiseError("psk modifier beyond the pattern's messages");
  }
  return { pattern: { pre: base.pre, messages }, psks: modifiers.length, oneWay: base.messages.length === 1 };
}

export interface HandshakeOptions {
  initiator: boolean;
  prologue: Uint8Array;
  s?: KeyPair | undefined;
  e?: KeyPair | undefined; // a fixed ephemeral: test vectors only
  rs?: Uint8Array | undefined;
  psks?: Uint8Array[] | undefined;
  /** DH(key pair, public key); a caller may answer from values it computed ahead of time. */
  dh?: ((pair: KeyPair, publicKey: Uint8Array) => Uint8Array) | undefined;
}

export class HandshakeState {
  private readonly symmetric: SymmetricState;
  private readonly messages: Token[][];
  private readonly initiator: boolean;
  private readonly psks: Uint8Array[];
  private readonly usesPsk: boolean;
  private readonly s: KeyPair | undefined;
  private readonly dh: (pair: KeyPair, publicKey: Uint8Array) => Uint8Array;
  private e: KeyPair | undefined;
  private rs: Uint8Array | undefined;
  private re: Uint8Array | undefined;
  private index = 0;
  private failed = false;
  private result: [CipherState, CipherState] | undefined;

  constructor(protocolName: string, options: HandshakeOptions) {
    const { pattern, psks } = parseProtocolName(protocolName);
    this.symmetric = new SymmetricState(protocolName);
    this.messages = pattern.messages;
    this.initiator = options.initiator;
    this.s = options.s;
    this.dh = options.dh ?? dh;
    this.e = options.e;
    this.rs = options.rs;
    this.psks = [...(options.psks ?? [])];
    this.usesPsk = psks > 0;
    if (this.psks.length !== psks || this.psks.some((p) => p.length !== 32)) {
      throw new NoiseError(`the pattern needs ${psks} PSK(s) of 32 bytes`);
    }
    this.symmetric.mixHash(options.prologue);
    const mine = this.initiator ? pattern.pre.initiator : pattern.pre.responder;
    const theirs = this.initiator ? pattern.pre.responder : pattern.pre.initiator;
    if (mine && !this.s) throw new NoiseError("the pattern needs this side's static key");
    if (theirs && (!this.rs || this.rs.length !== 32)) {
      throw new NoiseError("the pattern needs the peer's static public key");
    }
    // Initiator's pre-message first, then the responder's (section 7.1).
    const initiatorStatic = this.initiator ? this.s?.publicKey : this.rs;
    const responderStatic = this.initiator ? this.rs : this.s?.publicKey;
    if (pattern.pre.initiator) this.symmetric.mixHash(initiatorStatic as Uint8Array);
    if (pattern.pre.responder) this.symmetric.mixHash(responderStatic as Uint8Array);
  }

  get handshakeHash(): Uint8Array {
    return this.symmetric.h;
  }

  get remoteStatic(): Uint8Array | undefined {
    return this.rs;
  }

  get finished(): boolean {
    return this.result !== undefined;
  }

  private myTurn(): boolean {
    return (this.index % 2 === 0) === this.initiator;
  }

  private checkTurn(writing: boolean): Token[] {
    if (this.failed) throw new NoiseError("the handshake failed earlier");
    if (this.result) throw new NoiseError("the handshake is over");
    if (this.myTurn() !== writing) throw new NoiseError("not this side's turn");
    return this.messages[this.index] as Token[];
  }

  private dhFor(token: "ee" | "es" | "se" | "ss"): Uint8Array {
    const need = (k: KeyPair | Uint8Array | undefined): never | void => {
      if (!k) throw new NoiseError(`a key for ${token} is missing`);
    };
    // From the initiator's point of view: "es" is initiator's e with responder's s.
    const localFirst = token[0] === "e" ? this.e : this.s;
    const localSecond = token[1] === "e" ? this.e : this.s;
    const remoteFirst = token[0] === "e" ? this.re : this.rs;
    const remoteSecond = token[1] === "e" ? this.re : this.rs;
    if (this.initiator) {
      need(localFirst);
      need(remoteSecond);
      return this.dh(localFirst as KeyPair, remoteSecond as Uint8Array);
    }
    need(localSecond);
    need(remoteFirst);
    return this.dh(localSecond as KeyPair, remoteFirst as Uint8Array);
  }

  writeMessage(payload: Uint8Array): Uint8Array {
    const tokens = this.checkTurn(true);
    const parts: Uint8Array[] = [];
    try {
      for (const token of tokens) {
        if (token === "e") {
          this.e = this.e ?? generateKeyPair();
          parts.push(this.e.publicKey);
          this.symmetric.mixHash(this.e.publicKey);
          if (this.usesPsk) this.symmetric.mixKey(this.e.publicKey);
        } else if (token === "s") {
          if (!this.s) throw new NoiseError("the pattern needs this side's static key");
          parts.push(this.symmetric.encryptAndHash(this.s.publicKey));
        } else if (token === "psk") {
          this.symmetric.mixKeyAndHash(this.psks.shift() as Uint8Array);
        } else {
          this.symmetric.mixKey(this.dhFor(token));
        }
      }
      parts.push(this.symmetric.encryptAndHash(payload));
    } catch (error) {
      this.failed = true;
      throw error;
    }
    const message = concat(...parts);
    if (message.length > MAX_MESSAGE) {
      this.failed = true;
      throw new NoiseError("handshake message too long");
    }
    this.advance();
    return message;
  }

  readMessage(message: Uint8Array): Uint8Array {
    const tokens = this.checkTurn(false);
    if (message.length > MAX_MESSAGE) throw new NoiseError("message too long");
    const saved = {
      ck: this.symmetric.ck,
      h: this.symmetric.h,
      cipher: this.symmetric.cipher,
      cipherState: this.symmetric.cipher.save(),
      re: this.re,
      rs: this.rs,
      psks: [...this.psks],
    };
    try {
      let offset = 0;
      const take = (n: number): Uint8Array => {
        if (offset + n > message.length) throw new NoiseError("message too short");
        const part = message.subarray(offset, offset + n);
        offset += n;
        return part.slice();
      };
      for (const token of tokens) {
        if (token === "e") {
          this.re = take(DHLEN);
          this.symmetric.mixHash(this.re);
          if (this.usesPsk) this.symmetric.mixKey(this.re);
        } else if (token === "s") {
          const size = this.symmetric.cipher.hasKey() ? DHLEN + TAGLEN : DHLEN;
          this.rs = this.symmetric.decryptAndHash(take(size));
        } else if (token === "psk") {
          this.symmetric.mixKeyAndHash(this.psks.shift() as Uint8Array);
        } else {
          this.symmetric.mixKey(this.dhFor(token));
        }
      }
      const rest = message.subarray(offset);
      if (this.symmetric.cipher.hasKey() && rest.length < TAGLEN) {
        throw new NoiseError("message too short");
      }
      const payload = this.symmetric.decryptAndHash(rest.slice());
      this.advance();
      return payload;
    } catch (error) {
      this.symmetric.ck = saved.ck;
      this.symmetric.h = saved.h;
      this.symmetric.cipher = saved.cipher;
      saved.cipher.restore(saved.cipherState);
      this.re = saved.re;
      this.rs = saved.rs;
      this.psks.splice(0, this.psks.length, ...saved.psks);
      throw error instanceof NoiseError ? error : new NoiseError("message rejected");
    }
  }

  private advance(): void {
    this.index += 1;
    if (this.index === this.messages.length) this.result = this.symmetric.split();
  }

  /** The transport phase: a sender and a receiver CipherState for this side (Split). */
  transport(): Transport {
    if (!this.result) throw new NoiseError("the handshake is not finished");
    const [c1, c2] = this.result;
    return this.initiator ? new Transport(c1, c2) : new Transport(c2, c1);
  }
}

export class Transport {
  constructor(
    readonly sender: CipherState,
    readonly receiver: CipherState,
  ) {}

  encrypt(plaintext: Uint8Array): Uint8Array {
    return this.sender.encrypt(new Uint8Array(0), plaintext);
  }

  decrypt(ciphertext: Uint8Array): Uint8Array {
    return this.receiver.decrypt(new Uint8Array(0), ciphertext);
  }
}
