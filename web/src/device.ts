// The device side of docs/bridge-protocol.md in the browser: pairing (§8), sessions and
// requests (§9), and the device behaviour of §10, over the relay client and the vault.
// The owner's answers come from an Approver (the page's buttons); every approval that
// releases or stores a value is also a WebAuthn assertion (Vault.valueKey).

import { dh, generateKeyPair, HandshakeState, keyPairFromSecret, NoiseError, type KeyPair, type Transport } from "./noise.js";
import * as p from "./protocol.js";
import { RelayConnection, RelayError, type Delivery } from "./relay.js";
import { Vault, VaultError, type StoredPairing } from "./vault.js";

export const SOFTWARE = "jss-web-companion/0.1";
const SESSION_IDLE_MS = 10 * 60 * 1000;
const PAIRING_TIMEOUT_MS = 10 * 60 * 1000;

export interface ApprovalRequest {
  host: string;
  op: p.Op;
  ns: string;
  key: string | null;
  expires: number; // Unix seconds: the request's own expiry
}

export interface Approval {
  granted: boolean;
  minutes: number; // > 0: reads of this key need no new approval for that long
}

export interface DeviceEvents {
  approve(request: ApprovalRequest): Promise<Approval>;
  log(line: string): void;
  changed(): void; // names or pairings changed
  relayStatus(relay: string, up: boolean): void;
}

interface Session {
  transport: Transport;
  reply: Uint8Array;
  pairing: StoredPairing;
  lastUsed: number;
}

interface Answered {
  response: p.Response;
  until: number; // Unix seconds
  fingerprint: string;
}

export class PairingFailed extends Error {
  override name = "PairingFailed";
}

export function randomBytes(n: number): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(n));
}

/** What must match for a repeated request id to be the same request (a digest, not the value). */
async function fingerprint(request: p.Request): Promise<string> {
  const value = request.value === null ? "" : p.b64u(new Uint8Array(await crypto.subtle.digest("SHA-256", p.utf8(request.value) as BufferSource)));
  return JSON.stringify([request.op, request.ns, request.key, value, request.exp]);
}

type Dh = (pair: KeyPair, publicKey: Uint8Array) => Uint8Array;

interface Ephemeral {
  e: KeyPair;
  se: Uint8Array; // DH(e, host's static key)
  key: CryptoKey | null; // e for WebCrypto, when the browser has X25519 there
}

const jwk = (pair: KeyPair): JsonWebKey => ({ kty: "OKP", crv: "X25519", d: p.b64u(pair.secretKey), x: p.b64u(pair.publicKey) });

/** DH through WebCrypto (native: ~0.1 ms against ~1 ms in JavaScript), or null. */
async function nativeDh(key: CryptoKey | null, publicKey: Uint8Array): Promise<Uint8Array | null> {
  if (!key || !crypto.subtle) return null;
  try {
    const peer = await crypto.subtle.importKey("raw", publicKey as BufferSource, { name: "X25519" }, false, []);
    const shared = new Uint8Array(await crypto.subtle.deriveBits({ name: "X25519", public: peer }, key, 256));
    return shared.some((b) => b !== 0) ? shared : null; // all zeros: let the JavaScript DH refuse it
  } catch {
    return null; // no X25519 in this browser, or a low-order key: the JavaScript DH decides
  }
}

async function importPrivate(pair: KeyPair): Promise<CryptoKey | null> {
  try {
    return await crypto.subtle.importKey("jwk", jwk(pair), { name: "X25519" }, false, ["deriveBits"]);
  } catch {
    return null;
  }
}

/**
 * Session handshakes (KK, the page as responder) done mostly ahead of time: X25519 in
 * JavaScript costs about a millisecond, and a session needs five. Per paired host, the
 * static-static DH is the same every time, and a fresh ephemeral key pair with its DH
 * against the host's static key is made while the page is idle. The two DHs with the
 * host's new ephemeral key run natively through WebCrypto where the browser has X25519
 * (Chrome 133+, Safari 17+, Firefox 130+), else in JavaScript. Each ephemeral is used once.
 */
class Prepared {
  private readonly statics = new Map<string, Uint8Array>(); // host key -> DH(s, host key)
  private readonly ephemerals = new Map<string, Ephemeral[]>();
  private readonly filling = new Set<string>();
  private staticKey: Promise<CryptoKey | null> | null = null;

  constructor(private readonly deviceKey: () => KeyPair) {}

  /** A fresh ephemeral for a session opened by `remoteEphemeral`, and the DH that knows it. */
  async take(hostKey: Uint8Array, remoteEphemeral: Uint8Array): Promise<{ e: KeyPair; dh: Dh }> {
    const id = p.b64u(hostKey);
    const prepared = this.ephemerals.get(id)?.shift() ?? (await this.make(hostKey));
    const s = this.deviceKey();
    let ss = this.statics.get(id);
    if (!ss) {
      ss = dh(s, hostKey);
      this.statics.set(id, ss);
    }
    const known = ss;
    this.staticKey ??= importPrivate(s);
    const [es, ee] = await Promise.all([nativeDh(await this.staticKey, remoteEphemeral), nativeDh(prepared.key, remoteEphemeral)]);
    this.refill(hostKey);
    return {
      e: prepared.e,
      dh: (pair, publicKey) => {
        if (p.equalBytes(publicKey, hostKey)) {
          if (pair === s) return known;
          if (pair === prepared.e) return prepared.se;
        } else if (p.equalBytes(publicKey, remoteEphemeral)) {
          if (pair === s && es) return es;
          if (pair === prepared.e && ee) return ee;
        }
        return dh(pair, publicKey);
      },
    };
  }

  private async make(hostKey: Uint8Array): Promise<Ephemeral> {
    const e = generateKeyPair();
    const key = await importPrivate(e);
    return { e, se: (await nativeDh(key, hostKey)) ?? dh(e, hostKey), key };
  }

  /** Keep two ready per host, made after the current request has been answered. */
  refill(hostKey: Uint8Array): void {
    const id = p.b64u(hostKey);
    if (this.filling.has(id)) return;
    this.filling.add(id);
    setTimeout(async () => {
      try {
        const list = this.ephemerals.get(id) ?? [];
        while (list.length < 2) list.push(await this.make(hostKey));
        this.ephemerals.set(id, list);
      } finally {
        this.filling.delete(id);
      }
    }, 50);
  }

  clear(): void {
    this.statics.clear();
    this.ephemerals.clear();
    this.staticKey = null;
  }
}

export class Device {
  private key: KeyPair | null = null;
  // One connection per relay, shared by its pairings; a promise, so pairings served at
  // the same moment wait for the same connection instead of opening several.
  private readonly connections = new Map<string, Promise<RelayConnection>>();
  private readonly reconnecting = new Set<string>();
  private readonly sessions = new Map<string, Session>();
  private readonly answered = new Map<string, Answered>();
  private readonly inFlight = new Map<string, { fingerprint: string; answer: Promise<p.Response> }>();
  private readonly approvedUntil = new Map<string, number>(); // pairing/ns/key -> ms
  private rememberedKey: { key: CryptoKey; until: number } | null = null;
  private readonly prepared = new Prepared(() => this.deviceKey);
  private readonly opening = new Set<string>();
  private serving = false;
  private sweeper: ReturnType<typeof setInterval> | null = null;

  constructor(
    readonly vault: Vault,
    readonly events: DeviceEvents,
    readonly name = "web companion",
  ) {}

  private get deviceKey(): KeyPair {
    if (!this.key) this.key = keyPairFromSecret(p.unb64u(this.vault.state.deviceKey, 32, "device key"));
    return this.key;
  }

  // --- pairing (§8) --------------------------------------------------------------------------

  /**
   * Run the device side of pairing. `onCode` gets the confirmation code once the host has
   * answered; the promise ends when the host confirms (the pairing is stored) or rejects.
   */
  async pair(offer: p.Offer, onCode: (code: string) => void): Promise<StoredPairing> {
    if (p.offerExpired(offer)) throw new PairingFailed("The offer has expired. Ask the computer for a new one.");
    const handshake = new HandshakeState(p.PAIRING_PROTOCOL, {
      initiator: true,
      prologue: p.pairingPrologue(offer),
      s: this.deviceKey,
      rs: offer.hostKey,
      psks: [offer.secret],
    });
    const conversation = randomBytes(16);
    const [pairH2d, pairD2h] = p.pairingCaps(offer.secret);
    const connection = new RelayConnection(offer.relay);
    try {
      await connection.connect();
    } catch {
      throw new PairingFailed(`Cannot reach the relay at ${offer.relay}. Check that this phone can reach it.`);
    }
    let transport: Transport | null = null;
    let paired: Record<string, unknown> | null = null;
    try {
      const outcome = new Promise<Record<string, unknown>>((resolve, reject) => {
        const timer = setTimeout(() => reject(new PairingFailed("The computer did not answer in time. Pair again.")), PAIRING_TIMEOUT_MS);
        connection.onclose = () => reject(new PairingFailed("The relay closed the connection during pairing. Pair again."));
        const handle = (delivery: Delivery): void => {
          let envelope: p.Envelope;
          try {
            envelope = p.decodeEnvelope(delivery.data);
          } catch {
            return;
          }
          if (!p.equalBytes(envelope.conversation, conversation)) return;
          try {
            // A forged or damaged answer changes nothing (§6): wait for the real one.
            if (envelope.kind === p.KIND.pairResp && !paired) {
              const message = p.unpad(handshake.readMessage(envelope.body), "pair-resp payload");
              if (message.t !== "paired") return;
              paired = message;
              transport = handshake.transport();
              onCode(p.confirmationCode(handshake.handshakeHash));
            } else if (envelope.kind === p.KIND.pairFinal && transport) {
              const verdict = p.unpad(transport.decrypt(envelope.body), "pair-final payload");
              clearTimeout(timer);
              resolve(verdict);
            }
          } catch (error) {
            if (!(error instanceof NoiseError || error instanceof p.ProtocolError)) throw error;
          }
        };
        connection.subscribe(pairH2d, handle).then(
          () => {
            const hello = p.pad({ t: "pair", device: this.name, software: SOFTWARE });
            return connection.post(pairD2h, p.encodeEnvelope(p.KIND.pairInit, conversation, handshake.writeMessage(hello)), 600);
          },
        ).catch((error: unknown) => reject(error instanceof RelayError ? new PairingFailed(`The relay refused: ${error.message}`) : error));
      });
      const verdict = await outcome;
      if (verdict.t !== "confirmed") throw new PairingFailed("The computer's user rejected the pairing.");
      const answer = paired as unknown as Record<string, unknown>;
      const pairing: StoredPairing = {
        pairing: p.b64u(p.unb64u(answer.pairing, 16, "pairing")),
        hostKey: p.b64u(offer.hostKey),
        h2d: p.b64u(p.unb64u(answer.h2d, 32, "h2d")),
        d2h: p.b64u(p.unb64u(answer.d2h, 32, "d2h")),
        relay: offer.relay,
        hostLabel: (typeof answer.host === "string" ? answer.host : offer.label).slice(0, 64),
        created: Math.floor(Date.now() / 1000),
      };
      this.vault.state.pairings.push(pairing);
      await this.vault.saveState();
      this.events.log(`Paired with ${pairing.hostLabel}.`);
      this.events.changed();
      if (this.serving) await this.servePairing(pairing);
      return pairing;
    } finally {
      connection.onclose = null;
      connection.close();
    }
  }

  // --- serving (§9) ----------------------------------------------------------------------------

  async serve(): Promise<void> {
    this.serving = true;
    this.sweeper ??= setInterval(() => this.expire(), 1000);
    const state = this.vault.state;
    for (const pairing of state.pairings) await this.servePairing(pairing);
    for (const gone of state.forgotten) await this.serveForgotten(gone.relay, gone.h2d, gone.d2h);
  }

  stop(): void {
    this.serving = false;
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = null;
    for (const pending of this.connections.values()) {
      pending.then(
        (connection) => {
          connection.onclose = null;
          connection.close();
        },
        () => undefined,
      );
    }
    this.connections.clear();
    this.sessions.clear();
    this.prepared.clear();
    this.forgetRemembered();
  }

  private connection(relay: string): Promise<RelayConnection> {
    const existing = this.connections.get(relay);
    if (existing) return existing;
    const connection = new RelayConnection(relay);
    const opened = connection.connect().then(
      () => {
        this.events.relayStatus(relay, true);
        connection.onclose = () => {
          if (this.connections.get(relay) === opened) this.connections.delete(relay);
          this.events.relayStatus(relay, false);
          this.reconnectLater(relay);
        };
        return connection;
      },
      (error: unknown) => {
        if (this.connections.get(relay) === opened) this.connections.delete(relay);
        this.events.relayStatus(relay, false);
        this.reconnectLater(relay);
        throw error;
      },
    );
    this.connections.set(relay, opened);
    return opened;
  }

  private reconnectLater(relay: string): void {
    if (!this.serving || this.reconnecting.has(relay)) return;
    this.reconnecting.add(relay);
    setTimeout(() => {
      this.reconnecting.delete(relay);
      if (!this.serving || this.connections.has(relay)) return;
      const state = this.vault.state;
      Promise.all([
        ...state.pairings.filter((x) => x.relay === relay).map((x) => this.servePairing(x)),
        ...state.forgotten.filter((x) => x.relay === relay).map((x) => this.serveForgotten(x.relay, x.h2d, x.d2h)),
      ]).catch(() => undefined);
    }, 1000);
  }

  private async servePairing(pairing: StoredPairing): Promise<void> {
    let connection: RelayConnection;
    try {
      connection = await this.connection(pairing.relay);
    } catch {
      return; // reconnectLater tries again
    }
    const h2d = p.unb64u(pairing.h2d, 32);
    this.prepared.refill(p.unb64u(pairing.hostKey, 32));
    await connection.subscribe(h2d, (delivery) => this.handle(connection, pairing, delivery.data));
  }

  /** A forgotten pairing's inbox: every `open` gets the unknown-host notice (§9 step 2). */
  private async serveForgotten(relay: string, h2dText: string, d2hText: string): Promise<void> {
    let connection: RelayConnection;
    try {
      connection = await this.connection(relay);
    } catch {
      return;
    }
    const d2h = p.unb64u(d2hText, 32);
    await connection.subscribe(p.unb64u(h2dText, 32), async (delivery) => {
      let envelope: p.Envelope;
      try {
        envelope = p.decodeEnvelope(delivery.data);
      } catch {
        return;
      }
      if (envelope.kind === p.KIND.open) await connection.post(d2h, p.notice(envelope.conversation, "unknown-host"), 120);
    });
  }

  private async handle(connection: RelayConnection, pairing: StoredPairing, data: Uint8Array): Promise<void> {
    let envelope: p.Envelope;
    try {
      envelope = p.decodeEnvelope(data);
    } catch {
      return;
    }
    const conversation = p.b64u(envelope.conversation);
    if (!this.vault.state.pairings.some((x) => x.pairing === pairing.pairing)) {
      if (envelope.kind === p.KIND.open) {
        await connection.post(p.unb64u(pairing.d2h, 32), p.notice(envelope.conversation, "unknown-host"), 120);
      }
      this.sessions.delete(conversation);
      return;
    }
    if (envelope.kind === p.KIND.open) await this.open(connection, pairing, envelope, conversation);
    else if (envelope.kind === p.KIND.data) await this.data(connection, envelope, conversation);
  }

  private async open(connection: RelayConnection, pairing: StoredPairing, envelope: p.Envelope, conversation: string): Promise<void> {
    // A duplicate of an open session, or of one being opened (the DHs below are awaited).
    if (this.sessions.has(conversation) || this.opening.has(conversation)) return;
    this.opening.add(conversation);
    try {
      await this.accept(connection, pairing, envelope, conversation);
    } finally {
      this.opening.delete(conversation);
    }
  }

  private async accept(connection: RelayConnection, pairing: StoredPairing, envelope: p.Envelope, conversation: string): Promise<void> {
    const hostKey = p.unb64u(pairing.hostKey, 32);
    const { e, dh: prepared } = await this.prepared.take(hostKey, envelope.body.slice(0, 32));
    const handshake = new HandshakeState(p.SESSION_PROTOCOL, {
      initiator: false,
      prologue: p.sessionPrologue(p.unb64u(pairing.pairing, 16)),
      s: this.deviceKey,
      e,
      rs: hostKey,
      dh: prepared,
    });
    let reply: Uint8Array;
    try {
      const opening = p.unpad(handshake.readMessage(envelope.body), "open payload");
      reply = p.unb64u(opening.reply, 32, "reply");
    } catch (error) {
      if (!(error instanceof NoiseError || error instanceof p.ProtocolError)) throw error;
      await connection.post(p.unb64u(pairing.d2h, 32), p.notice(envelope.conversation, "unknown-host"), 120);
      return;
    }
    const accept = handshake.writeMessage(p.pad({ t: "accept" }));
    this.sessions.set(conversation, { transport: handshake.transport(), reply, pairing, lastUsed: Date.now() });
    await connection.post(reply, p.encodeEnvelope(p.KIND.accept, envelope.conversation, accept), 300);
  }

  private async data(connection: RelayConnection, envelope: p.Envelope, conversation: string): Promise<void> {
    const session = this.sessions.get(conversation);
    if (!session) return;
    let message: Record<string, unknown>;
    try {
      message = p.unpad(session.transport.decrypt(envelope.body), "request");
    } catch (error) {
      if (!(error instanceof NoiseError || error instanceof p.ProtocolError)) throw error;
      // Replayed, reordered, forged or damaged: the session cannot be trusted now (§9).
      this.sessions.delete(conversation);
      this.events.log("A message failed authentication; that session was closed.");
      return;
    }
    session.lastUsed = Date.now();
    if (message.t === "close") {
      this.sessions.delete(conversation);
      return;
    }
    if (message.t !== "req") return;
    const answer = await this.answer(message, session.pairing);
    if (answer === null) return;
    const body = session.transport.encrypt(p.pad(answer));
    await connection.post(session.reply, p.encodeEnvelope(p.KIND.data, envelope.conversation, body), 300);
  }

  private expire(): void {
    const now = Date.now();
    for (const [conversation, session] of this.sessions) {
      if (now - session.lastUsed > SESSION_IDLE_MS) this.sessions.delete(conversation);
    }
    for (const [id, answered] of this.answered) if (answered.until * 1000 < now) this.answered.delete(id);
    for (const [key, until] of this.approvedUntil) if (until < now) this.approvedUntil.delete(key);
    if (this.rememberedKey && this.rememberedKey.until < now) this.forgetRemembered();
  }

  forgetRemembered(): void {
    this.rememberedKey = null;
    this.approvedUntil.clear();
  }

  /** Approvals for some minutes still running: [pairing label, ns/key, until ms]. */
  remembered(): [string, number][] {
    return [...this.approvedUntil.entries()].filter(([, until]) => until > Date.now());
  }

  // --- answering requests ----------------------------------------------------------------------

  private async answer(message: Record<string, unknown>, pairing: StoredPairing): Promise<p.Response | null> {
    let id: Uint8Array;
    try {
      id = p.unb64u(message.id, 16, "id");
    } catch {
      return null;
    }
    let request: p.Request;
    try {
      request = p.decodeRequest(message);
    } catch (error) {
      return p.errorResponse(id, "bad-request", error instanceof Error ? error.message : "bad request");
    }
    // A repeated id from the same host gets the same answer without asking again (§9); an
    // id reused for another operation is not that request.
    const cacheKey = `${pairing.pairing}/${p.b64u(id)}`;
    const asked = await fingerprint(request);
    const cached = this.answered.get(cacheKey);
    if (cached) return cached.fingerprint === asked ? cached.response : p.errorResponse(id, "bad-request", "request id reused");
    const running = this.inFlight.get(cacheKey);
    if (running) return running.fingerprint === asked ? running.answer : p.errorResponse(id, "bad-request", "request id reused");
    const answer = this.answerOnce(request, pairing);
    this.inFlight.set(cacheKey, { fingerprint: asked, answer });
    try {
      const response = await answer;
      this.answered.set(cacheKey, { response, until: request.exp + p.CLOCK_SKEW, fingerprint: asked });
      return response;
    } finally {
      this.inFlight.delete(cacheKey);
    }
  }

  private async answerOnce(request: p.Request, pairing: StoredPairing): Promise<p.Response> {
    if (p.requestExpired(request)) {
      this.events.log(`Refused an expired ${request.op} request from ${pairing.hostLabel}.`);
      return p.errorResponse(request.id, "expired", "the request expired");
    }
    try {
      return await this.execute(request, pairing);
    } catch (error) {
      if (error instanceof VaultError) return p.errorResponse(request.id, "denied", error.cause_.slice(0, 200));
      return p.errorResponse(request.id, "internal", "the device could not complete the request");
    }
  }

  private approvalKey(pairing: StoredPairing, request: p.Request): string {
    return `${pairing.pairing}/${request.ns}/${request.key ?? ""}`;
  }

  /** Ask the owner; on approval, the value key from a fresh passkey assertion (or null: denied). */
  private async approved(request: p.Request, pairing: StoredPairing): Promise<CryptoKey | null> {
    const remembered = this.approvedUntil.get(this.approvalKey(pairing, request)) ?? 0;
    if (request.op === "read" && remembered > Date.now() && this.rememberedKey) {
      this.events.log(`${pairing.hostLabel} read ${request.ns}/${request.key} (approved earlier).`);
      return this.rememberedKey.key;
    }
    const approval = await this.events.approve({ host: pairing.hostLabel, op: request.op, ns: request.ns, key: request.key, expires: request.exp });
    if (!approval.granted) {
      this.events.log(`Rejected ${request.op} ${request.key ?? ""} from ${pairing.hostLabel}.`);
      return null;
    }
    const key = await this.vault.valueKey(); // the passkey, with user verification
    if (approval.minutes > 0 && request.op === "read") {
      const until = Date.now() + approval.minutes * 60_000;
      this.approvedUntil.set(this.approvalKey(pairing, request), until);
      // The value key stays in memory only while some approval for minutes runs.
      this.rememberedKey = { key, until: Math.max(until, this.rememberedKey?.until ?? 0) };
    }
    this.events.log(`Approved ${request.op} ${request.key ?? ""} for ${pairing.hostLabel}.`);
    return key;
  }

  private async execute(request: p.Request, pairing: StoredPairing): Promise<p.Response> {
    const { ns } = request;
    if (request.op === "list") return p.okResponse(request.id, { names: this.vault.names(ns) });
    if (request.op === "read") {
      const key = request.key as string;
      if (!this.vault.has(ns, key)) return p.okResponse(request.id, { found: false });
      const valueKey = await this.approved(request, pairing);
      if (!valueKey) return p.errorResponse(request.id, "denied", "rejected on the device");
      const value = await this.vault.get(valueKey, ns, key);
      return value === null ? p.okResponse(request.id, { found: false }) : p.okResponse(request.id, { found: true, value });
    }
    const valueKey = await this.approved(request, pairing);
    if (!valueKey) return p.errorResponse(request.id, "denied", "rejected on the device");
    if (request.op === "write") {
      await this.vault.set(valueKey, ns, request.key as string, request.value as string);
      this.events.changed();
      return p.okResponse(request.id);
    }
    if (request.op === "delete") {
      const existed = await this.vault.delete(ns, request.key as string);
      this.events.changed();
      return p.okResponse(request.id, { existed });
    }
    await this.forget(pairing);
    return p.okResponse(request.id);
  }

  /** "Forget this computer": drop the pairing; its next `open` gets unknown-host. */
  async forget(pairing: StoredPairing): Promise<void> {
    const state = this.vault.state;
    state.pairings = state.pairings.filter((x) => x.pairing !== pairing.pairing);
    state.forgotten.push({ relay: pairing.relay, h2d: pairing.h2d, d2h: pairing.d2h });
    state.forgotten = state.forgotten.slice(-32);
    await this.vault.saveState();
    for (const [conversation, session] of this.sessions) {
      if (session.pairing.pairing === pairing.pairing) this.sessions.delete(conversation);
    }
    for (const key of this.approvedUntil.keys()) if (key.startsWith(`${pairing.pairing}/`)) this.approvedUntil.delete(key);
    this.events.log(`Forgot ${pairing.hostLabel}.`);
    this.events.changed();
  }
}
