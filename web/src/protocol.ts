// The bridge's wire formats (docs/bridge-protocol.md, version 1) for the device side:
// encodings, the offer, mailbox capabilities, envelopes, padded payloads, the confirmation
// code, requests and responses. Strict decoders that throw ProtocolError and nothing else;
// no I/O, no state. Checked against tests/vectors/bridge-v1.json (web/test/bridge.test.ts).

import { hkdf as rfcHkdf } from "@noble/hashes/hkdf.js";
import { sha256 } from "@noble/hashes/sha2.js";

import { concat } from "./noise.js";

export const VERSION = 1;
export const MAGIC = new TextEncoder().encode("JSB1");
export const HEADER = 21;
export const BUCKETS = [256, 1024, 4096, 16384, 65519];
export const PAIRING_PROTOCOL = "Noise_IKpsk1_25519_ChaChaPoly_SHA256";
export const SESSION_PROTOCOL = "Noise_KK_25519_ChaChaPoly_SHA256";
export const CLOCK_SKEW = 60;
export const MAX_REQUEST_LIFETIME = 300;
export const MAX_VALUE_BYTES = 60_000;
export const OPS = ["read", "write", "delete", "list", "unpair"] as const;
export type Op = (typeof OPS)[number];

export const KIND = {
  pairInit: 1,
  pairResp: 2,
  pairFinal: 3,
  open: 4,
  accept: 5,
  data: 6,
  notice: 7,
} as const;

export class ProtocolError extends Error {
  override name = "ProtocolError";
}

const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });

export const utf8 = (text: string): Uint8Array => encoder.encode(text);

// --- encodings ------------------------------------------------------------------------------

export function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function fromHex(hex: string): Uint8Array {
  if (!/^(?:[0-9a-f]{2})*$/i.test(hex)) throw new ProtocolError("not hex");
  return Uint8Array.from(hex.match(/../g) ?? [], (pair) => Number.parseInt(pair, 16));
}

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

export function b64u(bytes: Uint8Array): string {
  let out = "";
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8) | bytes[i + 2]!;
    out += ALPHABET[n >> 18]! + ALPHABET[(n >> 12) & 63]! + ALPHABET[(n >> 6) & 63]! + ALPHABET[n & 63]!;
  }
  const rest = bytes.length - i;
  if (rest === 1) {
    const n = bytes[i]! << 16;
    out += ALPHABET[n >> 18]! + ALPHABET[(n >> 12) & 63]!;
  } else if (rest === 2) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8);
    out += ALPHABET[n >> 18]! + ALPHABET[(n >> 12) & 63]! + ALPHABET[(n >> 6) & 63]!;
  }
  return out;
}

/** Strict base64url without padding: other alphabets, padding and non-canonical bits fail. */
export function unb64u(text: unknown, size?: number, what = "field"): Uint8Array {
  if (typeof text !== "string" || !/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) {
    throw new ProtocolError(`${what} is not base64url without padding`);
  }
  const out = new Uint8Array(Math.floor((text.length * 3) / 4));
  let bits = 0;
  let value = 0;
  let index = 0;
  for (const char of text) {
    value = (value << 6) | ALPHABET.indexOf(char);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[index++] = (value >> bits) & 255;
    }
  }
  if (bits > 0 && (value & ((1 << bits) - 1)) !== 0) {
    throw new ProtocolError(`${what} is not canonical base64url`);
  }
  if (size !== undefined && out.length !== size) throw new ProtocolError(`${what} must be ${size} bytes`);
  return out;
}

export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

/** RFC 5869 HKDF-SHA256 with the bridge's salt (§4). */
export function hkdf(ikm: Uint8Array, info: string, length = 32, salt = "jss-bridge/1"): Uint8Array {
  return rfcHkdf(sha256, ikm, utf8(salt), utf8(info), length);
}

export function compactJson(value: Record<string, unknown>): Uint8Array {
  return utf8(JSON.stringify(value));
}

export function parseJsonObject(data: Uint8Array, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(strictDecoder.decode(data));
  } catch {
    throw new ProtocolError(`${what} is not UTF-8 JSON`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ProtocolError(`${what} is not a JSON object`);
  }
  return value as Record<string, unknown>;
}

function text(value: unknown, what: string, limit: number): string {
  if (typeof value !== "string" || value.length > limit) {
    throw new ProtocolError(`${what} must be a string of at most ${limit} characters`);
  }
  return value;
}

function integer(value: unknown, what: string): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value)) {
    throw new ProtocolError(`${what} must be an integer`);
  }
  return value;
}

// --- the offer (§3) -------------------------------------------------------------------------

export interface Offer {
  hostKey: Uint8Array;
  secret: Uint8Array;
  relay: string;
  expires: number;
  label: string;
  offerId: Uint8Array;
  /** The exact offer string: the pairing prologue is built from it. */
  string: string;
}

/** An offer string, a jss-pair: URI or a web link (the offer after "#"). */
export function decodeOffer(input: string): Offer {
  let body = input.trim();
  if (body.startsWith("jss-pair:")) body = body.slice("jss-pair:".length);
  else if (body.includes("#")) body = body.slice(body.lastIndexOf("#") + 1);
  if (body.length > 2048) throw new ProtocolError("the offer is too long");
  const object = parseJsonObject(unb64u(body, undefined, "the offer"), "the offer");
  const version = integer(object.v, "v");
  if (version !== VERSION) throw new ProtocolError(`offer version ${version} is not supported (this is version 1)`);
  const relay = text(object.r, "r", 256);
  if (!relay.startsWith("ws://") && !relay.startsWith("wss://")) {
    throw new ProtocolError("r must be a ws:// or wss:// URL");
  }
  return {
    hostKey: unb64u(object.k, 32, "k"),
    secret: unb64u(object.s, 32, "s"),
    relay,
    expires: integer(object.x, "x"),
    label: text(object.l, "l", 64),
    offerId: unb64u(object.i, 16, "i"),
    string: body,
  };
}

export function offerExpired(offer: Offer, now = Date.now() / 1000): boolean {
  return now > offer.expires + CLOCK_SKEW;
}

export function pairingPrologue(offer: Offer): Uint8Array {
  return concat(utf8("jss-bridge/1 pairing\n"), utf8(offer.string));
}

export function sessionPrologue(pairingId: Uint8Array): Uint8Array {
  return concat(utf8("jss-bridge/1 session\n"), pairingId);
}

/** (pair_h2d, pair_d2h), §4. */
export function pairingCaps(secret: Uint8Array): [Uint8Array, Uint8Array] {
  return [hkdf(secret, "pairing host-to-device"), hkdf(secret, "pairing device-to-host")];
}

export function mailboxId(cap: Uint8Array): string {
  return b64u(sha256(concat(utf8("jss-mailbox/1"), cap)));
}

// --- envelopes (§6) -------------------------------------------------------------------------

export interface Envelope {
  kind: number;
  conversation: Uint8Array;
  body: Uint8Array;
}

export function encodeEnvelope(kind: number, conversation: Uint8Array, body: Uint8Array): Uint8Array {
  if (kind < 1 || kind > 7 || conversation.length !== 16 || body.length > 65535) {
    throw new ProtocolError("not a valid envelope");
  }
  return concat(MAGIC, Uint8Array.of(kind), conversation, body);
}

export function decodeEnvelope(data: Uint8Array): Envelope {
  if (data.length < HEADER) throw new ProtocolError("the envelope is shorter than its header");
  if (!equalBytes(data.subarray(0, 4), MAGIC)) throw new ProtocolError("the envelope's magic is not JSB1");
  const kind = data[4]!;
  if (kind < 1 || kind > 7) throw new ProtocolError("unknown envelope kind");
  const body = data.slice(HEADER);
  if (body.length > 65535) throw new ProtocolError("the envelope body is larger than a Noise message");
  return { kind, conversation: data.slice(5, 21), body };
}

export function notice(conversation: Uint8Array, error: string): Uint8Array {
  return encodeEnvelope(KIND.notice, conversation, compactJson({ error }));
}

// --- padded payloads (§7) -------------------------------------------------------------------

export function pad(message: Record<string, unknown>): Uint8Array {
  const body = compactJson(message);
  const size = 4 + body.length;
  const bucket = BUCKETS.find((b) => size <= b);
  if (bucket === undefined) throw new ProtocolError("the message is too large for one payload");
  const out = new Uint8Array(bucket);
  new DataView(out.buffer).setUint32(0, body.length, false);
  out.set(body, 4);
  return out;
}

export function unpad(payload: Uint8Array, what = "payload"): Record<string, unknown> {
  if (!BUCKETS.includes(payload.length)) throw new ProtocolError(`the ${what} is not one of the padded sizes`);
  const length = new DataView(payload.buffer, payload.byteOffset, 4).getUint32(0, false);
  if (4 + length > payload.length) throw new ProtocolError(`the ${what}'s length field exceeds it`);
  if (payload.subarray(4 + length).some((b) => b !== 0)) throw new ProtocolError(`the ${what}'s padding is not zero`);
  return parseJsonObject(payload.subarray(4, 4 + length), what);
}

// --- the confirmation code (§8) -------------------------------------------------------------

export function confirmationCode(handshakeHash: Uint8Array): string {
  const bytes = hkdf(handshakeHash, "confirmation code", 4);
  const n = new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0, false) % 1_000_000;
  const digits = n.toString().padStart(6, "0");
  return `${digits.slice(0, 3)} ${digits.slice(3)}`;
}

// --- requests and responses (§9) ------------------------------------------------------------

export interface Request {
  id: Uint8Array;
  op: Op;
  ns: string;
  key: string | null;
  value: string | null;
  iat: number;
  exp: number;
}

const NAMESPACE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

function validKeyName(key: string): boolean {
  // eslint-disable-next-line no-control-regex
  return key.length > 0 && key === key.trim() && !/[\u0000-\u001f\u007f]/.test(key);
}

export function decodeRequest(message: Record<string, unknown>): Request {
  if (message.t !== "req") throw new ProtocolError("not a request");
  const op = message.op;
  if (typeof op !== "string" || !(OPS as readonly string[]).includes(op)) throw new ProtocolError("unknown request op");
  const iat = integer(message.iat, "iat");
  const exp = integer(message.exp, "exp");
  if (exp < iat || exp - iat > MAX_REQUEST_LIFETIME) throw new ProtocolError("a request lives at most 300 seconds");
  let ns = "default";
  if (op !== "unpair") {
    ns = text(message.ns, "ns", 64);
    if (!NAMESPACE.test(ns)) throw new ProtocolError("ns is not a valid namespace");
  }
  let key: string | null = null;
  if (op === "read" || op === "write" || op === "delete") {
    key = text(message.key, "key", 255);
    if (!validKeyName(key)) throw new ProtocolError("key is not a valid key name");
  }
  let value: string | null = null;
  if (op === "write") {
    value = text(message.value, "value", MAX_VALUE_BYTES);
    if (utf8(value).length > MAX_VALUE_BYTES) throw new ProtocolError("value is larger than 60,000 bytes");
  }
  return { id: unb64u(message.id, 16, "id"), op: op as Op, ns, key, value, iat, exp };
}

export function requestExpired(request: Request, now = Date.now() / 1000): boolean {
  return request.exp < now - CLOCK_SKEW || request.iat > now + CLOCK_SKEW;
}

export type Response = Record<string, unknown>;

export function okResponse(id: Uint8Array, fields: Record<string, unknown> = {}): Response {
  return { t: "res", id: b64u(id), ok: true, ...fields };
}

export function errorResponse(id: Uint8Array, error: string, message: string): Response {
  return { t: "res", id: b64u(id), ok: false, error, message };
}
