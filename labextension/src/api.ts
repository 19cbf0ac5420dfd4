/**
 * The REST client for the server's secure-storage API (jupyter_secure_storage/server/rest.py).
 *
 * Requests go through ServerConnection.makeRequest, so JupyterLab adds the token and the
 * XSRF header. A request body may hold a value: it is built at the call and never kept,
 * and no error built here repeats it (errors carry the server's message and remedy).
 */
import { ServerConnection } from '@jupyterlab/services';

/** Where the API is mounted, under the server's base URL. */
export const API_PATH = 'secure-storage/api';

/** What the server says about its store (GET status). Never a value. */
export interface IStoreStatus {
  backend: string;
  location: string;
  reason: string;
  /** The vault backend, not unlocked in the unlock agent (other backends: false). */
  locked: boolean;
  /** Whether the vault file exists (false: the unlock dialog creates it). */
  vault_exists: boolean;
  /** Whether an unlock agent answers. */
  agent: boolean;
  /** What the save guard checks for stored values: "on", "locked" or "off". */
  stored_value_check: 'on' | 'locked' | 'off';
  /** Always null: each kernel keeps its own registry of values to redact. */
  redaction_values: number | null;
}

/** A notebook access grant: the notebook (its path under the server's root) may read
 * the key. */
export interface IGrant {
  notebook: string;
  namespace: string;
  key: string;
  /** When it was granted, in seconds since the epoch. */
  granted: number;
}

/** One request of a kernel for a key, as the unlock agent answered it. */
export interface IAccessEntry {
  /** Seconds since the epoch. */
  time: number;
  notebook: string;
  namespace: string;
  key: string;
  allowed: boolean;
}

/** One stored key, as the sidebar lists it: never a value. */
export interface IStoredKey {
  name: string;
  namespace: string;
  backend: string;
  /** ISO 8601, or null when the store cannot tell. */
  modified: string | null;
}

/** A refusal from the server, with its cause and what to do about it. `locked`: the
 * vault is locked in the unlock agent, and a passphrase is the remedy. */
export class StorageRequestError extends Error {
  constructor(
    message: string,
    readonly remedy: string,
    readonly status: number,
    readonly locked: boolean = false
  ) {
    super(message);
    this.name = 'StorageRequestError';
  }
}

let onLocked: (() => void) | null = null;

/** Called whenever a request is refused because the vault is locked (the unlock
 * dialog's plugin sets it). */
export function setLockedHandler(handler: (() => void) | null): void {
  onLocked = handler;
}

/**
 * Call the API. `segments` are URL-quoted one by one (a secrets-manager namespace
 * holds "/", which must stay inside its segment).
 */
export async function requestAPI(
  segments: string[],
  init: RequestInit = {},
  query: Record<string, string> = {}
): Promise<Response> {
  const settings = ServerConnection.makeSettings();
  const search = new URLSearchParams(query).toString();
  const url =
    settings.baseUrl +
    API_PATH +
    '/' +
    segments.map(segment => encodeURIComponent(segment)).join('/') +
    (search ? `?${search}` : '');
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new StorageRequestError(
      'The Jupyter server could not be reached.',
      'Check that the server is running, then refresh.',
      0
    );
  }
  if (!response.ok && response.status !== 404) {
    const error = await refusal(response);
    if (error.locked) {
      onLocked?.();
    }
    throw error;
  }
  return response;
}

/** The server's JSON error as a StorageRequestError. */
export async function refusal(response: Response): Promise<StorageRequestError> {
  let message = `The server answered ${response.status} ${response.statusText}.`;
  let remedy = '';
  let locked = false;
  try {
    const body = await response.json();
    if (typeof body?.message === 'string') {
      message = body.message;
    }
    if (typeof body?.remedy === 'string') {
      remedy = body.remedy;
    }
    locked = body?.locked === true;
  } catch {
    // Not JSON (a proxy's page, say): the status line is all there is.
  }
  return new StorageRequestError(message, remedy, response.status, locked);
}

export async function getStatus(): Promise<IStoreStatus> {
  const response = await requestAPI(['status']);
  return (await response.json()) as IStoreStatus;
}

export async function listKeys(): Promise<IStoredKey[]> {
  const response = await requestAPI(['keys']);
  const body = (await response.json()) as { keys: IStoredKey[] };
  return body.keys;
}

/** Store a value under namespace/name; the value goes into the request body only. */
export async function addKey(
  namespace: string,
  name: string,
  value: string
): Promise<void> {
  await requestAPI(['keys'], {
    method: 'POST',
    body: JSON.stringify({ namespace, name, value })
  });
}

export async function deleteKey(namespace: string, name: string): Promise<void> {
  await requestAPI(['keys', namespace, name], { method: 'DELETE' });
}

/** Hand the passphrase to the server's unlock agent (creating the vault when there is
 * none). The passphrase goes into this request's body and nowhere else. */
export async function unlock(passphrase: string): Promise<void> {
  await requestAPI(['unlock'], {
    method: 'POST',
    body: JSON.stringify({ passphrase })
  });
}

/** The unlock agent forgets every key. */
export async function lock(): Promise<void> {
  await requestAPI(['lock'], { method: 'POST' });
}

/** The grants of one notebook (its path under the server's root, as session.path). */
export async function listGrants(notebook: string): Promise<IGrant[]> {
  const response = await requestAPI(['grants'], {}, { notebook });
  const body = (await response.json()) as { grants: IGrant[] };
  return body.grants;
}

/** Grant (or revoke) one key to one notebook. */
export async function setGrant(
  notebook: string,
  namespace: string,
  key: string,
  granted: boolean
): Promise<void> {
  await requestAPI(['grants'], {
    method: granted ? 'PUT' : 'DELETE',
    body: JSON.stringify({ notebook, namespace, key })
  });
}

/** The latest requests for keys, newest first. */
export async function accessLog(limit: number): Promise<IAccessEntry[]> {
  const response = await requestAPI(['access-log'], {}, { limit: String(limit) });
  const body = (await response.json()) as { entries: IAccessEntry[] };
  return body.entries;
}
