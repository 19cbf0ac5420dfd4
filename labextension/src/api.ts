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

/** What the server says about its store (GET status). */
export interface IStoreStatus {
  backend: string;
  location: string;
  reason: string;
}

/** One stored key, as the sidebar lists it: never a value. */
export interface IStoredKey {
  name: string;
  namespace: string;
  backend: string;
  /** ISO 8601, or null when the store cannot tell. */
  modified: string | null;
}

/** A refusal from the server, with its cause and what to do about it. */
export class StorageRequestError extends Error {
  constructor(
    message: string,
    readonly remedy: string,
    readonly status: number
  ) {
    super(message);
    this.name = 'StorageRequestError';
  }
}

/**
 * Call the API. `segments` are URL-quoted one by one (a secrets-manager namespace
 * holds "/", which must stay inside its segment).
 */
export async function requestAPI(
  segments: string[],
  init: RequestInit = {}
): Promise<Response> {
  const settings = ServerConnection.makeSettings();
  const url =
    settings.baseUrl +
    API_PATH +
    '/' +
    segments.map(segment => encodeURIComponent(segment)).join('/');
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
    throw await refusal(response);
  }
  return response;
}

/** The server's JSON error as a StorageRequestError. */
export async function refusal(response: Response): Promise<StorageRequestError> {
  let message = `The server answered ${response.status} ${response.statusText}.`;
  let remedy = '';
  try {
    const body = await response.json();
    if (typeof body?.message === 'string') {
      message = body.message;
    }
    if (typeof body?.remedy === 'string') {
      remedy = body.remedy;
    }
  } catch {
    // Not JSON (a proxy's page, say): the status line is all there is.
  }
  return new StorageRequestError(message, remedy, response.status);
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
