// A client of the relay protocol (docs/bridge-protocol.md §5) over the browser's WebSocket.
// One RelayConnection is one socket to one relay: post, subscribe (each delivered message
// goes to the mailbox's handler, which is acknowledged once handled), ack, ping.

import { b64u, mailboxId, unb64u } from "./protocol.js";

export class RelayError extends Error {
  override name = "RelayError";
  constructor(
    message: string,
    readonly code = "unavailable",
  ) {
    super(message);
  }
}

export interface Delivery {
  box: string;
  seq: string;
  data: Uint8Array;
}

type Handler = (delivery: Delivery) => void | Promise<void>;

export class RelayConnection {
  private socket: WebSocket | null = null;
  private nextId = 1;
  private readonly waiting = new Map<string, { resolve: (m: Record<string, unknown>) => void; reject: (e: Error) => void }>();
  private readonly handlers = new Map<string, { cap: Uint8Array; handler: Handler }>();
  private closedReason: string | null = null;
  onclose: ((reason: string) => void) | null = null;

  constructor(readonly url: string) {}

  get closed(): boolean {
    return this.closedReason !== null;
  }

  connect(timeoutMs = 10_000): Promise<void> {
    return new Promise((resolve, reject) => {
      let socket: WebSocket;
      try {
        socket = new WebSocket(this.url);
      } catch {
        reject(new RelayError(`cannot reach the relay at ${this.url}`));
        return;
      }
      this.socket = socket;
      const timer = setTimeout(() => {
        socket.close();
        reject(new RelayError(`the relay at ${this.url} did not answer`));
      }, timeoutMs);
      socket.onopen = () => {
        clearTimeout(timer);
        resolve();
      };
      socket.onerror = () => {
        clearTimeout(timer);
        reject(new RelayError(`cannot reach the relay at ${this.url}`));
      };
      socket.onmessage = (event) => this.receive(event.data);
      socket.onclose = () => {
        clearTimeout(timer);
        this.closedReason = this.closedReason ?? "closed";
        for (const waiter of this.waiting.values()) waiter.reject(new RelayError("the relay closed the connection"));
        this.waiting.clear();
        this.onclose?.(this.closedReason);
      };
    });
  }

  close(): void {
    this.closedReason = this.closedReason ?? "closed by this page";
    this.socket?.close();
  }

  private call(message: Record<string, unknown>, timeoutMs = 10_000): Promise<Record<string, unknown>> {
    const socket = this.socket;
    if (!socket || this.closed || socket.readyState !== WebSocket.OPEN) {
      return Promise.reject(new RelayError("the connection to the relay is closed"));
    }
    const id = String(this.nextId++);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new RelayError("the relay did not answer in time"));
      }, timeoutMs);
      this.waiting.set(id, {
        resolve: (answer) => {
          clearTimeout(timer);
          if (answer.op === "error") {
            reject(new RelayError(`the relay refused ${String(message.op)}: ${String(answer.message ?? "")}`, String(answer.code ?? "unavailable")));
          } else {
            resolve(answer);
          }
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      socket.send(JSON.stringify({ ...message, id }));
    });
  }

  async subscribe(cap: Uint8Array, handler: Handler): Promise<string> {
    const box = mailboxId(cap);
    this.handlers.set(box, { cap, handler });
    await this.call({ op: "sub", cap: b64u(cap) });
    return box;
  }

  async unsubscribe(cap: Uint8Array): Promise<void> {
    this.handlers.delete(mailboxId(cap));
    await this.call({ op: "unsub", cap: b64u(cap) });
  }

  async post(cap: Uint8Array, data: Uint8Array, ttl = 300): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.call({ op: "post", cap: b64u(cap), data: b64u(data), ttl });
        return;
      } catch (error) {
        if (!(error instanceof RelayError) || error.code !== "rate_limited" || attempt === 4) throw error;
        await new Promise((r) => setTimeout(r, 50 * 2 ** attempt)); // the relay asks us to slow down
      }
    }
  }

  async ack(cap: Uint8Array, seq: string): Promise<void> {
    await this.call({ op: "ack", cap: b64u(cap), seq });
  }

  private receive(frame: unknown): void {
    if (typeof frame !== "string") return;
    let message: unknown;
    try {
      message = JSON.parse(frame);
    } catch {
      return;
    }
    if (typeof message !== "object" || message === null) return;
    const m = message as Record<string, unknown>;
    if (m.op === "msg") {
      this.deliver(m);
    } else if (typeof m.id === "string") {
      this.waiting.get(m.id)?.resolve(m);
      this.waiting.delete(m.id);
    }
  }

  private deliver(m: Record<string, unknown>): void {
    if (typeof m.box !== "string" || typeof m.seq !== "string") return;
    const entry = this.handlers.get(m.box);
    if (!entry) return;
    let data: Uint8Array;
    try {
      data = unb64u(m.data, undefined, "data");
    } catch {
      return;
    }
    const seq = m.seq;
    Promise.resolve(entry.handler({ box: m.box, seq, data })).catch((error: unknown) => {
      console.warn("a relay message could not be handled:", error instanceof Error ? error.name : "error");
    });
    // Acknowledged once taken, as the reference device does: the protocol above (request
    // ids, the answer cache) makes a lost or repeated message harmless. After the handler
    // has started, so an answer it posts at once goes out ahead of the ack.
    this.ack(entry.cap, seq).catch(() => undefined);
  }
}
