// The page: unlock (or create) the passkey, pair from the offer in the URL fragment, then
// serve the paired computers' requests, asking the owner before each value leaves.

import { Device, PairingFailed, randomBytes, type Approval, type ApprovalRequest } from "./device.js";
import { decodeOffer, type Offer } from "./protocol.js";
import { Vault, VaultError, type StoredPairing } from "./vault.js";

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => document.getElementById(id) as T;
const MINUTES = [5, 15, 60];

function show(id: string, visible = true): void {
  $(id).hidden = !visible;
}

function setText(id: string, text: string): void {
  $(id).textContent = text;
}

function element<K extends keyof HTMLElementTagNameMap>(tag: K, text = "", className = ""): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (text) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function describe(error: unknown): string {
  if (error instanceof VaultError) return `${error.cause_} ${error.remedy}`;
  if (error instanceof PairingFailed) return error.message;
  return error instanceof Error ? `${error.name}: ${error.message}` : "unexpected error";
}

/** The offer from the URL fragment, which never reaches a server; removed from the address bar. */
function takeOffer(): { offer: Offer | null; error: string | null } {
  const fragment = location.hash.slice(1);
  if (!fragment) return { offer: null, error: null };
  history.replaceState(null, "", location.pathname + location.search);
  try {
    return { offer: decodeOffer(fragment), error: null };
  } catch {
    return { offer: null, error: "The pairing link is damaged or from another version. Ask the computer for a new one." };
  }
}

class Page {
  readonly vault = new Vault();
  readonly device: Device;
  private offer: Offer | null;

  constructor(offer: Offer | null) {
    this.offer = offer;
    this.device = new Device(this.vault, {
      approve: (request) => this.ask(request),
      log: (line) => this.log(line),
      changed: () => this.render(),
      relayStatus: (relay, up) => this.log(up ? `Connected to ${relay}.` : `Lost ${relay}; reconnecting.`),
    });
  }

  async start(offerError: string | null): Promise<void> {
    if (offerError) this.error(offerError);
    if (!window.isSecureContext || !("credentials" in navigator) || !window.PublicKeyCredential) {
      setText("status", "This page needs a secure context (HTTPS, or localhost) and passkeys (WebAuthn).");
      return;
    }
    if (/^[0-9.]+$/.test(location.hostname) || location.hostname.includes(":") || location.hostname.startsWith("[")) {
      // WebAuthn ties a passkey to a domain: an IP address (even 127.0.0.1) is refused.
      setText(
        "status",
        `Passkeys do not work on an IP address (${location.hostname}). Open this page by a host name: ` +
          "localhost on this machine, or the relay's HTTPS domain (give the computer a wss://NAME relay URL).",
      );
      return;
    }
    const known = await this.vault.hasPasskey();
    const asking = this.offer ? `${this.offer.label} asks to pair with this phone. ` : "";
    setText(
      "status",
      known
        ? `${asking}Locked. Your passkey opens the secrets kept on this phone.`
        : `${asking}First, a passkey: it locks the secrets this phone will keep, and each use asks for your fingerprint, face or screen lock.`,
    );
    show(known ? "unlock" : "create-passkey");
    $("unlock").onclick = () => this.unlock(false);
    $("create-passkey").onclick = () => this.unlock(true);
    $("pair").onclick = () => this.pair();
  }

  private error(text: string): void {
    const node = $("lock-error");
    node.textContent = text;
    node.hidden = false;
  }

  private async unlock(create: boolean): Promise<void> {
    const button = $<HTMLButtonElement>(create ? "create-passkey" : "unlock");
    button.disabled = true;
    show("lock-error", false);
    try {
      if (create) await this.vault.create(randomBytes(32));
      else await this.vault.unlock();
    } catch (error) {
      this.error(describe(error));
      button.disabled = false;
      return;
    }
    show("create-passkey", false);
    show("unlock", false);
    setText("status", "Unlocked. Keep this page open to answer your computers.");
    $("status").className = "ok";
    const persisted = navigator.storage?.persist ? await navigator.storage.persist().catch(() => false) : false;
    setText("persist", persisted ? "Storage: persistent." : "Storage: the browser may clear it (add this page to the home screen to keep it).");
    await this.device.serve();
    this.render();
    this.offerPairing();
    // A page opened from the home screen has no link to read the offer from (and on iOS
    // its storage is not Safari's): the offer's text can be pasted instead.
    $<HTMLFormElement>("paste-form").onsubmit = (event) => {
      event.preventDefault();
      const field = $<HTMLInputElement>("paste-offer");
      try {
        this.offer = decodeOffer(field.value);
      } catch {
        setText("paste-error", "That is not a pairing offer (it starts with jss-pair: or is a /device/# link).");
        show("paste-error");
        return;
      }
      field.value = ""; // the offer holds a one-time secret: do not leave it on screen
      show("paste-error", false);
      this.offerPairing();
    };
  }

  private offerPairing(): void {
    if (!this.offer) return;
    setText("offer-label", this.offer.label);
    setText("offer-relay", this.offer.relay);
    setText("pair-status", "");
    $("pair-status").className = "";
    $<HTMLButtonElement>("pair").disabled = false;
    show("pair");
    show("code-box", false);
    show("pairing");
  }

  private async pair(): Promise<void> {
    const offer = this.offer;
    if (!offer) return;
    $<HTMLButtonElement>("pair").disabled = true;
    setText("pair-status", "Waiting for the computer…");
    try {
      await this.device.pair(offer, (code) => {
        setText("code", code);
        show("code-box");
        setText("pair-status", "Waiting for you to confirm on the computer…");
      });
      setText("pair-status", `Paired with ${offer.label}.`);
      $("pair-status").className = "ok";
      show("pair", false);
      show("code-box", false);
    } catch (error) {
      setText("pair-status", describe(error));
      $("pair-status").className = "error";
    } finally {
      this.offer = null; // an offer works once
    }
  }

  private ask(request: ApprovalRequest): Promise<Approval> {
    return new Promise((resolve) => {
      const card = element("section", "", "card request");
      card.dataset.op = request.op;
      card.dataset.key = request.key ?? "";
      const verb = { read: "read", write: "store", delete: "delete", list: "list", unpair: "unpair from" }[request.op];
      const what = element("p", "", "what");
      what.append(element("b", request.host), ` wants to ${verb} `);
      if (request.key) what.append(element("span", request.key, "key"));
      else what.append("this phone");
      card.append(element("h2", `${request.op.toUpperCase()} request`), what, element("p", `namespace ${request.ns} · operation ${request.op}`, "meta"));
      const once = element("button", "Approve once", "approve-once");
      const reject = element("button", "Reject", "reject");
      const buttons: HTMLElement[] = [once];
      let minutes: HTMLSelectElement | null = null;
      if (request.op === "read") {
        minutes = element("select", "", "minutes");
        for (const m of MINUTES) {
          const option = element("option", `${m} minutes`);
          option.value = String(m);
          option.selected = m === 15;
          minutes.append(option);
        }
        const forMinutes = element("button", "Approve this key for", "approve-minutes");
        forMinutes.onclick = () => finish({ granted: true, minutes: Number(minutes?.value ?? 15) });
        buttons.push(forMinutes, minutes);
      }
      buttons.push(reject);
      const row = element("div", "", "buttons");
      row.append(...buttons);
      card.append(row);
      // The host gives up when the request expires; so does the question.
      const timer = setTimeout(() => finish({ granted: false, minutes: 0 }), Math.max(1000, (request.expires + 60) * 1000 - Date.now()));
      let done = false;
      function finish(approval: Approval): void {
        if (done) return;
        done = true;
        clearTimeout(timer);
        card.remove();
        resolve(approval);
      }
      once.onclick = () => finish({ granted: true, minutes: 0 });
      reject.onclick = () => finish({ granted: false, minutes: 0 });
      $("requests").append(card);
      card.scrollIntoView({ block: "nearest" });
    });
  }

  private log(line: string): void {
    const list = $("log");
    const item = element("li", `${new Date().toLocaleTimeString()} ${line}`);
    list.prepend(item);
    while (list.children.length > 30) list.lastElementChild?.remove();
    show("activity");
  }

  render(): void {
    let state;
    try {
      state = this.vault.state;
    } catch {
      return;
    }
    const keys = $("key-list");
    keys.replaceChildren();
    for (const ns of Object.keys(state.names).sort()) {
      for (const name of this.vault.names(ns)) {
        const item = element("li");
        item.dataset.ns = ns;
        item.dataset.key = name;
        const label = element("span");
        label.append(element("code", name), ns === "default" ? "" : ` (${ns})`);
        const remove = element("button", "Delete", "delete-key danger");
        remove.onclick = async () => {
          if (remove.dataset.confirm !== "1") {
            remove.dataset.confirm = "1";
            remove.textContent = "Delete for good?";
            return;
          }
          await this.vault.delete(ns, name);
          this.log(`Deleted ${name} on this phone.`);
          this.render();
        };
        item.append(label, remove);
        keys.append(item);
      }
    }
    show("no-keys", keys.children.length === 0);
    show("keys");
    const computers = $("pairing-list");
    computers.replaceChildren();
    for (const pairing of state.pairings) computers.append(this.pairingItem(pairing));
    show("no-pairings", state.pairings.length === 0);
    show("computers");
  }

  private pairingItem(pairing: StoredPairing): HTMLElement {
    const item = element("li");
    item.dataset.pairing = pairing.pairing;
    const label = element("span");
    label.append(element("b", pairing.hostLabel), element("br"), element("span", `paired ${new Date(pairing.created * 1000).toLocaleDateString()}`, "small"));
    const forget = element("button", "Forget this computer", "forget danger");
    forget.onclick = async () => {
      forget.disabled = true;
      await this.device.forget(pairing);
    };
    item.append(label, forget);
    return item;
  }
}

const { offer, error } = takeOffer();
new Page(offer).start(error).catch((e: unknown) => {
  setText("status", describe(e));
});
