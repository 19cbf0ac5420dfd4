// The device side of tests/vectors/bridge-v1.json, replayed with the TypeScript code: the
// offer, the mailboxes, every message the device sends (byte for byte, from the fixed
// ephemerals) and every message it reads (decoded, and refused with one byte changed).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { HandshakeState, keyPairFromSecret, NoiseError } from "../src/noise.js";
import * as p from "../src/protocol.js";

const file = fileURLToPath(new URL("../../tests/vectors/bridge-v1.json", import.meta.url));
const V = JSON.parse(readFileSync(file, "utf8"));
const inputs = V.inputs;
type Message = {
  name: string;
  kind: number;
  conversation: string;
  payload: Record<string, unknown>;
  padded_payload: string;
  noise_message: string;
  envelope: string;
  data_b64u: string;
};
const pairing: Message[] = V.pairing.messages;
const session: Message[] = V.session.messages;
const byName = (list: Message[], name: string): Message => list.find((m) => m.name === name) as Message;
const hex = p.fromHex;

test("the offer decodes from its string, URI and web link, and the caps match", () => {
  for (const form of [V.offer.string, V.offer.uri, V.offer.web_link]) {
    const offer = p.decodeOffer(form);
    assert.equal(offer.string, V.offer.string);
    assert.equal(p.toHex(offer.hostKey), inputs.host_static.public);
    assert.equal(p.toHex(offer.secret), inputs.offer.secret);
    assert.equal(offer.relay, inputs.offer.relay);
    assert.equal(offer.label, inputs.offer.label);
  }
  const offer = p.decodeOffer(V.offer.string);
  assert.equal(p.toHex(p.pairingPrologue(offer)), V.pairing.prologue);
  const [h2d, d2h] = p.pairingCaps(offer.secret);
  assert.equal(p.b64u(h2d), V.pairing.mailboxes.pair_h2d.cap_b64u);
  assert.equal(p.b64u(d2h), V.pairing.mailboxes.pair_d2h.cap_b64u);
  assert.equal(p.mailboxId(h2d), V.pairing.mailboxes.pair_h2d.box);
  assert.equal(p.mailboxId(d2h), V.pairing.mailboxes.pair_d2h.box);
  for (const box of Object.values(V.session.mailboxes) as { cap_b64u: string; box: string }[]) {
    assert.equal(p.mailboxId(p.unb64u(box.cap_b64u, 32)), box.box);
  }
});

test("malformed offers are refused", () => {
  const object = V.offer.object;
  const encode = (o: Record<string, unknown>): string => p.b64u(p.compactJson(o));
  assert.throws(() => p.decodeOffer(encode({ ...object, v: 2 })), p.ProtocolError);
  assert.throws(() => p.decodeOffer(encode({ ...object, k: "AAAA" })), p.ProtocolError);
  assert.throws(() => p.decodeOffer(encode({ ...object, r: "http://x" })), p.ProtocolError);
  assert.throws(() => p.decodeOffer(`${V.offer.string}=`), p.ProtocolError);
  assert.throws(() => p.decodeOffer(V.offer.string.replace(/.$/, "R")), p.ProtocolError);
  assert.ok(p.offerExpired(p.decodeOffer(V.offer.string)));
});

test("pairing: the device's pair-init byte for byte, then pair-resp, the code and pair-final", () => {
  const offer = p.decodeOffer(V.offer.string);
  const handshake = new HandshakeState(p.PAIRING_PROTOCOL, {
    initiator: true,
    prologue: p.pairingPrologue(offer),
    s: keyPairFromSecret(hex(inputs.device_static.private)),
    e: keyPairFromSecret(hex(inputs.pairing.device_ephemeral.private)),
    rs: offer.hostKey,
    psks: [offer.secret],
  });
  const init = byName(pairing, "pair-init");
  const body = handshake.writeMessage(hex(init.padded_payload));
  const envelope = p.encodeEnvelope(p.KIND.pairInit, hex(init.conversation), body);
  assert.equal(p.toHex(envelope), init.envelope);
  assert.equal(p.b64u(envelope), init.data_b64u);
  assert.deepEqual(p.unpad(hex(init.padded_payload)), init.payload);

  const resp = byName(pairing, "pair-resp");
  const respEnvelope = p.decodeEnvelope(hex(resp.envelope));
  assert.equal(respEnvelope.kind, p.KIND.pairResp);
  const tampered = respEnvelope.body.slice();
  tampered[40]! ^= 1;
  assert.throws(() => handshake.readMessage(tampered), NoiseError);
  const paired = p.unpad(handshake.readMessage(respEnvelope.body));
  assert.deepEqual(paired, resp.payload);
  assert.equal(p.toHex(handshake.handshakeHash), V.pairing.handshake_hash);
  assert.equal(p.confirmationCode(handshake.handshakeHash), V.pairing.confirmation_code);

  const final = byName(pairing, "pair-final");
  const transport = handshake.transport();
  assert.deepEqual(p.unpad(transport.decrypt(p.decodeEnvelope(hex(final.envelope)).body)), final.payload);
});

test("session: open, the device's accept byte for byte, requests and responses", () => {
  const handshake = new HandshakeState(p.SESSION_PROTOCOL, {
    initiator: false,
    prologue: p.sessionPrologue(hex(inputs.pairing.pairing_id)),
    s: keyPairFromSecret(hex(inputs.device_static.private)),
    e: keyPairFromSecret(hex(inputs.session.device_ephemeral.private)),
    rs: hex(inputs.host_static.public),
  });
  assert.equal(p.toHex(p.sessionPrologue(hex(inputs.pairing.pairing_id))), V.session.prologue);
  const open = byName(session, "open");
  const opening = p.unpad(handshake.readMessage(p.decodeEnvelope(hex(open.envelope)).body));
  assert.deepEqual(opening, open.payload);
  const accept = byName(session, "accept");
  const acceptEnvelope = p.encodeEnvelope(p.KIND.accept, hex(accept.conversation), handshake.writeMessage(hex(accept.padded_payload)));
  assert.equal(p.toHex(acceptEnvelope), accept.envelope);
  assert.equal(p.toHex(handshake.handshakeHash), V.session.handshake_hash);
  const transport = handshake.transport();

  const read = byName(session, "read-request");
  const readBody = p.decodeEnvelope(hex(read.envelope)).body;
  const request = p.decodeRequest(p.unpad(transport.decrypt(readBody)));
  assert.equal(request.op, "read");
  assert.equal(request.key, inputs.requests.read.key);
  assert.throws(() => transport.decrypt(readBody), NoiseError, "a replayed request does not decrypt");
  const readResponse = byName(session, "read-response");
  assert.equal(p.toHex(transport.encrypt(hex(readResponse.padded_payload))), readResponse.noise_message);

  const write = byName(session, "write-request");
  const writeRequest = p.decodeRequest(p.unpad(transport.decrypt(p.decodeEnvelope(hex(write.envelope)).body)));
  assert.equal(writeRequest.op, "write");
  assert.ok(writeRequest.value !== null && writeRequest.value === inputs.requests.write.value, "the written value");
  const writeResponse = byName(session, "write-response");
  assert.equal(p.toHex(transport.encrypt(hex(writeResponse.padded_payload))), writeResponse.noise_message);

  const close = byName(session, "close");
  assert.deepEqual(p.unpad(transport.decrypt(p.decodeEnvelope(hex(close.envelope)).body)), { t: "close" });
  const noticeVector = byName(session, "unknown-host-notice");
  const notice = p.decodeEnvelope(hex(noticeVector.envelope));
  assert.deepEqual(p.parseJsonObject(notice.body, "notice"), noticeVector.payload);
});

test("padding and envelopes are strict", () => {
  const padded = p.pad({ t: "close" });
  assert.equal(padded.length, 256);
  const dirty = padded.slice();
  dirty[255] = 1;
  assert.throws(() => p.unpad(dirty), p.ProtocolError);
  assert.throws(() => p.unpad(padded.subarray(0, 255)), p.ProtocolError);
  const long = padded.slice();
  long[3] = 255;
  assert.throws(() => p.unpad(long), p.ProtocolError);
  assert.throws(() => p.decodeEnvelope(new Uint8Array(20)), p.ProtocolError);
  assert.throws(() => p.decodeEnvelope(p.fromHex(`4a53423209${"00".repeat(16)}`)), p.ProtocolError);
  assert.throws(() => p.decodeEnvelope(p.fromHex(`4a53423108${"00".repeat(16)}`)), p.ProtocolError);
});

test("requests: lifetime, names and expiry", () => {
  const base = { t: "req", id: p.b64u(new Uint8Array(16)), op: "read", ns: "default", key: "K", iat: 1000, exp: 1060 };
  assert.equal(p.decodeRequest(base).key, "K");
  assert.throws(() => p.decodeRequest({ ...base, exp: 1400 }), p.ProtocolError);
  assert.throws(() => p.decodeRequest({ ...base, key: " K" }), p.ProtocolError);
  assert.throws(() => p.decodeRequest({ ...base, ns: "-x" }), p.ProtocolError);
  assert.throws(() => p.decodeRequest({ ...base, op: "steal" }), p.ProtocolError);
  assert.ok(p.requestExpired(p.decodeRequest(base), 2000));
  assert.ok(!p.requestExpired(p.decodeRequest(base), 1100));
  assert.ok(p.requestExpired(p.decodeRequest(base), 900));
});
