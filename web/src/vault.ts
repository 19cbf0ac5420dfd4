// What the page keeps, and the passkey that locks it.
//
// Everything lives in IndexedDB ("jss-web-companion"), encrypted with AES-256-GCM under keys
// derived (HKDF-SHA256) from the output of the WebAuthn PRF extension of one passkey. The
// passkey sits in the phone's platform keystore (iCloud Keychain, Google Password Manager)
// and every use needs the owner's biometric or screen lock (userVerification: "required").
//
//  meta/passkey   plaintext: the credential id and the PRF salt (neither is secret)
//  meta/state     encrypted under the *state* key: the device's static X25519 key, its
//                 pairings, key names per namespace, and forgotten pairings' mailboxes
//  values/<id>    encrypted under the *value* key; <id> is an HMAC of namespace and name,
//                 so the store shows neither
//
// Unlocking (once per page load) derives the state key and index key and keeps them in
// memory: the page needs its static key to answer the computer at all. The value key is
// derived afresh for every approval (a new assertion) and dropped after use, unless the
// owner approved a key "for N minutes", when it stays in memory until that time is up.

import { hkdf } from "@noble/hashes/hkdf.js";
import { hmac } from "@noble/hashes/hmac.js";
import { sha256 } from "@noble/hashes/sha2.js";

import { b64u, unb64u, utf8 } from "./protocol.js";

const DB_NAME = "jss-web-companion";
const DB_VERSION = 1;
const KDF_SALT = utf8("jss-web-companion/1");
const RP_NAME = "jupyter-secure-storage";

export class VaultError extends Error {
  override name = "VaultError";
  constructor(
    readonly cause_: string,
    readonly remedy: string,
  ) {
    super(`${cause_} ${remedy}`.trim());
  }
}

export interface StoredPairing {
  pairing: string; // b64u ids and capabilities, as the reference device keeps them
  hostKey: string;
  h2d: string;
  d2h: string;
  relay: string;
  hostLabel: string;
  created: number;
}

export interface Forgotten {
  relay: string;
  h2d: string;
  d2h: string;
}

export interface State {
  version: 1;
  deviceKey: string; // b64u X25519 secret key
  pairings: StoredPairing[];
  names: Record<string, string[]>; // namespace -> sorted key names
  forgotten: Forgotten[];
}

interface Sealed {
  iv: Uint8Array;
  ct: Uint8Array;
}

interface PasskeyMeta {
  credentialId: string;
  salt: string;
  created: number;
}

// --- IndexedDB -------------------------------------------------------------------------------

function request<T>(r: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error ?? new Error("IndexedDB request failed"));
  });
}

let connection: Promise<IDBDatabase> | null = null;

/** One connection for the page's lifetime (opening one per operation costs milliseconds). */
function openDb(): Promise<IDBDatabase> {
  if (connection) return connection;
  const opening = indexedDB.open(DB_NAME, DB_VERSION);
  opening.onupgradeneeded = () => {
    const db = opening.result;
    if (!db.objectStoreNames.contains("meta")) db.createObjectStore("meta");
    if (!db.objectStoreNames.contains("values")) db.createObjectStore("values");
  };
  connection = request(opening).then((db) => {
    db.onversionchange = () => {
      db.close(); // another tab upgrades the schema: let it
      connection = null;
    };
    db.onclose = () => {
      connection = null;
    };
    return db;
  });
  connection.catch(() => {
    connection = null;
  });
  return connection;
}

async function transaction<T>(stores: string[], mode: IDBTransactionMode, work: (t: IDBTransaction) => Promise<T>): Promise<T> {
  const db = await openDb();
  const t = db.transaction(stores, mode);
  const done = new Promise<void>((resolve, reject) => {
    t.oncomplete = () => resolve();
    t.onerror = () => reject(t.error ?? new Error("IndexedDB transaction failed"));
    t.onabort = () => reject(t.error ?? new Error("IndexedDB transaction aborted"));
  });
  const result = await work(t);
  await done;
  return result;
}

// --- keys --------------------------------------------------------------------------------------

function derive(prf: Uint8Array, info: string): Uint8Array {
  return hkdf(sha256, prf, KDF_SALT, utf8(info), 32);
}

async function aesKey(raw: Uint8Array): Promise<CryptoKey> {
  try {
    return await crypto.subtle.importKey("raw", raw as BufferSource, "AES-GCM", false, ["encrypt", "decrypt"]);
  } finally {
    raw.fill(0);
  }
}

async function seal(key: CryptoKey, plaintext: Uint8Array, ad: string): Promise<Sealed> {
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const ct = new Uint8Array(await crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData: utf8(ad) as BufferSource }, key, plaintext as BufferSource));
  return { iv, ct };
}

async function open(key: CryptoKey, sealed: Sealed, ad: string): Promise<Uint8Array> {
  return new Uint8Array(
    await crypto.subtle.decrypt({ name: "AES-GCM", iv: sealed.iv as BufferSource, additionalData: utf8(ad) as BufferSource }, key, sealed.ct as BufferSource),
  );
}

// --- the passkey ------------------------------------------------------------------------------

function prfResult(credential: PublicKeyCredential): Uint8Array | null {
  const results = (credential.getClientExtensionResults() as { prf?: { results?: { first?: BufferSource } } }).prf?.results;
  const first = results?.first;
  if (!first) return null;
  if (first instanceof ArrayBuffer) return new Uint8Array(first.slice(0));
  const view = first as ArrayBufferView;
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength).slice();
}

async function assertion(meta: PasskeyMeta): Promise<Uint8Array> {
  let credential: PublicKeyCredential | null;
  try {
    credential = (await navigator.credentials.get({
      publicKey: {
        challenge: crypto.getRandomValues(new Uint8Array(32)),
        allowCredentials: [{ type: "public-key", id: unb64u(meta.credentialId) as BufferSource }],
        userVerification: "required",
        timeout: 120_000,
        extensions: { prf: { eval: { first: unb64u(meta.salt) as BufferSource } } } as AuthenticationExtensionsClientInputs,
      },
    })) as PublicKeyCredential | null;
  } catch (error) {
    throw new VaultError(
      `The passkey was not confirmed (${error instanceof Error ? error.name : "error"}).`,
      "Confirm with your fingerprint, face or screen lock; the passkey must be the one this page created.",
    );
  }
  const output = credential && prfResult(credential);
  if (!output || output.length !== 32) {
    throw new VaultError(
      "This browser or passkey provider does not support the WebAuthn PRF extension.",
      "Use a current Chrome, Safari (iOS 18+) or a passkey provider with PRF support.",
    );
  }
  return output;
}

// --- the vault -----------------------------------------------------------------------------------

export interface Unlocked {
  state: State;
  stateKey: CryptoKey;
  indexKey: Uint8Array;
}

export class Vault {
  private meta: PasskeyMeta | null = null;
  private unlocked: Unlocked | null = null;

  async hasPasskey(): Promise<boolean> {
    this.meta = await transaction(["meta"], "readonly", (t) => request(t.objectStore("meta").get("passkey") as IDBRequest<PasskeyMeta | undefined>)).then((m) => m ?? null);
    return this.meta !== null;
  }

  get state(): State {
    if (!this.unlocked) throw new VaultError("The page is locked.", "Unlock it with your passkey.");
    return this.unlocked.state;
  }

  /** Create the passkey (with PRF) and an empty state holding a fresh device key. */
  async create(freshDeviceKey: Uint8Array): Promise<void> {
    const salt = crypto.getRandomValues(new Uint8Array(32));
    let credential: PublicKeyCredential | null;
    try {
      credential = (await navigator.credentials.create({
        publicKey: {
          rp: { name: RP_NAME },
          user: { id: crypto.getRandomValues(new Uint8Array(16)), name: "jupyter-secure-storage", displayName: "jupyter-secure-storage secrets" },
          challenge: crypto.getRandomValues(new Uint8Array(32)),
          pubKeyCredParams: [
            { type: "public-key", alg: -7 },
            { type: "public-key", alg: -257 },
          ],
          authenticatorSelection: { residentKey: "required", userVerification: "required" },
          timeout: 120_000,
          extensions: { prf: { eval: { first: salt } } } as AuthenticationExtensionsClientInputs,
        },
      })) as PublicKeyCredential | null;
    } catch (error) {
      throw new VaultError(
        `No passkey was created (${error instanceof Error ? error.name : "error"}).`,
        "Allow the passkey; this page needs it to keep your secrets encrypted.",
      );
    }
    if (!credential) throw new VaultError("No passkey was created.", "Try again.");
    const extensions = credential.getClientExtensionResults() as { prf?: { enabled?: boolean } };
    if (extensions.prf?.enabled === false) {
      throw new VaultError(
        "This passkey provider does not support the WebAuthn PRF extension.",
        "Use a current Chrome, Safari (iOS 18+) or a passkey provider with PRF support.",
      );
    }
    const meta: PasskeyMeta = { credentialId: b64u(new Uint8Array(credential.rawId)), salt: b64u(salt), created: Math.floor(Date.now() / 1000) };
    this.meta = meta;
    // Some providers return the PRF output at creation, others only on an assertion.
    const prf = prfResult(credential) ?? (await assertion(meta));
    const unlocked = await this.keysFrom(prf);
    unlocked.state.deviceKey = b64u(freshDeviceKey);
    this.unlocked = unlocked;
    const sealed = await this.sealState(unlocked);
    await transaction(["meta"], "readwrite", async (t) => {
      t.objectStore("meta").put(meta, "passkey");
      t.objectStore("meta").put(sealed, "state");
    });
  }

  private async keysFrom(prf: Uint8Array): Promise<Unlocked> {
    const stateKey = await aesKey(derive(prf, "state"));
    const indexKey = derive(prf, "index");
    prf.fill(0);
    return { state: { version: 1, deviceKey: "", pairings: [], names: {}, forgotten: [] }, stateKey, indexKey };
  }

  private async sealState(unlocked: Unlocked): Promise<Sealed> {
    return seal(unlocked.stateKey, utf8(JSON.stringify(unlocked.state)), "jss-web/state");
  }

  /** Ask for the passkey; decrypt the state. Another passkey's output cannot decrypt it. */
  async unlock(): Promise<State> {
    if (!this.meta && !(await this.hasPasskey())) throw new VaultError("No passkey yet.", "Create one first.");
    const unlocked = await this.keysFrom(await assertion(this.meta as PasskeyMeta));
    const sealed = await transaction(["meta"], "readonly", (t) => request(t.objectStore("meta").get("state") as IDBRequest<Sealed | undefined>));
    if (!sealed) throw new VaultError("The stored state is missing.", "Forget this page's data in the browser settings and pair again.");
    let plaintext: Uint8Array;
    try {
      plaintext = await open(unlocked.stateKey, sealed, "jss-web/state");
    } catch {
      throw new VaultError(
        "This passkey cannot open the secrets stored on this page (another passkey, or the data was changed).",
        "Use the passkey this page was set up with. Nothing was deleted.",
      );
    }
    unlocked.state = JSON.parse(new TextDecoder().decode(plaintext)) as State;
    this.unlocked = unlocked;
    return unlocked.state;
  }

  lock(): void {
    this.unlocked?.indexKey.fill(0);
    this.unlocked = null;
  }

  async saveState(): Promise<void> {
    const unlocked = this.unlocked;
    if (!unlocked) throw new VaultError("The page is locked.", "Unlock it with your passkey.");
    const sealed = await this.sealState(unlocked);
    await transaction(["meta"], "readwrite", async (t) => {
      t.objectStore("meta").put(sealed, "state");
    });
  }

  /** A fresh assertion (user verification): the key that opens values, for this approval. */
  async valueKey(): Promise<CryptoKey> {
    if (!this.meta) throw new VaultError("No passkey yet.", "Create one first.");
    return aesKey(derive(await assertion(this.meta), "values"));
  }

  private recordId(ns: string, key: string): string {
    if (!this.unlocked) throw new VaultError("The page is locked.", "Unlock it with your passkey.");
    return b64u(hmac(sha256, this.unlocked.indexKey, utf8(`${ns}\u0000${key}`)));
  }

  has(ns: string, key: string): boolean {
    return (this.state.names[ns] ?? []).includes(key);
  }

  names(ns: string): string[] {
    return [...(this.state.names[ns] ?? [])].sort();
  }

  async get(valueKey: CryptoKey, ns: string, key: string): Promise<string | null> {
    if (!this.has(ns, key)) return null;
    const id = this.recordId(ns, key);
    const sealed = await transaction(["values"], "readonly", (t) => request(t.objectStore("values").get(id) as IDBRequest<Sealed | undefined>));
    if (!sealed) return null;
    try {
      return new TextDecoder().decode(await open(valueKey, sealed, `jss-web/value\n${id}`));
    } catch {
      throw new VaultError("This passkey cannot open the stored value.", "Use the passkey this page was set up with.");
    }
  }

  async set(valueKey: CryptoKey, ns: string, key: string, value: string): Promise<void> {
    const id = this.recordId(ns, key);
    const sealed = await seal(valueKey, utf8(value), `jss-web/value\n${id}`);
    const names = new Set(this.state.names[ns] ?? []);
    names.add(key);
    this.state.names[ns] = [...names].sort();
    const stateSealed = await this.sealState(this.unlocked as Unlocked);
    await transaction(["meta", "values"], "readwrite", async (t) => {
      t.objectStore("values").put(sealed, id);
      t.objectStore("meta").put(stateSealed, "state");
    });
  }

  async delete(ns: string, key: string): Promise<boolean> {
    const existed = this.has(ns, key);
    const id = this.recordId(ns, key);
    this.state.names[ns] = (this.state.names[ns] ?? []).filter((n) => n !== key);
    if (this.state.names[ns]?.length === 0) delete this.state.names[ns];
    const stateSealed = await this.sealState(this.unlocked as Unlocked);
    await transaction(["meta", "values"], "readwrite", async (t) => {
      t.objectStore("values").delete(id);
      t.objectStore("meta").put(stateSealed, "state");
    });
    return existed;
  }
}
