// The TypeScript Noise core against every public cacophony vector of its suite, byte for
// byte (the same file tests/test_noise.py runs), and a few refusals the vectors do not cover.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { HandshakeState, keyPairFromSecret, NoiseError, type Transport } from "../src/noise.js";
import { fromHex, toHex } from "../src/protocol.js";

const NAME = "noise-cacophony-25519-chachapoly-sha256.json";
const repo = fileURLToPath(new URL("../../", import.meta.url));
const local = `${repo}tests/vectors/${NAME}`;
const shared = `${repo}../shared/vectors/${NAME}`;

interface Vector {
  protocol_name: string;
  init_prologue: string;
  resp_prologue: string;
  init_ephemeral?: string;
  resp_ephemeral?: string;
  init_static?: string;
  resp_static?: string;
  init_remote_static?: string;
  resp_remote_static?: string;
  init_psks?: string[];
  resp_psks?: string[];
  handshake_hash: string;
  messages: { payload: string; ciphertext: string }[];
}

const vectors: Vector[] = JSON.parse(readFileSync(local, "utf8")).vectors;

test("the vector file is the shared one, with 36 vectors", () => {
  assert.equal(vectors.length, 36);
  if (existsSync(shared)) {
    assert.ok(readFileSync(shared).equals(readFileSync(local)), "tests/vectors differs from ../shared/vectors");
  }
});

function party(v: Vector, initiator: boolean): HandshakeState {
  const side = initiator ? "init" : "resp";
  const hex = (field: string): Uint8Array | undefined => {
    const value = (v as unknown as Record<string, string | undefined>)[field];
    return value === undefined ? undefined : fromHex(value);
  };
  const s = hex(`${side}_static`);
  const e = hex(`${side}_ephemeral`);
  return new HandshakeState(v.protocol_name, {
    initiator,
    prologue: hex(`${side}_prologue`) as Uint8Array,
    s: s && keyPairFromSecret(s),
    e: e && keyPairFromSecret(e),
    rs: hex(`${side}_remote_static`),
    psks: (initiator ? v.init_psks : v.resp_psks)?.map(fromHex),
  });
}

for (const v of vectors) {
  test(`cacophony ${v.protocol_name}`, () => {
    const initiator = party(v, true);
    const responder = party(v, false);
    const oneWay = /^Noise_[NKX](psk\d)?_/.test(v.protocol_name);
    let transports: [Transport, Transport] | undefined;
    v.messages.forEach((message, index) => {
      const fromInitiator = oneWay || index % 2 === 0;
      const payload = fromHex(message.payload);
      let sent: Uint8Array;
      let received: Uint8Array;
      if (!transports) {
        const [writer, reader] = fromInitiator ? [initiator, responder] : [responder, initiator];
        sent = writer.writeMessage(payload);
        received = reader.readMessage(sent);
        if (initiator.finished && responder.finished) {
          assert.equal(toHex(initiator.handshakeHash), v.handshake_hash, "initiator's handshake hash");
          assert.equal(toHex(responder.handshakeHash), v.handshake_hash, "responder's handshake hash");
          transports = [initiator.transport(), responder.transport()];
        }
      } else {
        const [writer, reader] = fromInitiator ? transports : [transports[1], transports[0]];
        sent = writer.encrypt(payload);
        received = reader.decrypt(sent);
      }
      assert.equal(toHex(sent), message.ciphertext, `message ${index} ciphertext`);
      assert.equal(toHex(received), message.payload, `message ${index} payload`);
    });
  });
}

test("a tampered handshake message is dropped and the real one still reads", () => {
  const v = vectors.find((x) => x.protocol_name === "Noise_IKpsk1_25519_ChaChaPoly_SHA256") as Vector;
  const initiator = party(v, true);
  const responder = party(v, false);
  const message = initiator.writeMessage(fromHex(v.messages[0]!.payload));
  const forged = message.slice();
  forged[forged.length - 1]! ^= 1;
  assert.throws(() => responder.readMessage(forged), NoiseError);
  assert.throws(() => responder.readMessage(message.subarray(0, 40)), NoiseError);
  assert.equal(toHex(responder.readMessage(message)), v.messages[0]!.payload);
});

test("a replayed or reflected transport message does not decrypt", () => {
  const v = vectors.find((x) => x.protocol_name === "Noise_KK_25519_ChaChaPoly_SHA256") as Vector;
  const initiator = party(v, true);
  const responder = party(v, false);
  responder.readMessage(initiator.writeMessage(new Uint8Array(0)));
  initiator.readMessage(responder.writeMessage(new Uint8Array(0)));
  const a = initiator.transport();
  const b = responder.transport();
  const first = a.encrypt(Uint8Array.of(1, 2, 3));
  b.decrypt(first);
  assert.throws(() => b.decrypt(first), NoiseError, "replay");
  const mine = a.encrypt(Uint8Array.of(4));
  assert.throws(() => a.decrypt(mine), NoiseError, "reflection");
});

test("a low-order public key is refused", () => {
  const v = vectors.find((x) => x.protocol_name === "Noise_NN_25519_ChaChaPoly_SHA256") as Vector;
  const initiator = party(v, true);
  const message = initiator.writeMessage(new Uint8Array(0));
  const responder = party(v, false);
  responder.readMessage(message);
  const reply = responder.writeMessage(new Uint8Array(0));
  const zero = reply.slice();
  zero.fill(0, 0, 32);
  assert.throws(() => initiator.readMessage(zero), NoiseError);
});
